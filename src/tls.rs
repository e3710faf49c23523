//! TLS: the serving certificate, reloaded without restart, and development certificates.
//!
//! The certificate and key are read from `tls.crt` and `tls.key`, the layout of a
//! `kubernetes.io/tls` Secret mount. The kubelet updates such a mount by swapping a
//! `..data` symlink, cert-manager and editors by rewriting files; polling the contents
//! catches every one of these. A new handshake gets the newest certificate; connections
//! already open keep theirs.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;
use crate::poll::LastRead;

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {source}")]
    NoKey { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{cert} and {key} do not make a usable pair: {source}")]
    Pair { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "{0:?} is not a DNS name a certificate can hold (letters, digits, '-' and '.'; an IP address is given apart, with --ip)"
    )]
    DnsName(String),
    #[error("a certificate valid for {0} days: give 1 to {MAX_DAYS}")]
    Days(i64),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The one crypto provider bucketgate uses, for the server and for tests' clients.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Holds the current serving certificate and answers rustls' requests for it.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The file contents last tried, so that an unchanged pair is not parsed again and a
    /// broken pair is reported once, not on every poll.
    seen: LastRead<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl CertStore {
    /// A store for `dir/tls.crt` and `dir/tls.key`, loaded once before it is returned.
    pub fn open(dir: &Path) -> Result<Arc<CertStore>, TlsError> {
        let store = Arc::new(CertStore {
            cert_path: dir.join(CERT_FILE),
            key_path: dir.join(KEY_FILE),
            provider: provider(),
            current: RwLock::new(None),
            seen: LastRead::default(),
        });
        store.reload()?;
        Ok(store)
    }

    /// Reads the files again. `Ok(true)` when a new certificate is now served, `Ok(false)`
    /// when the files did not change, or cannot be read as at the last look. On error the
    /// previous certificate stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source });
        let (cert_pem, key_pem) = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(error), _) | (_, Err(error)) if self.seen.is_new_failure(error.to_string()) => return Err(error),
            _ => return Ok(false),
        };
        if !self.seen.is_new(&(cert_pem.clone(), key_pem.clone())) {
            return Ok(false);
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate { path: self.cert_path.clone() });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|source| TlsError::NoKey { path: self.key_path.clone(), source })?;
        // from_der refuses a key that does not match the certificate, which is what a
        // reader sees halfway through a non-atomic update of the two files.
        let certified = CertifiedKey::from_der(certs, key, &self.provider).map_err(|source| TlsError::Pair {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            source,
        })?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(certified));
        Ok(true)
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Polls the files every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        let store = self.clone();
        crate::poll::every(
            interval,
            "certificate",
            move || store.reload(),
            |outcome| match outcome {
                Ok(true) => {
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                    metrics.certificate_reloads.succeeded();
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "serving certificate not reloaded; the previous one stays in use");
                    metrics.certificate_reloads.failed();
                }
            },
        )
        .await
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// TLS 1.2 and 1.3 only (rustls implements nothing older), HTTP/2 and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A new CA and a serving certificate it signed, in PEM.
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The longest validity `generate` gives, a hundred years.
pub const MAX_DAYS: i64 = 36_500;

/// Makes a CA and a serving certificate for `dns_names` and `ips`, valid for `days`. The
/// CA's key is not kept: to rotate, generate again and update the webhooks' caBundle.
pub fn generate(dns_names: &[String], ips: &[IpAddr], days: i64) -> Result<GeneratedCerts, TlsError> {
    // Refused here rather than written into a certificate that no client would accept (a
    // name the API server cannot match, a validity already over), or past the year 9999
    // that a certificate's time can say.
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(TlsError::Days(days));
    }
    if let Some(bad) = dns_names.iter().find(|name| DnsName::try_from(name.as_str()).is_err()) {
        return Err(TlsError::DnsName(bad.clone()));
    }
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "bucketgate webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(days);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(DnType::CommonName, dns_names.first().map(String::as_str).unwrap_or("bucketgate"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(GeneratedCerts { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

impl GeneratedCerts {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        let write = |name: &str, contents: &str, private: bool| -> Result<(), TlsError> {
            let path = dir.join(name);
            let io = |source| TlsError::Write { path: path.clone(), source };
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if private {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(io)?;
            std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)
        };
        write(CA_FILE, &self.ca_pem, false)?;
        write(KEY_FILE, &self.key_pem, true)?;
        write(CERT_FILE, &self.cert_pem, false)
    }

    /// The webhook configurations' `caBundle`: the CA certificate, base64-encoded.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_mismatched_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
        first.write(dir.path()).unwrap();
        let store = CertStore::open(dir.path()).unwrap();
        assert!(store.is_loaded());
        assert!(!store.reload().unwrap(), "unchanged files are not reloaded");

        // Certificate replaced, key not yet: refused, the old pair stays.
        let second = generate(&["localhost".into()], &[], 1).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), &second.cert_pem).unwrap();
        assert!(matches!(store.reload(), Err(TlsError::Pair { .. })));
        assert!(store.is_loaded());
        std::fs::write(dir.path().join(KEY_FILE), &second.key_pem).unwrap();
        assert!(store.reload().unwrap());

        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        assert!(matches!(store.reload(), Err(TlsError::NoCertificate { .. })));
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(store.reload(), Err(TlsError::Read { .. })));
        assert!(!store.reload().unwrap(), "reported once, not at every look");
        assert!(store.is_loaded());
        assert!(!first.ca_bundle().is_empty());

        // The pair served, taken away and put back as it was: that loads again, and says so.
        second.write(dir.path()).unwrap();
        assert!(store.reload().unwrap());
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(store.reload(), Err(TlsError::Read { .. })));
        second.write(dir.path()).unwrap();
        assert!(store.reload().unwrap(), "the pair as it was, after a failure");
    }

    #[cfg(unix)]
    #[test]
    fn private_key_is_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        generate(&["x".into()], &[], 1).unwrap().write(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
