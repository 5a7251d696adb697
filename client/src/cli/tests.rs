use std::path::{Path, PathBuf};

use roost_protocol::{
    api::{Notice, QueueItem},
    federation::Resolver,
    Timestamp,
};

use super::{
    text::{format_time, received_text},
    *,
};
use crate::{connections::INITIAL_PACKAGES, transport::ServerError};
use clap::CommandFactory;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("roost-client").chain(args.iter().copied()))
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn register_takes_a_user_a_server_and_optional_password_file_and_token() {
    let cli = parse(&[
        "--state",
        "/tmp/s",
        "register",
        "alice@example.org",
        "--server",
        "http://127.0.0.1:8080",
        "--password-file",
        "/tmp/pw",
        "--token",
        "t0k",
        "--json",
    ])
    .unwrap();
    assert!(cli.json);
    assert_eq!(cli.state.as_deref(), Some(Path::new("/tmp/s")));
    match cli.command {
        Command::Register {
            user,
            server,
            password_file,
            token,
        } => {
            assert_eq!(user.to_string(), "alice@example.org");
            assert_eq!(server, "http://127.0.0.1:8080");
            assert_eq!(password_file.as_deref(), Some(Path::new("/tmp/pw")));
            assert_eq!(token.as_deref(), Some("t0k"));
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["register", "alice", "--server", "http://x"][..],
        &["register", "alice@example.org"],
        &["add-client", "Alice@example.org", "--server", "http://x"],
        &["delete-client", "not-hex"],
        &["send-own", "00112233445566778899aabbccddeeff"],
        &["inbox", "--wait", "31"],
        &["publish-packages", "--count", "1001"],
        &["publish-packages", "--count", "-1"],
        &["discover", "bob"],
        &["decline"],
        &["frobnicate"],
        &[],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
}

#[test]
fn the_other_commands_parse() {
    let id = "00112233445566778899aabbccddeeff";
    assert!(matches!(
        parse(&["send-own", id, "hello there"]).unwrap().command,
        Command::SendOwn { client_id, text } if client_id.to_string() == id && text == "hello there"
    ));
    assert!(matches!(
        parse(&["delete-client", id]).unwrap().command,
        Command::DeleteClient { client_id } if client_id.to_string() == id
    ));
    assert!(matches!(
        parse(&["inbox", "--wait", "5"]).unwrap().command,
        Command::Inbox { wait: 5 }
    ));
    assert!(matches!(
        parse(&["inbox"]).unwrap().command,
        Command::Inbox { wait: 0 }
    ));
    assert!(matches!(
        parse(&["whoami"]).unwrap().command,
        Command::Whoami
    ));
    assert!(matches!(
        parse(&["clients", "--json"]).unwrap().command,
        Command::Clients
    ));
    assert!(matches!(
        parse(&["add-client", "bob@b.test", "--server", "http://b"])
            .unwrap()
            .command,
        Command::AddClient { .. }
    ));
    assert!(matches!(
        parse(&["publish-packages"]).unwrap().command,
        Command::PublishPackages { count } if count == INITIAL_PACKAGES as u64
    ));
    assert!(matches!(
        parse(&["publish-packages", "--count", "0"])
            .unwrap()
            .command,
        Command::PublishPackages { count: 0 }
    ));
    assert!(matches!(
        parse(&["requests", "--json"]).unwrap().command,
        Command::Requests { profile: None }
    ));
    assert!(matches!(
        parse(&["requests", "--profile", "a1b2"]).unwrap().command,
        Command::Requests { profile: Some(id) } if id == "a1b2"
    ));
    assert!(parse(&["profile", "set", "--avatar", "a.png", "--no-avatar"]).is_err());
    assert!(matches!(
        parse(&["decline", "a1b2c3d4"]).unwrap().command,
        Command::Decline { id } if id == "a1b2c3d4"
    ));
    assert!(matches!(
        parse(&["discover", "bob@b.test"]).unwrap().command,
        Command::Discover { user } if user.to_string() == "bob@b.test"
    ));
}

#[tokio::test]
async fn resolve_entries_are_repeatable_and_a_bad_one_is_a_usage_error() {
    let cli = parse(&[
        "--resolve",
        "b.test=http://127.0.0.1:9",
        "--resolve",
        "c.test=https://c.example",
        "contacts",
    ])
    .unwrap();
    assert_eq!(cli.resolve.len(), 2);
    let resolver = Resolver::from_entries(&cli.resolve).unwrap();
    assert_eq!(
        resolver.base_url(&"b.test".parse().unwrap()),
        "http://127.0.0.1:9"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let bad = parse(&["--state", state, "--resolve", "b.test", "contacts"]).unwrap();
    let error = execute(&bad).await.unwrap_err();
    assert_eq!((error.code(), error.exit_code()), ("bad_resolve", 2));
}

#[test]
fn a_failed_first_publish_is_a_warning_not_a_failure() {
    let enrolled = |packages| Outcome::Enrolled {
        user: "alice@a.test".parse().unwrap(),
        client_id: ClientId([1; 16]),
        server_url: "http://a".into(),
        packages,
    };
    let published = enrolled(Some(Ok(ConnectionPackageCount {
        remaining: 20,
        has_last_resort: true,
    })));
    assert!(published.warning().is_none());
    assert_eq!(
        published.to_json(),
        json!({ "user": "alice@a.test", "client_id": ClientId([1; 16]).to_string() })
    );
    assert!(published.to_text().contains("20 one-time"));
    let failed = enrolled(Some(Err(("network".into(), "cannot reach".into()))));
    let warning = failed.warning().unwrap();
    assert_eq!(warning["warning"], "packages_not_published");
    assert_eq!(warning["error"], "network");
    assert!(warning["message"]
        .as_str()
        .unwrap()
        .contains("roost-client publish-packages"));
}

#[test]
fn the_state_directory_defaults_to_home() {
    assert_eq!(
        state_dir(None, Some("/home/x".into())).unwrap(),
        PathBuf::from("/home/x/.roost-client")
    );
    assert_eq!(
        state_dir(Some(Path::new("/s")), None).unwrap(),
        PathBuf::from("/s")
    );
    assert_eq!(state_dir(None, None).unwrap_err().exit_code(), 2);
}

#[test]
fn a_password_file_loses_exactly_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    for (content, expected) in [
        ("secret\n", "secret"),
        ("secret\r\n", "secret"),
        ("secret", "secret"),
        ("secret\n\n", "secret\n"),
        (" spaced \n", " spaced "),
    ] {
        std::fs::write(&file, content).unwrap();
        assert_eq!(read_password(Some(&file), None).unwrap(), expected);
    }
}

#[test]
fn the_password_file_wins_over_the_environment_and_one_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    assert_eq!(
        read_password(Some(&file), Some("from-env".into())).unwrap(),
        "from-file"
    );
    assert_eq!(
        read_password(None, Some("from-env".into())).unwrap(),
        "from-env"
    );
    let none = read_password(None, None).unwrap_err();
    assert_eq!(none.code(), "no_password");
    assert!(none.to_string().contains("--password-file"));
    assert_eq!(none.exit_code(), 2);
    std::fs::write(&file, "\n").unwrap();
    assert_eq!(
        read_password(Some(&file), None).unwrap_err().code(),
        "no_password"
    );
    let missing = read_password(Some(&dir.path().join("nope")), None).unwrap_err();
    assert_eq!(missing.code(), "password_file");
}

#[test]
fn inbox_items_have_stable_json() {
    let a = ClientId([1; 16]);
    let items = vec![
        Received {
            seq: 1,
            item: Ok(QueueItem::Notice(Notice::ClientAdded { client_id: a })),
        },
        Received {
            seq: 2,
            item: Ok(QueueItem::FromOwnClient {
                sender: a,
                payload: b"hi\x1b[2J".to_vec(),
            }),
        },
        Received {
            seq: 3,
            item: Err(roost_protocol::crypto::CryptoError::Decryption),
        },
    ];
    let value = Outcome::Inbox(items).to_json();
    assert_eq!(value["items"][0]["kind"], "client_added");
    assert_eq!(value["items"][0]["client_id"], a.to_string());
    assert_eq!(value["items"][1]["kind"], "from_own_client");
    assert_eq!(value["items"][1]["sender"], a.to_string());
    assert_eq!(value["items"][1]["text"], "hi\x1b[2J");
    assert_eq!(value["items"][2]["kind"], "unreadable");
    assert_eq!(value["items"][2]["seq"], 3);
    let text = received_text(&Received {
        seq: 2,
        item: Ok(QueueItem::FromOwnClient {
            sender: a,
            payload: b"hi\x1b[2J".to_vec(),
        }),
    });
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn errors_have_json_with_a_code() {
    let err = CliError::Client(Error::Server(ServerError::Http {
        status: 409,
        code: "user_taken".into(),
        message: "taken".into(),
    }));
    let value = err.to_json();
    assert_eq!(value["error"], "user_taken");
    assert_eq!(value["status"], 409);
    assert!(value["message"].as_str().unwrap().contains("taken"));
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn times_are_shown_in_utc() {
    assert_eq!(format_time(Timestamp(0)), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        format_time(Timestamp(951_782_400)),
        "2000-02-29 00:00:00 UTC"
    );
    assert_eq!(
        format_time(Timestamp(1_767_225_599)),
        "2025-12-31 23:59:59 UTC"
    );
}
