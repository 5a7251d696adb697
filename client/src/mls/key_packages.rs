//! MLS key packages: publishing this client's (private keys stored first), keeping enough on
//! the QS, and checking the entries claimed for other clients before they are added to a group.

use std::collections::HashSet;

use openmls::prelude::{tls_codec::Deserialize as _, *};
use roost_protocol::{
    api::{KeyPackageCount, PublishKeyPackages, MAX_PUBLISH},
    codec,
    ds::{SealedQueueRef, QUEUE_EXTENSION_TYPE},
    key_packages::KeyPackageEntry,
    ClientId, Timestamp, UserName,
};

use super::{mls_error, signer::MlsSigner, storage::MlsProvider, MlsSession, CIPHERSUITE};
use crate::{device::Device, error::Error};

/// How many one-time key packages a new client publishes (with a last-resort one).
pub const INITIAL_KEY_PACKAGES: usize = 20;
/// Below this many one-time key packages on the QS, a client publishes more.
pub const KEY_PACKAGES_LOW: u32 = 5;

impl MlsSession<'_> {
    /// Publishes `one_time` new MLS key packages (and a last-resort one if asked), their
    /// private keys stored first; answers how many the QS holds.
    pub async fn publish_key_packages(
        &self,
        device: &Device,
        one_time: usize,
        last_resort: bool,
    ) -> Result<KeyPackageCount, Error> {
        let signer = self.signer(device)?;
        let qs_key = device.home().queue_ref_key().await?;
        let domain = device.user().domain().clone();
        let queue = || {
            SealedQueueRef::seal(domain.clone(), &qs_key, &device.client_id()).map_err(Error::Seal)
        };
        let (entries, last) = self.with_transaction(|provider| {
            let entries = (0..one_time)
                .map(|_| key_package_entry(device, provider, &signer, queue()?, false))
                .collect::<Result<Vec<_>, Error>>()?;
            let last = if last_resort {
                Some(key_package_entry(
                    device,
                    provider,
                    &signer,
                    queue()?,
                    true,
                )?)
            } else {
                None
            };
            Ok::<_, Error>((entries, last))
        })?;
        let mut count = None;
        let mut last = last;
        let mut chunks: Vec<Vec<KeyPackageEntry>> =
            entries.chunks(MAX_PUBLISH).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for chunk in chunks {
            let body = PublishKeyPackages {
                entries: chunk,
                last_resort: last.take(),
            };
            count = Some(
                device
                    .home()
                    .publish_key_packages(device.signer(), &body)
                    .await?,
            );
        }
        Ok(count.expect("at least one chunk"))
    }

    /// Publishes `batch` one-time key packages if the QS holds fewer than `min`, and a
    /// last-resort one if it has none; answers the count after.
    pub async fn top_up_key_packages(
        &self,
        device: &Device,
        min: u32,
        batch: usize,
    ) -> Result<KeyPackageCount, Error> {
        let count = device.home().key_package_count(device.signer()).await?;
        let one_time = if count.remaining < min { batch } else { 0 };
        if one_time == 0 && count.has_last_resort {
            return Ok(count);
        }
        self.publish_key_packages(device, one_time, !count.has_last_resort)
            .await
    }

    /// Claims one key package of each other client of this user, or only of `client` (see
    /// [`MlsSession::check_entries`]).
    pub async fn claim_own_clients(
        &self,
        device: &Device,
        client: Option<ClientId>,
    ) -> Result<Vec<(KeyPackage, KeyPackageEntry)>, Error> {
        let entries = device
            .home()
            .own_key_packages(device.signer(), client)
            .await?
            .entries;
        self.check_entries(device, entries, device.user()).await
    }

    /// Checks claimed key-package entries of `owner`'s clients: each entry's signature, its
    /// credential's chain to the AS of `owner`'s domain, that it is `owner`'s, that no client
    /// comes twice or is this one, and the KeyPackage itself. One failing entry stops the
    /// attempt.
    pub async fn check_entries(
        &self,
        device: &Device,
        entries: Vec<KeyPackageEntry>,
        owner: &UserName,
    ) -> Result<Vec<(KeyPackage, KeyPackageEntry)>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let credentials = device.as_credentials_of(owner.domain()).await?;
        let mut seen = HashSet::new();
        let mut claimed = Vec::new();
        for entry in entries {
            let refuse = |reason: String| Error::BadKeyPackage {
                client_id: entry.client_id(),
                reason,
            };
            entry.verify().map_err(|e| refuse(e.to_string()))?;
            credentials
                .verify_client(&entry.client_credential, Timestamp::now())
                .map_err(|e| refuse(format!("its credential does not verify: {e}")))?;
            if entry.client_credential.user() != owner {
                return Err(refuse(format!(
                    "it belongs to {}",
                    entry.client_credential.user()
                )));
            }
            if entry.client_id() == device.client_id() || !seen.insert(entry.client_id()) {
                return Err(refuse("it names this client or a client twice".into()));
            }
            let key_package = parse_key_package(self, &entry.key_package).map_err(refuse)?;
            entry
                .card(key_package.leaf_node().signature_key().as_slice())
                .verify()
                .map_err(|_| refuse("its member card signature does not verify".into()))?;
            claimed.push((key_package, entry));
        }
        Ok(claimed)
    }
}

fn key_package_entry(
    device: &Device,
    provider: &MlsProvider,
    signer: &MlsSigner,
    queue: SealedQueueRef,
    last_resort: bool,
) -> Result<KeyPackageEntry, Error> {
    // The queue that gets the Welcome, signed into the package (see QUEUE_EXTENSION_TYPE);
    // MLS has a leaf announce every extension type its KeyPackage carries.
    let queue_extension = Extension::Unknown(
        QUEUE_EXTENSION_TYPE,
        UnknownExtension(codec::encode(&queue)),
    );
    let extensions = Extensions::single(queue_extension)
        .map_err(|e| mls_error("cannot name the queue in a key package", e))?;
    let mut supported = vec![ExtensionType::Unknown(QUEUE_EXTENSION_TYPE)];
    if last_resort {
        // openmls keeps a last-resort key package's private keys after a join, so the QS
        // may serve it again.
        supported.push(ExtensionType::LastResort);
    }
    let mut builder = KeyPackage::builder()
        .key_package_extensions(extensions)
        .leaf_node_capabilities(Capabilities::builder().extensions(supported).build());
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(
            CIPHERSUITE,
            provider,
            &signer.key,
            signer.credential.clone(),
        )
        .map_err(|e| mls_error("cannot make a key package", e))?;
    let bytes = MlsMessageOut::from(bundle.key_package().clone())
        .to_bytes()
        .map_err(|e| mls_error("cannot encode a key package", e))?;
    Ok(KeyPackageEntry::new(
        device.credential().clone(),
        &device.identity().signing_key,
        bytes,
        queue,
        signer.key.public(),
    ))
}

/// A KeyPackage as an entry carries it, validated, of Roost's ciphersuite.
fn parse_key_package(provider: &MlsProvider, bytes: &[u8]) -> Result<KeyPackage, String> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| e.to_string())?;
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        return Err("it holds no key package".into());
    };
    let key_package = key_package
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| format!("its key package is invalid: {e}"))?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err("its key package is of another ciphersuite".into());
    }
    Ok(key_package)
}
