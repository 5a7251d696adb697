//! A fault-injecting HTTP proxy for tests: it stands between a client (or a peer server) and a
//! real server on loopback, passes requests through, and does to the ones a rule matches what
//! the rule says — drop the request, drop the response after the server handled it, delay it,
//! send it twice, cut the connection in the middle of the body, or change its body. Each rule applies a set
//! number of times, so a retry after the fault gets through.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What to do to a matching request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Close the connection without passing the request on.
    DropRequest,
    /// Pass the request on, wait for the server's answer, then close the connection instead
    /// of answering: the server did the work, the caller never learns it.
    DropResponse,
    /// Hold the request this long before passing it on.
    Delay(Duration),
    /// Pass the request on twice; answer with the second response.
    Duplicate,
    /// Pass on the head and half the body, then close both connections.
    ResetMidBody,
    /// Pass the request on with its body changed by this function (keeping its length), as
    /// a buggy or hostile client would have sent it.
    Tamper(fn(&mut Vec<u8>)),
}

struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    times: usize,
}

/// A running proxy to one server.
pub struct FaultProxy {
    port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    hits: Arc<Mutex<Vec<(String, String, Fault)>>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (host:port) on a free loopback port.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let hits: Arc<Mutex<Vec<(String, String, Fault)>>> = Arc::default();
        let (upstream, shared_rules, shared_hits) =
            (upstream.to_owned(), rules.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, rules, hits) =
                    (upstream.clone(), shared_rules.clone(), shared_hits.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &rules, &hits).await;
                });
            }
        });
        FaultProxy { port, rules, hits }
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's host:port.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to the next `times` requests with `method` whose path contains
    /// `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            times,
        });
    }

    /// The faults applied so far: method, path and fault.
    pub fn applied(&self) -> Vec<(String, String, Fault)> {
        self.hits.lock().unwrap().clone()
    }

    /// Whether every injected fault has been used up.
    pub fn all_applied(&self) -> bool {
        self.rules.lock().unwrap().iter().all(|r| r.times == 0)
    }
}

/// One request as it came in: its head (with `Connection: close` for the server) and body.
struct Request {
    method: String,
    path: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    hits: &Mutex<Vec<(String, String, Fault)>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let Some(mut request) = read_request(&mut client, &mut buffer).await? else {
        return Ok(());
    };
    let fault = take_fault(rules, &request);
    if let Some(fault) = fault {
        hits.lock()
            .unwrap()
            .push((request.method.clone(), request.path.clone(), fault));
    }
    match fault {
        Some(Fault::DropRequest) => return Ok(()),
        Some(Fault::ResetMidBody) => {
            let mut server = TcpStream::connect(upstream).await?;
            server.write_all(&request.head).await?;
            server
                .write_all(&request.body[..request.body.len() / 2])
                .await?;
            return Ok(());
        }
        Some(Fault::Delay(pause)) => tokio::time::sleep(pause).await,
        Some(Fault::Tamper(change)) => change(&mut request.body),
        _ => {}
    }
    let mut response = forward(upstream, &request).await?;
    match fault {
        Some(Fault::DropResponse) => return Ok(()),
        Some(Fault::Duplicate) => response = forward(upstream, &request).await?,
        _ => {}
    }
    // One request per connection: the server was asked to close after answering, and so the
    // client opens a new connection for its next request.
    client.write_all(&response).await
}

fn take_fault(rules: &Mutex<Vec<Rule>>, request: &Request) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| {
        r.times > 0 && r.method == request.method && request.path.contains(&r.path_contains)
    })?;
    rule.times -= 1;
    Some(rule.fault)
}

/// Sends one request to the server on a fresh connection and reads its whole response.
async fn forward(upstream: &str, request: &Request) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&request.head).await?;
    server.write_all(&request.body).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    Ok(response)
}

/// Reads one request (head and `Content-Length` body); `None` at the end of the connection.
async fn read_request(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let mut length = 0;
    let mut head = String::new();
    head.push_str(head_text.split("\r\n").next().unwrap_or_default());
    head.push_str("\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Ok(Some(Request {
        method,
        path,
        head: head.into_bytes(),
        body,
    }))
}

/// alice, whose client reaches `server` only through a fault proxy, and bob, connected.
pub struct ProxiedPair {
    pub proxy: FaultProxy,
    pub alice: roost_client::Client,
    pub bob: roost_client::Client,
    pub devices: super::devices::Devices,
}

pub async fn proxied_pair(server: &super::TestServer) -> ProxiedPair {
    let proxy = FaultProxy::start(server.url.trim_start_matches("http://")).await;
    let devices = super::devices::Devices::new();
    let alice = devices
        .register_at(&proxy.url(), "alice", &server.user("alice"))
        .await;
    let bob = devices.register(server, "bob", &server.user("bob")).await;
    super::devices::connect(&alice, &bob, &[]).await;
    ProxiedPair {
        proxy,
        alice,
        bob,
        devices,
    }
}
