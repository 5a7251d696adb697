//! Names of things: user names, domains, client ids, timestamps.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a user name has the form name@domain")]
    MissingDomain,
    #[error("the name part must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', at least one a letter or digit")]
    BadLocalPart,
    #[error("the domain must be a host name (letters, digits, '-', '.'), optionally with :port")]
    BadDomain,
    #[error("a client id is 32 hexadecimal characters")]
    BadClientId,
}

/// A homeserver's domain, e.g. `example.org` (lower case; a port is allowed for test set-ups).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
        if host_ok && port_ok {
            Ok(Domain(s.to_owned()))
        } else {
            Err(NameError::BadDomain)
        }
    }
}

impl TryFrom<String> for Domain {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full user name, `alice@example.org`. Always carries its domain: nothing in Roost assumes
/// that a user is local.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName {
    local: String,
    domain: Domain,
}

impl UserName {
    pub fn local(&self) -> &str {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl FromStr for UserName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (local, domain) = s.split_once('@').ok_or(NameError::MissingDomain)?;
        // Punctuation alone (".", "..", "-") would read as a path or nothing at all.
        let local_ok = local.len() <= 64
            && local
                .bytes()
                .any(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && local.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !local_ok {
            return Err(NameError::BadLocalPart);
        }
        Ok(UserName {
            local: local.to_owned(),
            domain: domain.parse()?,
        })
    }
}

impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<UserName> for String {
    fn from(u: UserName) -> String {
        u.to_string()
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A client (one device of a user), named by 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub [u8; 16]);

impl ClientId {
    pub fn random() -> Self {
        ClientId(rand::random())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

impl FromStr for ClientId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| NameError::BadClientId)?;
        Ok(ClientId(id))
    }
}

/// An operation's id, chosen at random by the client that makes it: a server that handled the
/// operation answers a repeat of it (a retry after a lost response) with the original outcome
/// instead of doing it again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(pub [u8; 16]);

impl OpId {
    pub fn random() -> Self {
        OpId(rand::random())
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({})", hex::encode(self.0))
    }
}

/// Seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(now_millis() / 1000)
    }
    pub fn plus_secs(self, secs: u64) -> Self {
        Timestamp(self.0.saturating_add(secs))
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_need_a_valid_local_part_and_domain() {
        let alice: UserName = "alice@example.org".parse().unwrap();
        assert_eq!(alice.local(), "alice");
        assert_eq!(alice.domain().as_str(), "example.org");
        assert!("localhost:8080".parse::<Domain>().is_ok());
        for bad in [
            "alice",
            "@example.org",
            "Alice@example.org",
            "a b@x.org",
            "alice@",
            "alice@-x.org",
            "alice@x..org",
            "alice@x.org:0",
            ".@x.org",
            "..@x.org",
            "-@x.org",
            "_.-@x.org",
        ] {
            assert!(bad.parse::<UserName>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn client_ids_round_trip_through_hex() {
        let id = ClientId::random();
        assert_eq!(id.to_string().parse::<ClientId>().unwrap(), id);
        assert!("zz".parse::<ClientId>().is_err());
    }
}
