//! The inbox: reading this client's QS queue and following the groups it is in
//! ([`Client::sync`]). Joins the groups of the Welcome bundles in it, applies the commits of its
//! groups in order, stores chat messages in their group's log, notes friendship tokens, and
//! returns everything else ([`Client::receive`]).
//!
//! Every message is processed and its result stored (the MLS state, a chat message in the
//! group's log) before the position moves past it, and acknowledged only after that, so a crash
//! loses nothing. Each group delivery carries its place in the group's order at the DS: one
//! handled before (again after a crash, or delivered twice) is skipped, and a log lists a
//! group's messages in that order. This client's own copy of a change it sent settles that
//! change if its DS never answered (see [`crate::mls::outbox`]); after the queue, sync sends
//! again whatever is still unsettled.
//!
//! Leaves carry pseudonyms only. The sender of a received message is the one its envelope's card
//! names, checked against the leaf that sent it as the group was at the message's epoch (see
//! `sender_of`), so a sender removed since is still named. A card that fails leaves the sender
//! unknown; no path names the reader, or anyone else, in its place.

use std::time::Duration;

use roost_protocol::{
    api::QueueItem,
    content::{Content, Envelope},
    crypto::CryptoError,
    ds::{GroupDelivery, MemberCard, WelcomeBundle},
    Timestamp, UserName,
};

use crate::{
    client::Client,
    device::Device,
    error::Error,
    friendship,
    mls::{
        incoming::Incoming,
        is_stale,
        key_packages::{INITIAL_KEY_PACKAGES, KEY_PACKAGES_LOW},
        members::{verified_members, VerifiedMember},
        outbox::{self, Resolved},
        MlsSession,
    },
    profiles,
    queues::{save_position, Opened, QueueReader},
    siblings,
    store::{Contact, GroupAccess, NamedGroup, Outgoing, QueuePosition, StoredMessage},
    transport::QueueKind,
    upkeep,
};

/// One message taken from this client's queue; `item` is an error if it could not be opened
/// (it is acknowledged all the same, so one bad message cannot jam the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub seq: u64,
    pub item: Result<QueueItem, CryptoError>,
}

/// What one [`Client::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Groups joined from a Welcome.
    pub joined: Vec<Vec<u8>>,
    /// Commits applied.
    pub commits: usize,
    /// Application messages processed.
    pub messages: usize,
    /// Groups this client was removed from.
    pub removed_from: Vec<Vec<u8>>,
    /// Groups this client fell out of step with (a commit it could not process) and rejoined.
    pub rejoined: Vec<Vec<u8>>,
    /// Groups in which this client renewed its own leaf (see `Client::with_leaf_renewal`).
    pub leaves_renewed: usize,
    /// Members' clients removed from named groups for staying away (see
    /// `Client::with_idle_removal`).
    pub idle_removed: usize,
    /// Application messages newly stored, with their group.
    pub received: Vec<(Vec<u8>, StoredMessage)>,
    /// Changes this client sent earlier whose DS had not answered, now taken.
    pub settled: Vec<Resolved>,
    /// Changes this client sent whose DS still has not answered.
    pub unsettled: usize,
    /// Deliveries that could not be used, and changes of this client that were not taken,
    /// with the reason.
    pub failed: Vec<String>,
    /// Queue items that are not group deliveries, as [`Client::receive`] returns them.
    pub other: Vec<Received>,
}

/// What a group message came to.
enum Processed {
    Commit,
    /// A commit that removed this client.
    Removed,
    /// A chat message, and what was stored for it (`None`: stored before).
    Message(Option<StoredMessage>),
    /// A friendship token shared in a connection group.
    Token,
    Proposal,
    /// This client's own copy of a change it sent, which settled it.
    Own(Resolved),
    /// Handled before.
    Duplicate,
    /// A commit this client could not process, after which it rejoined the group.
    Rejoined,
}

impl Client {
    /// Reads this client's QS queue: joins the groups of the Welcome bundles in it, applies the
    /// commits of its groups in order, and returns everything else.
    pub async fn sync(&self) -> Result<SyncReport, Error> {
        self.sync_waiting(Duration::ZERO).await
    }

    /// Syncs, waiting up to `wait` (at most 30 s) for a first message; for `watch`.
    pub async fn sync_waiting(&self, wait: Duration) -> Result<SyncReport, Error> {
        let mls = self.mls().lock().await;
        sync(self, &mls, wait).await
    }

    /// Takes every message now in this client's queue, waiting up to `wait` (at most 30 s) for
    /// a first one, and returns those that are not group deliveries (notices, messages from
    /// the user's own clients). Group deliveries are handled as [`Client::sync`] handles them,
    /// never dropped. Each message is handled and the position saved before it is
    /// acknowledged, so each is returned once.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Received>, Error> {
        Ok(self.sync_waiting(wait).await?.other)
    }
}

/// [`Client::sync`] with the MLS lock held: reads the queue, shares due friendship tokens, and
/// publishes key packages after a join used some up.
pub(crate) async fn sync(
    client: &Client,
    mls: &MlsSession<'_>,
    wait: Duration,
) -> Result<SyncReport, Error> {
    let mut report = read(client, mls, wait).await?;
    settle_pending(client, mls, &mut report).await?;
    let committed = upkeep::commit_proposals(client, mls).await;
    let renewed = upkeep::renew_leaves(client, mls).await;
    report.leaves_renewed += renewed.leaves;
    report.idle_removed += renewed.idle_removed;
    upkeep::propose_leaving_again(client, mls).await;
    for changes in [committed, siblings::bring_in(client, mls).await] {
        report.commits += changes.commits;
        report.failed.extend(changes.failed);
    }
    let _ = share_due_tokens(client, mls, false).await;
    share_due_profile(client, mls).await;
    if !report.joined.is_empty() {
        // Each join used up one of this client's key packages. Best effort: the next join
        // tries again, and the last resort stands in meanwhile.
        let _ = mls
            .top_up_key_packages(client.device(), KEY_PACKAGES_LOW, INITIAL_KEY_PACKAGES)
            .await;
    }
    Ok(report)
}

/// Handles what is queued and learns new peers, without sharing tokens: for a sender that
/// found the DS in a later epoch.
pub(crate) async fn catch_up(client: &Client, mls: &MlsSession<'_>) -> Result<SyncReport, Error> {
    read(client, mls, Duration::ZERO).await
}

/// Sends `content` into a group; a DS in a later epoch makes it catch up and try once more.
pub(crate) async fn send_content(
    client: &Client,
    mls: &MlsSession<'_>,
    access: &GroupAccess,
    content: &Content,
) -> Result<Resolved, Error> {
    let device = client.device();
    match mls.send_content(device, access, content).await {
        Err(e) if is_stale(&e) => {
            catch_up(client, mls).await?;
            // Catching up may have brought the group new keys.
            let access = device.store().current_access(access)?;
            mls.send_content(device, &access, content).await
        }
        // In step and with the right keys, yet no member of the epoch: the key the epoch's
        // committer announced is not the one members derive. A commit of this client announces
        // the right one for the next epoch.
        Err(e) if e.status() == Some(403) && e.code() == "not_a_member" => {
            mls.renew_own_leaf(device, access).await?;
            mls.send_content(device, access, content).await
        }
        sent => sent,
    }
}

/// Shares this user's friendship token in every connection where it is due (see
/// [`crate::friendship`]); answers in how many it did. Best effort: whatever fails is tried
/// again at the next sync.
pub(crate) async fn share_due_tokens(
    client: &Client,
    mls: &MlsSession<'_>,
    rotated: bool,
) -> usize {
    let device = client.device();
    let Ok(due) = friendship::due(device, rotated) else {
        return 0;
    };
    if due.is_empty() {
        return 0;
    }
    let Ok(token) = device.home().friendship_token(device.signer()).await else {
        return 0;
    };
    let content = Content::FriendshipToken(token);
    let mut shared = 0;
    for contact in due {
        if send_content(client, mls, &contact.access(), &content)
            .await
            .is_ok()
            && friendship::mark_shared(device, contact.group_id)
                .await
                .is_ok()
        {
            shared += 1;
        }
    }
    shared
}

/// Shares this user's profile in every connection where it is due (see [`crate::profiles`]).
/// Best effort: whatever fails is tried again at the next sync.
async fn share_due_profile(client: &Client, mls: &MlsSession<'_>) {
    let device = client.device();
    let Ok(Some((content, id, due))) = profiles::due(device) else {
        return;
    };
    for contact in due {
        if send_content(client, mls, &contact.access(), &content)
            .await
            .is_ok()
        {
            let _ = profiles::mark_shared(device, &contact.group_id, &id);
        }
    }
}

/// Sends again each change whose DS has not answered yet (the queue held no copy of it, so it
/// was not taken, or the DS remembers it). A message the DS refuses as stale was not taken:
/// its content is sent anew; a stale proposal (to leave) is made anew by
/// `upkeep::propose_leaving_again`. Still unanswered, a change stays kept (and counted in
/// `unsettled`); its group takes no new change until it is settled.
async fn settle_pending(
    client: &Client,
    mls: &MlsSession<'_>,
    report: &mut SyncReport,
) -> Result<(), Error> {
    let device = client.device();
    for op in device.store().run(|s| s.pending_ops()).await? {
        let group = hex::encode(&op.group_id);
        let (content, proposal) = match &op.request {
            Outgoing::Message { content, .. } => (Some(content.clone()), false),
            Outgoing::Commit { .. } => (None, false),
            Outgoing::Proposal { .. } => (None, true),
        };
        let group_id = op.group_id.clone();
        match mls.push(device, op).await {
            Ok(resolved) => report.settled.push(resolved),
            Err(e) if e.is_transient() => report.unsettled += 1,
            Err(e) => match content {
                Some(content) if is_stale(&e) => {
                    let Some(access) = device.store().group_access(&group_id)? else {
                        continue;
                    };
                    // Caught up by the queue just read; the DS did not take the first.
                    report
                        .settled
                        .push(mls.send_content(device, &access, &content).await?);
                }
                None if proposal && is_stale(&e) => {}
                _ => report
                    .failed
                    .push(format!("a change to group {group} was not taken: {e}")),
            },
        }
    }
    Ok(())
}

/// Drains the QS queue through a [`GroupReader`], then learns the peers of new contacts.
async fn read(client: &Client, mls: &MlsSession<'_>, wait: Duration) -> Result<SyncReport, Error> {
    let device = client.device();
    let mut reader = GroupReader {
        device,
        mls,
        report: SyncReport::default(),
    };
    client.queues().drain(device, &mut reader, wait).await?;
    learn_peers(device, mls).await;
    Ok(reader.report)
}

/// The QS queue's reader for [`Client::sync`]: handles each message, then saves the position.
struct GroupReader<'a> {
    device: &'a Device,
    mls: &'a MlsSession<'a>,
    report: SyncReport,
}

impl QueueReader for GroupReader<'_> {
    type Item = ();
    const KIND: QueueKind = QueueKind::Messages;

    async fn take(
        &mut self,
        messages: &[Opened],
        position: QueuePosition,
    ) -> Result<Vec<()>, Error> {
        for message in messages {
            self.handle_item(message.seq, message.item.clone()).await?;
            save_position(self.device, Self::KIND, message.position(&position)).await?;
        }
        Ok(vec![(); messages.len()])
    }
}

impl GroupReader<'_> {
    /// Handles one queue item; an `Err` is a local failure that stops the batch.
    async fn handle_item(
        &mut self,
        seq: u64,
        item: Result<QueueItem, CryptoError>,
    ) -> Result<(), Error> {
        let report = &mut self.report;
        match item {
            Ok(QueueItem::Group(GroupDelivery::Welcome(bundle))) => {
                match join_from_welcome(self.device, self.mls, &bundle).await {
                    Ok(true) => report.joined.push(bundle.group_id),
                    Ok(false) => {}
                    // Tried again at the next sync: the server could not be reached.
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => report.failed.push(format!(
                        "welcome into group {}: {e}",
                        hex::encode(&bundle.group_id)
                    )),
                }
            }
            Ok(QueueItem::Group(GroupDelivery::Message {
                group_id,
                seq,
                message,
            })) => {
                match process_group_message(self.device, self.mls, seq, &group_id, &message).await?
                {
                    Ok(Processed::Commit) => report.commits += 1,
                    Ok(Processed::Removed) => report.removed_from.push(group_id),
                    Ok(Processed::Message(stored)) => {
                        report.messages += 1;
                        if let Some(stored) = stored {
                            report.received.push((group_id, stored));
                        }
                    }
                    Ok(Processed::Own(resolved)) => report.settled.push(resolved),
                    Ok(Processed::Rejoined) => report.rejoined.push(group_id),
                    Ok(Processed::Token | Processed::Proposal | Processed::Duplicate) => {}
                    Err(e) => report
                        .failed
                        .push(format!("message of group {}: {e}", hex::encode(&group_id))),
                }
            }
            item => {
                if let Ok(QueueItem::Notice(notice)) = &item {
                    siblings::note(self.device, notice).await?;
                }
                report.other.push(Received { seq, item })
            }
        }
        Ok(())
    }
}

/// Joins the group a Welcome bundle invites into (see
/// [`MlsSession::join_from_welcome`]) and keeps it as a named group or a contact; settles
/// pending requests for that group. A named group this client was removed from is joined
/// again: its log stays, and what was said while it was out is not in it. Answers whether it
/// joined (false: it is in the group already).
async fn join_from_welcome(
    device: &Device,
    mls: &MlsSession<'_>,
    bundle: &WelcomeBundle,
) -> Result<bool, Error> {
    let store = device.store();
    let removed_from = match store.named_group(&bundle.group_id)? {
        Some(group) if group.removed => Some(group),
        Some(_) => return Ok(false),
        None if store.contact(&bundle.group_id)?.is_some() => return Ok(false),
        None => None,
    };
    let secrets = mls
        .join_from_welcome(device, bundle, removed_from.is_some())
        .await?;
    let (group_id, ds, keys) = (bundle.group_id.clone(), secrets.ds, secrets.keys);
    match secrets.name {
        Some(name) => {
            let group = NamedGroup {
                group_id,
                name,
                ds,
                keys,
                // Rejoined, it keeps its place in the list.
                since: removed_from.map_or_else(Timestamp::now, |old| old.since),
                removed: false,
            };
            store.run(move |s| s.save_named_group(&group)).await?;
        }
        None => {
            // The peer is known if this client holds a request for the group.
            let request = store
                .pending_requests()?
                .into_iter()
                .find(|r| r.package.body.connection_group_id == group_id);
            let contact = Contact {
                group_id: group_id.clone(),
                initiated: request.is_none(),
                peer: request.map(|r| r.from().clone()),
                ds,
                keys,
                since: Timestamp::now(),
                peer_token: None,
                token_shared: false,
            };
            store
                .run(move |s| {
                    s.save_contact(&contact)?;
                    s.remove_requests_for_group(&group_id)
                })
                .await?;
        }
    }
    Ok(true)
}

/// Processes the group delivery numbered `seq`. The outer error is a local failure (nothing
/// committed); the inner one a message that cannot be used. An application message is stored
/// in the group's log before the MLS state that consumed its key is committed; anything else
/// is marked handled once its MLS state is.
async fn process_group_message(
    device: &Device,
    mls: &MlsSession<'_>,
    seq: u64,
    group_id: &[u8],
    message: &[u8],
) -> Result<Result<Processed, Error>, Error> {
    let store = device.store();
    if store.handled_seq(group_id, seq)? {
        return Ok(Ok(Processed::Duplicate));
    }
    let pending = store.pending_op(group_id)?;
    if let Some(op) = pending.as_ref().filter(|op| op.mls_message() == message) {
        return Ok(Ok(Processed::Own(
            mls.resolve(device, op.clone(), seq).await?,
        )));
    }
    let processed = process_other(device, mls, seq, group_id, message).await?;
    // Marked only once used: a delivery that could not be used must not stand in for the
    // group's real one of that number (a peer server may relay anything).
    if matches!(&processed, Ok(p) if !matches!(p, Processed::Message(_))) {
        let group = group_id.to_vec();
        store.run(move |s| s.mark_seq(&group, seq)).await?;
    }
    if let (Ok(Processed::Commit | Processed::Removed), Some(op)) = (&processed, &pending) {
        if matches!(op.request, Outgoing::Commit { .. }) {
            // Another member's commit took this epoch: this client's commit was not taken.
            outbox::forget(device, group_id).await?;
            return Ok(Err(Error::Mls(
                "a change this client sent was overtaken by another member's; make it again".into(),
            )));
        }
    }
    Ok(processed)
}

/// Processes a delivery that is not this client's own (see [`process_group_message`]).
async fn process_other(
    device: &Device,
    mls: &MlsSession<'_>,
    seq: u64,
    group_id: &[u8],
    message: &[u8],
) -> Result<Result<Processed, Error>, Error> {
    let incoming = match mls.process(device, group_id, message) {
        Ok(incoming) => incoming,
        Err(Error::OutOfStep(reason)) => {
            mls.discard();
            return Ok(upkeep::rejoin(device, mls, group_id, &reason)
                .await?
                .map(|()| Processed::Rejoined));
        }
        Err(e) => {
            mls.discard();
            return Ok(Err(e));
        }
    };
    let processed = match incoming {
        Incoming::Commit { rekeyed } => {
            if let Some(keys) = rekeyed {
                // Before the merge is committed: a crash between leaves the commit to be
                // processed again, which derives the same keys. A member was removed: this
                // client renews its leaf at the end of the sync (see `upkeep::renew_leaves`).
                let group = group_id.to_vec();
                device
                    .store()
                    .run(move |s| {
                        s.set_group_keys(&group, &keys)?;
                        let mut upkeep = s.upkeep(&group)?;
                        upkeep.due_now = true;
                        s.save_upkeep(&group, &upkeep)
                    })
                    .await
                    .inspect_err(|_| mls.discard())?;
            }
            Processed::Commit
        }
        Incoming::Proposal => Processed::Proposal,
        Incoming::Removed => {
            mark_removed(device, group_id)
                .await
                .inspect_err(|_| mls.discard())?;
            Processed::Removed
        }
        Incoming::Application {
            pseudonym,
            sender_key,
            payload,
        } => {
            let handled = match Envelope::decode(&payload) {
                Ok(envelope) => {
                    let sent_by = Leaf {
                        group_id,
                        pseudonym: &pseudonym,
                        key: &sender_key,
                    };
                    take_content(device, sent_by, envelope, seq).await
                }
                Err(e) => Ok(Err(Error::Mls(format!("an unreadable message: {e}")))),
            };
            match handled.inspect_err(|_| mls.discard())? {
                Ok(processed) => processed,
                Err(unusable) => {
                    // Its key is spent either way.
                    mls.commit()?;
                    return Ok(Err(unusable));
                }
            }
        }
    };
    mls.commit()?;
    Ok(Ok(processed))
}

/// Marks a named group as one this client was removed from (or left).
pub(crate) async fn mark_removed(device: &Device, group_id: &[u8]) -> Result<(), Error> {
    let group_id = group_id.to_vec();
    device
        .store()
        .run(move |s| s.update_named_group(&group_id, |g| g.removed = true))
        .await?;
    Ok(())
}

/// Stores a message at its place `seq` in a group's log (`None` if stored before).
async fn store_message(
    device: &Device,
    group_id: &[u8],
    seq: u64,
    from: Option<&UserName>,
    text: &str,
) -> Result<Option<StoredMessage>, Error> {
    let (group_id, from, text) = (group_id.to_vec(), from.cloned(), text.to_owned());
    Ok(device
        .store()
        .run(move |s| s.append_message(&group_id, seq, from.as_ref(), &text))
        .await?)
}

/// The leaf that sent an application message, as the group was at the message's epoch.
#[derive(Clone, Copy)]
struct Leaf<'a> {
    group_id: &'a [u8],
    pseudonym: &'a [u8],
    key: &'a [u8],
}

/// Stores a chat text, or notes a friendship token, from the sender the envelope establishes.
/// The outer error is a local failure (tried again at the next sync); the inner one a message
/// that cannot be used.
async fn take_content(
    device: &Device,
    leaf: Leaf<'_>,
    envelope: Envelope,
    seq: u64,
) -> Result<Result<Processed, Error>, Error> {
    let from = sender_of(device, leaf, &envelope.sender).await?;
    match envelope.content {
        Content::Text(text) => {
            let stored = store_message(device, leaf.group_id, seq, from.as_ref(), &text);
            Ok(Ok(Processed::Message(stored.await?)))
        }
        Content::FriendshipToken(token) => match from {
            Some(from) => friendship::note_token(device, leaf.group_id, &from, token)
                .await
                .map(|()| Ok(Processed::Token)),
            None => Ok(Err(Error::Mls(
                "a friendship token from an unknown sender".into(),
            ))),
        },
        Content::Profile(reference) => match from {
            Some(from) => profiles::note_shared(device, leaf.group_id, &from, reference)
                .await
                .map(|()| Ok(Processed::Token)),
            None => Ok(Err(Error::Mls("a profile from an unknown sender".into()))),
        },
    }
}

/// The user who sent a message: the one its card names, if the card is for the leaf that sent
/// it, signed by the credential's key, and that credential chains to its domain's AS
/// credentials (checked once per leaf pseudonym, then remembered). `None` if the card fails a
/// check: the sender is unknown, never guessed. An error only if the check could not be made
/// (the AS unreachable): the message is then read again at the next sync.
async fn sender_of(
    device: &Device,
    leaf: Leaf<'_>,
    card: &MemberCard,
) -> Result<Option<UserName>, Error> {
    if card.leaf_key != leaf.key || card.verify().is_err() {
        return Ok(None);
    }
    let user = card.credential.user();
    let store = device.store();
    if store.member_user(leaf.group_id, leaf.pseudonym)?.as_ref() == Some(user) {
        return Ok(Some(user.clone()));
    }
    match device.verify_credential(&card.credential).await {
        Ok(()) => {}
        Err(e) if e.is_transient() => return Err(e),
        Err(_) => return Ok(None),
    }
    let learnt = vec![(leaf.pseudonym.to_vec(), user.clone())];
    let group_id = leaf.group_id.to_vec();
    store
        .run(move |s| s.save_member_users(&group_id, &learnt))
        .await?;
    Ok(Some(user.clone()))
}

/// Keeps which user each pseudonym of `members` belongs to.
async fn remember_members(
    device: &Device,
    group_id: &[u8],
    members: Vec<VerifiedMember>,
) -> Result<(), Error> {
    let learnt: Vec<(Vec<u8>, UserName)> = members
        .into_iter()
        .filter_map(|m| Some((m.pseudonym, m.credential?.user().clone())))
        .collect();
    let group_id = group_id.to_vec();
    Ok(device
        .store()
        .run(move |s| s.save_member_users(&group_id, &learnt))
        .await?)
}

/// For contacts whose peer is not known yet, looks at the members' credentials at the DS;
/// best effort (tried again at the next sync).
async fn learn_peers(device: &Device, mls: &MlsSession<'_>) {
    let Ok(contacts) = device.store().contacts() else {
        return;
    };
    for contact in contacts.into_iter().filter(|c| c.peer.is_none()) {
        let Ok(group) = mls.group(&contact.group_id) else {
            continue;
        };
        let Ok(members) = verified_members(device, &group, &contact.access()).await else {
            continue;
        };
        let peer = members
            .iter()
            .filter_map(|m| m.credential.as_ref())
            .map(|c| c.user())
            .find(|user| *user != device.user())
            .cloned();
        let group_id = contact.group_id;
        if peer.is_some() {
            let group_id = group_id.clone();
            let _ = device
                .store()
                .run(move |s| s.update_contact(&group_id, |c| c.peer = peer))
                .await;
        }
        let _ = remember_members(device, &group_id, members).await;
    }
}
