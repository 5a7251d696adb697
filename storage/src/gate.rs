//! The store's sled handles. Every write to a tree passes the *gate* — a shared hold of one
//! lock, for the one sled call it makes, never nested — and a backup or a compaction closes it
//! (the exclusive hold): writes wait, reads go on. So a backup's copy is of one instant across
//! every tree (sled 0.34 has no snapshots, and a copy taken while writes go on would be torn
//! between trees), and a compaction copies every record into a fresh database and puts that in
//! the old one's place ([`Db::replace`]) with nothing written meanwhile.
//!
//! [`Tree`] and [`Db`] are how this crate reaches sled. A `Tree` is a slot that every handle of
//! that tree shares: its write methods pass the gate, its read methods read the tree in the slot
//! now, and a compaction puts the fresh database's tree in the slot, so every handle the actors
//! hold follows it.

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use sled::{
    transaction::{ConflictableTransactionResult, TransactionResult, TransactionalTree},
    Batch, IVec,
};

#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<RwLock<()>>);

/// The gate held closed: nothing is written while this lives.
pub(crate) struct Closed<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, ()>);

impl Gate {
    /// Held by one write while it runs.
    pub(crate) fn pass(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `write` (a transaction over several trees) holding a pass.
    pub(crate) fn passing<T>(&self, write: impl FnOnce() -> T) -> T {
        let _passing = self.pass();
        write()
    }

    /// Held while nothing may be written: waits for the writes under way.
    pub(crate) fn close(&self) -> Closed<'_> {
        Closed(self.0.write().unwrap_or_else(|p| p.into_inner()))
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One tree's place, shared by all its handles.
type Slot = Arc<RwLock<sled::Tree>>;

/// A tree of the store whose writes pass the gate.
#[derive(Clone)]
pub(crate) struct Tree {
    slot: Slot,
    gate: Gate,
}

impl Tree {
    /// The sled tree in the slot now: for reads, and for a transaction over several trees
    /// (inside [`Gate::passing`]). Not to be kept: a compaction replaces it.
    pub(crate) fn sled(&self) -> sled::Tree {
        read(&self.slot)
    }

    pub(crate) fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        self.sled().get(key)
    }

    pub(crate) fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<bool> {
        self.sled().contains_key(key)
    }

    pub(crate) fn iter(&self) -> sled::Iter {
        self.sled().iter()
    }

    pub(crate) fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> sled::Iter {
        self.sled().range(range)
    }

    pub(crate) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> sled::Iter {
        self.sled().scan_prefix(prefix)
    }

    pub(crate) fn len(&self) -> usize {
        self.sled().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sled().is_empty()
    }

    pub(crate) fn insert<K: AsRef<[u8]>, V: Into<IVec>>(
        &self,
        key: K,
        value: V,
    ) -> sled::Result<Option<IVec>> {
        let _passing = self.gate.pass();
        self.sled().insert(key, value)
    }

    pub(crate) fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let _passing = self.gate.pass();
        self.sled().remove(key)
    }

    pub(crate) fn apply_batch(&self, batch: Batch) -> sled::Result<()> {
        let _passing = self.gate.pass();
        self.sled().apply_batch(batch)
    }

    // sled's other writing methods (`merge`, `fetch_and_update`, `pop_min`, …) are not used
    // here: give them a gated twin before using one.
    #[allow(dead_code)]
    pub(crate) fn clear(&self) -> sled::Result<()> {
        let _passing = self.gate.pass();
        self.sled().clear()
    }

    pub(crate) fn compare_and_swap<K: AsRef<[u8]>, OV: AsRef<[u8]>, NV: Into<IVec>>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        let _passing = self.gate.pass();
        self.sled().compare_and_swap(key, old, new)
    }

    #[allow(dead_code)]
    pub(crate) fn transaction<A, E>(
        &self,
        f: impl Fn(&TransactionalTree) -> ConflictableTransactionResult<A, E>,
    ) -> TransactionResult<A, E> {
        let _passing = self.gate.pass();
        self.sled().transaction(f)
    }

    /// The gate, for a transaction over several trees (passed once, around it).
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// The database in use: sled's, and its data file (which the flusher syncs).
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) db: sled::Db,
    pub(crate) data_file: Arc<File>,
}

impl Current {
    /// `db`, opened in `dir`.
    pub(crate) fn new(db: sled::Db, dir: &Path) -> std::io::Result<Current> {
        Ok(Current {
            db,
            data_file: Arc::new(File::open(dir.join("db"))?),
        })
    }
}

struct Shared {
    gate: Gate,
    current: RwLock<Current>,
    slots: Mutex<HashMap<String, Slot>>,
}

/// The store's sled database, handing out trees that pass its gate.
#[derive(Clone)]
pub(crate) struct Db {
    shared: Arc<Shared>,
}

impl Db {
    pub(crate) fn new(current: Current) -> Db {
        Db {
            shared: Arc::new(Shared {
                gate: Gate::default(),
                current: RwLock::new(current),
                slots: Mutex::default(),
            }),
        }
    }

    /// The database in use now. Not to be kept: a compaction replaces it.
    pub(crate) fn current(&self) -> Current {
        read(&self.shared.current)
    }

    /// The sled database in use now (see [`current`](Self::current)).
    pub(crate) fn sled(&self) -> sled::Db {
        self.current().db
    }

    pub(crate) fn open_tree(&self, name: &str) -> sled::Result<Tree> {
        let mut slots = self.shared.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match slots.get(name) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(RwLock::new(self.sled().open_tree(name)?));
                slots.insert(name.to_owned(), slot.clone());
                slot
            }
        };
        Ok(Tree {
            slot,
            gate: self.shared.gate.clone(),
        })
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.shared.gate
    }

    /// Puts `replacement` — which must hold a copy of every record — in the place of the
    /// database in use, while the gate is `closed`: every tree handle reads and writes the
    /// replacement's tree from now on. Answers the database it replaced.
    pub(crate) fn replace(
        &self,
        _closed: &Closed<'_>,
        replacement: Current,
    ) -> sled::Result<Current> {
        let slots = self.shared.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Every tree opened first, so that a failure leaves every handle where it was.
        let trees = slots
            .iter()
            .map(|(name, slot)| Ok((slot, replacement.db.open_tree(name)?)))
            .collect::<sled::Result<Vec<_>>>()?;
        for (slot, tree) in trees {
            *slot.write().unwrap_or_else(|p| p.into_inner()) = tree;
        }
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        Ok(std::mem::replace(&mut *current, replacement))
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use sled::Transactional;

    use super::*;

    /// Each way of writing waits while the gate is closed, and goes through once it opens.
    #[test]
    fn every_write_waits_while_the_gate_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Current::new(sled::open(dir.path()).unwrap(), dir.path()).unwrap());
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        type Write = Box<dyn FnOnce(&Tree, &Tree) + Send>;
        let writes: Vec<(&str, Write)> = vec![
            ("insert", Box::new(|a, _| drop(a.insert("k", "v").unwrap()))),
            ("remove", Box::new(|a, _| drop(a.remove("k").unwrap()))),
            (
                "apply_batch",
                Box::new(|a, _| a.apply_batch(Batch::default()).unwrap()),
            ),
            (
                "compare_and_swap",
                Box::new(|a, _| {
                    let _ = a
                        .compare_and_swap("c", None as Option<&[u8]>, Some("1"))
                        .unwrap();
                }),
            ),
            (
                "transaction over two trees",
                Box::new(|a, b| {
                    a.gate()
                        .passing(|| {
                            (&a.sled(), &b.sled()).transaction(|(a, b)| {
                                a.insert("t", "1")?;
                                b.insert("t", "1")?;
                                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                            })
                        })
                        .unwrap();
                }),
            ),
        ];
        for (name, write) in writes {
            let closed = db.gate().close();
            let (done, finished) = mpsc::channel();
            let (a, b) = (a.clone(), b.clone());
            let writer = std::thread::spawn(move || {
                write(&a, &b);
                done.send(()).unwrap();
            });
            assert!(
                finished.recv_timeout(Duration::from_millis(200)).is_err(),
                "{name} went past a closed gate"
            );
            drop(closed);
            finished
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{name} did not go through an open gate"));
            writer.join().unwrap();
        }
    }
}
