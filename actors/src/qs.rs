//! The QS's one way into message queues by sealed queue reference: group deliveries, whether
//! fanned out by this server's DS ([`crate::group::Delivery`]) or relayed by another homeserver
//! (the server's federation endpoint).
//!
//! Owns the QS's secret key for sealed queue references ([`QueueRefs`]): nothing else opens
//! them. Opening one is an X25519 operation, and a group's references are the same on every
//! message until its membership changes, so what each opened to is kept in memory (bounded,
//! never on disk): the QS learns nothing it did not learn by opening it. A delivery is queued
//! only if its reference is for this domain and opens with that key; each queue stores its part
//! of a call in order, the queues side by side, and one flush then makes the whole call durable
//! before any queue shows it. A relayed delivery is queued once per its sender's delivery id
//! (`FederatedDelivery::dedup_key`), so a sender's retry queues nothing twice.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use actix::Addr;
use roost_storage::Durability;

use roost_protocol::{
    api::QueueItem,
    ds::{GroupDelivery, SealedQueueRef},
    federation::FederatedDelivery,
    ClientId, Domain, HpkePublicKey, HpkeSecretKey,
};

use crate::{
    pool::{Ask, AskError, Pool},
    queue::{Durable, QueueActor, QueueError, QueueId, StoreMany},
};

/// This QS's domain and the key it opens sealed queue references with.
#[derive(Clone)]
pub struct QueueRefs {
    domain: Domain,
    key: HpkeSecretKey,
    opened: Arc<Mutex<Opened>>,
}

/// How many opened references are kept: a small community's memberships, in a few MB.
const OPENED_KEPT: usize = 16 * 1024;

/// Sealed references (their exact bytes) and the client each opened to, oldest first out.
#[derive(Default)]
struct Opened {
    clients: HashMap<(Vec<u8>, Vec<u8>), ClientId>,
    order: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl Opened {
    fn key(queue_ref: &SealedQueueRef) -> (Vec<u8>, Vec<u8>) {
        let sealed = &queue_ref.sealed;
        (sealed.encapsulated_key.to_vec(), sealed.ciphertext.clone())
    }

    fn keep(&mut self, key: (Vec<u8>, Vec<u8>), client: ClientId) {
        if self.clients.insert(key.clone(), client).is_none() {
            self.order.push_back(key);
            if self.order.len() > OPENED_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.clients.remove(&oldest);
                }
            }
        }
    }
}

impl QueueRefs {
    pub fn new(domain: Domain, key: HpkeSecretKey) -> Self {
        QueueRefs {
            domain,
            key,
            opened: Arc::default(),
        }
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// What clients seal their queue references to.
    pub fn public_key(&self) -> HpkePublicKey {
        self.key.public_key()
    }

    /// The local client `queue_ref` names: refused unless it is for this domain and opens here.
    pub fn open(&self, queue_ref: &SealedQueueRef) -> Result<ClientId, DeliveryError> {
        if queue_ref.domain != self.domain {
            return Err(DeliveryError::WrongDomain(queue_ref.domain.clone()));
        }
        let key = Opened::key(queue_ref);
        let opened = || self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = opened().clients.get(&key) {
            return Ok(*client);
        }
        let client = queue_ref
            .open(&self.key)
            .map_err(|_| DeliveryError::BadQueueRef)?;
        opened().keep(key, client);
        Ok(client)
    }
}

/// Why one delivery was not queued, for good: sending it again cannot help.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// For another domain than this QS's.
    #[error("this delivery is for {0}, not for this server")]
    WrongDomain(Domain),
    #[error("the queue reference does not open at this server")]
    BadQueueRef,
    /// Its queue refused it: a limit, or there is no such queue.
    #[error(transparent)]
    Queue(QueueError),
}

/// What one call delivered: an outcome per delivery in its order (its seq, or why it was
/// refused for good); `Err` if some queue could not take its part for a reason worth retrying
/// (its actor is not running, or the store failed): then some deliveries may have been queued
/// and some not.
pub type Delivered = Result<Vec<Result<u64, DeliveryError>>, AskError<QueueError>>;

/// One group delivery for the queue a sealed reference names; `id` (if any) is what it is
/// queued once by.
pub struct ToQueue {
    pub queue: SealedQueueRef,
    pub item: GroupDelivery,
    pub id: Option<[u8; 32]>,
}

/// Delivers into local message queues by sealed queue reference.
#[derive(Clone)]
pub struct SealedDelivery {
    refs: QueueRefs,
    queues: Addr<Pool<QueueActor>>,
    durability: Durability,
}

impl SealedDelivery {
    pub fn new(refs: QueueRefs, queues: Addr<Pool<QueueActor>>, durability: Durability) -> Self {
        SealedDelivery {
            refs,
            queues,
            durability,
        }
    }

    pub fn refs(&self) -> &QueueRefs {
        &self.refs
    }

    /// Queues each delivery into the queue its reference names; answers once every one queued
    /// is durable.
    pub async fn deliver(&self, deliveries: Vec<ToQueue>) -> Delivered {
        let mut outcomes: Vec<Result<u64, DeliveryError>> = Vec::with_capacity(deliveries.len());
        let mut parts: Vec<QueuePart> = Vec::new();
        for (index, delivery) in deliveries.into_iter().enumerate() {
            let client = match self.refs.open(&delivery.queue) {
                Ok(client) => client,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            outcomes.push(Ok(0));
            let item = (QueueItem::Group(delivery.item), delivery.id);
            match parts.iter_mut().find(|part| part.client == client) {
                Some(part) => {
                    part.indices.push(index);
                    part.items.push(item);
                }
                None => parts.push(QueuePart {
                    client,
                    indices: vec![index],
                    items: vec![item],
                }),
            }
        }
        // Each queue stores its part, the queues side by side; then one flush makes them all
        // durable, and each queue is told so (then its fetches see them).
        let appends = parts.into_iter().map(|part| async move {
            let appended = self
                .queues
                .ask(
                    QueueId::messages(part.client),
                    StoreMany { items: part.items },
                )
                .await;
            (part.client, part.indices, appended)
        });
        let appended = futures_util::future::join_all(appends).await;
        let mut stored = Vec::new();
        for (client, _, appended) in &appended {
            if let Ok(each) = appended {
                if let Some(last) = each.iter().filter_map(|queued| queued.as_ref().ok()).max() {
                    stored.push((*client, *last));
                }
            }
        }
        if !stored.is_empty() {
            self.durability
                .persist()
                .await
                .map_err(|e| AskError::Actor(QueueError::from(e)))?;
            let told = stored.into_iter().map(|(client, up_to)| {
                self.queues
                    .ask(QueueId::messages(client), Durable { up_to })
            });
            // A queue not told (its actor stopped) learns it at its next start, which takes
            // what is stored as durable.
            futures_util::future::join_all(told).await;
        }
        let mut retry = None;
        for (_, indices, appended) in appended {
            match appended {
                Ok(each) => {
                    for (index, queued) in indices.into_iter().zip(each) {
                        outcomes[index] = queued.map_err(DeliveryError::Queue);
                    }
                }
                // A queue that does not exist refuses its part for good.
                Err(AskError::Actor(QueueError::UnknownQueue)) => {
                    for index in indices {
                        outcomes[index] = Err(DeliveryError::Queue(QueueError::UnknownQueue));
                    }
                }
                Err(e) => {
                    retry.get_or_insert(e);
                }
            }
        }
        match retry {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Queues deliveries relayed by `from`, each once per its id; a delivery not addressed to
    /// this domain is refused ([`DeliveryError::WrongDomain`]).
    pub async fn deliver_relayed(
        &self,
        from: &Domain,
        deliveries: Vec<FederatedDelivery>,
    ) -> Delivered {
        let mut wrong = Vec::new();
        let mut addressed = Vec::new();
        for (index, delivery) in deliveries.into_iter().enumerate() {
            if delivery.to != self.refs.domain || delivery.queue.domain != self.refs.domain {
                wrong.push((index, delivery.to));
                continue;
            }
            addressed.push(ToQueue {
                id: Some(delivery.dedup_key(from)),
                queue: delivery.queue,
                item: delivery.item,
            });
        }
        let mut outcomes = self.deliver(addressed).await?.into_iter();
        let total = outcomes.len() + wrong.len();
        let mut wrong = wrong.into_iter().peekable();
        Ok((0..total)
            .map(|index| match wrong.next_if(|(at, _)| *at == index) {
                Some((_, to)) => Err(DeliveryError::WrongDomain(to)),
                None => outcomes.next().expect("an outcome per addressed delivery"),
            })
            .collect())
    }
}

/// One queue's part of a call, in the call's order: which deliveries, and what to append.
struct QueuePart {
    client: ClientId,
    indices: Vec<usize>,
    items: Vec<(QueueItem, Option<[u8; 32]>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_reference_is_remembered_and_a_tampered_copy_still_refused() {
        let domain: Domain = "qs.test".parse().unwrap();
        let (key, public) = HpkeSecretKey::generate();
        let refs = QueueRefs::new(domain.clone(), key);
        let client = ClientId([7; 16]);
        let sealed = SealedQueueRef::seal(domain, &public, &client).unwrap();
        assert_eq!(refs.open(&sealed).unwrap(), client);
        assert_eq!(refs.open(&sealed).unwrap(), client);
        assert_eq!(refs.opened.lock().unwrap().clients.len(), 1);
        // Same encapsulated key, another ciphertext: opened afresh, and refused.
        let mut tampered = sealed.clone();
        tampered.sealed.ciphertext[0] ^= 1;
        assert!(matches!(
            refs.open(&tampered),
            Err(DeliveryError::BadQueueRef)
        ));
    }

    #[test]
    fn the_remembered_references_are_bounded() {
        let domain: Domain = "qs.test".parse().unwrap();
        let (key, public) = HpkeSecretKey::generate();
        let refs = QueueRefs::new(domain.clone(), key);
        let first = SealedQueueRef::seal(domain.clone(), &public, &ClientId([1; 16])).unwrap();
        refs.open(&first).unwrap();
        let mut opened = refs.opened.lock().unwrap();
        for n in 0..OPENED_KEPT as u32 {
            let mut key = Opened::key(&first);
            key.1 = n.to_be_bytes().to_vec();
            opened.keep(key, ClientId([2; 16]));
        }
        assert_eq!(opened.clients.len(), OPENED_KEPT);
        assert!(!opened.clients.contains_key(&Opened::key(&first)));
    }
}
