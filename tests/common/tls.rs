//! A CA made for the test, and server certificates it signs (for `localhost` and 127.0.0.1),
//! written as PEM files the way an admin would have them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use roost_client::ExtraRoots;

pub struct TestCa {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate: its files, and its DER bytes (what a handshake presents).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Roost test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        TestCa { dir, cert, key }
    }

    /// The CA's certificate, PEM: what `federation.ca_file` and `--ca-file` name.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn roots(&self) -> ExtraRoots {
        ExtraRoots::from_pem_file(&self.file()).unwrap()
    }

    /// The CA for a rustls client made by hand.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }

    /// A fresh key and certificate for `localhost` and 127.0.0.1, written as `name.pem` and
    /// `name.key` in the CA's directory.
    pub fn issue(&self, name: &str) -> Issued {
        self.issue_into(self.dir.path(), name)
    }

    /// Like [`TestCa::issue`], into `dir` (over files already there).
    pub fn issue_into(&self, dir: &Path, name: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// Server settings for HTTPS with `issued`, trusting this CA for other servers.
    pub fn settings(&self, issued: &Issued) -> Vec<(&'static str, String)> {
        vec![
            ("ROOST_SERVER__TLS__CERT", issued.cert.display().to_string()),
            ("ROOST_SERVER__TLS__KEY", issued.key.display().to_string()),
            (
                "ROOST_FEDERATION__CA_FILE",
                self.file().display().to_string(),
            ),
        ]
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
