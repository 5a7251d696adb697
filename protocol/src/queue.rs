//! A client's queue as the QS serves it: what a message holds ([`QueueItem`]), how it is sealed
//! for its client (a symmetric key chain per queue, started with one HPKE seal), and batches.
//!
//! The QS holds a [`QueueChain`] per queue *in memory only*: the key for the queue's next
//! sequence number. Message `seq` is encrypted (ChaCha20-Poly1305) under a key derived from the
//! chain key for `seq`, and the chain then steps forward one way (HKDF), so the key just used is
//! gone. A new chain starts whenever the QS has none for the queue (a queue actor starting, a
//! restart) and after [`CHAIN_LENGTH`] messages; the message that starts it carries the chain
//! key HPKE-sealed to the client's queue key. The client keeps its own copy of the chain and
//! steps it as it reads.
//!
//! What this buys: an HPKE seal (an X25519 exchange, ~100 µs) per chain instead of per message;
//! and no key that opens a queued message is ever written to the server's store, so whoever
//! later reads the store (or its disk) cannot open what was queued before. Messages queued
//! before chains existed stay [`Sealing::Hpke`] and open as they always did.

use chacha20poly1305::{aead::Aead, aead::Payload, ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    codec,
    connection::SealedConnectionRequest,
    crypto::{CryptoError, HpkePublicKey, HpkeSecretKey, Sealed},
    ds::GroupDelivery,
    ClientId,
};

/// Messages one chain serves before the QS starts another, so that a server whose memory is
/// read at one moment exposes at most this many later messages of a queue.
///
/// A client must open its queue's messages in order: the message that starts a chain is the
/// only way into it, so acknowledging one unopened leaves the rest of its chain unreadable.
pub const CHAIN_LENGTH: u64 = 1000;

const HPKE_INFO: &str = "roost qs queue message v1";
const CHAIN_START_INFO: &str = "roost qs queue chain start v1";
const MESSAGE_KEY_LABEL: &[u8] = b"roost qs queue message key";
const CHAIN_STEP_LABEL: &[u8] = b"roost qs queue chain step";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueBatch {
    /// In strictly increasing sequence order.
    pub messages: Vec<QueueMessage>,
    /// More messages follow the last one returned.
    pub has_more: bool,
}

/// What a queue message holds once opened by its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueItem {
    /// The homeserver tells the client about its own account.
    Notice(Notice),
    /// Another client of the same user sent this.
    FromOwnClient { sender: ClientId, payload: Vec<u8> },
    /// Someone asks to connect (in a connection queue); opaque until the client opens it.
    ConnectionRequest(SealedConnectionRequest),
    /// A group's message or a Welcome, fanned out by a DS.
    Group(GroupDelivery),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    ClientAdded {
        client_id: ClientId,
    },
    ClientDeleted {
        client_id: ClientId,
    },
    /// `count` messages waited in this queue longer than the server keeps them (`after_secs`,
    /// its retention) and were dropped unread.
    MessagesExpired {
        count: u64,
        after_secs: u64,
    },
}

/// One queued message as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub seq: u64,
    pub sealing: Sealing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sealing {
    /// HPKE-sealed to the client's queue key (every message queued before chains existed).
    Hpke(Sealed),
    /// Encrypted under the queue's chain key for this message's `seq`.
    Chain {
        /// Present when this message starts a chain: its key for this `seq`, HPKE-sealed to the
        /// client's queue key.
        start: Option<Sealed>,
        ciphertext: Vec<u8>,
    },
}

/// The key of a queue's chain for message `seq`: secret, shown by `Debug` as its position only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueChain {
    seq: u64,
    key: [u8; 32],
}

impl std::fmt::Debug for QueueChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueChain(at {})", self.seq)
    }
}

impl QueueChain {
    /// A fresh chain whose first message is `seq`.
    pub fn start(seq: u64) -> Self {
        QueueChain {
            seq,
            key: rand::random(),
        }
    }

    /// The sequence number this key is for.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The chain one message on; this one's key cannot be had from it.
    pub fn next(&self) -> QueueChain {
        QueueChain {
            seq: self.seq + 1,
            key: expand(&self.key, CHAIN_STEP_LABEL),
        }
    }

    /// The chain at `seq`, stepping forward; a chain never steps back.
    fn at(&self, seq: u64) -> Result<QueueChain, CryptoError> {
        // No chain serves more than CHAIN_LENGTH messages: only a broken or hostile server
        // would ask for a longer walk.
        if seq < self.seq || seq - self.seq > CHAIN_LENGTH {
            return Err(CryptoError::Decryption);
        }
        let mut chain = self.clone();
        while chain.seq < seq {
            chain = chain.next();
        }
        Ok(chain)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&expand(&self.key, MESSAGE_KEY_LABEL)).into())
    }
}

fn expand(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::from_prk(key)
        .expect("32 bytes are a valid SHA-256 PRK")
        .expand(label, &mut out)
        .expect("32 bytes are a valid HKDF-SHA256 output length");
    out
}

/// Binds a message to its queue and position: it cannot be moved to another.
fn queue_aad(client: &ClientId, seq: u64) -> [u8; 24] {
    let mut aad = [0u8; 24];
    aad[..16].copy_from_slice(&client.0);
    aad[16..].copy_from_slice(&seq.to_be_bytes());
    aad
}

/// Each message key encrypts one message, so a fixed nonce is never reused with one key.
const NONCE: [u8; 12] = [0; 12];

impl QueueMessage {
    /// Seals `item` for `client`'s queue at `chain.seq()` (the QS's side). With `starts_chain`
    /// (the client's queue key), the message also starts the chain: it carries the chain key
    /// sealed to that key, and the client learns the chain from it.
    pub fn seal(
        chain: &QueueChain,
        starts_chain: Option<&HpkePublicKey>,
        client: &ClientId,
        item: &QueueItem,
    ) -> Result<Self, CryptoError> {
        let aad = queue_aad(client, chain.seq);
        let start = starts_chain
            .map(|queue_key| queue_key.seal(CHAIN_START_INFO, &aad, &chain.key))
            .transpose()?;
        let ciphertext = chain
            .cipher()
            .encrypt(
                (&NONCE).into(),
                Payload {
                    msg: &codec::encode(item),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption does not fail");
        Ok(QueueMessage {
            seq: chain.seq,
            sealing: Sealing::Chain { start, ciphertext },
        })
    }

    /// Seals `item` with HPKE alone, as every message was sealed before chains.
    pub fn seal_hpke(
        queue_key: &HpkePublicKey,
        client: &ClientId,
        seq: u64,
        item: &QueueItem,
    ) -> Result<Self, CryptoError> {
        let sealed = queue_key.seal(HPKE_INFO, &queue_aad(client, seq), &codec::encode(item))?;
        Ok(QueueMessage {
            seq,
            sealing: Sealing::Hpke(sealed),
        })
    }

    /// Opens a message of `client`'s own queue (the client's side). `chain` is the client's
    /// copy: taken from the message when it starts one, and left at the next message's key
    /// whenever this message was chain-sealed, even if its ciphertext would not open, so one
    /// damaged message does not cost the ones after it.
    pub fn open(
        &self,
        queue_key: &HpkeSecretKey,
        client: &ClientId,
        chain: &mut Option<QueueChain>,
    ) -> Result<QueueItem, CryptoError> {
        let aad = queue_aad(client, self.seq);
        let plain = match &self.sealing {
            Sealing::Hpke(sealed) => queue_key.open(HPKE_INFO, &aad, sealed)?,
            Sealing::Chain { start, ciphertext } => {
                let here = match start {
                    Some(start) => {
                        let key = queue_key.open(CHAIN_START_INFO, &aad, start)?;
                        QueueChain {
                            seq: self.seq,
                            key: key.try_into().map_err(|_| CryptoError::Decryption)?,
                        }
                    }
                    None => chain
                        .as_ref()
                        .ok_or(CryptoError::Decryption)?
                        .at(self.seq)?,
                };
                *chain = Some(here.next());
                here.cipher()
                    .decrypt(
                        (&NONCE).into(),
                        Payload {
                            msg: ciphertext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| CryptoError::Decryption)?
            }
        };
        codec::decode(&plain).map_err(|_| CryptoError::Decryption)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> QueueItem {
        QueueItem::FromOwnClient {
            sender: ClientId([n; 16]),
            payload: vec![n; 10],
        }
    }

    #[test]
    fn a_chain_opens_its_messages_in_order_after_one_hpke_start() {
        let (sk, pk) = HpkeSecretKey::generate();
        let client = ClientId::random();
        let mut server = QueueChain::start(5);
        let mut sealed = Vec::new();
        for n in 0..4u8 {
            let start = (n == 0).then_some(&pk);
            sealed.push(QueueMessage::seal(&server, start, &client, &item(n)).unwrap());
            server = server.next();
        }
        let mut chain = None;
        for (n, message) in sealed.iter().enumerate() {
            assert_eq!(
                message.open(&sk, &client, &mut chain).unwrap(),
                item(n as u8)
            );
        }
        assert_eq!(chain.unwrap().seq(), 9);
    }

    #[test]
    fn a_chain_stepped_past_a_message_cannot_open_it() {
        let (sk, _) = HpkeSecretKey::generate();
        let client = ClientId::random();
        let first = QueueChain::start(1);
        let one = QueueMessage::seal(&first, None, &client, &item(1)).unwrap();
        let two = QueueMessage::seal(&first.next(), None, &client, &item(2)).unwrap();
        let stepped = first.next().next();
        for message in [&one, &two] {
            assert!(message
                .open(&sk, &client, &mut Some(stepped.clone()))
                .is_err());
        }
        let mut from_the_start = Some(first);
        assert_eq!(
            one.open(&sk, &client, &mut from_the_start).unwrap(),
            item(1)
        );
        assert_eq!(
            two.open(&sk, &client, &mut from_the_start).unwrap(),
            item(2)
        );
    }

    #[test]
    fn a_message_opens_only_for_its_client_and_position() {
        let (sk, pk) = HpkeSecretKey::generate();
        let client = ClientId::random();
        let chain = QueueChain::start(7);
        let chained = QueueMessage::seal(&chain, Some(&pk), &client, &item(1)).unwrap();
        let hpke = QueueMessage::seal_hpke(&pk, &client, 7, &item(1)).unwrap();
        for message in [chained, hpke] {
            assert_eq!(message.open(&sk, &client, &mut None).unwrap(), item(1));
            let moved = QueueMessage {
                seq: 8,
                ..message.clone()
            };
            assert!(moved.open(&sk, &client, &mut None).is_err());
            assert!(message.open(&sk, &ClientId::random(), &mut None).is_err());
        }
    }

    #[test]
    fn a_damaged_message_still_moves_the_chain_so_the_next_one_opens() {
        let (sk, pk) = HpkeSecretKey::generate();
        let client = ClientId::random();
        let chain = QueueChain::start(1);
        let mut first = QueueMessage::seal(&chain, Some(&pk), &client, &item(1)).unwrap();
        if let Sealing::Chain { ciphertext, .. } = &mut first.sealing {
            ciphertext[0] ^= 1;
        }
        let second = QueueMessage::seal(&chain.next(), None, &client, &item(2)).unwrap();
        let mut mine = None;
        assert!(first.open(&sk, &client, &mut mine).is_err());
        assert_eq!(second.open(&sk, &client, &mut mine).unwrap(), item(2));
    }

    #[test]
    fn a_client_does_not_step_its_chain_further_than_a_server_can_have_queued() {
        let (sk, pk) = HpkeSecretKey::generate();
        let client = ClientId::random();
        let chain = QueueChain::start(1);
        let _ = QueueMessage::seal(&chain, Some(&pk), &client, &item(1)).unwrap();
        let far = QueueMessage {
            seq: u64::MAX,
            sealing: Sealing::Chain {
                start: None,
                ciphertext: vec![0; 40],
            },
        };
        let mut mine = Some(chain.next());
        assert!(far.open(&sk, &client, &mut mine).is_err());
        let notice = QueueItem::Notice(Notice::ClientAdded {
            client_id: ClientId::random(),
        });
        let later = QueueMessage::seal(&chain.next(), None, &client, &notice).unwrap();
        assert_eq!(later.open(&sk, &client, &mut mine).unwrap(), notice);
    }
}
