//! Wiring: opens the store, starts the actors, serves HTTP until a signal arrives.

use std::{sync::Arc, time::Duration};

use actix_web::{web, App, HttpServer};

use roost_actors::{
    accounts::{AccountsActor, AccountsConfig},
    federation::{FederationActor, FederationDeps, RetryPolicy, Wake},
    group::{Delivery, GroupActor, GroupDeps},
    key_packages::KeyPackageDeps,
    pool::ToEveryone,
    qs::{QueueRefs, SealedDelivery},
    queue::{Closing, QueueDeps},
    registry::RegistryDeps,
    KeyPackageActor, Pool, QueueActor, RegistryActor, Route, Workers,
};
use roost_protocol::{
    credentials::Validity, AsCredential, AsCredentials, AsIntermediateCredential, Domain,
    SigningKey, Timestamp,
};
use roost_storage::{ServerKeys, Store};

use crate::{
    admin,
    federation::{HttpTransport, PeerKeys},
    http::{
        self,
        auth::ReplayGuard,
        connections::{refuse_over_limit, AddressSlots},
        health::refuse_new_data_when_full,
        rate_limit::RateLimiter,
        AppState, FederationState,
    },
    settings::Settings,
};

const TEN_YEARS_SECS: u64 = 10 * 365 * 24 * 3600;
/// Password hashes at once, at most: one per core up to this (19 MiB each while it runs).
const MAX_HASHING_THREADS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Storage(#[from] roost_storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "the store at {path} holds the keys of domain {stored}, but server.domain is {configured}"
    )]
    DomainMismatch {
        path: String,
        stored: Domain,
        configured: Domain,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store failed to write and must be reopened: start roost again (under a supervisor it restarts by itself)")]
    StoreFailed,
    #[error("the store did not close within {0} s; every acknowledged write was already durable")]
    CloseTimeout(u64),
}

/// The AS keys: created on first start, reused afterwards.
fn server_keys(store: &Store, domain: &Domain) -> Result<ServerKeys, ServeError> {
    let keys = store.server_keys()?;
    let keys = match keys.current()? {
        Some(existing) => existing,
        None => {
            let as_key = SigningKey::generate();
            let intermediate_key = SigningKey::generate();
            let validity = Validity::starting_now(TEN_YEARS_SECS);
            let fresh = ServerKeys {
                as_credential: AsCredential::issue(domain.clone(), &as_key, validity),
                intermediate: AsIntermediateCredential::issue(
                    domain.clone(),
                    &intermediate_key,
                    validity,
                    &as_key,
                ),
                as_key,
                intermediate_key,
            };
            let stored = keys.get_or_insert(fresh)?;
            store.persist_blocking()?;
            tracing::info!(
                fingerprint = %stored.as_credential.body.verifying_key.fingerprint(),
                "created the AS credential"
            );
            stored
        }
    };
    if &keys.as_credential.body.domain != domain {
        return Err(ServeError::DomainMismatch {
            path: store.path().display().to_string(),
            stored: keys.as_credential.body.domain.clone(),
            configured: domain.clone(),
        });
    }
    Ok(keys)
}

pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    let store = Store::open_with(&settings.storage.path, settings.storage.options())?;
    let domain = settings.server.domain.clone();
    let keys = Arc::new(server_keys(&store, &domain)?);
    let idle_after = Duration::from_secs(settings.actors.idle_secs);
    // The actors that validate MLS (group commits of milliseconds to ~100 ms, key packages) get
    // a thread of their own, so that such work does not hold up every queue. The queue actors
    // stay on the system thread with the pools: measured, spreading them over threads of their
    // own cost more in hand-offs between threads than it gained (BENCHMARKS.md).
    let (mls_workers, mls_threads) = Workers::spawn(1);

    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queues = Pool::<QueueActor>::start(
        QueueDeps {
            queues: store.queues()?,
            connection_queues: store.connection_queues()?,
            accounts: store.accounts()?,
            durability: store.durability().clone(),
            limits: settings.limits.queues(),
            closing: closing.clone(),
            idle_after,
        },
        idle_after,
    );
    let registries = Pool::<RegistryActor>::start(
        RegistryDeps {
            packages: store.connection_packages()?,
            accounts: store.accounts()?,
            durability: store.durability().clone(),
            max_package_lifetime_secs: settings.connections.max_package_lifetime_secs,
            idle_after,
        },
        idle_after,
    );
    let queue_refs = QueueRefs::new(domain.clone(), store.server_keys()?.queue_ref_key()?);
    let deliveries = SealedDelivery::new(queue_refs.clone(), queues.clone());
    let federation_key = store.server_keys()?.federation_key()?;
    let resolver = settings.federation.resolver.clone();
    let outbox = store.outbox()?;
    let federation = Pool::<FederationActor>::start(
        FederationDeps {
            outbox: outbox.clone(),
            durability: store.durability().clone(),
            transport: Arc::new(HttpTransport::new(
                domain.clone(),
                federation_key.clone(),
                resolver.clone(),
            )),
            retry: RetryPolicy {
                initial: Duration::from_millis(settings.federation.retry_initial_ms),
                max: Duration::from_millis(settings.federation.retry_max_ms),
            },
            idle_after,
        },
        idle_after,
    );
    // Deliveries kept before a restart go out again.
    for waiting in outbox.domains()? {
        tracing::info!(domain = %waiting, backlog = outbox.len(&waiting), "resuming relays");
        federation.do_send(Route {
            key: waiting,
            message: Wake,
        });
    }
    let groups = Pool::<GroupActor>::start_on(
        GroupDeps {
            groups: store.groups()?,
            durability: store.durability().clone(),
            delivery: Delivery {
                qs: deliveries.clone(),
                federation,
                policy: settings.federation.policy(),
            },
            max_members: settings.limits.members_per_group,
            idle_after,
        },
        idle_after,
        mls_workers.clone(),
    );
    let key_package_store = store.key_packages()?;
    let key_packages = Pool::<KeyPackageActor>::start_on(
        KeyPackageDeps {
            store: key_package_store.clone(),
            accounts: store.accounts()?,
            durability: store.durability().clone(),
            queue_refs: queue_refs.clone(),
            idle_after,
        },
        idle_after,
        mls_workers,
    );
    let account_store = store.accounts()?;
    let accounts = {
        let (store, durability, keys, queues, registries, key_packages) = (
            account_store.clone(),
            store.durability().clone(),
            keys.clone(),
            queues.clone(),
            registries.clone(),
            key_packages.clone(),
        );
        let config = AccountsConfig {
            domain: domain.clone(),
            policy: settings.registration.policy.into(),
            client_credential_lifetime_secs: settings.credentials.client_lifetime_secs,
            max_clients_per_user: settings.limits.clients_per_user,
            hashing_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_HASHING_THREADS),
        };
        actix::Actor::start(AccountsActor::new(
            config,
            store,
            durability,
            keys,
            queues,
            registries,
            key_packages,
        )?)
    };

    let state = Arc::new(AppState {
        domain: domain.clone(),
        registries,
        groups,
        key_packages,
        key_package_store,
        queue_ref_key: queue_refs.public_key(),
        discovery_limit: RateLimiter::new(
            settings.connections.discovery_per_minute,
            settings.connections.discovery_burst,
        ),
        request_limit: RateLimiter::new(
            settings.limits.connection_requests_per_minute,
            settings.limits.connection_requests_burst,
        ),
        body_bytes_limit: RateLimiter::new(
            settings.limits.body_bytes_per_minute_per_address,
            settings.limits.body_bytes_burst_per_address,
        ),
        relay_limit: RateLimiter::new(
            settings.limits.relays_per_minute_per_domain,
            settings.limits.relays_burst_per_domain,
        ),
        last_resort_limit: RateLimiter::per_hour(
            settings.limits.requests_per_last_resort_per_hour,
            settings.limits.requests_per_last_resort_per_hour,
        ),
        max_body_bytes: settings.server.max_body_bytes,
        body_deadline: Duration::from_secs(settings.limits.body_read_secs),
        accounts: accounts.clone(),
        queues,
        account_store,
        store: store.clone(),
        as_credentials: AsCredentials {
            as_credentials: vec![keys.as_credential.clone()],
            intermediates: vec![keys.intermediate.clone()],
        },
        replay: ReplayGuard::new(
            roost_protocol::ids::now_millis(),
            store.seen_signatures()?,
            store.space().clone(),
        ),
        federation: FederationState {
            key: federation_key,
            peers: PeerKeys::new(resolver),
            policy: settings.federation.policy(),
            deliveries,
        },
    });

    // Signatures too old to be accepted need not be remembered; records of served packages
    // that nobody redeemed would pile up.
    let seen = store.seen_signatures()?;
    sweep_every(
        Duration::from_secs(60),
        "old request signatures",
        move || {
            let before = roost_protocol::ids::now_millis()
                .saturating_sub(2 * roost_protocol::auth::REPLAY_WINDOW_MS);
            seen.sweep(before)
        },
    );
    let packages = store.connection_packages()?;
    sweep_every(
        Duration::from_secs(3600),
        "expired served-package records",
        move || packages.sweep_served(Timestamp::now()),
    );

    let public = {
        let state = state.clone();
        let slots = AddressSlots::new(settings.limits.connections_per_address);
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .wrap(actix_web::middleware::from_fn(refuse_new_data_when_full))
                .wrap(actix_web::middleware::from_fn(refuse_over_limit))
                // Route patterns, not paths: a path can hold a user name, which info logs must not.
                .wrap(
                    actix_web::middleware::Logger::new("%{route}xi %s %Dms")
                        .custom_request_replace("route", |request| {
                            format!(
                                "{} {}",
                                request.method(),
                                request.match_pattern().unwrap_or_else(|| "-".into())
                            )
                        })
                        .log_target("roost::http"),
                )
                .configure(http::routes)
        })
        .on_connect(move |connection, data| slots.on_connect(connection, data))
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .bind(settings.server.bind)
        .map_err(|source| ServeError::Bind {
            addr: settings.server.bind.to_string(),
            source,
        })?
    };
    let addrs = public.addrs();
    let admin_server = admin::server(&settings, accounts, store.clone())?;
    let public = public.run();

    // Listen for signals before announcing the address: a signal right after the announcement
    // must find its handler.
    let shutdown = shutdown_signal()?;
    let store_failed = watch_store(store.clone());
    let (stop_public, stop_admin) = (public.handle(), admin_server.handle());
    let queues_at_shutdown = state.queues.clone();
    let closing_flag = closing.clone();
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failure = failed.clone();
    let signals = tokio::spawn(async move {
        let failed = tokio::select! {
            _ = shutdown => false,
            _ = store_failed => true,
        };
        failure.store(failed, std::sync::atomic::Ordering::SeqCst);
        if failed {
            tracing::error!("the store can no longer write (sled keeps a write error until it is reopened): stopping, so that a restart reopens it");
        } else {
            tracing::info!("shutting down: finishing in-flight requests");
        }
        // Long polls get their (empty) answers now rather than holding up the stop, and no
        // later one waits.
        closing_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = queues_at_shutdown.send(ToEveryone(Closing)).await;
        stop_admin.stop(true).await;
        stop_public.stop(true).await;
    });
    for addr in &addrs {
        println!("listening on http://{addr}");
    }
    tracing::info!(domain = %domain, addrs = ?addrs, "roost is serving");

    let (public_result, admin_result) = futures_util::future::join(public, admin_server).await;
    signals.abort();
    let store_failed = failed.load(std::sync::atomic::Ordering::SeqCst);
    let _ = std::fs::remove_file(settings.admin_socket());
    public_result?;
    admin_result?;
    // What the actors were handed is answered before the store closes.
    mls_threads.stop();
    let closed = close_within(store, CLOSE_TIMEOUT);
    if store_failed {
        return Err(ServeError::StoreFailed);
    }
    closed?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Runs `sweep` off the actor threads every `period`, for as long as the server runs, logging
/// how many `what` it removed.
fn sweep_every<F>(period: Duration, what: &'static str, sweep: F)
where
    F: Fn() -> roost_storage::Result<usize> + Clone + Send + 'static,
{
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            every.tick().await;
            match tokio::task::spawn_blocking(sweep.clone()).await {
                Ok(Ok(count)) => tracing::debug!(count, what, "swept"),
                other => tracing::warn!(outcome = ?other.map(|r| r.err()), what, "sweeping failed"),
            }
        }
    });
}

/// How long closing the store may take at shutdown: every acknowledged write is durable
/// already, so a store that cannot flush (a full or failing disk) must not hold up the exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn close_within(store: Store, timeout: Duration) -> Result<(), ServeError> {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(store.close());
    });
    match closed.recv_timeout(timeout) {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(ServeError::CloseTimeout(timeout.as_secs())),
    }
}

/// Resolves if the store fails for good: writes still cannot be made durable although the
/// disk has room again. sled keeps such an error until the store is reopened, so the server
/// then stops (and a supervisor's restart reopens it); while the disk is full it keeps serving
/// reads, and requests that add data are refused (507).
async fn watch_store(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        if store.durability().is_failing()
            && store.space().check().is_ok()
            && store.durability().persist().await.is_err()
        {
            return;
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; the handlers are installed when this returns.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
