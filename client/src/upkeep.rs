//! Keeping groups healthy: a client that fell out of step with a group rejoins it; at each sync
//! a client commits the removals members proposed (a member leaving), proposes its own again
//! where a commit passed it over, renews its own leaf in each group on a schedule and after
//! another member's removal, and removes from named groups the members whose clients never come
//! back (the records are `store::upkeep`'s).

use openmls::prelude::LeafNodeIndex;
use roost_protocol::Timestamp;

use crate::{
    client::Client,
    device::Device,
    error::Error,
    mls::{is_stale, MlsSession},
    store::upkeep::Upkeep,
};

/// The commits a sync step made, and what failed (tried again at the next sync).
#[derive(Debug, Default)]
pub(crate) struct Commits {
    pub commits: usize,
    pub failed: Vec<String>,
}

/// Commits what members proposed in the named groups this client is in (a member leaving).
/// Every member's client tries; the first commit wins and the others' meet a newer epoch,
/// which their next sync reads. Best effort: what fails is tried again at the next sync.
pub(crate) async fn commit_proposals(client: &Client, mls: &MlsSession<'_>) -> Commits {
    let mut report = Commits::default();
    let device = client.device();
    let Ok(groups) = device.store().named_groups() else {
        return report;
    };
    for group in groups.into_iter().filter(|g| !g.removed) {
        match mls.commit_proposals(device, &group.access()).await {
            Ok(true) => report.commits += 1,
            Ok(false) => {}
            Err(e) if e.is_transient() || is_stale(&e) => {}
            Err(e) => report.failed.push(format!(
                "committing the proposals of group {}: {e}",
                hex::encode(&group.group_id)
            )),
        }
    }
    report
}

/// Proposes again to leave each group this client left whose removal a commit passed over
/// (a proposal lasts one epoch). Best effort, like [`commit_proposals`].
pub(crate) async fn propose_leaving_again(client: &Client, mls: &MlsSession<'_>) {
    let device = client.device();
    let Ok(groups) = device.store().named_groups() else {
        return;
    };
    for group in groups.into_iter().filter(|g| g.removed) {
        let _ = mls.propose_leaving(device, &group.access()).await;
    }
}

/// What one pass of leaf renewal did.
#[derive(Debug, Default)]
pub(crate) struct Renewed {
    /// Groups in which this client renewed its leaf.
    pub leaves: usize,
    /// Other members' clients removed from named groups for staying away.
    pub idle_removed: usize,
}

/// Renews this client's own leaf in every group where it is due (see
/// `Client::with_leaf_renewal`), or where another member was removed since; a group met for
/// the first time starts its clock now. Then, after a scheduled renewal, in
/// a named group, removes the members whose leaves stayed the same for too many of these
/// renewals (see `store::upkeep`). Best effort: what fails (a change on its way, a newer epoch)
/// is tried again at the next sync.
pub(crate) async fn renew_leaves(client: &Client, mls: &MlsSession<'_>) -> Renewed {
    let mut renewed = Renewed::default();
    let (device, store) = (client.device(), client.device().store());
    let (Ok(contacts), Ok(named)) = (store.contacts(), store.named_groups()) else {
        return renewed;
    };
    let accesses = contacts.iter().map(|c| (c.access(), false)).chain(
        named
            .iter()
            .filter(|g| !g.removed)
            .map(|g| (g.access(), true)),
    );
    let now = Timestamp::now();
    let save =
        |group_id: Vec<u8>, upkeep: Upkeep| store.run(move |s| s.save_upkeep(&group_id, &upkeep));
    for (access, named) in accesses {
        let Ok(mut upkeep) = store.upkeep(&access.group_id) else {
            continue;
        };
        let scheduled = match upkeep.renewed_at {
            Some(at) => at.plus_secs(client.leaf_renewal().as_secs()) <= now,
            None => {
                upkeep.renewed_at = Some(now);
                let _ = save(access.group_id.clone(), upkeep).await;
                continue;
            }
        };
        if !scheduled && !upkeep.due_now {
            continue;
        }
        if mls.renew_own_leaf(device, &access).await.is_err() {
            continue;
        }
        let Ok(mut group) = mls.group(&access.group_id) else {
            continue;
        };
        upkeep.due_now = false;
        let idle = if scheduled {
            let own = group.own_leaf_index();
            let others = group
                .members()
                .filter(|m| m.index != own)
                .map(|m| (m.signature_key, m.encryption_key));
            upkeep.renewed(now, others, client.idle_after())
        } else {
            upkeep.renewed_at = Some(now);
            Vec::new()
        };
        if save(access.group_id.clone(), upkeep).await.is_err() {
            continue;
        }
        renewed.leaves += 1;
        // A connection stays, however long the other side is away.
        if !named || idle.is_empty() {
            continue;
        }
        let leaves: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| idle.contains(&m.signature_key))
            .map(|m| m.index)
            .collect();
        let Ok(signer) = mls.signer(device) else {
            continue;
        };
        if mls
            .remove_members(device, &mut group, &signer, &access, &leaves)
            .await
            .is_ok()
        {
            renewed.idle_removed += leaves.len();
        }
    }
    renewed
}

/// Takes the group's current state again after a commit this client could not process (see
/// `MlsSession::rejoin`): no member stays behind for good. Its own copy of the rejoin is then
/// marked handled. `Err` only for a failure worth trying again (the server unreachable).
pub(crate) async fn rejoin(
    device: &Device,
    mls: &MlsSession<'_>,
    group_id: &[u8],
    reason: &str,
) -> Result<Result<(), Error>, Error> {
    let Some(access) = device.store().group_access(group_id)? else {
        return Ok(Err(Error::OutOfStep(reason.to_owned())));
    };
    match mls.rejoin(device, &access).await {
        Ok(seq) => {
            let group = group_id.to_vec();
            device.store().run(move |s| s.mark_seq(&group, seq)).await?;
            Ok(Ok(()))
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => Ok(Err(Error::OutOfStep(format!(
            "{reason}; rejoining failed too: {e}"
        )))),
    }
}
