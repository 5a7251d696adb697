//! Establishing a connection: asking a user to connect ([`Connections::connect`]) and accepting
//! a request ([`Connections::accept`]).
//!
//! The initiator discovers the responder's clients, creates the connection group with its own
//! other clients added by one commit (each gets a Welcome bundle), and seals a
//! connection-establishment package to every responder client. A responder client first reads
//! its QS queue: a Welcome into that group means another client of its user already accepted,
//! and it joins from that. Else it joins by external commit through the DS's *join connection
//! group* endpoint (which takes one joiner) and then adds its own other clients. If the join is
//! refused, it reads its queue once more, waiting briefly, for a Welcome; without one the
//! request is discarded.

use std::time::{Duration, Instant};

use openmls::prelude::*;
use roost_protocol::{
    codec,
    connection::{ConnectionEstablishmentBody, ConnectionEstablishmentPackage},
    ds::{GroupKeys, MemberCard},
    Timestamp, UserName,
};

use super::Connections;
use crate::{
    client::Client,
    error::Error,
    inbox,
    mls::{parse_message, signer::member_entry, signer::MlsSigner, MlsSession},
    store::{Contact, PendingRequest},
};

/// After a refused join, how long to wait for a Welcome from another client of the same user.
pub const WELCOME_GRACE: Duration = Duration::from_secs(3);

/// What [`Connections::connect`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub group_id: Vec<u8>,
    pub peer: UserName,
    /// How many of the peer's clients were sent the invitation.
    pub invited: usize,
    /// How many of this user's other clients were added to the group.
    pub own_clients_added: usize,
}

/// How a client came into a connection group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinedVia {
    /// By external commit: this client accepted first.
    ExternalCommit,
    /// From a Welcome: another client of the user accepted first.
    Welcome,
    /// It was in the group already.
    AlreadyConnected,
}

impl JoinedVia {
    pub fn as_str(&self) -> &'static str {
        match self {
            JoinedVia::ExternalCommit => "external_commit",
            JoinedVia::Welcome => "welcome",
            JoinedVia::AlreadyConnected => "already_connected",
        }
    }
}

/// What [`Connections::accept`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub group_id: Vec<u8>,
    pub peer: UserName,
    pub via: JoinedVia,
    /// How many of this user's other clients were added (after an external join only).
    pub own_clients_added: usize,
    /// Adding the other clients failed; the connection itself stands.
    pub own_clients_error: Option<String>,
}

impl Connections<'_> {
    /// Asks `user` to connect: discovers the user's clients (every package verified), creates
    /// the connection group on the home DS with this user's other clients added, and sends
    /// each of the user's clients a sealed invitation. The connection is kept as a contact.
    pub async fn connect(self, user: &UserName) -> Result<Connected, Error> {
        let device = self.client.device();
        if user == device.user() {
            return Err(Error::ConnectToSelf);
        }
        let packages = self.discover(user).await?;
        let mls = self.client.mls().lock().await;
        let signer = mls.signer(device)?;
        let siblings = mls.claim_own_clients(device, None).await?;
        let (mut group, access) = mls.create_group(device, &signer, true).await?;
        let contact = Contact {
            group_id: access.group_id.clone(),
            peer: Some(user.clone()),
            ds: access.ds.clone(),
            keys: access.keys.clone(),
            since: Timestamp::now(),
            initiated: true,
            peer_token: None,
            token_shared: false,
        };
        let saved = contact.clone();
        device.store().run(move |s| s.save_contact(&saved)).await?;
        let own_clients_added = mls
            .add_clients(device, &mut group, &signer, &access, None, siblings)
            .await?;

        // The responder may look at who asks, if it wants to: it fetches nothing by itself.
        let initiator_profile = device.store().own_profile()?.map(|own| own.reference);
        for package in &packages {
            let invitation = ConnectionEstablishmentPackage::new(
                ConnectionEstablishmentBody {
                    sender_client_credential: device.credential().clone(),
                    connection_group_id: contact.group_id.clone(),
                    group_state_ear_key: contact.keys.group_state_ear_key.clone(),
                    credential_ear_key: contact.keys.credential_ear_key.clone(),
                    responder: user.clone(),
                    connection_package: package.hash(),
                    initiator_profile: initiator_profile.clone(),
                },
                &device.identity().signing_key,
            );
            self.send_request(package, &invitation).await?;
        }
        Ok(Connected {
            group_id: contact.group_id,
            peer: user.clone(),
            invited: packages.len(),
            own_clients_added,
        })
    }

    /// Accepts a pending connection request (see the module documentation for the steps).
    pub async fn accept(self, id: &str) -> Result<Accepted, Error> {
        let (client, device) = (self.client, self.client.device());
        let store = device.store();
        let mls = client.mls().lock().await;
        let request = store
            .pending_request(id)?
            .ok_or_else(|| Error::UnknownRequest(id.to_owned()))?;
        let group_id = request.package.body.connection_group_id.clone();
        let peer = request.from().clone();
        let accepted = |via| Accepted {
            group_id: group_id.clone(),
            peer: peer.clone(),
            via,
            own_clients_added: 0,
            own_clients_error: None,
        };
        // Settled once this client is in the group: its other requests for it go.
        let connected = async || -> Result<bool, Error> {
            if store.contact(&group_id)?.is_none() {
                return Ok(false);
            }
            let group_id = group_id.clone();
            store
                .run(move |s| s.remove_requests_for_group(&group_id))
                .await?;
            Ok(true)
        };
        if connected().await? {
            return Ok(accepted(JoinedVia::AlreadyConnected));
        }
        // 1. Another client of this user may have accepted already.
        inbox::sync(client, &mls, Duration::ZERO).await?;
        if connected().await? {
            return Ok(accepted(JoinedVia::Welcome));
        }
        // 2. Join by external commit.
        let signer = mls.signer(device)?;
        let failure = match join_externally(client, &mls, &signer, &request).await {
            Ok((mut group, contact)) => {
                connected().await?;
                let added = match mls.claim_own_clients(device, None).await {
                    Ok(claimed) => {
                        let access = contact.access();
                        mls.add_clients(device, &mut group, &signer, &access, None, claimed)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let mut outcome = accepted(JoinedVia::ExternalCommit);
                match added {
                    Ok(n) => outcome.own_clients_added = n,
                    Err(e) => outcome.own_clients_error = Some(e.to_string()),
                }
                // Best effort: the next sync shares the token if this fails.
                inbox::share_due_tokens(client, &mls, false).await;
                return Ok(outcome);
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => e,
        };
        // 3. The join was refused: a Welcome may be on its way from another client.
        let deadline = Instant::now() + WELCOME_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            inbox::sync(client, &mls, left).await?;
            if connected().await? {
                return Ok(accepted(JoinedVia::Welcome));
            }
            if left.is_zero() {
                break;
            }
        }
        let group_id = group_id.clone();
        store
            .run(move |s| s.remove_requests_for_group(&group_id))
            .await?;
        Err(Error::ConnectionFailed {
            peer,
            reason: failure.to_string(),
        })
    }
}

/// Fetches the group's external-commit information from the initiator's DS, checks that every
/// member is a client of the initiator, and joins by external commit. The local group and the
/// contact are stored only if the DS takes the join.
async fn join_externally(
    client: &Client,
    mls: &MlsSession<'_>,
    signer: &MlsSigner,
    request: &PendingRequest,
) -> Result<(MlsGroup, Contact), Error> {
    let device = client.device();
    let body = &request.package.body;
    let group_id = body.connection_group_id.clone();
    let peer = request.from().clone();
    let refuse = |reason: String| Error::BadConnectionGroup(reason);
    let ds = device.server_of(peer.domain())?;
    let info = ds
        .external_commit_info(&group_id, &body.group_state_ear_key)
        .await?;
    if info.encrypted_credentials.is_empty() {
        return Err(refuse("the group has no members".into()));
    }
    let credentials = device.as_credentials_of(peer.domain()).await?;
    for encrypted in &info.encrypted_credentials {
        let plain = body
            .credential_ear_key
            .decrypt(&group_id, encrypted)
            .map_err(|_| refuse("a member's credential does not decrypt".into()))?;
        let card: MemberCard = codec::decode(&plain)
            .map_err(|e| refuse(format!("a member's credential is unreadable: {e}")))?;
        card.verify()
            .map_err(|_| refuse("a member's card signature does not verify".into()))?;
        let credential = card.credential;
        credentials
            .verify_client(&credential, Timestamp::now())
            .map_err(|e| refuse(format!("a member's credential does not verify: {e}")))?;
        if credential.user() != &peer {
            return Err(refuse(format!(
                "the group holds a client of {}, not only of {peer}",
                credential.user()
            )));
        }
    }
    let group_info = match parse_message(&info.group_info)? {
        MlsMessageBodyIn::GroupInfo(info) => info,
        _ => return Err(refuse("the DS served no group info".into())),
    };
    if group_info.group_id().as_slice() != group_id.as_slice() {
        return Err(refuse("the group info is of another group".into()));
    }
    let contact = Contact {
        group_id: group_id.clone(),
        peer: Some(peer.clone()),
        ds: peer.domain().clone(),
        keys: GroupKeys {
            group_state_ear_key: body.group_state_ear_key.clone(),
            credential_ear_key: body.credential_ear_key.clone(),
        },
        since: Timestamp::now(),
        initiated: false,
        peer_token: None,
        token_shared: false,
    };
    let joiner = member_entry(
        device.own_queue_ref().await?,
        &group_id,
        &contact.keys,
        &signer.own_card(device),
    );
    let (group, seq) = mls
        .join_by_external_commit(
            &ds,
            signer,
            &group_id,
            group_info,
            &body.group_state_ear_key,
            joiner,
        )
        .await?;
    let saved = contact.clone();
    device
        .store()
        .run(move |s| {
            s.save_contact(&saved)?;
            s.mark_seq(&saved.group_id, seq)
        })
        .await?;
    Ok((group, contact))
}
