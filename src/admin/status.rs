//! `roost admin status`: the server at a glance.

use std::time::SystemTime;

use roost_storage::Standing;
use serde_json::{json, Value};

use super::{federation, render::time_of, store, AdminError, Core};

pub fn status(core: &Core) -> Result<Value, AdminError> {
    let store = &core.store;
    let accounts = store.accounts()?;
    let (mut deactivated, mut deleted) = (0, 0);
    for entry in accounts.standings() {
        match entry?.1 {
            Standing::Deactivated { .. } => deactivated += 1,
            Standing::Deleted { .. } => deleted += 1,
        }
    }
    let users = accounts.user_count();
    let queued = store.queues()?.total()?;
    let space = store.space();
    let serving = core.serving_since.map(|since| {
        let uptime = SystemTime::now().duration_since(since).unwrap_or_default();
        json!({ "since": time_of(since), "uptime_secs": uptime.as_secs() })
    });
    let federation = federation::list(core)?;
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "domain": core.domain.to_string(),
        "running": serving.is_some(),
        "serving": serving,
        "users": {
            "active": users - deactivated,
            "deactivated": deactivated,
            "deleted": deleted,
        },
        "clients": accounts.client_count(),
        "groups": store.groups()?.len(),
        "queued_messages": queued.messages,
        "queued_bytes": queued.bytes,
        "registration_tokens": accounts.token_count(),
        "store": {
            "path": store.path().display().to_string(),
            "size_bytes": store.size_on_disk()?,
            "free_disk_bytes": space.free_bytes().ok(),
        },
        "outbox": store::outbox(store)?,
        "keys": super::keys::show(core),
        "blocked_domains": federation["blocked"],
    }))
}
