//! The app in a real browser: two people, each with `roost-client app` in headless Chromium,
//! on two federated homeservers, go through what a new member does — register, set a profile
//! with an avatar, connect, look at the asker's profile before accepting, accept, chat both
//! ways with the other side updating by itself, create a group, add, and remove; and one is
//! told when their homeserver cannot be reached.
//!
//! With `ROOST_SCREENSHOTS=DIR` the screenshots of the main screens are kept in DIR (the
//! README's come from `ROOST_SCREENSHOTS=docs/screenshots cargo test --test browser`).

mod common;

use std::path::{Path, PathBuf};

use common::{
    app::{start_app_with, RunningApp},
    browser::Browser,
    Options,
};

const PASSWORD: &str = "a long enough password";

/// One person: their app, their browser, where their screenshots go.
struct Person {
    app: RunningApp,
    browser: Browser,
    shots: PathBuf,
}

impl Person {
    async fn start(state: &Path, resolve: &[String], shots: &Path) -> Person {
        let mut options = Vec::new();
        for entry in resolve {
            options.extend(["--resolve", entry.as_str()]);
        }
        let app = start_app_with(state, &options);
        let browser = Browser::start().await;
        browser.goto(&app.url).await;
        Person {
            app,
            browser,
            shots: shots.to_owned(),
        }
    }

    /// Registers `user` on `server` through the first-run page.
    async fn register(&self, server: &str, user: &str) {
        let b = &self.browser;
        b.wait_for("#first-run").await;
        b.fill("#first-run input[name=server]", server).await;
        b.fill("#first-run input[name=user]", user).await;
        b.fill("#first-run input[name=password]", PASSWORD).await;
        b.click("#enrol").await;
        b.wait_for_text("#me", user).await;
    }

    async fn open(&self, view: &str) {
        self.browser
            .click(&format!("nav a[data-view={view}]"))
            .await;
        self.browser
            .wait_for(&format!("main[data-view={view}]"))
            .await;
    }

    async fn say(&self, text: &str) {
        self.browser.fill("#send input[name=text]", text).await;
        self.browser.click("#send button").await;
        self.browser.wait_for_text("#messages .mine", text).await;
    }

    async fn shot(&self, name: &str) {
        self.browser.screenshot(&self.shots.join(name)).await;
    }
}

/// A small PNG (a 64×64 square of one colour), written as a PNG encoder would.
fn avatar_png() -> Vec<u8> {
    let (width, height) = (64u32, 64u32);
    // Each row: no filter, then its pixels.
    let row: Vec<u8> = std::iter::once(0)
        .chain([0xe7, 0x6f, 0x51].repeat(width as usize))
        .collect();
    let raw = row.repeat(height as usize);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend(kind);
        png.extend(data);
        png.extend(crc32(&png[start..]).to_be_bytes());
    };
    let header = [
        &width.to_be_bytes()[..],
        &height.to_be_bytes(),
        &[8, 2, 0, 0, 0],
    ]
    .concat();
    chunk(b"IHDR", &header);
    chunk(b"IDAT", &zlib_stored(&raw));
    chunk(b"IEND", &[]);
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a zlib stream of uncompressed blocks (valid, if not small).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

#[tokio::test]
async fn two_people_on_federated_servers_register_connect_chat_and_share_a_group_in_the_app() {
    let (mut servers, resolve) = common::federation(&["a.test", "b.test"], Options::default());
    let dir = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("ROOST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    let alice = Person::start(&dir.path().join("alice"), &resolve, &shots).await;
    let bob = Person::start(&dir.path().join("bob"), &resolve, &shots).await;

    // First run: register.
    alice.browser.wait_for("#first-run").await;
    alice.shot("first-run.png").await;
    alice.register(&servers[0].url, "alice@a.test").await;
    bob.register(&servers[1].url, "bob@b.test").await;

    // Bob sets a profile with an avatar.
    bob.open("profile").await;
    bob.browser.fill("#display-name", "Bob Builder").await;
    bob.browser
        .fill("#about", "Builds things. Fixes things.")
        .await;
    bob.browser.click("#profile button[type=submit]").await;
    bob.browser.wait_for_text("#me", "Bob Builder").await;
    let avatar = dir.path().join("bob.png");
    std::fs::write(&avatar, avatar_png()).unwrap();
    bob.browser.upload("#avatar-file", &avatar).await;
    bob.browser.wait_for("#avatar-preview img").await;
    bob.shot("profile.png").await;

    // Bob asks Alice to connect.
    bob.open("contacts").await;
    bob.browser
        .fill("#connect input[name=user]", "alice@a.test")
        .await;
    bob.browser.click("#connect button").await;
    bob.browser
        .wait_for_text("#toast", "Asked alice@a.test")
        .await;

    // Alice sees the request (nothing of Bob's profile until she asks), looks, accepts.
    alice.open("requests").await;
    let request = "#requests li[data-request]";
    alice.browser.wait_for_text(request, "bob@b.test").await;
    assert!(
        !alice.browser.text_of("main").await.contains("Bob Builder"),
        "the profile is shown only on request"
    );
    alice
        .browser
        .click(&format!("{request} button[data-action=profile]"))
        .await;
    let card = alice
        .browser
        .wait_for_text(".profile-card", "Bob Builder")
        .await;
    let card = card.text().await.unwrap();
    assert!(
        card.contains("Builds things") && card.contains("Self-declared"),
        "{card}"
    );
    alice.browser.wait_for(".profile-card img.avatar").await;
    alice.shot("request.png").await;
    alice
        .browser
        .click(&format!("{request} button[data-action=accept]"))
        .await;
    alice.browser.wait_for("main[data-view=chat] #send").await;

    // They chat; each side's open chat updates by itself.
    alice.say("Hello Bob, welcome!").await;
    bob.browser
        .wait_for_text("#contacts li[data-user=\"alice@a.test\"]", "alice@a.test")
        .await;
    bob.browser
        .click("#contacts li[data-user=\"alice@a.test\"] a")
        .await;
    bob.browser
        .wait_for_text("#messages", "Hello Bob, welcome!")
        .await;
    bob.say("Hi Alice, glad to be here.").await;
    alice
        .browser
        .wait_for_text("#messages", "Hi Alice, glad to be here.")
        .await;
    // Bob's profile reached Alice with the connection: his name and avatar in her header.
    alice.browser.wait_for_text("main h2", "Bob Builder").await;
    alice.shot("chat.png").await;

    // Alice makes a group, adds Bob; they talk there; she removes him.
    alice.open("groups").await;
    alice
        .browser
        .fill("#create-group input[name=name]", "Book club")
        .await;
    alice.browser.click("#create-group button").await;
    alice.browser.wait_for("main[data-view=group]").await;
    alice
        .browser
        .wait_for_text("#add-member-user option", "bob@b.test")
        .await;
    alice.browser.click("#add-member button").await;
    alice.browser.wait_for_text("#members", "Bob Builder").await;
    alice.say("First book: Middlemarch.").await;
    bob.open("groups").await;
    bob.browser.wait_for_text("#groups", "Book club").await;
    bob.browser
        .click("#groups li[data-group=\"Book club\"] a")
        .await;
    bob.browser
        .wait_for_text("#messages", "First book: Middlemarch.")
        .await;
    bob.say("Great choice!").await;
    alice
        .browser
        .wait_for_text("#messages", "Great choice!")
        .await;
    alice.shot("group.png").await;
    alice
        .browser
        .click("#members li[data-user=\"bob@b.test\"] button[data-action=remove]")
        .await;
    alice
        .browser
        .wait_for_text("#toast", "Removed bob@b.test")
        .await;
    bob.browser
        .wait_for_text("#members", "You are no longer in this group.")
        .await;

    // Bob's homeserver goes away: his app says so.
    servers[1].kill();
    bob.browser
        .wait_for_text("#banner", "cannot be reached")
        .await;

    for name in ["first-run", "profile", "request", "chat", "group"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}");
    }
    drop((alice.app, bob.app));
}
