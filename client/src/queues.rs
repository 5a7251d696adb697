//! Reading this client's two queues to their end, batch by batch: fetch from the saved
//! position, open each message with the queue's key chain, and have a [`QueueReader`] check and
//! store the batch together with the position (and chain) after it; the next fetch
//! acknowledges it. A batch counts as received exactly when its results are stored,
//! so a crash loses nothing and shows nothing twice; an acknowledgement lost with its fetch is
//! repeated by the next one.
//!
//! Owns: the queue positions' movement, the client's copy of each queue's key chain, and the
//! rule of one reader per queue at a time. Must not touch: what a message means (the readers
//! decide).

use std::time::Duration;

use roost_protocol::{
    api::{self, QueueItem},
    crypto::CryptoError,
    queue::QueueChain,
};

use crate::{
    device::Device,
    error::Error,
    store::QueuePosition,
    transport::{Queue, QueueKind},
};

/// Reads one kind of queue for [`Queues::drain`]: checks a batch of opened messages, and saves
/// what it yields together with the position after it.
pub(crate) trait QueueReader {
    type Item;
    const KIND: QueueKind;

    async fn take(
        &mut self,
        messages: &[Opened],
        position: QueuePosition,
    ) -> Result<Vec<Self::Item>, Error>;
}

/// One fetched message, opened (or not: then it is unreadable, and the reader says so).
pub(crate) struct Opened {
    pub seq: u64,
    pub item: Result<QueueItem, CryptoError>,
    /// The key chain after this message: what a position at `seq` saves.
    pub chain: Option<QueueChain>,
}

impl Opened {
    /// The position after this message (how far acknowledgements reached comes from `base`).
    pub fn position(&self, base: &QueuePosition) -> QueuePosition {
        QueuePosition {
            received: Some(self.seq),
            chain: self.chain.clone(),
            ..base.clone()
        }
    }
}

/// What one pass over a queue came to.
pub struct Drained<T> {
    pub items: Vec<T>,
    /// Everything queued when the pass began was read.
    pub complete: bool,
}

/// One fetched batch, handled.
struct Batch<T> {
    items: Vec<T>,
    fetched: usize,
    has_more: bool,
}

/// One reader per queue at a time, so a queue position only moves forward.
#[derive(Debug, Default)]
pub struct Queues {
    messages: tokio::sync::Mutex<()>,
    connections: tokio::sync::Mutex<()>,
}

impl Queues {
    /// Reads a queue to its end, waiting up to `wait` for a first message.
    pub(crate) async fn drain<R: QueueReader>(
        &self,
        device: &Device,
        reader: &mut R,
        wait: Duration,
    ) -> Result<Drained<R::Item>, Error> {
        let _one_at_a_time = match R::KIND {
            QueueKind::Messages => self.messages.lock().await,
            QueueKind::Connections => self.connections.lock().await,
        };
        let queue = Queue::new(R::KIND, device.client_id());
        let mut position = device.store().queue_position(R::KIND)?;
        let mut items = Vec::new();
        let mut wait = wait;
        loop {
            let complete = match drain_batch(device, reader, queue, &mut position, wait).await {
                Ok(batch) => {
                    items.extend(batch.items);
                    if batch.fetched == 0 || !batch.has_more {
                        true
                    } else {
                        wait = Duration::ZERO;
                        continue;
                    }
                }
                Err(e) if items.is_empty() => return Err(e),
                Err(_) => false,
            };
            return Ok(Drained { items, complete });
        }
    }
}

/// Fetches one batch, acknowledging in the same request what was read before it (one signed
/// request per batch, not two: the last batch of a pass is acknowledged by the next pass's
/// first fetch), and has `reader` open and save it.
async fn drain_batch<R: QueueReader>(
    device: &Device,
    reader: &mut R,
    queue: Queue,
    position: &mut QueuePosition,
    wait: Duration,
) -> Result<Batch<R::Item>, Error> {
    let server = device.home();
    let ack = position.pending_ack();
    let batch = server
        .fetch_queue(
            device.signer(),
            queue,
            position.next_from(),
            api::MAX_FETCH,
            wait,
            ack,
        )
        .await?;
    // Saved with the position after this batch (or, for an empty one, not at all: the next
    // fetch repeats the acknowledgement, which changes nothing).
    position.acked = ack.or(position.acked);
    let identity = device.identity();
    let mut chain = position.chain.clone();
    let opened: Vec<Opened> = batch
        .messages
        .iter()
        .map(|message| Opened {
            seq: message.seq,
            item: message.open(&identity.queue_key, &identity.client_id, &mut chain),
            chain: chain.clone(),
        })
        .collect();
    let Some(received) = opened.last().map(|last| last.position(position)) else {
        return Ok(Batch {
            items: Vec::new(),
            fetched: 0,
            has_more: false,
        });
    };
    let items = reader.take(&opened, received.clone()).await?;
    *position = received;
    Ok(Batch {
        items,
        fetched: batch.messages.len(),
        has_more: batch.has_more,
    })
}

/// Saves how far a queue was read.
pub async fn save_position(
    device: &Device,
    queue: QueueKind,
    position: QueuePosition,
) -> Result<(), Error> {
    Ok(device
        .store()
        .run(move |s| s.set_queue_position(queue, &position))
        .await?)
}
