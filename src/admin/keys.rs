//! `roost admin keys`: the fingerprints of the signing keys in force, and rotating one, through
//! the [`roost_actors::keys::KeyRing`] that everything signing or serving them asks.

use serde_json::{json, Value};

use super::{render::time, AdminError, Core, KeyKind, KeysCommand};

pub async fn run(core: &Core, command: KeysCommand) -> Result<Value, AdminError> {
    match command {
        KeysCommand::Show => Ok(show(core)),
        KeysCommand::Rotate { key } => {
            let rotated = match key {
                KeyKind::Intermediate => core.keys.rotate_intermediate().await?,
                KeyKind::Federation => core.keys.rotate_federation().await?,
            };
            Ok(json!({ "rotated": key, "old": rotated.old, "new": rotated.new }))
        }
    }
}

/// Fingerprints of the keys in force, and of the retired intermediates still served.
pub fn show(core: &Core) -> Value {
    let as_keys = core.keys.as_keys();
    let served = core.keys.as_credentials();
    let fingerprint = |key: &roost_protocol::VerifyingKey| key.fingerprint().to_string();
    let current = fingerprint(&as_keys.intermediate.body.verifying_key);
    let retired: Vec<Value> = served
        .intermediates
        .iter()
        .map(|i| fingerprint(&i.body.verifying_key))
        .filter(|f| *f != current)
        .map(Value::String)
        .collect();
    json!({
        "as_credential": fingerprint(&as_keys.as_credential.body.verifying_key),
        "intermediate": current,
        "intermediate_valid_until": time(as_keys.intermediate.body.validity.not_after),
        "retired_intermediates_served": retired,
        "federation": fingerprint(&core.keys.federation_key().verifying_key()),
    })
}
