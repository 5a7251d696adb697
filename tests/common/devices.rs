//! Client devices made through the client library, each with its own state directory.

use std::path::PathBuf;

use roost_client::Client;
use roost_protocol::UserName;

use super::{TestServer, PASSWORD};

/// The state directories of the test's client devices.
pub struct Devices(tempfile::TempDir);

impl Devices {
    pub fn new() -> Devices {
        Devices(tempfile::tempdir().unwrap())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    pub async fn register(&self, server: &TestServer, name: &str, user: &UserName) -> Client {
        let client = Client::register(self.path(name), &server.url, user, PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("registering {name}: {e}"));
        if let Some(Err(e)) = client.initial_key_packages() {
            panic!("key packages of {name}: {e}");
        }
        client
    }

    pub async fn add_client(&self, server: &TestServer, name: &str, user: &UserName) -> Client {
        let client = Client::add_client(self.path(name), &server.url, user, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("adding {name}: {e}"));
        if let Some(Err(e)) = client.initial_key_packages() {
            panic!("key packages of {name}: {e}");
        }
        client
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices::new()
    }
}
