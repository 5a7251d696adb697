//! Fuzzing every decoder of untrusted bytes: each must answer any input with a value or an
//! error — never a panic, and never an allocation beyond its limit.
//!
//! Inputs are random bytes, and mutations of valid encodings (bit flips, cut-offs, insertions,
//! overwritten length prefixes, spliced valid pieces), from a seeded generator. CI runs a short
//! pass; a long one:
//!
//! ```sh
//! ROOST_FUZZ_ITERATIONS=200000 cargo test --release -p roost-protocol --test fuzz
//! ```
//!
//! A failure prints the target, the seed and the input in hex; `ROOST_FUZZ_SEED=S` runs from
//! that seed again.

// The input generator is shared with the server's fuzz tests.
#[path = "../../tests/common/fuzz.rs"]
mod fuzz_input;

use fuzz_input::fuzz;
use roost_protocol::{
    api::{self, ConnectionPackages, NewClient, QueueBatch, QueueItem, QueueMessage},
    auth::{RequestSignature, ServerSignature},
    codec,
    connection::{
        ConnectionEstablishmentBody, ConnectionEstablishmentPackage, ConnectionPackage, EarKey,
        SealedConnectionRequest,
    },
    content::Content,
    credentials::Validity,
    ds::{GroupDelivery, SealedQueueRef},
    federation::{FederatedDelivery, RelayBatch, RelayOutcome, RelayReceipt, ServerKey},
    queue::QueueChain,
    AsCredential, AsCredentials, AsIntermediateCredential, ClientCredential, ClientId, Domain,
    HpkeSecretKey, SigningKey, UserName,
};
use serde::de::DeserializeOwned;

/// The decoder every wire body goes through.
fn decodes<T: DeserializeOwned>() -> impl Fn(&[u8]) {
    |bytes| {
        let _ = codec::decode::<T>(bytes);
    }
}

struct World {
    user: UserName,
    key: SigningKey,
    credential: ClientCredential,
    credentials: AsCredentials,
    package: ConnectionPackage,
}

fn world() -> World {
    let domain: Domain = "a.test".parse().unwrap();
    let validity = Validity::starting_now(3600);
    let as_key = SigningKey::generate();
    let intermediate_key = SigningKey::generate();
    let user: UserName = "alice@a.test".parse().unwrap();
    let key = SigningKey::generate();
    let credential = ClientCredential::issue(
        user.clone(),
        ClientId::random(),
        key.verifying_key(),
        validity,
        &intermediate_key,
    );
    let credentials = AsCredentials {
        as_credentials: vec![AsCredential::issue(domain.clone(), &as_key, validity)],
        intermediates: vec![AsIntermediateCredential::issue(
            domain,
            &intermediate_key,
            validity,
            &as_key,
        )],
    };
    let package = ConnectionPackage::new(
        credential.clone(),
        &key,
        HpkeSecretKey::generate().1,
        validity,
        false,
    );
    World {
        user,
        key,
        credential,
        credentials,
        package,
    }
}

fn sealed_request(world: &World) -> SealedConnectionRequest {
    let body = ConnectionEstablishmentBody {
        sender_client_credential: world.credential.clone(),
        connection_group_id: vec![7; 16],
        group_state_ear_key: EarKey::random(),
        credential_ear_key: EarKey::random(),
        responder: world.user.clone(),
        connection_package: world.package.hash(),
        initiator_profile: None,
    };
    ConnectionEstablishmentPackage::new(body, &world.key)
        .seal(&world.package)
        .unwrap()
}

fn delivery() -> FederatedDelivery {
    let domain: Domain = "b.test".parse().unwrap();
    FederatedDelivery {
        id: [3; 16],
        to: domain.clone(),
        queue: SealedQueueRef::seal(domain, &HpkeSecretKey::generate().1, &ClientId::random())
            .unwrap(),
        item: GroupDelivery::Message {
            seq: 1,
            group_id: vec![1, 2, 3],
            message: vec![9; 40],
        },
    }
}

#[test]
fn client_bodies_the_server_decodes() {
    let world = world();
    let new_client = NewClient::new(&world.user, &world.key, HpkeSecretKey::generate().1);
    fuzz(
        "RegisterUser",
        &[codec::encode(&api::RegisterUser {
            user: world.user.clone(),
            password: "a long passphrase".into(),
            registration_token: Some("token".into()),
            client: new_client.clone(),
        })],
        decodes::<api::RegisterUser>(),
    );
    fuzz(
        "AddClient",
        &[codec::encode(&api::AddClient {
            password: "a long passphrase".into(),
            client: new_client,
        })],
        decodes::<api::AddClient>(),
    );
    fuzz(
        "Enqueue",
        &[codec::encode(&api::Enqueue {
            op: roost_protocol::OpId::random(),
            payload: vec![1; 64],
        })],
        decodes::<api::Enqueue>(),
    );
    fuzz(
        "Ack",
        &[codec::encode(&api::Ack { up_to: 12345 })],
        decodes::<api::Ack>(),
    );
    fuzz(
        "PublishConnectionPackages",
        &[codec::encode(&api::PublishConnectionPackages {
            packages: vec![world.package.clone(), world.package.clone()],
        })],
        decodes::<api::PublishConnectionPackages>(),
    );
    fuzz(
        "SealedConnectionRequest",
        &[codec::encode(&sealed_request(&world))],
        decodes::<SealedConnectionRequest>(),
    );
}

#[test]
fn server_to_server_bodies() {
    let batch = RelayBatch {
        deliveries: vec![delivery(), delivery()],
    };
    fuzz(
        "RelayBatch",
        &[codec::encode(&batch)],
        decodes::<RelayBatch>(),
    );
    let receipt = RelayReceipt {
        outcomes: vec![
            RelayOutcome::Queued,
            RelayOutcome::Refused(api::ErrorBody {
                error: "unknown_queue".into(),
                message: "no such queue".into(),
            }),
        ],
    };
    fuzz(
        "RelayReceipt",
        &[codec::encode(&receipt)],
        decodes::<RelayReceipt>(),
    );
    fuzz(
        "ServerKey",
        &[codec::encode(&ServerKey {
            domain: "b.test".parse().unwrap(),
            verifying_key: SigningKey::generate().verifying_key(),
        })],
        decodes::<ServerKey>(),
    );
}

#[test]
fn answers_a_client_decodes() {
    let world = world();
    let queue_key = HpkeSecretKey::generate();
    let client = ClientId::random();
    let item = QueueItem::ConnectionRequest(sealed_request(&world));
    let chain = QueueChain::start(1);
    let message = QueueMessage::seal(&chain, Some(&queue_key.1), &client, &item).unwrap();
    let chained = QueueMessage::seal(&chain.next(), None, &client, &item).unwrap();
    let hpke = QueueMessage::seal_hpke(&queue_key.1, &client, 3, &item).unwrap();
    fuzz(
        "QueueBatch",
        &[codec::encode(&QueueBatch {
            messages: vec![message.clone(), message.clone()],
            has_more: true,
        })],
        decodes::<QueueBatch>(),
    );
    fuzz(
        "ConnectionPackages",
        &[codec::encode(&ConnectionPackages {
            packages: vec![world.package.clone()],
        })],
        decodes::<ConnectionPackages>(),
    );
    fuzz(
        "AsCredentials",
        &[codec::encode(&world.credentials)],
        decodes::<AsCredentials>(),
    );
    fuzz(
        "ErrorBody (JSON)",
        &[br#"{"error":"queue_full","message":"the queue is full"}"#.to_vec()],
        |bytes| {
            let _ = serde_json::from_slice::<api::ErrorBody>(bytes);
        },
    );
    // What a client opens: a sealed queue item, then a sealed connection request in it.
    let seeds = [&message, &chained, &hpke].map(codec::encode);
    fuzz("QueueMessage::open", &seeds, |bytes| {
        if let Ok(message) = codec::decode::<QueueMessage>(bytes) {
            let _ = message.open(&queue_key.0, &client, &mut Some(chain.clone()));
        }
    });
    fuzz(
        "Content",
        &[
            codec::encode(&Content::Text("hello".into())),
            Content::Text("hello".into()).encode(),
        ],
        |bytes| {
            let _ = Content::decode(bytes);
        },
    );
}

#[test]
fn signature_headers() {
    let key = SigningKey::generate();
    let client = RequestSignature::sign(&key, ClientId::random(), "GET", "/x", b"", 1)
        .to_header()
        .into_bytes();
    let server = ServerSignature::sign(&key, "a.test".parse().unwrap(), "POST", "/y", b"z", 2)
        .to_header()
        .into_bytes();
    let parse = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let _ = RequestSignature::parse_header(&text);
        let _ = ServerSignature::parse_header(&text);
    };
    fuzz("signature headers", &[client, server], parse);
}

#[test]
fn names_and_ids_in_paths() {
    let samples: Vec<Vec<u8>> = ["alice@a.test", "a.b-c_d@x.example.org:8443", "..@x", "a@b"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain([ClientId::random().to_string().into_bytes()])
        .collect();
    fuzz("names", &samples, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let _ = text.parse::<UserName>();
        let _ = text.parse::<Domain>();
        let _ = text.parse::<ClientId>();
    });
}
