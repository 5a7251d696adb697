//! The browser harness itself (tests/common/browser.rs): a real headless Chromium opens a page
//! served here, takes typing, clicks, a chosen file and an alert, and screenshots it.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use common::browser::Browser;

/// A form that answers on the page itself, a file chooser behind a label, an alert, and a value
/// kept in the profile's localStorage.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body style="font: 24px sans-serif; background: #fde">
  <input id="name"> <button id="greet">Greet</button>
  <p id="out"></p>
  <label for="file">Choose a file</label><input id="file" type="file" style="display: none">
  <p id="chosen"></p>
  <button id="warn">Warn</button> <p id="warned"></p>
  <button id="keep">Keep</button> <p id="kept"></p>
  <script>
    const $ = (id) => document.getElementById(id);
    $("greet").onclick = () => { $("out").textContent = "Hello, " + $("name").value; };
    $("file").onchange = () => {
      const file = $("file").files[0];
      $("chosen").textContent = file.name + " (" + file.size + " bytes)";
    };
    $("warn").onclick = () => { alert("Careful"); $("warned").textContent = "warned"; };
    $("keep").onclick = () => { localStorage.setItem("kept", $("name").value); };
    $("kept").textContent = "kept: " + (localStorage.getItem("kept") || "nothing");
  </script>
</body></html>
"#;

/// Serves [`PAGE`] on a loopback port until the test process ends; its
/// address.
fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // A thread per connection: Chromium opens connections it sends nothing on yet.
            std::thread::spawn(move || answer(stream));
        }
    });
    url
}

/// Reads one request's head and answers it: [`PAGE`] at `/`, 404 elsewhere.
fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut chunk = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, body) = if request.starts_with(b"GET / ") {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", "")
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[tokio::test]
async fn a_headless_chromium_renders_a_local_page_and_takes_input() {
    let url = serve_page();
    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert_eq!(browser.current_url().await, url);

    // fill clears what the field held before typing.
    browser.fill("#name", "someone else").await;
    browser.fill("#name", "Ada Lovelace").await;
    browser.click("#greet").await;
    browser.wait_for_text("#out", "Hello, Ada").await;
    assert_eq!(browser.text_of("#out").await, "Hello, Ada Lovelace");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "twelve bytes").unwrap();
    browser.upload("#file", &file).await;
    browser
        .wait_for_text("#chosen", "note.txt (12 bytes)")
        .await;

    assert_eq!(browser.accept_alert_if_any().await, None);
    browser.click("#warn").await;
    assert_eq!(
        browser.accept_alert_if_any().await.as_deref(),
        Some("Careful")
    );
    browser.wait_for_text("#warned", "warned").await;

    let shot = dir.path().join("shots/page.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // IHDR: width and height, big-endian, right after the signature and the chunk's header.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280, "the window's width");
    assert!((600..=900).contains(&height), "height {height}");
    assert!(png.len() > 5_000, "{} bytes: a blank page?", png.len());

    browser.close().await;
}
