//! A randomized, model-based test of the whole product over three federated homeservers: users
//! connect, create groups, add, remove, leave and re-add members, chat in connections and
//! groups, add clients, rotate friendship tokens, sync in random order, and servers die
//! (`kill -9`) and come back. A simple model says what every client must show; after every few
//! steps every client syncs and is checked against it: the same members, the same messages in
//! the same order, from the right sender, exactly once — a removed user sees nothing sent after
//! its removal — and no command fails unless the model says it must.
//!
//! Seeded: a failure names its seed and the steps that led there. `ROOST_MODEL_SEEDS=N` (default
//! 2) seeds of `ROOST_MODEL_OPS=M` (default 40) steps each; `ROOST_MODEL_SEED=S` runs one again.
//! The long run (README): `ROOST_MODEL_SEEDS=50 ROOST_MODEL_OPS=80 cargo test --release --test
//! model -- --nocapture`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{devices::Devices, federation, fuzz::Rng, Options, TestServer};
use roost_client::{Client, Error};
use roost_protocol::UserName;

const DOMAINS: [&str; 3] = ["a.test", "b.test", "c.test"];
/// Which server each user is on.
const USERS: [(&str, usize); 4] = [("ann", 0), ("ben", 1), ("cat", 2), ("dan", 0)];
const MAX_CLIENTS_PER_USER: usize = 2;

/// A message the model expects: who sent it, what it said, and which clients must show it.
#[derive(Debug, Clone)]
struct Sent {
    from: usize,
    text: String,
    to: BTreeSet<usize>,
}

#[derive(Debug)]
struct GroupModel {
    id: String,
    members: BTreeSet<usize>,
    log: Vec<Sent>,
    /// Clients that ever joined the group (they keep a record of it).
    joined: BTreeSet<usize>,
}

struct World {
    servers: Vec<TestServer>,
    devices: Devices,
    users: Vec<UserName>,
    /// Each client with its user.
    clients: Vec<(usize, Client)>,
    connections: BTreeMap<(usize, usize), Vec<Sent>>,
    /// Clients that hold a contact's friendship token: (client, contact user).
    tokens: BTreeSet<(usize, usize)>,
    groups: Vec<GroupModel>,
    rng: Rng,
    /// For the order in which clients sync at a check, which may loop while relays arrive:
    /// kept apart so the steps stay the same for a seed.
    shuffle: Rng,
    seed: u64,
    steps: Vec<String>,
    texts: usize,
}

fn pair(u: usize, v: usize) -> (usize, usize) {
    (u.min(v), u.max(v))
}

impl World {
    async fn new(seed: u64) -> World {
        let (servers, resolve) = federation(&DOMAINS, Options::default());
        let devices = Devices::federated(&resolve);
        let users: Vec<UserName> = USERS
            .iter()
            .map(|(name, server)| servers[*server].user(name))
            .collect();
        let mut clients = Vec::new();
        for (u, (name, server)) in USERS.iter().enumerate() {
            let client = devices
                .register(&servers[*server], &format!("{name}-0"), &users[u])
                .await;
            clients.push((u, client));
        }
        World {
            servers,
            devices,
            users,
            clients,
            connections: BTreeMap::new(),
            tokens: BTreeSet::new(),
            groups: Vec::new(),
            rng: Rng(seed),
            shuffle: Rng(!seed),
            seed,
            steps: Vec::new(),
            texts: 0,
        }
    }

    fn context(&self) -> String {
        format!(
            "seed {} (ROOST_MODEL_SEED={}), after these steps:\n  {}",
            self.seed,
            self.seed,
            self.steps.join("\n  ")
        )
    }

    fn clients_of(&self, user: usize) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|c| self.clients[*c].0 == user)
            .collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())])
    }

    fn text(&mut self) -> String {
        self.texts += 1;
        format!("m{}", self.texts)
    }

    fn client(&self, c: usize) -> &Client {
        &self.clients[c].1
    }

    fn name(&self, c: usize) -> String {
        let (u, _) = self.clients[c];
        format!(
            "{}#{}",
            USERS[u].0,
            self.clients_of(u).iter().position(|x| *x == c).unwrap()
        )
    }

    /// Runs `op` until it does not fail transiently (a server just came back: the first
    /// request may meet a closed connection). Anything else fails the test.
    async fn must<T>(&self, what: &str, mut op: impl AsyncFnMut() -> Result<T, Error>) -> T {
        for _ in 0..20 {
            match op().await {
                Ok(value) => return value,
                Err(e) if e.is_transient() && e.code() != "unconfirmed" => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{what} failed: {e} ({})\n{}", e.code(), self.context()),
            }
        }
        panic!("{what} kept failing transiently\n{}", self.context())
    }

    async fn sync(&self, c: usize) {
        let report = self
            .must(&format!("sync of {}", self.name(c)), async || {
                self.client(c).sync().await
            })
            .await;
        assert!(
            report.failed.is_empty(),
            "sync of {}: {:?}\n{}",
            self.name(c),
            report.failed,
            self.context()
        );
    }

    async fn sync_clients(&self, clients: &[usize]) {
        for c in clients {
            self.sync(*c).await;
        }
    }

    /// Syncs `clients` until `done` holds — what another server relays takes a moment — at
    /// most 20 s.
    async fn until(&self, what: &str, clients: &[usize], done: impl AsyncFn(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.sync_clients(clients).await;
            if done(self).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 20 s\n{}",
                self.context()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether client `c` is in the group `id` (joined, not removed).
    async fn in_group(&self, c: usize, id: &str) -> bool {
        let id = hex::decode(id).unwrap();
        match self.client(c).groups().list().await {
            Ok(groups) => groups.iter().any(|g| g.group_id == id && !g.removed),
            Err(_) => false,
        }
    }

    /// The token of `peer`'s user that client `c` holds.
    async fn token_of(&self, c: usize, peer: usize) -> Option<Vec<u8>> {
        let contact = self.client(c).contacts().with(&self.users[peer]).ok()?;
        contact
            .peer_token
            .map(|t| roost_protocol::codec::encode(&t))
    }

    /// One random step.
    async fn step(&mut self) {
        let roll = self.rng.below(100);
        let done = match roll {
            0..10 => self.connect().await,
            10..16 => self.create_group().await,
            16..28 => self.add_member().await,
            28..35 => self.remove_member().await,
            35..39 => self.leave().await,
            39..62 => self.send_in_group().await,
            62..80 => self.send_in_chat().await,
            80..84 => self.add_client().await,
            84..86 => self.rotate_token().await,
            86..88 => self.kill_a_server().await,
            88..90 => self.send_after_removal().await,
            _ => {
                let c = self.rng.below(self.clients.len());
                self.steps.push(format!("{} syncs", self.name(c)));
                self.sync(c).await;
                true
            }
        };
        if !done {
            // Not possible now (e.g. nobody to add): a sync instead.
            let c = self.rng.below(self.clients.len());
            self.steps.push(format!("{} syncs", self.name(c)));
            self.sync(c).await;
        }
    }

    async fn connect(&mut self) -> bool {
        let candidates: Vec<(usize, usize)> = (0..USERS.len())
            .flat_map(|u| (0..USERS.len()).map(move |v| (u, v)))
            .filter(|(u, v)| u != v && !self.connections.contains_key(&pair(*u, *v)))
            .collect();
        let Some((u, v)) = self.pick(&candidates) else {
            return false;
        };
        let initiator = self.pick(&self.clients_of(u)).unwrap();
        let responder = self.pick(&self.clients_of(v)).unwrap();
        self.steps.push(format!(
            "{} connects with {}, {} accepts",
            self.name(initiator),
            USERS[v].0,
            self.name(responder)
        ));
        let peer = self.users[v].clone();
        let connected = self
            .must("connect", async || {
                self.client(initiator).connections().connect(&peer).await
            })
            .await;
        let from = self.users[u].clone();
        let request = self
            .must("requests", async || {
                self.client(responder).connections().requests().await
            })
            .await
            .received
            .into_iter()
            .find(|r| *r.from() == from)
            .unwrap_or_else(|| panic!("no request arrived\n{}", self.context()));
        self.must("accept", async || {
            self.client(responder)
                .connections()
                .accept(&request.id)
                .await
        })
        .await;
        let both: Vec<usize> = [self.clients_of(u), self.clients_of(v)].concat();
        self.until("both users' tokens arriving", &both, async |w| {
            for c in w.clients_of(u) {
                if w.token_of(c, v).await.is_none() {
                    return false;
                }
            }
            for c in w.clients_of(v) {
                if w.token_of(c, u).await.is_none() {
                    return false;
                }
            }
            true
        })
        .await;
        let _ = connected;
        self.connections.insert(pair(u, v), Vec::new());
        for c in self.clients_of(u) {
            self.tokens.insert((c, v));
        }
        for c in self.clients_of(v) {
            self.tokens.insert((c, u));
        }
        true
    }

    async fn create_group(&mut self) -> bool {
        let c = self.rng.below(self.clients.len());
        let u = self.clients[c].0;
        let name = format!("g{}", self.groups.len());
        self.steps.push(format!("{} creates {name}", self.name(c)));
        let group = self
            .must("create", async || {
                self.client(c).groups().create(&name).await
            })
            .await;
        let clients = self.clients_of(u);
        self.groups.push(GroupModel {
            id: hex::encode(&group.group_id),
            members: BTreeSet::from([u]),
            log: Vec::new(),
            joined: clients.iter().copied().collect(),
        });
        // The user's other clients join from the Welcome.
        self.sync_clients(&clients).await;
        true
    }

    /// Every client of the group's members, now.
    fn recipients(&self, g: usize) -> BTreeSet<usize> {
        self.groups[g]
            .members
            .iter()
            .flat_map(|u| self.clients_of(*u))
            .collect()
    }

    async fn add_member(&mut self) -> bool {
        let mut choices = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for &u in &group.members {
                for v in 0..USERS.len() {
                    if group.members.contains(&v) {
                        continue;
                    }
                    for c in self.clients_of(u) {
                        if self.tokens.contains(&(c, v)) {
                            choices.push((g, c, v));
                        }
                    }
                }
            }
        }
        let Some((g, c, v)) = self.pick(&choices) else {
            return false;
        };
        let (id, user) = (self.groups[g].id.clone(), self.users[v].clone());
        self.steps
            .push(format!("{} adds {} to g{g}", self.name(c), USERS[v].0));
        let added = self
            .must("add", async || {
                self.client(c).groups().add(&id, &user).await
            })
            .await;
        assert_eq!(added, self.clients_of(v).len(), "{}", self.context());
        self.groups[g].members.insert(v);
        let clients = self.clients_of(v);
        self.groups[g].joined.extend(clients.iter().copied());
        self.until("the added user's clients joining", &clients, async |w| {
            for &c in &clients {
                if !w.in_group(c, &id).await {
                    return false;
                }
            }
            true
        })
        .await;
        true
    }

    /// A member and another member of some group.
    fn two_members(&mut self) -> Option<(usize, usize, usize)> {
        let mut choices = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for &u in &group.members {
                for &v in &group.members {
                    if u != v {
                        choices.push((g, u, v));
                    }
                }
            }
        }
        self.pick(&choices)
    }

    async fn remove_member(&mut self) -> bool {
        let Some((g, u, v)) = self.two_members() else {
            return false;
        };
        let c = self.pick(&self.clients_of(u)).unwrap();
        let (id, user) = (self.groups[g].id.clone(), self.users[v].clone());
        self.steps
            .push(format!("{} removes {} from g{g}", self.name(c), USERS[v].0));
        let removed = self
            .must("remove", async || {
                self.client(c).groups().remove(&id, &user).await
            })
            .await;
        assert_eq!(removed, self.clients_of(v).len(), "{}", self.context());
        self.groups[g].members.remove(&v);
        let clients = self.clients_of(v);
        self.until(
            "the removed user's clients learning it",
            &clients,
            async |w| {
                for &c in &clients {
                    if w.in_group(c, &id).await {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        true
    }

    async fn leave(&mut self) -> bool {
        let Some((g, u, v)) = self.two_members() else {
            return false;
        };
        let c = self.pick(&self.clients_of(u)).unwrap();
        let committer = self.pick(&self.clients_of(v)).unwrap();
        let id = self.groups[g].id.clone();
        self.steps.push(format!(
            "{} leaves g{g}; {} syncs and commits it",
            self.name(c),
            self.name(committer)
        ));
        let left = self
            .must("leave", async || self.client(c).groups().leave(&id).await)
            .await;
        assert_eq!(left, self.clients_of(u).len(), "{}", self.context());
        let leaver = self.users[u].clone();
        let syncing = [vec![committer], self.clients_of(u)].concat();
        self.until("the leave being committed", &syncing, async |w| {
            match w.client(committer).groups().members(&id).await {
                Ok(members) => !members.contains(&leaver),
                Err(_) => false,
            }
        })
        .await;
        self.groups[g].members.remove(&u);
        true
    }

    async fn send_in_group(&mut self) -> bool {
        let choices: Vec<(usize, usize)> = (0..self.groups.len())
            .flat_map(|g| self.recipients(g).into_iter().map(move |c| (g, c)))
            .collect();
        let Some((g, c)) = self.pick(&choices) else {
            return false;
        };
        let (id, text) = (self.groups[g].id.clone(), self.text());
        self.steps
            .push(format!("{} says {text} in g{g}", self.name(c)));
        let sent = self
            .must("group send", async || {
                self.client(c).groups().send(&id, &text).await
            })
            .await;
        assert_eq!(sent.text, text);
        let to = self.recipients(g);
        self.groups[g].log.push(Sent {
            from: self.clients[c].0,
            text,
            to,
        });
        true
    }

    async fn send_in_chat(&mut self) -> bool {
        let pairs: Vec<(usize, usize)> = self.connections.keys().copied().collect();
        let Some((u, v)) = self.pick(&pairs) else {
            return false;
        };
        let (from, to) = if self.rng.below(2) == 0 {
            (u, v)
        } else {
            (v, u)
        };
        let c = self.pick(&self.clients_of(from)).unwrap();
        let (peer, text) = (self.users[to].clone(), self.text());
        self.steps
            .push(format!("{} says {text} to {}", self.name(c), USERS[to].0));
        self.must("chat send", async || {
            self.client(c).chat().send(&peer, &text).await
        })
        .await;
        let recipients = [self.clients_of(u), self.clients_of(v)].concat();
        self.connections.get_mut(&(u, v)).unwrap().push(Sent {
            from,
            text,
            to: recipients.into_iter().collect(),
        });
        true
    }

    async fn add_client(&mut self) -> bool {
        let users: Vec<usize> = (0..USERS.len())
            .filter(|u| self.clients_of(*u).len() < MAX_CLIENTS_PER_USER)
            .collect();
        let Some(u) = self.pick(&users) else {
            return false;
        };
        let (name, server) = USERS[u];
        let siblings = self.clients_of(u);
        let label = format!("{name}-{}", siblings.len());
        self.steps.push(format!("{name} adds the client {label}"));
        let client = self
            .devices
            .add_client(&self.servers[server], &label, &self.users[u])
            .await;
        self.clients.push((u, client));
        let new = self.clients.len() - 1;
        // Its siblings bring it into the user's groups and connections; it joins.
        let groups: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.members.contains(&u))
            .map(|g| g.id.clone())
            .collect();
        let peers: Vec<UserName> = self
            .connections
            .keys()
            .filter_map(|&(a, b)| (a == u).then_some(b).or((b == u).then_some(a)))
            .map(|v| self.users[v].clone())
            .collect();
        let syncing = [siblings, vec![new]].concat();
        self.until(
            "the new client joining its user's groups",
            &syncing,
            async |w| {
                for id in &groups {
                    if !w.in_group(new, id).await {
                        return false;
                    }
                }
                let contacts = w.client(new).contacts().list().await.unwrap_or_default();
                peers
                    .iter()
                    .all(|p| contacts.iter().any(|c| c.peer.as_ref() == Some(p)))
            },
        )
        .await;
        for g in 0..self.groups.len() {
            if self.groups[g].members.contains(&u) {
                self.groups[g].joined.insert(new);
            }
        }
        true
    }

    async fn rotate_token(&mut self) -> bool {
        let c = self.rng.below(self.clients.len());
        let u = self.clients[c].0;
        let contacts: Vec<usize> = self
            .connections
            .keys()
            .filter_map(|&(a, b)| (a == u).then_some(b).or((b == u).then_some(a)))
            .collect();
        self.steps
            .push(format!("{} rotates {}'s token", self.name(c), USERS[u].0));
        let mut before = Vec::new();
        for v in &contacts {
            for holder in self.clients_of(*v) {
                before.push((holder, self.token_of(holder, u).await));
            }
        }
        self.must("rotate", async || {
            self.client(c).contacts().rotate_token().await
        })
        .await;
        let holders: Vec<usize> = before.iter().map(|(h, _)| *h).collect();
        self.until("the new token reaching the contacts", &holders, async |w| {
            for (holder, old) in &before {
                let now = w.token_of(*holder, u).await;
                if now.is_none() || now == *old {
                    return false;
                }
            }
            true
        })
        .await;
        for holder in holders {
            self.tokens.insert((holder, u));
        }
        true
    }

    async fn kill_a_server(&mut self) -> bool {
        let s = self.rng.below(self.servers.len());
        self.steps
            .push(format!("{} is killed and restarted", DOMAINS[s]));
        self.servers[s].restart();
        true
    }

    /// A client of a user no longer in a group it was in tries to send there: refused.
    async fn send_after_removal(&mut self) -> bool {
        let mut choices = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for &c in &group.joined {
                if !group.members.contains(&self.clients[c].0) {
                    choices.push((g, c));
                }
            }
        }
        let Some((g, c)) = self.pick(&choices) else {
            return false;
        };
        let id = self.groups[g].id.clone();
        self.steps.push(format!(
            "{} (no longer a member) tries to send in g{g}",
            self.name(c)
        ));
        self.until("the removal reaching the client", &[c], async |w| {
            !w.in_group(c, &id).await
        })
        .await;
        let refused = self
            .must("refused send", async || {
                match self.client(c).groups().send(&id, "not allowed").await {
                    Ok(_) => panic!("a removed member could send\n{}", self.context()),
                    Err(e) if e.code() == "removed_from_group" => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        let () = refused;
        true
    }

    /// What each client shows against what the model expects; `None` if all agree.
    async fn mismatch(&self) -> Option<String> {
        for c in 0..self.clients.len() {
            let (u, client) = (self.clients[c].0, self.client(c));
            for (g, group) in self.groups.iter().enumerate() {
                let expected: Vec<(String, String)> = group
                    .log
                    .iter()
                    .filter(|m| m.to.contains(&c))
                    .map(|m| (self.users[m.from].to_string(), m.text.clone()))
                    .collect();
                let shown: Vec<(String, String)> = match client.groups().messages(&group.id).await {
                    Ok(log) => shown(&log),
                    Err(e) if e.code() == "unknown_group" => Vec::new(),
                    Err(e) => return Some(format!("{}: g{g}: {e}", self.name(c))),
                };
                if shown != expected {
                    return Some(format!(
                        "{} shows in g{g}\n  {shown:?}\nbut the model says\n  {expected:?}",
                        self.name(c)
                    ));
                }
                if group.members.contains(&u) {
                    let mut want: Vec<UserName> = group
                        .members
                        .iter()
                        .map(|m| self.users[*m].clone())
                        .collect();
                    want.sort();
                    match client.groups().members(&group.id).await {
                        Ok(members) if members == want => {}
                        other => {
                            return Some(format!(
                                "{} lists the members of g{g} as {other:?}, not {want:?}",
                                self.name(c)
                            ))
                        }
                    }
                }
            }
            for (&(a, b), log) in &self.connections {
                if u != a && u != b {
                    continue;
                }
                let peer = &self.users[if u == a { b } else { a }];
                let expected: Vec<(String, String)> = log
                    .iter()
                    .filter(|m| m.to.contains(&c))
                    .map(|m| (self.users[m.from].to_string(), m.text.clone()))
                    .collect();
                let shown: Vec<(String, String)> = match client.chat().messages(peer).await {
                    Ok(log) => shown(&log),
                    Err(e) => return Some(format!("{}: chat with {peer}: {e}", self.name(c))),
                };
                if shown != expected {
                    return Some(format!(
                        "{} shows in the chat with {peer}\n  {shown:?}\nbut the model says\n  {expected:?}",
                        self.name(c)
                    ));
                }
            }
        }
        None
    }

    /// Every client syncs (in random order, a few rounds, for relays between servers to
    /// arrive), then every client must show what the model says.
    async fn check(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut order: Vec<usize> = (0..self.clients.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, self.shuffle.below(i + 1));
            }
            for _ in 0..2 {
                self.sync_clients(&order).await;
            }
            match self.mismatch().await {
                None => return,
                Some(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                Some(problem) => panic!("{problem}\n{}", self.context()),
            }
        }
    }
}

/// A log as (sender, text) pairs.
fn shown(log: &[roost_client::StoredMessage]) -> Vec<(String, String)> {
    log.iter()
        .map(|m| {
            let from = m
                .from
                .as_ref()
                .map_or("(unknown)".into(), |u| u.to_string());
            (from, m.text.clone())
        })
        .collect()
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_shows_what_the_model_says_whatever_users_servers_and_syncs_do() {
    let ops = setting("ROOST_MODEL_OPS", 40) as usize;
    let seeds: Vec<u64> = match std::env::var("ROOST_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => (0..setting("ROOST_MODEL_SEEDS", 2))
            .map(|n| 0x0DE1_0000 + n)
            .collect(),
    };
    for seed in seeds {
        eprintln!("model seed {seed}: {ops} steps");
        let mut world = World::new(seed).await;
        for step in 1..=ops {
            world.step().await;
            if step % 8 == 0 || step == ops {
                world.check().await;
            }
        }
        eprintln!(
            "model seed {seed}: passed ({} groups, {} connections, {} clients)",
            world.groups.len(),
            world.connections.len(),
            world.clients.len()
        );
    }
}
