//! Metrics in Prometheus's text format, on a listener of their own (`metrics.bind`; off unless
//! set), never on the public port. The crates record through the `metrics` facade: requests by
//! route pattern and status and their latency (here, [`record_request`]), actors alive per kind
//! (`roost-actors`' pools), relays per peer domain (federation actors), flush sizes and
//! durations (`roost-storage`'s flusher). What only the store can count — queued messages,
//! users, groups, the store's size, the outbox per domain — is read when Prometheus scrapes, at
//! most every [`SAMPLE_EVERY`].
//!
//! Labels are route patterns, status codes, actor kinds and peer *domains*: never a user name, a
//! client id, a group id or a path as sent (`tests/metrics.rs` checks a scrape for them).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    dev::{Server, ServiceRequest, ServiceResponse},
    middleware::Next,
    web, App, HttpResponse, HttpServer,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use roost_storage::Store;

use crate::error::ServeError;

/// How old the store's figures in a scrape may be: reading them walks the queues.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Buckets of the latency histograms, in seconds.
const SECONDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of how many writers one flush made durable.
const WAITERS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Starts recording (process-wide): from here on every metric the crates record is kept.
pub fn install() -> Result<PrometheusHandle, ServeError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("roost_store_flush_waiters".into()), &WAITERS)
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    describe();
    metrics::gauge!("roost_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("roost_start_time_seconds").set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    Ok(handle)
}

/// The HELP line of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "roost_http_requests_total",
        "Requests answered, by route pattern and status."
    );
    describe_histogram!(
        "roost_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, by route pattern."
    );
    describe_gauge!(
        "roost_actors_alive",
        "Actors in memory, by kind (each retires when idle)."
    );
    describe_histogram!(
        "roost_store_flush_waiters",
        "Writes made durable by one flush of the store."
    );
    describe_histogram!(
        "roost_store_flush_seconds",
        Unit::Seconds,
        "Time of one flush and fsync of the store."
    );
    describe_counter!(
        "roost_store_flush_failures_total",
        "Flushes of the store that failed."
    );
    describe_counter!(
        "roost_federation_deliveries_relayed_total",
        "Deliveries another homeserver took, by its domain."
    );
    describe_counter!(
        "roost_federation_deliveries_refused_total",
        "Deliveries another homeserver refused for good, by its domain."
    );
    describe_counter!(
        "roost_federation_deliveries_dropped_total",
        "Deliveries dropped because their domain was blocked."
    );
    describe_counter!(
        "roost_federation_relay_retries_total",
        "Relay attempts that failed and will be retried, by domain."
    );
    describe_gauge!(
        "roost_federation_outbox_waiting",
        "Deliveries waiting to be relayed, by domain."
    );
    describe_gauge!(
        "roost_queued_messages",
        "Messages waiting in clients' queues."
    );
    describe_gauge!(
        "roost_queued_bytes",
        Unit::Bytes,
        "Bytes waiting in clients' queues."
    );
    describe_gauge!(
        "roost_queued_connection_requests",
        "Connection requests waiting in clients' connection queues."
    );
    describe_gauge!(
        "roost_users",
        "Users with an account (active or deactivated)."
    );
    describe_gauge!("roost_groups", "Groups the DS holds.");
    describe_gauge!(
        "roost_store_size_bytes",
        Unit::Bytes,
        "The store's size on disk."
    );
    describe_gauge!(
        "roost_store_free_disk_bytes",
        Unit::Bytes,
        "Free space on the store's disk."
    );
    describe_gauge!("roost_build_info", "The running version, as a label.");
    describe_gauge!(
        "roost_start_time_seconds",
        Unit::Seconds,
        "When the server started (Unix time)."
    );
}

/// The metrics listener, running, and the addresses it listens on.
pub fn server(
    bind: SocketAddr,
    handle: PrometheusHandle,
    store: Store,
) -> Result<(Server, Vec<SocketAddr>), ServeError> {
    let scrape = web::Data::new(Scrape {
        handle,
        store,
        sampled: Arc::new(Mutex::new(None)),
        outbox_domains: Arc::default(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(scrape.clone())
            .route("/metrics", web::get().to(metrics))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(serde_json::json!({
                    "error": "not_found",
                    "message": "this listener serves GET /metrics only",
                }))
            }))
    })
    .workers(1)
    .disable_signals()
    .bind(bind)
    .map_err(|source| ServeError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

struct Scrape {
    handle: PrometheusHandle,
    store: Store,
    /// When the store's figures were last read.
    sampled: Arc<Mutex<Option<Instant>>>,
    /// The domains the last reading found deliveries waiting for: one whose outbox emptied
    /// since is reported as 0, not as what it last had.
    outbox_domains: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

async fn metrics(scrape: web::Data<Scrape>) -> HttpResponse {
    let due = {
        let mut sampled = scrape.sampled.lock().unwrap_or_else(|p| p.into_inner());
        let due = sampled.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY);
        if due {
            *sampled = Some(Instant::now());
        }
        due
    };
    if due {
        let (store, domains) = (scrape.store.clone(), scrape.outbox_domains.clone());
        match web::block(move || sample(&store, &domains)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("metrics: cannot read the store's figures: {e}"),
            Err(e) => tracing::warn!("metrics: cannot read the store's figures: {e}"),
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(scrape.handle.render())
}

/// What only the store can count, as gauges.
fn sample(
    store: &Store,
    reported: &Mutex<std::collections::BTreeSet<String>>,
) -> Result<(), roost_storage::StorageError> {
    let messages = store.queues()?.total()?;
    metrics::gauge!("roost_queued_messages").set(messages.messages as f64);
    metrics::gauge!("roost_queued_bytes").set(messages.bytes as f64);
    let requests = store.connection_queues()?.total()?;
    metrics::gauge!("roost_queued_connection_requests").set(requests.messages as f64);
    metrics::gauge!("roost_users").set(store.accounts()?.user_count() as f64);
    metrics::gauge!("roost_groups").set(store.groups()?.len() as f64);
    metrics::gauge!("roost_store_size_bytes").set(store.size_on_disk()? as f64);
    if let Ok(free) = store.space().free_bytes() {
        metrics::gauge!("roost_store_free_disk_bytes").set(free as f64);
    }
    let outbox = store.outbox()?;
    let mut waiting: std::collections::BTreeMap<String, usize> = outbox
        .domains()?
        .iter()
        .map(|domain| (domain.to_string(), outbox.len(domain)))
        .collect();
    let mut reported = reported.lock().unwrap_or_else(|p| p.into_inner());
    for emptied in reported.iter() {
        waiting.entry(emptied.clone()).or_insert(0);
    }
    for (domain, count) in &waiting {
        metrics::gauge!("roost_federation_outbox_waiting", "domain" => domain.clone())
            .set(*count as f64);
    }
    *reported = waiting.into_keys().collect();
    Ok(())
}

/// Counts and times every request of the public API, by route pattern (never the path as sent:
/// it may hold a user name) and status.
pub async fn record_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Only the methods routes take: any other word a client sends would be a label of its own.
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    let method = METHODS
        .into_iter()
        .find(|known| *known == request.method().as_str())
        .unwrap_or("OTHER");
    let response = next.call(request).await?;
    let route = format!(
        "{method} {}",
        response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into())
    );
    let status = response.status().as_u16().to_string();
    metrics::counter!("roost_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("roost_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}
