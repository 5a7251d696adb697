//! Looking for secrets where a server must not keep them: a [`Secret`] is searched in every form
//! a server could write it in (raw, hex, base64, decimal byte lists), and a [`Snapshot`] is a
//! stopped server's store read whole — its files as bytes and every record of every tree.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::TestServer;

/// Something a server must not hold, with what to call it in a failure.
pub struct Secret {
    pub label: String,
    /// Each form it is searched in, named: the bytes (or the part of its encoding) that any
    /// encoding of a value holding the secret contains, as [`Text`].
    forms: Vec<(String, Text)>,
}

impl Secret {
    pub fn new(label: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Secret {
        let (label, bytes) = (label.into(), bytes.into());
        // Shorter needles would be found by chance (and base64 cores would be near empty).
        assert!(bytes.len() >= 8, "{label}: too short to search for");
        let mut forms = vec![
            ("raw".to_owned(), bytes.clone()),
            ("lowercase hex".to_owned(), hex::encode(&bytes).into_bytes()),
            (
                "uppercase hex".to_owned(),
                hex::encode_upper(&bytes).into_bytes(),
            ),
            // serde_json's (openmls's MLS storage) and Rust's `{:?}` of a byte vector.
            ("decimal list".to_owned(), decimal_list(&bytes, ",")),
            (
                "decimal list with spaces".to_owned(),
                decimal_list(&bytes, ", "),
            ),
        ];
        for offset in 0..3 {
            for (name, alphabet) in [("base64", STANDARD), ("url-safe base64", URL_SAFE)] {
                forms.push((
                    format!("{name} at offset {offset}"),
                    base64_core(&bytes, offset, alphabet),
                ));
            }
        }
        let forms = forms
            .into_iter()
            .map(|(name, needle)| (name, Text::of(&needle)))
            .collect();
        Secret { label, forms }
    }

    /// The text's UTF-8 bytes.
    pub fn text(label: impl Into<String>, text: &str) -> Secret {
        Secret::new(label, text.as_bytes())
    }

    /// The name of the first form of this secret found in `haystack`, if any.
    pub fn found_in(&self, haystack: &[u8]) -> Option<&str> {
        self.found_in_text(&Text::of(haystack))
    }

    /// The names of every form of this secret found in `haystack`.
    pub fn forms_found_in(&self, haystack: &[u8]) -> Vec<&str> {
        let haystack = Text::of(haystack);
        self.forms
            .iter()
            .filter(|(_, needle)| haystack.0.contains(needle.0.as_str()))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    fn found_in_text(&self, haystack: &Text) -> Option<&str> {
        self.forms
            .iter()
            .find(|(_, needle)| haystack.0.contains(needle.0.as_str()))
            .map(|(name, _)| name.as_str())
    }
}

/// Panics if `haystack` (called `place`) holds any of `secrets` in any form.
pub fn assert_holds_none(place: &str, haystack: &[u8], secrets: &[Secret]) {
    let haystack = Text::of(haystack);
    for secret in secrets {
        if let Some(form) = secret.found_in_text(&haystack) {
            panic!("{place} holds {} ({form})", secret.label);
        }
    }
}

/// Panics unless `haystack` (called `place`) holds `secret`: a scan's positive control.
pub fn assert_holds(place: &str, haystack: &[u8], secret: &Secret) {
    assert!(
        secret.found_in(haystack).is_some(),
        "{place}: expected to hold {}, and the scan does not find it",
        secret.label
    );
}

/// Bytes as text, each byte one char (U+0000..=U+00FF), so that std's substring search does
/// the searching: a naive search, compiled unoptimised with the test, is slow over a store.
/// One byte string holds another exactly when their texts do: a char's UTF-8 begins with a byte
/// that never occurs inside another char's, so a match can only start where a char starts.
struct Text(String);

impl Text {
    fn of(bytes: &[u8]) -> Text {
        Text(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

fn decimal_list(bytes: &[u8], separator: &str) -> Vec<u8> {
    let numbers: Vec<String> = bytes.iter().map(u8::to_string).collect();
    numbers.join(separator).into_bytes()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding (RFC 4648).
pub fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (at(0) << 16) | (at(1) << 8) | at(2);
        for i in 0..=chunk.len() {
            out.push(alphabet[((group >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// Base64 of the standard alphabet, without and with padding.
pub fn base64_standard(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    padded_pair(base64(bytes, STANDARD))
}

/// Base64 of the URL-safe alphabet, without and with padding.
pub fn base64_url_safe(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    padded_pair(base64(bytes, URL_SAFE))
}

fn padded_pair(unpadded: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut padded = unpadded.clone();
    padded.resize(unpadded.len().div_ceil(4) * 4, b'=');
    (unpadded, padded)
}

/// What the base64 of any value holding `secret` contains when the secret starts `offset`
/// (0, 1 or 2) bytes past a multiple of three from the start of the encoded value.
///
/// Base64 encodes three bytes as four characters, so a secret's characters depend on where it
/// sits in the value: there are three different encodings of it, one per offset, and each is
/// searched. Within one, the characters shared with the bytes before it (none at offset 0; the
/// first two at offset 1, three at offset 2) and the last one shared with the bytes after it
/// (when the secret does not end a group of three) are dropped; the rest depend on the
/// secret alone, whatever surrounds it, and whether the encoding is padded (padding only
/// follows the very end).
fn base64_core(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut shifted = vec![0; offset];
    shifted.extend_from_slice(secret);
    let encoded = base64(&shifted, alphabet);
    let skip = [0, 2, 3][offset];
    let end = if shifted.len() % 3 == 0 {
        encoded.len()
    } else {
        encoded.len() - 1
    };
    encoded[skip..end].to_vec()
}

/// A tree's records, keys and values, in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// A stopped server's store (after [`TestServer::kill`] or [`TestServer::terminate`]), read
/// from a copy so the server can start again on its store as the crash left it.
pub struct Snapshot {
    /// Every file of the store, with its bytes: what a thief of the disk gets.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Every record of every tree, as sled reads them.
    pub trees: BTreeMap<String, Records>,
}

impl Snapshot {
    pub fn of(server: &TestServer) -> Snapshot {
        let files = server.store_files();
        let copy = tempfile::tempdir().unwrap();
        for (path, bytes) in &files {
            let to = copy
                .path()
                .join(path.strip_prefix(server.store_path()).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, bytes).unwrap();
        }
        let trees = read_trees(copy.path());
        Snapshot { files, trees }
    }

    /// The records of one tree (none if it does not exist).
    pub fn tree(&self, name: &str) -> &[(Vec<u8>, Vec<u8>)] {
        self.trees.get(name).map_or(&[], Vec::as_slice)
    }
}

fn read_trees(store: &Path) -> BTreeMap<String, Records> {
    // After a compaction, sled's files are in the generation `CURRENT` names.
    let sled_dir = match std::fs::read_to_string(store.join("CURRENT")) {
        Ok(generation) => store.join(generation.trim()),
        Err(_) => store.to_owned(),
    };
    let db = sled::open(sled_dir).unwrap();
    db.tree_names()
        .into_iter()
        .map(|name| {
            let records = db
                .open_tree(&name)
                .unwrap()
                .iter()
                .map(|entry| {
                    let (key, value) = entry.unwrap();
                    (key.to_vec(), value.to_vec())
                })
                .collect();
            (String::from_utf8_lossy(&name).into_owned(), records)
        })
        .collect()
}
