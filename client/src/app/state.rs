//! What the app serves from: the client once there is one, and how to make one on the first
//! run (register a user, or add this device to an existing user) when the state directory
//! holds none yet. A client, once enrolled, stays for the app's life.

use std::{collections::HashMap, sync::OnceLock};

use roost_protocol::{profile::Profile, UserName};

use super::live::Live;
use crate::{
    client::{Client, Setup},
    error::Error,
    store::StateError,
};

/// How the first run enrols this device.
pub enum Enrolment<'a> {
    /// A new user, with the server's registration token if it asks for one.
    Register { token: Option<&'a str> },
    /// Another device of an existing user.
    AddDevice,
}

/// The app's state, shared by its requests and its live loop.
pub struct AppState {
    setup: Setup,
    client: OnceLock<Client>,
    /// One enrolment at a time (a second would find the state directory taken).
    enrolling: tokio::sync::Mutex<()>,
    enrolled: tokio::sync::Notify,
    pub live: Live,
    pub opened_requests: OpenedRequests,
}

impl AppState {
    /// The state for the client in `setup`'s state directory, or for its first run if it holds
    /// none yet.
    pub fn open(setup: Setup) -> Result<AppState, Error> {
        let client = match setup.open() {
            Ok(client) => Some(client),
            Err(Error::State(StateError::NotRegistered(_))) => None,
            Err(e) => return Err(e),
        };
        Ok(AppState::new(setup, client))
    }

    fn new(setup: Setup, client: Option<Client>) -> AppState {
        let state = AppState {
            setup,
            client: OnceLock::new(),
            enrolling: tokio::sync::Mutex::new(()),
            enrolled: tokio::sync::Notify::new(),
            live: Live::default(),
            opened_requests: OpenedRequests::default(),
        };
        if let Some(client) = client {
            state.set(client);
        }
        state
    }

    /// The client, if this device is enrolled.
    pub fn client(&self) -> Option<&Client> {
        self.client.get()
    }

    /// Waits until this device is enrolled.
    pub async fn enrolled(&self) -> &Client {
        loop {
            let notified = self.enrolled.notified();
            if let Some(client) = self.client.get() {
                return client;
            }
            notified.await;
        }
    }

    /// Registers `user` or adds this device to it, on `server`; the app then serves the new
    /// client. Refused once a client is enrolled (say, from another tab).
    pub async fn enrol(
        &self,
        how: Enrolment<'_>,
        server: &str,
        user: &UserName,
        password: &str,
    ) -> Result<&Client, Error> {
        let _one = self.enrolling.lock().await;
        if let Some(client) = self.client.get() {
            return Err(Error::State(StateError::AlreadyRegistered {
                dir: self.setup.state_dir.clone(),
                user: client.user().clone(),
                client_id: client.client_id(),
            }));
        }
        let client = match how {
            Enrolment::Register { token } => {
                self.setup.register(server, user, password, token).await?
            }
            Enrolment::AddDevice => self.setup.add_client(server, user, password).await?,
        };
        self.set(client);
        Ok(self.client.get().expect("just set"))
    }

    fn set(&self, client: Client) {
        // The app stays open: its sends should not wait for a token purchase.
        if self.client.set(client.with_tokens_bought_ahead()).is_ok() {
            self.enrolled.notify_waiters();
            self.live.set_enrolled();
        }
    }
}

/// The profiles of connection requests' senders fetched at the user's asking, so that showing
/// one and its avatar fetches it once; forgotten with the request's decision.
#[derive(Default)]
pub struct OpenedRequests(std::sync::Mutex<HashMap<String, Profile>>);

impl OpenedRequests {
    pub fn keep(&self, id: &str, profile: Profile) {
        self.lock().insert(id.to_owned(), profile);
    }

    pub fn get(&self, id: &str) -> Option<Profile> {
        self.lock().get(id).cloned()
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Profile>> {
        crate::lock(&self.0)
    }
}
