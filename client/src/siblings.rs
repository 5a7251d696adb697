//! A user's new client joins the groups and connections the user is in: the server announces
//! it to the user's other clients (`Notice::ClientAdded`), each of which notes it, and at the
//! end of its next sync adds it to every named group and connection group it is missing from,
//! with a key package claimed for that client alone. Several siblings may try at once: one
//! commit per group wins, the others meet a newer epoch and find the client there next time.
//!
//! The new client reads the groups from then on; what was said before it joined is not in its
//! log. It has no friendship token of the user's contacts until one is shared again (see
//! [`crate::friendship`]), so it cannot add them to groups before that.

use std::collections::BTreeSet;

use roost_protocol::{api::Notice, ClientId};

use crate::{
    client::Client,
    device::Device,
    error::Error,
    mls::{is_stale, members::verified_members, MlsSession},
    store::GroupAccess,
    upkeep::Commits,
};

/// Takes in what the server says of this user's clients: a client added (not this one) is to
/// be brought in; one deleted before it was, no longer.
pub(crate) async fn note(device: &Device, notice: &Notice) -> Result<(), Error> {
    match *notice {
        Notice::ClientAdded { client_id } if client_id != device.client_id() => Ok(device
            .store()
            .run(move |s| s.add_new_sibling(&client_id))
            .await?),
        Notice::ClientAdded { .. } => Ok(()),
        Notice::ClientDeleted { client_id } => forget(device, client_id).await,
        Notice::MessagesExpired { .. } => Ok(()),
    }
}

/// Forgets a noted client: it is in every group now, or was deleted.
async fn forget(device: &Device, client: ClientId) -> Result<(), Error> {
    Ok(device
        .store()
        .run(move |s| s.remove_new_sibling(&client))
        .await?)
}

/// Adds the noted new clients to every group they are missing from (one look at each group's
/// members, one commit per group); forgets each once it is in all. Best effort: whatever
/// fails is tried again at the next sync.
pub(crate) async fn bring_in(client: &Client, mls: &MlsSession<'_>) -> Commits {
    let mut report = Commits::default();
    let device = client.device();
    let siblings = match device.store().new_siblings() {
        Ok(siblings) if !siblings.is_empty() => siblings,
        _ => return report,
    };
    let mut pending: BTreeSet<ClientId> = BTreeSet::new();
    let groups = match groups_of(device) {
        Ok(groups) => groups,
        Err(e) => {
            report
                .failed
                .push(format!("adding this user's new clients: {e}"));
            return report;
        }
    };
    for (access, name) in groups {
        match bring_into(device, mls, &siblings, &access, name.as_deref()).await {
            Ok(added) => report.commits += usize::from(added),
            Err((missing, e)) => {
                pending.extend(missing);
                let worth_reporting =
                    !(e.is_transient() || is_stale(&e) || matches!(e, Error::NoKeyPackages(_)));
                if worth_reporting {
                    report.failed.push(format!(
                        "adding this user's new clients to group {}: {e}",
                        hex::encode(&access.group_id)
                    ));
                }
            }
        }
    }
    for sibling in siblings.into_iter().filter(|s| !pending.contains(s)) {
        let _ = forget(device, sibling).await;
    }
    report
}

/// The groups this client is in, each with its name (`None`: a connection).
fn groups_of(device: &Device) -> Result<Vec<(GroupAccess, Option<String>)>, Error> {
    let store = device.store();
    let named = store
        .named_groups()?
        .into_iter()
        .filter(|g| !g.removed)
        .map(|g| (g.access(), Some(g.name)));
    let contacts = store.contacts()?.into_iter().map(|c| (c.access(), None));
    Ok(named.chain(contacts).collect())
}

/// Adds those of `siblings` missing from one group, in one commit; answers whether it
/// committed, or which were left out and why.
async fn bring_into(
    device: &Device,
    mls: &MlsSession<'_>,
    siblings: &[ClientId],
    access: &GroupAccess,
    name: Option<&str>,
) -> Result<bool, (Vec<ClientId>, Error)> {
    let mut group = mls
        .group(&access.group_id)
        .map_err(|e| (siblings.to_vec(), e))?;
    let members = verified_members(device, &group, access)
        .await
        .map_err(|e| (siblings.to_vec(), e))?;
    let present: BTreeSet<ClientId> = members
        .iter()
        .filter_map(|m| m.credential.as_ref())
        .map(|c| c.client_id())
        .collect();
    let missing: Vec<ClientId> = siblings
        .iter()
        .copied()
        .filter(|s| !present.contains(s))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let fail = |e: Error| (missing.clone(), e);
    let mut claimed = Vec::new();
    for sibling in &missing {
        claimed.extend(
            mls.claim_own_clients(device, Some(*sibling))
                .await
                .map_err(fail)?,
        );
    }
    if claimed.len() < missing.len() {
        return Err(fail(Error::NoKeyPackages(device.user().clone())));
    }
    let signer = mls.signer(device).map_err(fail)?;
    mls.add_clients(device, &mut group, &signer, access, name, claimed)
        .await
        .map_err(fail)?;
    Ok(true)
}
