//! Raw HTTP against a test server: requests built and signed by hand, for what the client
//! library would never send.

use roost_protocol::{
    api::{self, NewClient, CONTENT_TYPE},
    auth::RequestSignature,
    codec,
    connection::ConnectionPackage,
    credentials::Validity,
    ids::now_millis,
    queue::QueueChain,
    ClientCredential, ClientId, HpkeSecretKey, SigningKey, UserName,
};

use super::*;

/// A bare HTTP client that speaks the wire format by hand, for requests a well-behaved client
/// would never send.
pub struct Raw {
    pub base: String,
    pub http: reqwest::Client,
    /// Whether costly anonymous requests sent without an Authorization are paid for with the
    /// server's purse (`purse.rs`).
    pub pays: bool,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `WWW-Authenticate` header: how a 401 says to authenticate.
    pub challenge: Option<String>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        write!(
            f,
            "{} {}",
            self.status,
            body.chars().take(300).collect::<String>()
        )
    }
}

impl Response {
    fn error_body(&self) -> api::ErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} without a JSON error body ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The JSON error body's `error` code.
    pub fn error_code(&self) -> String {
        self.error_body().error
    }

    /// The JSON error body's sentence for people.
    pub fn error_message(&self) -> String {
        self.error_body().message
    }

    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> T {
        assert!(
            (200..300).contains(&self.status),
            "status {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        codec::decode(&self.body).expect("decodable body")
    }
}

/// A client identity made by hand.
pub struct Identity {
    pub user: UserName,
    pub key: SigningKey,
    pub queue_key: HpkeSecretKey,
    pub credential: Option<ClientCredential>,
    /// Each queue's key chain, as far as this identity has opened its messages.
    chains: std::sync::Mutex<[Option<QueueChain>; 2]>,
}

impl Identity {
    pub fn new(user: &UserName) -> Identity {
        Identity {
            user: user.clone(),
            key: SigningKey::generate(),
            queue_key: HpkeSecretKey::generate().0,
            credential: None,
            chains: Default::default(),
        }
    }

    /// This identity's copy of its queue's key chain: at the message after the last it opened.
    pub fn chain(&self, kind: api::QueueKind) -> Option<QueueChain> {
        self.chains.lock().unwrap()[kind as usize].clone()
    }

    /// Opens a message of this client's queue of `kind`, which it must open in order (as the
    /// client library does): the queue's key chain moves on with each.
    pub fn open(
        &self,
        kind: api::QueueKind,
        message: &api::QueueMessage,
    ) -> Result<api::QueueItem, roost_protocol::crypto::CryptoError> {
        let mut chains = self.chains.lock().unwrap();
        let chain = &mut chains[kind as usize];
        message.open(&self.queue_key, &self.client_id(), chain)
    }

    pub fn new_client(&self) -> NewClient {
        NewClient::new(&self.user, &self.key, self.queue_key.public_key())
    }

    pub fn client_id(&self) -> ClientId {
        self.credential.as_ref().expect("registered").client_id()
    }

    /// A connection package of this client, with the key to open what is sealed to it.
    pub fn connection_package(
        &self,
        lifetime_secs: u64,
        last_resort: bool,
    ) -> (ConnectionPackage, HpkeSecretKey) {
        let (secret, public) = HpkeSecretKey::generate();
        let package = ConnectionPackage::new(
            self.credential.clone().expect("registered"),
            &self.key,
            public,
            Validity::starting_now(lifetime_secs),
            last_resort,
        );
        (package, secret)
    }
}

impl Raw {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        authorization: Option<String>,
    ) -> Response {
        let authorization = match authorization {
            None if self.pays => Box::pin(self.payment(method, path)).await,
            given => given,
        };
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("content-type", CONTENT_TYPE)
            .body(body);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("request reaches the server");
        Response {
            status: response.status().as_u16(),
            challenge: response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: response.bytes().await.unwrap_or_default().to_vec(),
        }
    }

    /// This raw client, sending what it is given unpaid.
    pub fn unpaid(&self) -> Raw {
        Raw {
            base: self.base.clone(),
            http: self.http.clone(),
            pays: false,
        }
    }

    /// A GET answered with a codec-encoded body; `None` for any other answer.
    pub async fn get_decoded<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        let response = self.send("GET", path, Vec::new(), None).await;
        (response.status == 200)
            .then(|| codec::decode(&response.body).ok())
            .flatten()
    }

    /// An unsigned POST of a codec-encoded body (the DS's requests carry their own proofs).
    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> Response {
        self.send("POST", path, roost_protocol::codec::encode(body), None)
            .await
    }

    /// A request signed by `who`, exactly as the protocol wants.
    pub async fn signed(
        &self,
        who: &Identity,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Response {
        let auth =
            RequestSignature::sign(&who.key, who.client_id(), method, path, &body, now_millis());
        self.send(method, path, body, Some(auth.to_header())).await
    }

    pub async fn register(&self, who: &mut Identity, token: Option<String>) -> Response {
        let body = codec::encode(&api::RegisterUser {
            user: who.user.clone(),
            password: PASSWORD.into(),
            registration_token: token,
            client: who.new_client(),
        });
        let response = self.send("POST", api::AS_USERS, body, None).await;
        if response.status == 201 {
            who.credential = Some(response.decode());
        }
        response
    }

    pub async fn add_client(&self, who: &mut Identity, password: &str) -> Response {
        let body = codec::encode(&api::AddClient {
            password: password.into(),
            client: who.new_client(),
        });
        let response = self
            .send("POST", &api::as_user_clients(&who.user), body, None)
            .await;
        if response.status == 201 {
            who.credential = Some(response.decode());
        }
        response
    }

    pub async fn enqueue(&self, from: &Identity, to: &ClientId, payload: &[u8]) -> Response {
        let body = codec::encode(&api::Enqueue {
            op: roost_protocol::OpId::random(),
            payload: payload.to_vec(),
        });
        self.signed(from, "POST", &api::qs_queue_messages(to), body)
            .await
    }

    pub async fn fetch(&self, who: &Identity, from: u64, max: u32, wait_ms: u64) -> Response {
        let query = api::FetchQuery {
            from,
            max: Some(max),
            wait_ms,
            ack: None,
        };
        self.fetch_with(who, query).await
    }

    /// A fetch of `who`'s message queue with any query.
    pub async fn fetch_with(&self, who: &Identity, query: api::FetchQuery) -> Response {
        let path = format!(
            "{}?{}",
            api::qs_queue_messages(&who.client_id()),
            query.to_query()
        );
        self.signed(who, "GET", &path, Vec::new()).await
    }

    /// Every message in `who`'s queue, fetched batch by batch.
    pub async fn fetch_all(&self, who: &Identity) -> Vec<api::QueueMessage> {
        let mut messages = Vec::new();
        let mut from = 0;
        loop {
            let batch: api::QueueBatch = self.fetch(who, from, 1000, 0).await.decode();
            messages.extend(batch.messages);
            match messages.last() {
                Some(last) if batch.has_more => from = last.seq + 1,
                _ => return messages,
            }
        }
    }

    pub async fn publish(&self, who: &Identity, packages: Vec<ConnectionPackage>) -> Response {
        let body = codec::encode(&api::PublishConnectionPackages { packages });
        self.signed(who, "POST", api::AS_CONNECTION_PACKAGES, body)
            .await
    }

    pub async fn discover(&self, user: &UserName) -> Response {
        self.send("GET", &api::as_user_connection_packages(user), vec![], None)
            .await
    }

    pub async fn ack(&self, who: &Identity, up_to: u64) -> Response {
        let body = codec::encode(&api::Ack { up_to });
        self.signed(who, "POST", &api::qs_queue_ack(&who.client_id()), body)
            .await
    }
}

/// QS key packages and friendship tokens.
impl Raw {
    pub async fn publish_key_packages(
        &self,
        who: &Identity,
        entries: Vec<roost_protocol::key_packages::KeyPackageEntry>,
        last_resort: Option<roost_protocol::key_packages::KeyPackageEntry>,
    ) -> Response {
        let body = codec::encode(&api::PublishKeyPackages {
            entries,
            last_resort,
        });
        self.signed(who, "POST", api::QS_KEY_PACKAGES, body).await
    }

    pub async fn key_package_count(&self, who: &Identity) -> api::KeyPackageCount {
        self.signed(who, "GET", api::QS_KEY_PACKAGES, vec![])
            .await
            .decode()
    }

    pub async fn friendship_token(
        &self,
        who: &Identity,
    ) -> roost_protocol::key_packages::FriendshipToken {
        self.signed(who, "GET", api::QS_FRIENDSHIP_TOKEN, vec![])
            .await
            .decode()
    }

    /// Public: whoever knows the token.
    pub async fn claim_key_packages(
        &self,
        token: &roost_protocol::key_packages::FriendshipToken,
    ) -> Response {
        let body = codec::encode(&api::ClaimKeyPackages {
            token: token.clone(),
        });
        self.send("POST", api::QS_CLAIM_KEY_PACKAGES, body, None)
            .await
    }
}
