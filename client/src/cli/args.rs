//! The command line's arguments: every command and option, with the help text people read.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use roost_protocol::{ClientId, UserName};

use crate::connections::INITIAL_PACKAGES;

/// Environment variable a password is read from when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "ROOST_PASSWORD";
/// Longest `inbox --wait`, the server's long-poll limit.
pub const MAX_WAIT_SECS: u64 = 30;
/// Most packages `publish-packages` makes at once (what the AS keeps for a client).
pub const MAX_PUBLISH_COUNT: u64 = 1000;

/// Command-line client for a Roost homeserver.
///
/// Each state directory holds one client (one device) of one user: its secret keys, its
/// credential, its home server and how far it has read its queue. Create one with `register`
/// (a new user) or `add-client` (another device of an existing user).
#[derive(Debug, Parser)]
#[command(name = "roost-client", version)]
pub struct Cli {
    /// State directory of this client [default: $HOME/.roost-client]
    #[arg(long, global = true, env = "ROOST_CLIENT_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Print the result as one JSON value on stdout; errors go to stderr as
    /// {"error": CODE, "message": TEXT}
    #[arg(long, global = true)]
    pub json: bool,

    /// Reach the homeserver of DOMAIN at URL instead of https://DOMAIN (repeatable; for
    /// private deployments and local tests), e.g. --resolve b.test=http://127.0.0.1:8081
    #[arg(
        long,
        global = true,
        value_name = "DOMAIN=URL",
        env = "ROOST_CLIENT_RESOLVE",
        value_delimiter = ','
    )]
    pub resolve: Vec<String>,

    /// Also trust the CA certificates in FILE (PEM) for homeservers' TLS certificates, beside
    /// the system's roots: for a private deployment with its own CA.
    #[arg(long, global = true, value_name = "FILE", env = "ROOST_CLIENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// Doc comments here are the --help text, where URLs are plain text.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new user on a homeserver, with this as its first client.
    ///
    /// The password is read from --password-file, or else from the ROOST_PASSWORD environment
    /// variable; it is never taken on the command line.
    Register {
        /// The new user's name, e.g. alice@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
        /// Base URL of the user's homeserver, e.g. https://roost.example.org
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the password (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Registration token, if the server's admin requires one
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Add this as another client (device) of an existing user, authenticated by its password.
    ///
    /// The password is read from --password-file, or else from the ROOST_PASSWORD environment
    /// variable.
    AddClient {
        /// The existing user, e.g. alice@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
        /// Base URL of the user's homeserver
        #[arg(long, value_name = "URL")]
        server: String,
        /// File holding the password (one trailing newline is ignored)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List the user's clients: id, when added, credential validity, and which one is this.
    Clients,
    /// Remove one of the user's clients (its credential stops working).
    DeleteClient {
        /// Id of the client to remove (32 hex characters, as `clients` shows)
        #[arg(value_name = "CLIENT_ID")]
        client_id: ClientId,
    },
    /// Show this client's user, id, server and credential validity (no network needed).
    Whoami,
    /// Send a text to another client of the same user (or to this one).
    SendOwn {
        /// Id of the receiving client
        #[arg(value_name = "CLIENT_ID")]
        client_id: ClientId,
        /// The text to send
        text: String,
    },
    /// Receive, show and acknowledge the messages waiting in this client's queue.
    Inbox {
        /// Wait up to this many seconds (at most 30) for a first message if none is waiting
        #[arg(long, value_name = "SECS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
        wait: u64,
    },
    /// Publish connection packages, so that others can find this client and ask to connect.
    ///
    /// Publishes COUNT one-time packages, and a last-resort package if the server has none
    /// (or this client's ends within a day); shows how many the server then holds.
    /// `register` and `add-client` already publish a first batch.
    PublishPackages {
        /// How many one-time packages to publish
        #[arg(long, value_name = "N", default_value_t = INITIAL_PACKAGES as u64,
              value_parser = clap::value_parser!(u64).range(0..=MAX_PUBLISH_COUNT))]
        count: u64,
    },
    /// Fetch new connection requests, then list those waiting for a decision.
    ///
    /// Each request is checked (its signature, that it was made for this user and client, and
    /// the sender's credential); one that fails is dropped and listed as rejected.
    Requests {
        /// Instead, fetch and show the profile the sender of request ID attached (only now,
        /// because you asked: what it says is the sender's own claim)
        #[arg(long, value_name = "ID")]
        profile: Option<String>,
    },
    /// Serve a web interface for this client on this machine, for your own browser: prints an
    /// address holding an access token to open (nothing is opened by itself), and runs until
    /// stopped (Ctrl-C). Keys and cryptography stay in this process.
    App {
        /// Where to listen: a loopback address only (port 0: any free port)
        #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
    },
    /// Your profile: a display name, an avatar and an about line that your contacts see (and
    /// whoever you ask to connect, if they choose to look), encrypted so that no server reads
    /// it.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Decline a connection request: it is deleted here; nothing is sent to the sender.
    Decline {
        /// The request's id, as `requests` shows it
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Ask a user to connect: creates the connection group (with this user's other clients)
    /// and sends every client of the user an invitation.
    Connect {
        /// The user to connect with, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// Accept a connection request: join its connection group (or find that another client of
    /// this user already did) and add this user's other clients.
    Accept {
        /// The request's id, as `requests` shows it
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Read this client's queue: join groups it was invited into and apply group changes.
    Sync,
    /// List this client's connections.
    Contacts,
    /// Replace your friendship token and share the new one with your contacts.
    ///
    /// Whoever holds only the old token (it may have leaked) can no longer add you to groups;
    /// your contacts can, once their clients sync.
    RotateToken,
    /// Send a chat message to a connected user (and your other clients).
    Send {
        /// The connected user, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        peer: UserName,
        /// The message
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Show the chat with a connected user, as far as this client has synced.
    Messages {
        /// The connected user, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        peer: UserName,
    },
    /// Keep reading the queue and print chat messages as they arrive (until Ctrl-C).
    ///
    /// With --json, each message is printed as one JSON line.
    Watch {
        /// Stop after this many seconds
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// List this client's named groups.
    Groups,
    /// Named groups: create one, add or remove connected users, leave, chat in it.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Look up a user's clients by name and check their connection packages (for operators).
    ///
    /// Uses up one of each client's one-time connection packages on its server.
    Discover {
        /// The user to look up, e.g. bob@example.org
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
}

/// `roost-client group …`. GROUP is a group's name, or its id (at least four hex digits of
/// it) when names clash; see `roost-client groups`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a named group, with this user's other clients in it.
    Create {
        /// The group's name, shown to every member
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Add a connected user (all of their clients) to a group.
    Add {
        #[arg(value_name = "GROUP")]
        group: String,
        /// A user you are connected with (see `roost-client contacts`)
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// Remove a user (all of their clients) from a group.
    Remove {
        #[arg(value_name = "GROUP")]
        group: String,
        #[arg(value_name = "USER@DOMAIN")]
        user: UserName,
    },
    /// Leave a group with all of this user's clients.
    ///
    /// The removal is proposed at once and committed by the next member to sync; from now on
    /// this client sends nothing into the group.
    Leave {
        #[arg(value_name = "GROUP")]
        group: String,
    },
    /// List the users in a group.
    Members {
        #[arg(value_name = "GROUP")]
        group: String,
    },
    /// Send a chat message to a group.
    Send {
        #[arg(value_name = "GROUP")]
        group: String,
        /// The message
        #[arg(value_name = "TEXT")]
        text: String,
    },
    /// Show a group's chat, as far as this client has synced.
    Messages {
        #[arg(value_name = "GROUP")]
        group: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Set your profile; what you leave out stays as it was.
    Set {
        /// The name to show beside your user name (at most 64 characters)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// A PNG, JPEG or WebP image of at most 256 KiB
        #[arg(long, value_name = "FILE", conflicts_with = "no_avatar")]
        avatar: Option<PathBuf>,
        /// Remove your avatar
        #[arg(long)]
        no_avatar: bool,
        /// A line about you (at most 280 characters)
        #[arg(long, value_name = "TEXT")]
        about: Option<String>,
    },
    /// Show your profile as you set it, or a contact's as they shared it.
    Show {
        /// A contact, e.g. bob@example.org
        user: Option<UserName>,
    },
}
