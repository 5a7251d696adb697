//! A user's new client joins the groups and connections the user is in: the server announces
//! it to the user's other clients (`Notice::ClientAdded`), each of which notes it, and at the
//! end of its next sync adds it to every named group and connection group it is missing from,
//! with a key package claimed for that client alone. Several siblings may try at once: one
//! commit per group wins, the others meet a newer epoch and find the client there next time.
//!
//! The new client reads the groups from then on; what was said before it joined is not in its
//! log. It has no friendship token of the user's contacts until one is shared again (see
//! [`crate::friendship`]), so it cannot add them to groups before that.

use roost_protocol::ClientId;

use crate::{
    client::Client,
    device::Device,
    error::Error,
    mls::{is_stale, members::verified_members, MlsSession},
    store::GroupAccess,
};

/// Notes a client the server says was added to this user (not this client itself).
pub(crate) async fn note_added(device: &Device, client: ClientId) -> Result<(), Error> {
    if client == device.client_id() {
        return Ok(());
    }
    Ok(device
        .store()
        .run(move |s| s.add_new_sibling(&client))
        .await?)
}

/// Forgets a noted client that was deleted before it was brought in.
pub(crate) async fn note_deleted(device: &Device, client: ClientId) -> Result<(), Error> {
    Ok(device
        .store()
        .run(move |s| s.remove_new_sibling(&client))
        .await?)
}

/// What [`bring_in`] did.
#[derive(Debug, Default)]
pub(crate) struct BroughtIn {
    /// Commits that added a new client.
    pub commits: usize,
    pub failed: Vec<String>,
}

/// Adds each noted new client to every group it is missing from; forgets it once it is in
/// all. Best effort: whatever fails is tried again at the next sync.
pub(crate) async fn bring_in(client: &Client, mls: &MlsSession<'_>) -> BroughtIn {
    let mut report = BroughtIn::default();
    let device = client.device();
    let Ok(siblings) = device.store().new_siblings() else {
        return report;
    };
    for sibling in siblings {
        match bring_into_all(device, mls, sibling, &mut report).await {
            Ok(true) => {
                let _ = note_deleted(device, sibling).await;
            }
            Ok(false) => {}
            Err(e) => report
                .failed
                .push(format!("adding this user's new client {sibling}: {e}")),
        }
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

/// Whether `sibling` is now in every group; an error only for a failure worth reporting.
async fn bring_into_all(
    device: &Device,
    mls: &MlsSession<'_>,
    sibling: ClientId,
    report: &mut BroughtIn,
) -> Result<bool, Error> {
    let mut everywhere = true;
    let signer = mls.signer(device)?;
    for (access, name) in groups_of(device)? {
        let mut group = mls.group(&access.group_id)?;
        let added = async {
            let members = verified_members(device, &group, &access).await?;
            if members
                .iter()
                .filter_map(|m| m.credential.as_ref())
                .any(|c| c.client_id() == sibling)
            {
                return Ok(0);
            }
            let claimed = mls.claim_own_clients(device, Some(sibling)).await?;
            if claimed.is_empty() {
                return Err(Error::NoKeyPackages(device.user().clone()));
            }
            mls.add_clients(
                device,
                &mut group,
                &signer,
                &access,
                name.as_deref(),
                claimed,
            )
            .await
        }
        .await;
        match added {
            Ok(0) => {}
            Ok(_) => report.commits += 1,
            Err(e) if e.is_transient() || is_stale(&e) || matches!(e, Error::NoKeyPackages(_)) => {
                everywhere = false
            }
            Err(e) => return Err(e),
        }
    }
    Ok(everywhere)
}
