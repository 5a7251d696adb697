//! Metrics: real `roost` servers with `metrics.bind` set, scraped over HTTP as Prometheus would
//! and parsed line by line: requests by route and status with latency histograms, queues,
//! actors, store flushes, relays per peer domain — on their own listener only, and with no user
//! name, client id or group id anywhere in them.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    devices::Devices,
    free_port,
    pair::{connected_pair, settle},
    Options, TestServer,
};

/// One sample of a scrape: its name, its labels, its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a scrape in Prometheus's text format, failing on any line that is not one.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect(line)),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let mut parsed = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect(line);
            let end = after.find('"').expect(line);
            parsed.insert(key.to_owned(), after[..end].to_owned());
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels: parsed,
            value,
        });
    }
    samples
}

async fn scrape(server: &TestServer) -> String {
    let response = reqwest::get(server.metrics_url()).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn with_metrics() -> Options {
    Options {
        settings: vec![("ROOST_METRICS__BIND", "127.0.0.1:0".into())],
        ..Options::default()
    }
}

#[tokio::test]
async fn a_scrape_counts_requests_queues_actors_and_flushes_and_names_no_user_client_or_group() {
    let server = TestServer::start(with_metrics());
    let devices = Devices::new();
    let zebediah = server.user("zebediah");
    let quentin = server.user("quentin");
    let alice = devices.register(&server, "z", &zebediah).await;
    let bob = devices.register(&server, "q", &quentin).await;
    common::devices::connect(&alice, &bob, &[]).await;
    alice.chat().send(&quentin, "hello").await.unwrap();
    let group = alice.contacts().list().await.unwrap()[0].group_id.clone();

    let text = scrape(&server).await;
    let samples = parse(&text);
    let count = |route: &str, status: &str| {
        value(
            &samples,
            "roost_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(count("POST /as/v1/users", "201"), Some(2.0), "{text}");
    assert!(value(
        &samples,
        "roost_http_request_duration_seconds_count",
        &[("route", "POST /as/v1/users")]
    )
    .is_some_and(|n| n == 2.0));
    assert!(value(
        &samples,
        "roost_http_request_duration_seconds_bucket",
        &[("route", "POST /as/v1/users"), ("le", "+Inf")]
    )
    .is_some());
    assert_eq!(value(&samples, "roost_users", &[]), Some(2.0));
    assert_eq!(value(&samples, "roost_groups", &[]), Some(1.0));
    // bob has not fetched "hello" yet.
    assert!(value(&samples, "roost_queued_messages", &[]).is_some_and(|n| n >= 1.0));
    assert!(value(&samples, "roost_actors_alive", &[("kind", "queue")]).is_some_and(|n| n >= 1.0));
    assert!(value(&samples, "roost_actors_alive", &[("kind", "group")]).is_some_and(|n| n >= 1.0));
    assert!(value(&samples, "roost_store_flush_seconds_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(value(&samples, "roost_store_flush_waiters_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(value(&samples, "roost_store_size_bytes", &[]).is_some_and(|n| n > 0.0));
    assert_eq!(
        value(
            &samples,
            "roost_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // Nothing in a scrape says who is on this server or who talks to whom.
    let forbidden = [
        "zebediah".to_owned(),
        "quentin".to_owned(),
        alice.client_id().to_string(),
        bob.client_id().to_string(),
        hex::encode(&group),
    ];
    for secret in &forbidden {
        assert!(!text.contains(secret.as_str()), "{secret} in:\n{text}");
    }
    // Paths as sent never become labels: a route that does not exist, or an odd method.
    let http = server.http();
    http.send(
        "GET",
        "/as/v1/users/zebediah@localhost/nothing",
        vec![],
        None,
    )
    .await;
    http.send("FROB", "/health", vec![], None).await;
    let text = scrape(&server).await;
    assert!(!text.contains("zebediah"), "{text}");
    assert!(!text.contains("FROB"), "{text}");
    assert!(text.contains("route=\"GET unmatched\""), "{text}");
}

#[tokio::test]
async fn metrics_are_never_on_the_public_port_and_off_unless_asked_for() {
    let server = TestServer::start(with_metrics());
    let public = server.http().send("GET", "/metrics", vec![], None).await;
    assert_eq!(public.status, 404);
    // The metrics listener answers anything else with a JSON error naming what it serves.
    let url = server.metrics_url();
    let client = reqwest::Client::new();
    for (method, path) in [("GET", "/other"), ("POST", "/metrics")] {
        let other = url.replace("/metrics", path);
        let response = client
            .request(method.parse().unwrap(), other)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{method} {path}");
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("/metrics"),
            "{body}"
        );
    }
    // Off by default.
    let plain = TestServer::start(Options::default());
    assert!(!plain.log().contains("metrics"));
    // The public port is refused as the metrics port.
    let port = free_port();
    let mut clash = TestServer::start(Options {
        port,
        ..Options::default()
    });
    assert!(clash.terminate().success());
    clash.options.settings = vec![("ROOST_METRICS__BIND", format!("127.0.0.1:{port}"))];
    let said = clash.start_fails().expect("refused");
    assert!(said.contains("metrics.bind"), "{said}");
}

#[tokio::test]
async fn relays_are_counted_per_peer_domain_with_what_waits_for_each() {
    let mut p = connected_pair("alice", "bob", with_metrics()).await;
    p.servers[1].kill();
    p.alice_phone
        .chat()
        .send(&p.bob, "while b is down")
        .await
        .unwrap();
    let a = &p.servers[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Store figures are read at most every 10 s: wait for a scrape that has them.
        let samples = parse(&scrape(a).await);
        let retries = value(
            &samples,
            "roost_federation_relay_retries_total",
            &[("domain", "b.test")],
        );
        let waiting = value(
            &samples,
            "roost_federation_outbox_waiting",
            &[("domain", "b.test")],
        );
        if retries.is_some_and(|n| n >= 1.0) && waiting.is_some_and(|n| n >= 1.0) {
            assert!(
                value(
                    &samples,
                    "roost_federation_deliveries_relayed_total",
                    &[("domain", "b.test")]
                )
                .is_some_and(|n| n >= 1.0),
                "relays before b went down"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{samples:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.servers[1].start_again();
    let bobs = [&p.bob_phone];
    let alice = p.alice.clone();
    settle(&bobs, async || {
        !p.bob_phone
            .chat()
            .messages(&alice)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // Once the outbox is empty, a later reading says so (0, not what it last held).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let samples = parse(&scrape(&p.servers[0]).await);
        let waiting = value(
            &samples,
            "roost_federation_outbox_waiting",
            &[("domain", "b.test")],
        );
        if waiting == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{waiting:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
