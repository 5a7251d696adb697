//! How the DS hands a group's messages on: to the local QS, or through the federation actor of
//! another domain.

use std::collections::BTreeMap;

use actix::Addr;
use roost_protocol::{
    ds::{GroupDelivery, SealedQueueRef},
    federation::FederatedDelivery,
    Domain,
};

use super::ledger::Fanout;
use crate::{
    federation::{FederationActor, Relay},
    federation_policy::FederationPolicy,
    pool::{Ask, Pool},
    qs::{DeliveryError, SealedDelivery, ToQueue},
};

/// How the DS hands messages on: to the local QS ([`SealedDelivery`]), or — for another
/// domain's client — to the federation actor of that domain, which relays it to that domain's
/// QS.
#[derive(Clone)]
pub struct Delivery {
    pub qs: SealedDelivery,
    pub federation: Addr<Pool<FederationActor>>,
    pub policy: FederationPolicy,
}

impl Delivery {
    /// Enqueues `item` for every reference (or keeps it in the outbox for another domain) and
    /// waits until each is durable. False if some part failed for a reason worth retrying (a
    /// queue's actor was not running, the store failed): then it must be delivered again. A
    /// delivery refused for good (an unreadable reference, a domain not federated with, a
    /// queue's limit) is logged and counts as done.
    pub(super) async fn deliver(&self, refs: Vec<SealedQueueRef>, item: GroupDelivery) -> bool {
        let mut local = Vec::new();
        let mut remote: BTreeMap<Domain, Vec<FederatedDelivery>> = BTreeMap::new();
        for queue_ref in refs {
            if &queue_ref.domain == self.qs.refs().domain() {
                local.push(ToQueue {
                    queue: queue_ref,
                    item: item.clone(),
                    id: None,
                });
                continue;
            }
            if !self.policy.allows(&queue_ref.domain) {
                tracing::warn!(domain = %queue_ref.domain, "dropping a delivery for a domain this server does not federate with");
                continue;
            }
            remote
                .entry(queue_ref.domain.clone())
                .or_default()
                .push(FederatedDelivery {
                    id: rand::random(),
                    to: queue_ref.domain.clone(),
                    queue: queue_ref,
                    item: item.clone(),
                });
        }
        let relays = remote
            .into_iter()
            .map(|(domain, deliveries)| self.federation.ask(domain, Relay(deliveries)));
        let (local, relayed) = futures_util::future::join(
            self.qs.deliver(local),
            futures_util::future::join_all(relays),
        )
        .await;
        let mut done = true;
        match local {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        Ok(_) => {}
                        Err(DeliveryError::BadQueueRef) => {
                            tracing::warn!("dropping a delivery with an unreadable queue reference")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a group delivery could not be queued")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "group deliveries could not be queued; kept to deliver again");
                done = false;
            }
        }
        for outcome in relayed {
            if outcome.is_err() {
                tracing::error!(
                    "a group delivery for another domain could not be kept; kept to deliver again"
                );
                done = false;
            }
        }
        done
    }

    /// Hands on a request's message and its Welcome, and waits until each copy is durable;
    /// false if it must be delivered again (see [`deliver`](Self::deliver)).
    pub(super) async fn fan_out(&self, group_id: &[u8], fanout: Fanout) -> bool {
        let message = GroupDelivery::Message {
            group_id: group_id.to_vec(),
            seq: fanout.seq,
            message: fanout.message,
        };
        let mut done = self.deliver(fanout.recipients, message).await;
        if let Some((refs, welcome)) = fanout.welcome {
            done &= self.deliver(refs, GroupDelivery::Welcome(welcome)).await;
        }
        done
    }
}
