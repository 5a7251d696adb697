//! The store's write gate. Every write to a tree passes it — a shared hold of one lock, for the
//! one sled call it makes, never nested — and a backup closes it (the exclusive hold) while it
//! copies the store, so the copy is of one instant across every tree: sled 0.34 has no
//! snapshots, and a copy taken while writes go on would be torn between trees. Reads never wait
//! for the gate.
//!
//! [`Tree`] and [`Db`] are how this crate reaches sled: a `Tree`'s write methods pass the gate,
//! and everything else reads through to `sled::Tree`.

use std::{
    ops::Deref,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use sled::{
    transaction::{ConflictableTransactionResult, TransactionResult, TransactionalTree},
    Batch, IVec,
};

#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<RwLock<()>>);

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
    pub(crate) fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tree of the store whose writes pass the gate.
#[derive(Clone)]
pub(crate) struct Tree {
    inner: sled::Tree,
    gate: Gate,
}

impl Deref for Tree {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.inner
    }
}

impl Tree {
    pub(crate) fn insert<K: AsRef<[u8]>, V: Into<IVec>>(
        &self,
        key: K,
        value: V,
    ) -> sled::Result<Option<IVec>> {
        let _passing = self.gate.pass();
        self.inner.insert(key, value)
    }

    pub(crate) fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let _passing = self.gate.pass();
        self.inner.remove(key)
    }

    pub(crate) fn apply_batch(&self, batch: Batch) -> sled::Result<()> {
        let _passing = self.gate.pass();
        self.inner.apply_batch(batch)
    }

    // `clear` and `transaction` shadow sled's own, so that no call reaches them through
    // `Deref` and past the gate. sled's other writing methods (`merge`, `fetch_and_update`,
    // `pop_min`, …) are not used here: give them a gated twin before using one.
    #[allow(dead_code)]
    pub(crate) fn clear(&self) -> sled::Result<()> {
        let _passing = self.gate.pass();
        self.inner.clear()
    }

    pub(crate) fn compare_and_swap<K: AsRef<[u8]>, OV: AsRef<[u8]>, NV: Into<IVec>>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        let _passing = self.gate.pass();
        self.inner.compare_and_swap(key, old, new)
    }

    #[allow(dead_code)]
    pub(crate) fn transaction<A, E>(
        &self,
        f: impl Fn(&TransactionalTree) -> ConflictableTransactionResult<A, E>,
    ) -> TransactionResult<A, E> {
        let _passing = self.gate.pass();
        self.inner.transaction(f)
    }

    /// The gate, for a transaction over several trees (passed once, around it).
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// The store's sled database, handing out trees that pass its gate.
#[derive(Clone)]
pub(crate) struct Db {
    inner: sled::Db,
    gate: Gate,
}

impl Deref for Db {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.inner
    }
}

impl Db {
    pub(crate) fn new(inner: sled::Db) -> Db {
        Db {
            inner,
            gate: Gate::default(),
        }
    }

    pub(crate) fn open_tree(&self, name: &str) -> sled::Result<Tree> {
        Ok(Tree {
            inner: self.inner.open_tree(name)?,
            gate: self.gate.clone(),
        })
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
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
        let db = Db::new(sled::open(dir.path()).unwrap());
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
                            (&**a, &**b).transaction(|(a, b)| {
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
