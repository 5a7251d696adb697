//! What an admin reads of the store itself: `inspect` (sizes, counts and ids only — the same
//! rules as for logs: group state and queued messages are ciphertext the server cannot read
//! anyway), `check`, and `repair` of a stopped server's store.

use roost_storage::{OnLostWrites, Store, StoreOptions};

use super::{AdminError, Core, Inspect};
use crate::settings::Settings;

/// What the server holds about `what`.
pub fn inspect(core: &Core, what: &Inspect) -> Result<serde_json::Value, AdminError> {
    let store = &core.store;
    let bad = |why: String| AdminError::Refused(why);
    Ok(match what {
        Inspect::Group { id } => {
            let group_id = hex::decode(id).map_err(|_| bad(format!("{id:?} is not hex")))?;
            match store.groups()?.get(&group_id)? {
                Some(state) => serde_json::json!({
                    "group": id,
                    "state_bytes": state.len(),
                    "state": "encrypted under the group-state EAR key, which the server never stores",
                }),
                None => serde_json::json!({ "group": id, "known": false }),
            }
        }
        Inspect::Queue { client } => {
            let client_id: roost_protocol::ClientId = client
                .parse()
                .map_err(|_| bad(format!("{client:?} is not a client id")))?;
            let registered = store.accounts()?.client(&client_id)?;
            serde_json::json!({
                "client": client,
                "registered": registered.is_some(),
                "messages": store.queues()?.summary(&client_id)?,
                "connection_requests": store.connection_queues()?.summary(&client_id)?,
            })
        }
        Inspect::Usage => usage(store)?,
        Inspect::Outbox => serde_json::json!({ "outbox": outbox(store)? }),
        Inspect::Tokens => tokens(&core.token_issuer, &core.token_costs)?,
    })
}

/// Tokens issued per period to all users together, the issuer keys and what operations cost.
fn tokens(
    issuer: &roost_actors::tokens::TokenIssuer,
    costs: &roost_protocol::tokens::policy::Costs,
) -> Result<serde_json::Value, AdminError> {
    let now = roost_protocol::Timestamp::now();
    let settings = issuer.settings();
    let issued: Vec<_> = issuer
        .totals(now, roost_actors::tokens::KEPT_TOTALS)?
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(from, count)| serde_json::json!({ "period_from": from.0, "issued": count }))
        .collect();
    let keys: Vec<_> = issuer
        .published(now)
        .into_iter()
        .map(|key| {
            serde_json::json!({
                "issues_from": key.issues_from.0,
                "issues_until": key.issues_until.0,
                "redeemable_until": key.redeemable_until.0,
                "signing_now": key.issues_at(now),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "period_secs": settings.period_secs,
        "per_user_per_period": settings.per_user_per_period,
        "issued": issued,
        "keys": keys,
        "costs": costs,
    }))
}

/// Deliveries waiting for each domain.
pub fn outbox(store: &Store) -> Result<serde_json::Value, AdminError> {
    let outbox = store.outbox()?;
    Ok(outbox
        .domains()?
        .into_iter()
        .map(|d| serde_json::json!({ "domain": d.to_string(), "waiting": outbox.len(&d) }))
        .collect())
}

/// How many largest queues `inspect usage` lists.
const LARGEST_QUEUES: usize = 10;

/// Messages and bytes queued in all, and in the largest queues.
fn queued(kind: roost_storage::QueueStore) -> Result<serde_json::Value, AdminError> {
    let by_queue = kind.usage_by_queue()?;
    let total = by_queue.iter().fold(
        roost_storage::QueueUsage::default(),
        |mut sum, (_, usage)| {
            sum.messages += usage.messages;
            sum.bytes += usage.bytes;
            sum
        },
    );
    let largest: Vec<_> = by_queue
        .iter()
        .take(LARGEST_QUEUES)
        .map(|(client, usage)| serde_json::json!({ "client": client.to_string(), "messages": usage.messages, "bytes": usage.bytes }))
        .collect();
    Ok(serde_json::json!({ "queues": by_queue.len(), "total": total, "largest": largest }))
}

fn usage(store: &Store) -> Result<serde_json::Value, AdminError> {
    let space = store.space();
    Ok(serde_json::json!({
        "users": store.accounts()?.user_count(),
        "message_queues": queued(store.queues()?)?,
        "connection_queues": queued(store.connection_queues()?)?,
        "groups": store.groups()?.len(),
        "relays_waiting": store.outbox()?.domains()?.len(),
        "disk": {
            "free_bytes": space.free_bytes().ok(),
            "reserve_bytes": space.reserve_bytes(),
        },
    }))
}

/// Reads every record (off the serving threads) and reports what is damaged.
pub async fn check(store: Store) -> Result<serde_json::Value, AdminError> {
    let report = off_the_serving_threads(move || store.check()).await?;
    Ok(serde_json::to_value(report).expect("serialisable"))
}

/// Runs a store operation that reads or copies the whole store on the blocking pool.
async fn off_the_serving_threads<T: Send + 'static>(
    work: impl FnOnce() -> roost_storage::Result<T> + Send + 'static,
) -> Result<T, AdminError> {
    actix_web::rt::task::spawn_blocking(work)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .map_err(AdminError::from)
}

/// Copies the store into `dir` (off the serving threads).
pub async fn backup(
    store: Store,
    dir: std::path::PathBuf,
) -> Result<serde_json::Value, AdminError> {
    let into = dir.clone();
    let copied = off_the_serving_threads(move || store.backup(&into)).await?;
    Ok(serde_json::json!({
        "backup": dir.display().to_string(),
        "files": copied.files,
        "bytes": copied.bytes,
        "writes_paused_ms": copied.writes_paused.as_millis() as u64,
    }))
}

/// Compacts the store (off the serving threads).
pub async fn compact(store: Store) -> Result<serde_json::Value, AdminError> {
    let compacted = off_the_serving_threads(move || store.compact()).await?;
    Ok(serde_json::json!({
        "bytes_before": compacted.bytes_before,
        "bytes_after": compacted.bytes_after,
        "records": compacted.records,
        "writes_paused_ms": compacted.writes_paused.as_millis() as u64,
    }))
}

/// `roost admin restore` (server stopped): the backup in `dir` takes the store's place.
pub fn restore(
    settings: &Settings,
    dir: &std::path::Path,
) -> Result<serde_json::Value, AdminError> {
    let restored = Store::restore(dir, &settings.storage.path, settings.storage.options())?;
    Ok(serde_json::json!({
        "restored": dir.display().to_string(),
        "backup_taken": super::render::time(roost_protocol::Timestamp(restored.taken_at)),
        "store_replaced_kept_at": restored.kept.map(|kept| kept.display().to_string()),
        "one_time_connection_packages_forgotten": restored.one_time_connection_packages_forgotten,
        "one_time_key_packages_forgotten": restored.one_time_key_packages_forgotten,
        "queues_renumbered": restored.queues_renumbered,
    }))
}

/// `check` of a stopped server's store: opened to report lost writes, not to refuse them.
pub fn check_stopped(settings: &Settings) -> Result<serde_json::Value, AdminError> {
    let options = StoreOptions {
        on_lost_writes: OnLostWrites::Report,
        ..settings.storage.options()
    };
    let store = Store::open_with(&settings.storage.path, options)?;
    let report = store.check();
    store.close()?;
    Ok(serde_json::to_value(report?).expect("serialisable"))
}

/// `roost admin repair`: takes a store that lost writes as it is, so the server starts on it
/// again (what was lost stays lost). Only with the server stopped. Says what it accepted.
pub fn repair(settings: &Settings) -> Result<String, AdminError> {
    let options = StoreOptions {
        on_lost_writes: OnLostWrites::Accept,
        ..settings.storage.options()
    };
    // Opened this way the store takes itself as it is, and still reports what it lost.
    let store = Store::open_with(&settings.storage.path, options)?;
    let lost = store.check()?;
    let rewritten = store.kept_damaged().map(|kept| {
        format!(
            "rewrote its readable records into a fresh data file (the damaged store is kept at {}); ",
            kept.display()
        )
    });
    store.close()?;
    Ok(match (rewritten, lost.is_sound()) {
        (None, true) => "the store was sound; nothing to repair".into(),
        (rewritten, _) => format!(
            "{}accepted the store as it is; {} problem(s) remain for `roost admin check` to list, and what was lost stays lost",
            rewritten.unwrap_or_default(),
            lost.problems.len()
        ),
    })
}
