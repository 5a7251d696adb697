//! Wiring: opens the store, starts the actors ([`start_actors`]), builds the HTTP state
//! ([`app_state`]), binds the public server ([`bind_public`]) beside the admin socket, and
//! serves until a signal arrives or the store fails ([`stop_on_signal`]); then closes the
//! store.

use std::{sync::Arc, time::Duration};

use actix_web::{web, App, HttpServer};

use actix::Addr;
use roost_actors::{
    accounts::{AccountsActor, AccountsConfig, AccountsDeps},
    activity::ActivityRecorder,
    compute::{ComputeThreads, Priority},
    directory::Directory,
    federation::{FederationActor, FederationDeps, RetryPolicy, Wake},
    federation_policy::FederationPolicy,
    group::{Delivery, GroupActor, GroupDeps},
    key_packages::KeyPackageDeps,
    keys::KeyRing,
    pool::ToEveryone,
    qs::{QueueRefs, SealedDelivery},
    queue::{Closing, QueueDeps},
    registry::RegistryDeps,
    replay::ReplayGuard,
    retention::RetentionSweep,
    KeyPackageActor, Pool, QueueActor, RegistryActor, Route, WorkerThreads, Workers,
};
use roost_protocol::{
    credentials::Validity, AsCredential, AsIntermediateCredential, Domain, SigningKey,
};
use roost_storage::{ServerKeys, Store};

use crate::{
    admin,
    error::ServeError,
    federation::{HttpTransport, PeerKeys},
    http::{
        self,
        connections::{refuse_over_limit, AddressSlots},
        health::refuse_new_data_when_full,
        rate_limit::RateLimiter,
        AppState, FederationState,
    },
    settings::Settings,
    tls::Certificates,
};

/// Password hashes at once, at most: one per core up to this (19 MiB each while it runs).
const MAX_HASHING_THREADS: usize = 4;
/// What the server's threads are called, by what they do: a profile, `top -H` or `roost-load`
/// tells the stages apart by them.
const HTTP_THREAD: &str = "roost-http";
const MLS_THREAD: &str = "roost-mls";

/// The AS keys: created on first start, reused afterwards.
pub(crate) fn server_keys(store: &Store, domain: &Domain) -> Result<ServerKeys, ServeError> {
    let keys = store.server_keys()?;
    let keys = match keys.current()? {
        Some(existing) => existing,
        None => {
            let as_key = SigningKey::generate();
            let intermediate_key = SigningKey::generate();
            let validity = Validity::starting_now(roost_actors::keys::AS_CREDENTIAL_LIFETIME_SECS);
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
    // Before anything records: the actors' gauges start with the actors.
    let metrics = match settings.metrics.address() {
        Some(address) => Some((address, crate::metrics::install()?)),
        None => None,
    };
    let store = Store::open_with(&settings.storage.path, settings.storage.options())?;
    let actors = start_actors(&settings, &store)?;
    actors.resume_relays(&store)?;
    let state = app_state(&settings, &store, &actors)?;
    roost_actors::sweeps::start(&store)?;
    if settings.storage.compact_check_secs > 0 {
        roost_actors::sweeps::compact_when_worth_it(
            store.clone(),
            Duration::from_secs(settings.storage.compact_check_secs),
            settings
                .storage
                .compact_min_wasted_mib
                .saturating_mul(1024 * 1024),
        );
    }
    actors.retention_sweep(&settings, &store)?.start();
    let tls = match &settings.server.tls {
        Some(tls) => Some(Certificates::load(&tls.cert, &tls.key)?),
        None => None,
    };
    let (public, addrs) = bind_public(&settings, state, tls.as_ref())?;
    let admin_core = actors.admin_core(&settings, &store, Some(std::time::SystemTime::now()));
    let admin_server = admin::server(&settings, admin_core)?;
    let metrics_server = match metrics {
        Some((address, handle)) => Some(crate::metrics::server(address, handle, store.clone())?),
        None => None,
    };
    let mut others = vec![admin_server.handle()];
    others.extend(metrics_server.as_ref().map(|(s, _)| s.handle()));

    // Listen for signals before announcing the address: a signal right after the announcement
    // must find its handler.
    let stopping = stop_on_signal(&store, &actors, &public, others)?;
    reload_on_hangup(tls)?;
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    for addr in &addrs {
        println!("listening on {scheme}://{addr}");
    }
    if let Some((_, addrs)) = &metrics_server {
        for addr in addrs {
            println!("metrics on http://{addr}/metrics");
        }
    }
    tracing::info!(domain = %settings.server.domain, addrs = ?addrs, "roost is serving");

    let metrics_running = async {
        match metrics_server {
            Some((server, _)) => server.await,
            None => Ok(()),
        }
    };
    let (public_result, admin_result, metrics_result) =
        futures_util::future::join3(public, admin_server, metrics_running).await;
    stopping.signals.abort();
    let store_failed = stopping
        .store_failed
        .load(std::sync::atomic::Ordering::SeqCst);
    let _ = std::fs::remove_file(settings.admin_socket());
    public_result?;
    admin_result?;
    metrics_result?;
    // What the actors were handed is answered before the store closes.
    actors.mls_threads.stop();
    let closed = close_within(store, CLOSE_TIMEOUT);
    if store_failed {
        return Err(ServeError::StoreFailed);
    }
    closed?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// The actors, started: what the HTTP state, the admin commands and shutdown need of them.
pub(crate) struct Actors {
    queues: Addr<Pool<QueueActor>>,
    registries: Addr<Pool<RegistryActor>>,
    groups: Addr<Pool<GroupActor>>,
    key_packages: Addr<Pool<KeyPackageActor>>,
    accounts: Addr<AccountsActor>,
    federation: Addr<Pool<FederationActor>>,
    /// How other homeservers are reached (relays and key fetches).
    federation_client: reqwest::Client,
    /// Which domains may federate, with the blocks an admin made.
    policy: FederationPolicy,
    /// The QS's one path into queues by sealed reference (relayed deliveries come this way).
    deliveries: SealedDelivery,
    /// The signing keys in force (the AS intermediate, the federation key).
    keys: KeyRing,
    /// Privacy Pass issuer keys and users' token budgets.
    token_issuer: roost_actors::tokens::TokenIssuer,
    /// The MLS validation thread, stopped once HTTP has stopped.
    pub(crate) mls_threads: WorkerThreads,
    /// Set at shutdown: from then on no fetch waits.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Actors {
    /// Deliveries kept before a restart go out again.
    fn resume_relays(&self, store: &Store) -> Result<(), ServeError> {
        let outbox = store.outbox()?;
        for waiting in outbox.domains()? {
            tracing::info!(domain = %waiting, backlog = outbox.len(&waiting), "resuming relays");
            self.federation.do_send(Route {
                key: waiting,
                message: Wake,
            });
        }
        Ok(())
    }

    /// The sweep that removes what is past its time, on the retention settings.
    fn retention_sweep(
        &self,
        settings: &Settings,
        store: &Store,
    ) -> Result<RetentionSweep, ServeError> {
        Ok(RetentionSweep {
            policy: settings.retention.policy(),
            activity: store.client_activity()?,
            accounts_store: store.accounts()?,
            accounts: self.accounts.clone(),
            queues: self.queues.clone(),
            message_queues: store.queues()?,
            connection_queues: store.connection_queues()?,
            groups_store: store.groups()?,
            groups: self.groups.clone(),
        })
    }

    /// What admin commands run on.
    pub(crate) fn admin_core(
        &self,
        settings: &Settings,
        store: &Store,
        serving_since: Option<std::time::SystemTime>,
    ) -> admin::Core {
        admin::Core {
            domain: settings.server.domain.clone(),
            store: store.clone(),
            accounts: self.accounts.clone(),
            federation: self.federation.clone(),
            policy: self.policy.clone(),
            keys: self.keys.clone(),
            token_issuer: self.token_issuer.clone(),
            token_costs: settings.tokens.costs,
            serving_since,
        }
    }
}

/// Starts every actor pool, and the accounts actor (relays kept before a restart wait for
/// [`Actors::resume_relays`]).
pub(crate) fn start_actors(settings: &Settings, store: &Store) -> Result<Actors, ServeError> {
    let keys = KeyRing::load(
        server_keys(store, &settings.server.domain)?,
        store.server_keys()?,
        store.durability().clone(),
        settings.credentials.client_lifetime_secs,
    )?;
    let domain = settings.server.domain.clone();
    let idle_after = Duration::from_secs(settings.actors.idle_secs);
    // The actors that validate MLS (group commits of milliseconds to ~100 ms, key packages) get
    // a thread of their own, so that such work does not hold up every queue. The queue actors
    // stay on the system thread with the pools: measured, spreading them over threads of their
    // own cost more in hand-offs between threads than it gained (BENCHMARKS.md).
    let (mls_workers, mls_threads) = Workers::spawn(1, MLS_THREAD);

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
            retention: settings.retention.policy().messages(),
        },
        idle_after,
    );
    let registries = Pool::<RegistryActor>::start(
        RegistryDeps {
            packages: store.connection_packages()?,
            profiles: store.profiles()?,
            accounts: store.accounts()?,
            durability: store.durability().clone(),
            max_package_lifetime_secs: settings.connections.max_package_lifetime_secs,
            idle_after,
        },
        idle_after,
    );
    let queue_refs = QueueRefs::new(domain.clone(), store.server_keys()?.queue_ref_key()?);
    let deliveries = SealedDelivery::new(
        queue_refs.clone(),
        queues.clone(),
        store.durability().clone(),
    );
    let federation_client = crate::federation::http_client(&match &settings.federation.ca_file {
        Some(path) => crate::tls::extra_roots(path)?,
        None => Vec::new(),
    });
    let policy = FederationPolicy::load(
        settings.federation.policy(),
        store.blocked_domains()?,
        store.durability().clone(),
    )?;
    let federation = Pool::<FederationActor>::start(
        FederationDeps {
            outbox: store.outbox()?,
            durability: store.durability().clone(),
            transport: Arc::new(HttpTransport::new(
                domain.clone(),
                keys.clone(),
                settings.federation.resolver.clone(),
                federation_client.clone(),
            )),
            retry: RetryPolicy {
                initial: Duration::from_millis(settings.federation.retry_initial_ms),
                max: Duration::from_millis(settings.federation.retry_max_ms),
            },
            policy: policy.clone(),
            idle_after,
            give_up_after: settings
                .retention
                .policy()
                .messages_secs
                .map(Duration::from_secs),
        },
        idle_after,
    );
    let groups = Pool::<GroupActor>::start_on(
        GroupDeps {
            groups: store.groups()?,
            durability: store.durability().clone(),
            delivery: Delivery {
                qs: deliveries.clone(),
                federation: federation.clone(),
                policy: policy.clone(),
            },
            max_members: settings.limits.members_per_group,
            max_state_bytes: settings.limits.group_state_bytes,
            activity: ActivityRecorder::new(
                store.groups()?.activity().clone(),
                settings.retention.policy().group_activity_period_secs(),
            ),
            idle_groups_secs: settings.retention.policy().idle_groups_secs,
            idle_after,
        },
        idle_after,
        mls_workers.clone(),
    );
    let key_packages = Pool::<KeyPackageActor>::start_on(
        KeyPackageDeps {
            store: store.key_packages()?,
            accounts: store.accounts()?,
            durability: store.durability().clone(),
            queue_refs,
            idle_after,
        },
        idle_after,
        mls_workers,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = AccountsConfig {
        domain,
        policy: settings.registration.policy.into(),
        client_credential_lifetime_secs: settings.credentials.client_lifetime_secs,
        max_clients_per_user: settings.limits.clients_per_user,
        hashing_threads: cores.min(MAX_HASHING_THREADS),
    };
    let accounts = actix::Actor::start(AccountsActor::new(
        config,
        AccountsDeps {
            store: store.accounts()?,
            durability: store.durability().clone(),
            keys: keys.clone(),
            queues: queues.clone(),
            registries: registries.clone(),
            key_packages: key_packages.clone(),
        },
    )?);
    let token_issuer = roost_actors::tokens::TokenIssuer::load(
        store.tokens()?,
        store.durability().clone(),
        settings.tokens.issuer(),
        ComputeThreads::start("roost-token-signer", cores, Priority::Background, || ())?,
    )?;
    token_issuer.start_upkeep();
    Ok(Actors {
        queues,
        registries,
        groups,
        key_packages,
        accounts,
        federation,
        federation_client,
        policy,
        deliveries,
        keys,
        token_issuer,
        mls_threads,
        closing,
    })
}

/// What every HTTP handler can reach.
fn app_state(
    settings: &Settings,
    store: &Store,
    actors: &Actors,
) -> Result<Arc<AppState>, ServeError> {
    let limits = &settings.limits;
    Ok(Arc::new(AppState {
        domain: settings.server.domain.clone(),
        registries: actors.registries.clone(),
        groups: actors.groups.clone(),
        key_packages: actors.key_packages.clone(),
        queue_ref_key: actors.deliveries.refs().public_key(),
        discovery_limit: RateLimiter::new(
            settings.connections.discovery_per_minute,
            settings.connections.discovery_burst,
        ),
        request_limit: RateLimiter::new(
            limits.connection_requests_per_minute,
            limits.connection_requests_burst,
        ),
        body_bytes_limit: RateLimiter::new(
            limits.body_bytes_per_minute_per_address,
            limits.body_bytes_burst_per_address,
        ),
        relay_limit: RateLimiter::new(
            limits.relays_per_minute_per_domain,
            limits.relays_burst_per_domain,
        ),
        last_resort_limit: RateLimiter::per_hour(
            limits.requests_per_last_resort_per_hour,
            limits.requests_per_last_resort_per_hour,
        ),
        max_body_bytes: settings.server.max_body_bytes,
        body_deadline: Duration::from_secs(limits.body_read_secs),
        accounts: actors.accounts.clone(),
        queues: actors.queues.clone(),
        directory: Directory::new(store.accounts()?, store.key_packages()?, store.profiles()?),
        activity: ActivityRecorder::new(
            store.client_activity()?.last_seen_table().clone(),
            settings.retention.policy().activity_period_secs(),
        ),
        store: store.clone(),
        keys: actors.keys.clone(),
        replay: ReplayGuard::new(
            roost_protocol::ids::now_millis(),
            store.seen_signatures()?,
            store.space().clone(),
        ),
        federation: FederationState {
            peers: PeerKeys::new(
                settings.federation.resolver.clone(),
                actors.federation_client.clone(),
            ),
            policy: actors.policy.clone(),
            deliveries: actors.deliveries.clone(),
        },
        tokens: crate::http::tokens::TokenState {
            issuer: actors.token_issuer.clone(),
            store: store.tokens()?,
            costs: settings.tokens.costs,
            issuer_limit: RateLimiter::new(
                settings.tokens.redemptions_per_minute_per_issuer,
                settings.tokens.redemptions_burst_per_issuer,
            ),
            peers: crate::federation::PeerCache::new(
                settings.federation.resolver.clone(),
                actors.federation_client.clone(),
            ),
            groups_per_issuer_epoch: settings.tokens.groups_per_issuer_epoch,
        },
    }))
}

/// The public HTTP server, bound and running, and the addresses it listens on.
fn bind_public(
    settings: &Settings,
    state: Arc<AppState>,
    tls: Option<&Arc<Certificates>>,
) -> Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>), ServeError> {
    let slots = AddressSlots::new(settings.limits.connections_per_address);
    let public = HttpServer::new(move || {
        // Called once on each worker thread as it starts.
        roost_actors::name_this_thread(HTTP_THREAD);
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(actix_web::middleware::from_fn(refuse_new_data_when_full))
            .wrap(actix_web::middleware::from_fn(refuse_over_limit))
            .wrap(actix_web::middleware::from_fn(http::auth::name_the_scheme))
            .wrap(actix_web::middleware::from_fn(
                crate::metrics::record_request,
            ))
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
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    let bound = match tls {
        Some(certificates) => {
            public.bind_rustls_0_23(settings.server.bind, certificates.server_config())
        }
        None => public.bind(settings.server.bind),
    };
    let public = bound.map_err(|source| ServeError::Bind {
        addr: settings.server.bind.to_string(),
        source,
    })?;
    let addrs = public.addrs();
    Ok((public.run(), addrs))
}

/// How the server stops: on a signal, or when the store fails for good.
struct Stopping {
    /// Waits for the signal or the failure, then stops the HTTP servers.
    signals: tokio::task::JoinHandle<()>,
    /// Whether it was the store's failure.
    store_failed: Arc<std::sync::atomic::AtomicBool>,
}

/// Installs the signal handlers and the store watch; when either fires, long polls are answered
/// and every server stops (the public one last), finishing in-flight requests.
fn stop_on_signal(
    store: &Store,
    actors: &Actors,
    public: &actix_web::dev::Server,
    others: Vec<actix_web::dev::ServerHandle>,
) -> Result<Stopping, ServeError> {
    let shutdown = shutdown_signal()?;
    let store_failed = watch_store(store.clone());
    let stop_public = public.handle();
    let queues = actors.queues.clone();
    let closing = actors.closing.clone();
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
        closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = queues.send(ToEveryone(Closing)).await;
        for other in others {
            other.stop(true).await;
        }
        stop_public.stop(true).await;
    });
    Ok(Stopping {
        signals,
        store_failed: failed,
    })
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
/// reads, and requests that add data are refused (507). The store is suspect after a failed
/// flush, or after the disk was short of room at all: sled's own IO threads may have met the
/// full disk first, leaving sled failing every write with no flush of ours having failed.
async fn watch_store(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut suspect = false;
    loop {
        every.tick().await;
        suspect |= store.durability().is_failing() || store.space().was_short();
        if suspect && store.space().check().is_ok() {
            if store.durability().persist().await.is_err() {
                return;
            }
            suspect = false;
        }
    }
}

/// On every SIGHUP, reads the TLS certificate and key again (new connections get them, open ones
/// keep theirs); without TLS there is nothing to reload, and SIGHUP is only logged.
fn reload_on_hangup(tls: Option<Arc<Certificates>>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &tls {
                Some(certificates) => match certificates.reload() {
                    Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                    Err(e) => {
                        tracing::error!("SIGHUP: kept the TLS certificate in use: {e}")
                    }
                },
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
            }
        }
    });
    Ok(())
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
