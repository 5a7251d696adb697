//! Waiting for news without holding anything: for a view that stays open (the app) and syncs
//! when something arrives. [`Client::sync_waiting`] waits with the MLS lock held, so a user's
//! own send would wait behind it; [`Client::wait_for_news`] only asks the homeserver to answer
//! when either queue holds a message past what this client has read, reads nothing and
//! acknowledges nothing, so the sync that follows is the one reader.
//!
//! Owns: that wait. Must not touch: the queues' positions or any message's meaning.

use std::time::Duration;

use crate::{client::Client, error::Error, transport::Queue, transport::QueueKind};

/// What is waiting in this client's queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct News {
    /// Group deliveries (chat, group changes, invitations): a [`Client::sync`] reads them.
    pub messages: bool,
    /// Connection requests: `client.connections().requests()` reads them.
    pub requests: bool,
}

impl News {
    pub fn any(self) -> bool {
        self.messages || self.requests
    }
}

impl Client {
    /// Waits up to `wait` (at most 30 s) until either queue holds a message this client has not
    /// read, and says which do; both `false` when the wait ran out.
    pub async fn wait_for_news(&self, wait: Duration) -> Result<News, Error> {
        let messages = self.queue_has_news(QueueKind::Messages, wait);
        let requests = self.queue_has_news(QueueKind::Connections, wait);
        tokio::pin!(messages, requests);
        // The first answer decides; the other queue is looked at again without waiting.
        let news = tokio::select! {
            messages = &mut messages => News {
                messages: messages?,
                requests: self.queue_has_news(QueueKind::Connections, Duration::ZERO).await?,
            },
            requests = &mut requests => News {
                messages: self.queue_has_news(QueueKind::Messages, Duration::ZERO).await?,
                requests: requests?,
            },
        };
        Ok(news)
    }

    async fn queue_has_news(&self, kind: QueueKind, wait: Duration) -> Result<bool, Error> {
        let device = self.device();
        let from = device.store().queue_position(kind)?.next_from();
        let batch = device
            .home()
            .fetch_queue(
                device.signer(),
                Queue::new(kind, device.client_id()),
                from,
                1,
                wait,
                None,
            )
            .await?;
        Ok(!batch.messages.is_empty())
    }
}
