//! `roost admin federation`: blocking and unblocking a domain at run time, through the
//! [`roost_actors::federation_policy::FederationPolicy`] that every relay in and out consults.

use roost_actors::{federation::Wake, Route};
use roost_protocol::Domain;
use serde_json::{json, Value};

use super::{render::time, AdminError, Core, FederationCommand};

pub async fn run(core: &Core, command: FederationCommand) -> Result<Value, AdminError> {
    match command {
        FederationCommand::Block { domain } => {
            refuse_own(core, &domain)?;
            let changed = core.policy.block(&domain).await?;
            // Its federation actor drops what waits for it.
            wake(core, domain.clone());
            Ok(json!({ "domain": domain.to_string(), "blocked": true, "changed": changed }))
        }
        FederationCommand::Unblock { domain } => {
            refuse_own(core, &domain)?;
            let changed = core.policy.unblock(&domain).await?;
            let allowed = core.policy.allows(&domain);
            Ok(json!({
                "domain": domain.to_string(),
                "blocked": false,
                "changed": changed,
                "federates": allowed,
            }))
        }
        FederationCommand::List => list(core),
    }
}

/// The blocked domains and the settings' lists.
pub fn list(core: &Core) -> Result<Value, AdminError> {
    let blocked: Vec<Value> = core
        .policy
        .blocked()?
        .into_iter()
        .map(|(domain, at)| json!({ "domain": domain.to_string(), "blocked": time(at) }))
        .collect();
    let names = |domains: &[Domain]| domains.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let configured = core.policy.configured();
    Ok(json!({
        "blocked": blocked,
        "settings_allow": names(&configured.allow),
        "settings_deny": names(&configured.deny),
    }))
}

fn refuse_own(core: &Core, domain: &Domain) -> Result<(), AdminError> {
    match domain == &core.domain {
        true => Err(AdminError::Refused(format!(
            "{domain} is this server's own domain"
        ))),
        false => Ok(()),
    }
}

fn wake(core: &Core, domain: Domain) {
    core.federation.do_send(Route {
        key: domain,
        message: Wake,
    });
}
