//! Two users on two real homeservers, alice@a.test and bob@b.test with two clients each,
//! connected: what federation and admin tests start from.

use std::time::{Duration, Instant};

use roost_client::{Client, ExtraRoots, StoredMessage};
use roost_protocol::UserName;

use super::{devices::Devices, federation, Options, TestServer};

/// Syncs every client until `done` holds (relays between servers arrive a moment after the
/// DS answered), at most 20 s.
pub async fn settle(clients: &[&Client], done: impl AsyncFnMut() -> bool) {
    settle_within(Duration::from_secs(20), clients, done).await
}

/// [`settle`], for at most `within`.
pub async fn settle_within(
    within: Duration,
    clients: &[&Client],
    mut done: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        for client in clients {
            match client.sync().await {
                Ok(report) => assert!(report.failed.is_empty(), "{:?}", report.failed),
                // A server that restarted: the client's pooled connection was closed.
                Err(roost_client::Error::Server(roost_client::ServerError::Network(_))) => {}
                Err(e) => panic!("sync: {e}"),
            }
        }
        if done().await {
            return;
        }
        assert!(Instant::now() < deadline, "did not settle in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The texts of `client`'s conversation with `peer`, in order.
pub async fn chat_texts(client: &Client, peer: &UserName) -> Vec<String> {
    let messages = client.chat().messages(peer).await.unwrap();
    messages.into_iter().map(|m| m.text).collect()
}

pub fn texts(messages: &[StoredMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let from = m
                .from
                .as_ref()
                .map_or("(unknown)".to_owned(), ToString::to_string);
            (from, m.text.clone())
        })
        .collect()
}

/// alice@a.test (phone, laptop) and bob@b.test (phone, laptop), connected.
pub struct Pair {
    pub servers: Vec<TestServer>,
    /// Keeps the clients' state directories.
    _devices: Devices,
    pub alice: UserName,
    pub bob: UserName,
    pub alice_phone: Client,
    pub alice_laptop: Client,
    pub bob_phone: Client,
    pub bob_laptop: Client,
}

impl Pair {
    /// The other user, as seen from `client`.
    pub fn peer_of(&self, client: &Client) -> &UserName {
        if client.user() == &self.alice {
            &self.bob
        } else {
            &self.alice
        }
    }

    pub fn all(&self) -> [&Client; 4] {
        [
            &self.alice_phone,
            &self.alice_laptop,
            &self.bob_phone,
            &self.bob_laptop,
        ]
    }
}

pub async fn connected_pair(alice: &str, bob: &str, options: Options) -> Pair {
    connected_pair_trusting(alice, bob, options, ExtraRoots::default()).await
}

/// [`connected_pair`] whose clients trust the CA certificates of `roots`.
pub async fn connected_pair_trusting(
    alice: &str,
    bob: &str,
    options: Options,
    roots: ExtraRoots,
) -> Pair {
    let (servers, resolve) = federation(&["a.test", "b.test"], options);
    let devices = Devices::federated(&resolve).trusting(roots);
    let (alice, bob) = (servers[0].user(alice), servers[1].user(bob));
    let p = Pair {
        alice_phone: devices.register(&servers[0], "alice-phone", &alice).await,
        alice_laptop: devices
            .add_client(&servers[0], "alice-laptop", &alice)
            .await,
        bob_phone: devices.register(&servers[1], "bob-phone", &bob).await,
        bob_laptop: devices.add_client(&servers[1], "bob-laptop", &bob).await,
        servers,
        _devices: devices,
        alice,
        bob,
    };
    let connected = p.alice_phone.connections().connect(&p.bob).await.unwrap();
    assert_eq!(connected.invited, 2);
    let requests = p.bob_phone.connections().requests().await.unwrap();
    let [request] = requests.received.as_slice() else {
        panic!("expected one request, got {:?}", requests.received);
    };
    assert_eq!(request.from(), &p.alice);
    let accepted = p.bob_phone.connections().accept(&request.id).await.unwrap();
    assert_eq!(accepted.own_clients_added, 1);
    let group_id = connected.group_id;
    let all = p.all();
    settle(&all, async || {
        let mut statuses = Vec::new();
        for client in all {
            let status = client.groups().status(&group_id).unwrap();
            statuses.push(status.map(|s| (s.epoch, s.members)));
        }
        let tokens_in = {
            let mut ok = true;
            for client in all {
                let contacts = client.contacts().list().await.unwrap();
                ok &= contacts.len() == 1 && contacts[0].peer_token.is_some();
            }
            ok
        };
        statuses
            .iter()
            .all(|s| s.is_some_and(|(_, members)| members == 4))
            && statuses.windows(2).all(|w| w[0] == w[1])
            && tokens_in
    })
    .await;
    p
}
