//! [`Client`]: one client opened from its state directory, the composition of its parts (the
//! [`Device`] it is, its [`MlsEngine`] and its `Queues`) and the entry to its features, each
//! reached by a method named after it (`client.connections()`, `client.chat()`, …) and defined in
//! the feature's own module.
//!
//! Owns: how the parts are put together. Must not touch: any feature's logic.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use roost_protocol::{
    api::{ConnectionPackageCount, KeyPackageCount},
    credentials::ClientCredential,
    federation::Resolver,
    ClientId, UserName,
};

use crate::{
    device::Device,
    error::Error,
    mls::MlsEngine,
    queues::Queues,
    store::{Identity, State, StateError},
    transport::{ExtraRoots, Homeservers, Server, Signer},
};

/// Where a client's state lives and how it reaches homeservers (the command line's `--state`,
/// `--resolve` and `--ca-file`): what opening or enrolling a client takes.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub state_dir: PathBuf,
    pub resolver: Resolver,
    pub roots: ExtraRoots,
}

impl Setup {
    /// The client registered in the state directory.
    pub fn open(&self) -> Result<Client, Error> {
        self.reach(Client::open(&self.state_dir)?)
    }

    /// Registers `user` on the homeserver at `server` ([`Client::register`]).
    pub async fn register(
        &self,
        server: &str,
        user: &UserName,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<Client, Error> {
        let server = Server::with_roots(server, &self.roots)?;
        let client =
            Client::register(&self.state_dir, server, user, password, registration_token).await?;
        self.reach(client)
    }

    /// Adds this device to `user` on the homeserver at `server` ([`Client::add_client`]).
    pub async fn add_client(
        &self,
        server: &str,
        user: &UserName,
        password: &str,
    ) -> Result<Client, Error> {
        let server = Server::with_roots(server, &self.roots)?;
        self.reach(Client::add_client(&self.state_dir, server, user, password).await?)
    }

    fn reach(&self, client: Client) -> Result<Client, Error> {
        client
            .with_resolver(self.resolver.clone())
            .with_roots(self.roots.clone())
    }
}

/// A registered client, opened from its state directory.
#[derive(Debug)]
pub struct Client {
    device: Device,
    mls: MlsEngine,
    queues: Queues,
    /// What publishing the first connection packages came to, for a client just enrolled.
    initial_packages: Option<Result<ConnectionPackageCount, Error>>,
    /// What publishing the first MLS key packages came to, for a client just enrolled.
    initial_key_packages: Option<Result<KeyPackageCount, Error>>,
    /// How often this client renews its own leaf in each group.
    leaf_renewal: Duration,
    /// After how many of its renewals in a row without a change a member's leaf counts as idle.
    idle_after: u32,
}

/// After how many of a client's leaf renewals in a row another member's leaf, unchanged, counts
/// as gone (`Client::with_idle_removal`): with weekly renewals, about eight weeks of this
/// client's own activity in which that member never committed.
pub const IDLE_AFTER_RENEWALS: u32 = 8;

/// How often a client renews its own leaf in each group (`Client::with_leaf_renewal`): often
/// enough that a leaf's keys do not stay the same for long (so a stolen one soon opens
/// nothing new), and long before a leaf made from a KeyPackage would expire (12 weeks).
pub const LEAF_RENEWAL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Client {
    /// Opens the client registered in `state_dir`.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Client, Error> {
        let state = State::open(state_dir)?;
        let identity = state
            .identity()?
            .ok_or_else(|| StateError::NotRegistered(state.dir().to_path_buf()))?;
        let server = Server::new(&identity.server_url)?;
        Client::new(state, identity, server)
    }

    pub(crate) fn new(state: State, identity: Identity, server: Server) -> Result<Client, Error> {
        let mls = MlsEngine::open(state.mls_tree()?)?;
        let servers = Homeservers::new(server, identity.user.domain().clone(), Resolver::default());
        Ok(Client {
            device: Device::new(identity, state, servers),
            mls,
            queues: Queues::default(),
            initial_packages: None,
            initial_key_packages: None,
            leaf_renewal: LEAF_RENEWAL,
            idle_after: IDLE_AFTER_RENEWALS,
        })
    }

    /// Reaches other domains' homeservers as `resolver` says (default: `https://DOMAIN`).
    pub fn with_resolver(mut self, resolver: Resolver) -> Client {
        self.device.servers_mut().set_resolver(resolver);
        self
    }

    /// Buys Privacy Pass tokens ahead, in the background, once few are kept for a server, so a
    /// request does not wait for a purchase: for a client that stays open (the app), not for a
    /// one-shot command, which would end before a purchase is kept.
    pub fn with_tokens_bought_ahead(self) -> Client {
        self.device.wallet().buy_ahead();
        self
    }

    /// Trusts the certificates of `roots` beside the system's roots, on every homeserver.
    pub fn with_roots(mut self, roots: ExtraRoots) -> Result<Client, Error> {
        self.device.servers_mut().set_roots(roots)?;
        Ok(self)
    }

    /// Renews this client's own leaf in each group once it is `every` old (default
    /// [`LEAF_RENEWAL`]), at a sync.
    pub fn with_leaf_renewal(mut self, every: Duration) -> Client {
        self.leaf_renewal = every;
        self
    }

    pub(crate) fn leaf_renewal(&self) -> Duration {
        self.leaf_renewal
    }

    /// Removes from its named groups a member whose leaf stayed the same for `renewals` of this
    /// client's leaf renewals in a row (default [`IDLE_AFTER_RENEWALS`]).
    pub fn with_idle_removal(mut self, renewals: u32) -> Client {
        self.idle_after = renewals;
        self
    }

    pub(crate) fn idle_after(&self) -> u32 {
        self.idle_after
    }

    pub(crate) fn set_initial(
        &mut self,
        packages: Result<ConnectionPackageCount, Error>,
        key_packages: Result<KeyPackageCount, Error>,
    ) {
        self.initial_packages = Some(packages);
        self.initial_key_packages = Some(key_packages);
    }

    /// For a client just registered or added: whether its first connection packages (a batch
    /// and a last-resort one) were published, and the count the AS answered. An error here
    /// leaves the client registered but not yet discoverable; publishing again
    /// (`Connections::top_up`, `roost-client publish-packages`) mends it. `None` for a client
    /// opened from its state directory.
    pub fn initial_packages(&self) -> Option<&Result<ConnectionPackageCount, Error>> {
        self.initial_packages.as_ref()
    }

    /// For a client just registered or added: whether its first MLS key packages (a batch and
    /// a last-resort one) were published, like [`Client::initial_packages`].
    pub fn initial_key_packages(&self) -> Option<&Result<KeyPackageCount, Error>> {
        self.initial_key_packages.as_ref()
    }

    /// Who this client is, what it stores, and where the homeservers are.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn mls(&self) -> &MlsEngine {
        &self.mls
    }

    pub(crate) fn queues(&self) -> &Queues {
        &self.queues
    }

    pub fn identity(&self) -> &Identity {
        self.device.identity()
    }

    pub fn user(&self) -> &UserName {
        self.device.user()
    }

    pub fn client_id(&self) -> ClientId {
        self.device.client_id()
    }

    pub fn credential(&self) -> &ClientCredential {
        self.device.credential()
    }

    /// The home server.
    pub fn server(&self) -> &Server {
        self.device.home()
    }

    pub fn state_dir(&self) -> &Path {
        self.device.state_dir()
    }

    /// Signs requests as this client.
    pub fn signer(&self) -> Signer<'_> {
        self.device.signer()
    }
}
