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

pub mod rotation;

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
    #[error("{path}: certificate {position} cannot be read as X.509: {reason}")]
    Certificate { path: PathBuf, position: usize, reason: String },
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
    #[error("{0} is not a time a certificate can start at")]
    Time(i64),
}

/// The one crypto provider bucketgate uses, for the server and for tests' clients.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Holds the current serving certificate and answers rustls' requests for it.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    ca_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Served>>,
    /// The file contents last tried, so that unchanged files are not parsed again and a
    /// broken pair is reported once, not on every poll.
    seen: LastRead<Files>,
    /// Files not there yet are waited for, not a failure, until a first certificate loads
    /// (`--manage-certs`: the Secret is empty until bucketgate writes it).
    waits_for_files: bool,
    /// Served while it waits: a throwaway self-signed certificate that no client trusts,
    /// so that the kubelet's HTTPS probes (which verify nothing) reach `/healthz` and
    /// `/readyz` rather than failing the handshake, which the liveness probe would answer
    /// by restarting the container, again and again, before the first certificate came.
    /// Not ready meanwhile: the Service sends the API server nowhere near it.
    bootstrap: Option<Arc<CertifiedKey>>,
}

#[derive(Clone, PartialEq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// Optional (a Secret made by hand may hold only the pair), and not served: it only
    /// counts towards the expiry.
    ca: Option<Vec<u8>>,
}

struct Served {
    key: Arc<CertifiedKey>,
    /// Unix seconds when the first certificate the API server's check depends on ends: one
    /// of those served, or the CA in `ca.crt` beside them that signed them, which is what
    /// the webhooks' caBundle holds (`bucketgate certs`, cert-manager and `--manage-certs`
    /// all write it there). Past it every Bucket write fails, as the webhooks fail closed.
    expires: i64,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl CertStore {
    /// A store for `dir/tls.crt` and `dir/tls.key`, loaded once before it is returned.
    pub fn open(dir: &Path) -> Result<Arc<CertStore>, TlsError> {
        let store = Self::unloaded(dir, false);
        store.reload()?;
        Ok(store)
    }

    fn unloaded(dir: &Path, waits_for_files: bool) -> Arc<CertStore> {
        Arc::new(CertStore {
            cert_path: dir.join(CERT_FILE),
            key_path: dir.join(KEY_FILE),
            ca_path: dir.join(CA_FILE),
            provider: provider(),
            current: RwLock::new(None),
            seen: LastRead::default(),
            waits_for_files,
            bootstrap: waits_for_files.then(bootstrap).flatten(),
        })
    }

    /// A store for `dir` whose files may not hold a certificate yet (`serve --manage-certs`
    /// makes it, and the kubelet brings it into the mount): until [`CertStore::watch`] finds
    /// one, handshakes get a throwaway certificate ([`CertStore::bootstrap`]) and the server
    /// is not ready.
    pub fn open_or_wait(dir: &Path) -> Arc<CertStore> {
        let store = Self::unloaded(dir, true);
        match store.reload() {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                dir = %dir.display(),
                "no serving certificate yet: bucketgate makes one, and the kubelet brings it here"
            ),
            // Not reported again by the watch until the files change.
            Err(error) => tracing::warn!(%error, "serving certificate not loaded; waiting for one that loads"),
        }
        store
    }

    /// Reads the files again. `Ok(true)` when a new certificate is now served, `Ok(false)`
    /// when the files did not change, or cannot be read as at the last look. On error the
    /// previous certificate stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source });
        let files = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(cert), Ok(key)) => Files { cert, key, ca: std::fs::read(&self.ca_path).ok() },
            (Err(TlsError::Read { source, .. }), _) | (_, Err(TlsError::Read { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound && self.waits_for_files && !self.is_loaded() =>
            {
                return Ok(false);
            }
            (Err(error), _) | (_, Err(error)) if self.seen.is_new_failure(error.to_string()) => return Err(error),
            _ => return Ok(false),
        };
        if !self.seen.is_new(&files) {
            return Ok(false);
        }
        let certs = pem_certificates(&files.cert);
        if certs.is_empty() {
            return Err(TlsError::NoCertificate { path: self.cert_path.clone() });
        }
        let served = earliest_expiry(&certs).map_err(|(position, reason)| TlsError::Certificate {
            path: self.cert_path.clone(),
            position,
            reason,
        })?;
        // A ca.crt that does not parse is not bucketgate's to refuse: the API server reads
        // the caBundle, not this file.
        let ca = files.ca.as_deref().map(pem_certificates).unwrap_or_default();
        let Some(expires) = served.into_iter().chain(issuer_expiry(&certs[0], &ca)).min() else {
            return Err(TlsError::NoCertificate { path: self.cert_path.clone() });
        };
        let key = PrivateKeyDer::from_pem_slice(&files.key)
            .map_err(|source| TlsError::NoKey { path: self.key_path.clone(), source })?;
        // from_der refuses a key that does not match the certificate, which is what a
        // reader sees halfway through a non-atomic update of the two files.
        let certified = CertifiedKey::from_der(certs, key, &self.provider).map_err(|source| TlsError::Pair {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            source,
        })?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Served { key: Arc::new(certified), expires });
        Ok(true)
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Unix seconds when the certificate in use, or the CA beside it that signed it, stops
    /// being valid.
    pub fn expires(&self) -> Option<i64> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|served| served.expires)
    }

    /// Sets the expiry gauge, and says in the log when the certificate in use ends, with a
    /// warning once it is near or past: an expired one fails every handshake the API server
    /// makes, and so every Bucket write.
    fn report_expiry(&self, metrics: &Metrics, reloaded: bool) {
        let Some(expires) = self.expires() else { return };
        metrics.certificate_expiry.set(expires);
        let at = jiff::Timestamp::from_second(expires).map(|t| t.to_string()).unwrap_or_else(|_| expires.to_string());
        let cert = self.cert_path.display();
        match expiry_warning(expires, jiff::Timestamp::now().as_second()) {
            Some(warning) => tracing::warn!(%cert, expires = %at, "{warning}"),
            None if reloaded => tracing::info!(%cert, expires = %at, "serving certificate reloaded"),
            None => tracing::info!(%cert, expires = %at, "serving certificate loaded"),
        }
    }

    /// Polls the files every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        let store = self.clone();
        self.report_expiry(&metrics, false);
        crate::poll::every(
            interval,
            "certificate",
            move || store.reload(),
            |outcome| match outcome {
                Ok(true) => {
                    self.report_expiry(&metrics, true);
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
        self.served()
    }
}

impl CertStore {
    /// The certificate handshakes get: the one loaded, else the bootstrap one, if any.
    fn served(&self) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|served| served.key.clone()).or_else(|| self.bootstrap.clone())
    }
}

/// A self-signed certificate for the time before the first real one ([`CertStore::bootstrap`]).
fn bootstrap() -> Option<Arc<CertifiedKey>> {
    let made = || -> Result<CertifiedKey, Box<dyn std::error::Error>> {
        let key = KeyPair::generate()?;
        let names = ["bucketgate-bootstrap.invalid".to_string()];
        let cert = leaf_params(&names, &[], time::OffsetDateTime::now_utc(), 1)?.self_signed(&key)?;
        let key = PrivateKeyDer::try_from(key.serialize_der())?;
        Ok(CertifiedKey::from_der(vec![cert.der().clone()], key, &provider())?)
    };
    match made() {
        Ok(key) => Some(Arc::new(key)),
        Err(error) => {
            tracing::warn!(%error, "no certificate to answer probes with until the first one comes");
            None
        }
    }
}

/// The certificates of a PEM file, in order; blocks of other kinds are passed over.
fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Unix seconds when the first of `certs` ends; `None` for none. Err: the position (from 1)
/// of one that is not X.509, and why.
fn earliest_expiry(certs: &[CertificateDer<'_>]) -> Result<Option<i64>, (usize, String)> {
    let mut earliest = None;
    for (index, der) in certs.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| (index + 1, e.to_string()))?;
        let ends = cert.validity().not_after.timestamp();
        earliest = Some(earliest.map_or(ends, |before: i64| before.min(ends)));
    }
    Ok(earliest)
}

/// When the CA in `ca` that signed `leaf` ends: where `ca.crt` holds several (a CA made
/// anew keeps the old one trusted until it ends: `--manage-certs`), only the issuer's end
/// is the served certificate's. Where none of them signed it, the earliest of all.
fn issuer_expiry(leaf: &CertificateDer<'_>, ca: &[CertificateDer<'_>]) -> Option<i64> {
    let leaf = parsed(leaf)?;
    let issuers = ca.iter().filter_map(parsed);
    let signed = issuers.filter(|ca| leaf.verify_signature(Some(ca.public_key())).is_ok());
    signed.map(|ca| ca.validity().not_after.timestamp()).min().or_else(|| earliest_expiry(ca).ok().flatten())
}

/// `der` read as X.509; `None` where it is not.
fn parsed<'a>(der: &'a CertificateDer) -> Option<x509_parser::prelude::X509Certificate<'a>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der).ok().map(|(_, cert)| cert)
}

/// Whether `dir` holds no serving certificate, or one that has expired: `--dev` then makes
/// its own, rather than serve one that no client accepts. A file that cannot be read is left
/// for loading to report.
pub fn dev_certs_needed(dir: &Path) -> bool {
    let path = dir.join(CERT_FILE);
    if !path.exists() {
        return true;
    }
    let Ok(pem) = std::fs::read(&path) else { return false };
    matches!(earliest_expiry(&pem_certificates(&pem)), Ok(Some(expires)) if expires <= jiff::Timestamp::now().as_second())
}

/// Days before its end from which a certificate in use is warned about at each load.
/// cert-manager renews a 90-day certificate 30 days before its end: one 14 days from it was
/// not renewed when it should have been. The alerts (manifests/monitoring) say the same.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// What to warn of, if anything, about a certificate ending at `expires`, at `now` (both Unix
/// seconds).
fn expiry_warning(expires: i64, now: i64) -> Option<String> {
    const DAY: i64 = 86_400;
    let renew = "renew it: `bucketgate certs` and the webhooks' caBundle, or cert-manager's Certificate; with \
                 --manage-certs, bucketgate's log says why it could not";
    if expires <= now {
        Some(format!(
            "the serving certificate has expired: the API server refuses it, and every Bucket write fails; {renew}"
        ))
    } else if expires - now < EXPIRY_WARNING_DAYS * DAY {
        let days = (expires - now) / DAY;
        Some(format!("the serving certificate expires in {days} days (under {EXPIRY_WARNING_DAYS}); {renew}"))
    } else {
        None
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
    /// When both end, in Unix seconds.
    pub expires: i64,
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
    check_dns_names(dns_names)?;
    let now = time::OffsetDateTime::now_utc();
    let ca = CertifiedIssuer::self_signed(ca_params(now, days), KeyPair::generate()?)?;
    let params = leaf_params(dns_names, ips, now, days)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(GeneratedCerts {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        expires: params.not_after.unix_timestamp(),
    })
}

/// Refuses a name no certificate can hold, before anything is made for it.
pub fn check_dns_names(dns_names: &[String]) -> Result<(), TlsError> {
    match dns_names.iter().find(|name| DnsName::try_from(name.as_str()).is_err()) {
        Some(bad) => Err(TlsError::DnsName(bad.clone())),
        None => Ok(()),
    }
}

/// A CA from an hour before `now` (clocks differ) for `days`.
fn ca_params(now: time::OffsetDateTime, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    // The year tells one CA from the next in `openssl x509 -text` and in the caBundle.
    params.distinguished_name.push(DnType::CommonName, format!("bucketgate webhook CA {}", now.year()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    params
}

/// A serving certificate for `dns_names` and `ips` from an hour before `now` for `days`.
fn leaf_params(
    dns_names: &[String],
    ips: &[IpAddr],
    now: time::OffsetDateTime,
    days: i64,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(DnType::CommonName, dns_names.first().map(String::as_str).unwrap_or("bucketgate"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    Ok(params)
}

fn unix(now: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(now).map_err(|_| TlsError::Time(now))
}

/// A new CA valid for `days` from `now` (Unix seconds): its certificate and key, in PEM.
fn new_ca(days: i64, now: i64) -> Result<(String, String), TlsError> {
    let ca = CertifiedIssuer::self_signed(ca_params(unix(now)?, days), KeyPair::generate()?)?;
    Ok((ca.pem(), ca.key().serialize_pem()))
}

/// A serving certificate for `dns_names` that `issuer` signs, valid for `days` from `now`
/// (Unix seconds): the certificate and its new key, in PEM.
fn new_leaf(
    dns_names: &[String],
    days: i64,
    now: i64,
    issuer: &rcgen::Issuer<'_, KeyPair>,
) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let cert = leaf_params(dns_names, &[], unix(now)?, days)?.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
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
        assert!(store.bootstrap.is_none(), "only a store that waits has a throwaway certificate");
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

    /// Seconds from now to `expires`, in whole days.
    fn days_left(expires: i64) -> i64 {
        (expires - jiff::Timestamp::now().as_second() + 60) / 86_400
    }

    #[test]
    fn the_expiry_is_the_first_end_of_the_pair_and_the_ca_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let year = generate(&["localhost".into()], &[], 365).unwrap();
        year.write(dir.path()).unwrap();
        let store = CertStore::open(dir.path()).unwrap();
        assert_eq!(store.expires(), Some(year.expires));
        assert_eq!(days_left(year.expires), 365);

        // A CA that ends before the certificate it signed: the API server's check fails then.
        let week = generate(&["localhost".into()], &[], 7).unwrap();
        std::fs::write(dir.path().join(CA_FILE), &week.ca_pem).unwrap();
        assert!(store.reload().unwrap(), "a changed ca.crt is read again");
        assert_eq!(store.expires(), Some(week.expires));

        // Several CAs, as when one was made anew and the old one is still trusted: the end
        // of the one that signed the certificate counts, not the other's.
        std::fs::write(dir.path().join(CA_FILE), format!("{}{}", week.ca_pem, year.ca_pem)).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.expires(), Some(year.expires));

        // ca.crt is optional and not served: gone or unreadable, the pair alone counts.
        std::fs::write(dir.path().join(CA_FILE), "not a certificate").unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.expires(), Some(year.expires));
        std::fs::remove_file(dir.path().join(CA_FILE)).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.expires(), Some(year.expires));

        // A PEM block that is no X.509 certificate is refused with where it is; the pair
        // before it stays in use.
        let chain = format!("{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", year.cert_pem);
        std::fs::write(dir.path().join(CERT_FILE), chain).unwrap();
        let error = store.reload().unwrap_err();
        assert!(matches!(error, TlsError::Certificate { position: 2, .. }), "{error}");
        assert!(error.to_string().contains("tls.crt: certificate 2 cannot be read as X.509"), "{error}");
        assert_eq!(store.expires(), Some(year.expires));
    }

    /// `--manage-certs`: the files are not there until bucketgate has written the Secret and
    /// the kubelet brought it: waited for, not failed on (no alert for an install), and
    /// loaded when they come. Once one has loaded, files gone are a failure as before.
    #[test]
    fn a_store_that_waits_takes_missing_files_as_not_yet() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::open_or_wait(dir.path());
        assert!(!store.is_loaded());
        let bootstrap = store.served().expect("a throwaway certificate answers probes meanwhile");
        assert!(Arc::ptr_eq(&bootstrap, store.bootstrap.as_ref().unwrap()));
        assert!(!store.reload().unwrap(), "missing files: not yet, no error");
        assert!(CertStore::open(dir.path()).is_err(), "without --manage-certs they are required");
        generate(&["localhost".into()], &[], 1).unwrap().write(dir.path()).unwrap();
        assert!(store.reload().unwrap());
        assert!(store.is_loaded());
        assert!(!Arc::ptr_eq(&store.served().unwrap(), &bootstrap), "the real one once it came");
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        assert!(store.reload().is_err(), "gone after one loaded: a failure");
    }

    #[test]
    fn a_certificate_near_or_past_its_end_is_warned_of() {
        let now = 1_800_000_000;
        let day = 86_400;
        assert_eq!(expiry_warning(now + 30 * day, now), None);
        assert_eq!(expiry_warning(now + EXPIRY_WARNING_DAYS * day, now), None);
        let soon = expiry_warning(now + 3 * day + 5, now).unwrap();
        assert!(soon.starts_with("the serving certificate expires in 3 days (under 14); renew it"), "{soon}");
        let past = expiry_warning(now, now).unwrap();
        assert!(past.contains("has expired: the API server refuses it, and every Bucket write fails"), "{past}");
    }

    #[test]
    fn dev_certificates_are_made_again_only_when_missing_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        assert!(dev_certs_needed(dir.path()));
        generate(&["localhost".into()], &[], 1).unwrap().write(dir.path()).unwrap();
        assert!(!dev_certs_needed(dir.path()));
        // generate refuses a past validity; rcgen writes one as an old certificate would be.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(31);
        params.not_after = now - time::Duration::days(1);
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), params.self_signed(&key).unwrap().pem()).unwrap();
        assert!(dev_certs_needed(dir.path()));
        std::fs::write(dir.path().join(CERT_FILE), "something else").unwrap();
        assert!(!dev_certs_needed(dir.path()), "left for loading to report");
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
