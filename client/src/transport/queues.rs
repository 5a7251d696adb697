//! A client's two queues, read the same way: fetch from a position, acknowledging what came
//! before (in the fetch itself, or on its own).

use std::time::Duration;

use reqwest::Method;
use roost_protocol::{
    api::{self, Ack, FetchQuery, QueueBatch},
    codec, ClientId,
};

/// Which of a client's queues (the one definition, in the protocol).
pub use roost_protocol::api::QueueKind;

use super::{retrying, Server, ServerError, Signer, REQUEST_TIMEOUT};

/// One queue of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub kind: QueueKind,
    pub client: ClientId,
}

impl Queue {
    pub fn new(kind: QueueKind, client: ClientId) -> Self {
        Queue { kind, client }
    }
}

impl Server {
    /// Up to `max` messages of `queue` from `from` on; with `wait` above zero the server holds
    /// the request until one exists (capped at [`api::MAX_WAIT_MS`]). With `ack`, the server
    /// first deletes every message up to it (see [`FetchQuery::ack`]).
    pub async fn fetch_queue(
        &self,
        signer: Signer<'_>,
        queue: Queue,
        from: u64,
        max: u32,
        wait: Duration,
        ack: Option<u64>,
    ) -> Result<QueueBatch, ServerError> {
        let wait_ms = u64::try_from(wait.as_millis())
            .unwrap_or(u64::MAX)
            .min(api::MAX_WAIT_MS);
        let query = FetchQuery {
            from,
            max: Some(max),
            wait_ms,
            ack,
        };
        let path = format!("{}?{}", queue.kind.path(&queue.client), query.to_query());
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(wait_ms);
        // Reading a queue (and acknowledging what was read, again) may be repeated: a kept-alive
        // connection a restarted server closed costs no failed sync.
        let batch: QueueBatch =
            retrying(|| self.call(Method::GET, &path, None, Some(signer), timeout)).await?;
        check_batch(&batch, from, max)?;
        Ok(batch)
    }

    /// Deletes every message of `queue` up to and including `up_to`.
    pub async fn ack_queue(
        &self,
        signer: Signer<'_>,
        queue: Queue,
        up_to: u64,
    ) -> Result<(), ServerError> {
        let bytes = codec::encode(&Ack { up_to });
        let path = queue.kind.ack_path(&queue.client);
        retrying(|| self.call_no_content(Method::POST, &path, Some(bytes.clone()), Some(signer)))
            .await
    }
}

/// A batch must be in increasing order, start at or after `from` and respect `max`: anything
/// else would move the queue position wrongly.
fn check_batch(batch: &QueueBatch, from: u64, max: u32) -> Result<(), ServerError> {
    if batch.messages.len() > max as usize {
        return Err(ServerError::Malformed(format!(
            "{} messages returned where at most {max} were asked for",
            batch.messages.len()
        )));
    }
    let mut floor = from;
    for (i, message) in batch.messages.iter().enumerate() {
        if message.seq < floor || (i > 0 && message.seq == floor) {
            return Err(ServerError::Malformed(format!(
                "message {} is out of order (asked from {from})",
                message.seq
            )));
        }
        floor = message.seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_batches_are_refused() {
        use roost_protocol::{api::QueueMessage, queue::Sealing};
        let message = |seq| QueueMessage {
            seq,
            sealing: Sealing::Chain {
                start: None,
                ciphertext: vec![],
            },
        };
        let batch = |seqs: &[u64]| QueueBatch {
            messages: seqs.iter().map(|&s| message(s)).collect(),
            has_more: false,
        };
        assert!(check_batch(&batch(&[3, 4, 9]), 3, 10).is_ok());
        assert!(check_batch(&batch(&[2, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[4, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[5, 4]), 3, 10).is_err());
        assert!(check_batch(&batch(&[3, 4]), 3, 1).is_err());
    }
}
