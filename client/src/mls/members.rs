//! Who the members of a group are. Leaves carry pseudonyms only; the DS keeps each member's
//! card (a client credential bound to the leaf's MLS signature key by the client's signature)
//! encrypted under the group's credential EAR key. A card is trusted only if its signature and
//! its credential's chain to the AS credentials of its domain verify.

use std::collections::HashMap;

use openmls::prelude::*;
use roost_protocol::{
    codec, credentials::ClientCredential, ds::MemberCard, AsCredentials, Domain, Timestamp,
};

use super::incoming::pseudonym_of;
use crate::{device::Device, error::Error, store::GroupAccess};

/// The member cards the DS keeps for a group, decrypted and decoded (not checked), each with
/// its plaintext; cards that do not open or decode are left out.
async fn cards(device: &Device, access: &GroupAccess) -> Result<Vec<(MemberCard, Vec<u8>)>, Error> {
    let info = device
        .server_of(&access.ds)?
        .external_commit_info(&access.group_id, &access.keys.group_state_ear_key)
        .await?;
    Ok(info
        .encrypted_credentials
        .iter()
        .filter_map(|encrypted| {
            let plain = access
                .keys
                .credential_ear_key
                .decrypt(&access.group_id, encrypted)
                .ok()?;
            Some((codec::decode::<MemberCard>(&plain).ok()?, plain))
        })
        .collect())
}

/// The member cards the DS keeps for a group, decrypted (not checked), by the MLS signature
/// key they name — what a commit that changes the group's keys encrypts again.
pub async fn member_cards(
    device: &Device,
    access: &GroupAccess,
) -> Result<HashMap<Vec<u8>, Vec<u8>>, Error> {
    let cards = cards(device, access).await?;
    Ok(cards
        .into_iter()
        .map(|(card, plain)| (card.leaf_key, plain))
        .collect())
}

/// A leaf of a group, with the client credential the DS keeps for it if that verifies.
#[derive(Debug, Clone)]
pub struct VerifiedMember {
    pub leaf: u32,
    pub pseudonym: Vec<u8>,
    pub credential: Option<ClientCredential>,
}

/// The members of `group` with the client credentials of the member cards the DS keeps
/// (matched to leaves by their MLS signature key, so the DS's list may be of another epoch),
/// each card's signature and credential chain checked against the AS credentials of its
/// domain; `None` where no valid card names the leaf's key.
pub async fn verified_members(
    device: &Device,
    group: &MlsGroup,
    access: &GroupAccess,
) -> Result<Vec<VerifiedMember>, Error> {
    let mut authorities: HashMap<Domain, AsCredentials> = HashMap::new();
    let mut verified: HashMap<Vec<u8>, ClientCredential> = HashMap::new();
    for (card, _) in cards(device, access).await? {
        if card.verify().is_err() {
            continue;
        }
        let domain = card.credential.user().domain().clone();
        if !authorities.contains_key(&domain) {
            let Ok(fetched) = device.as_credentials_of(&domain).await else {
                continue;
            };
            authorities.insert(domain.clone(), fetched);
        }
        if authorities[&domain]
            .verify_client(&card.credential, Timestamp::now())
            .is_ok()
        {
            verified.insert(card.leaf_key, card.credential);
        }
    }
    let mut members: Vec<VerifiedMember> = group
        .members()
        .map(|m| VerifiedMember {
            leaf: m.index.u32(),
            credential: verified.get(m.signature_key.as_slice()).cloned(),
            pseudonym: pseudonym_of(m.credential),
        })
        .collect();
    members.sort_by_key(|m| m.leaf);
    Ok(members)
}
