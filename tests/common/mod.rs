//! Shared by the integration tests: the captured fixtures, and the real server on a
//! loopback port with its own CA, reached over TLS.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod manifests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bucketgate::catalog::Catalog;
use bucketgate::config::{Config, ConfigStore};
use bucketgate::metrics::Metrics;
use bucketgate::policy::store::PolicyStore;
use bucketgate::server::{self, AppState, ServeOptions};
use bucketgate::tls::{self, CertStore, GeneratedCerts};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

pub const SERVED: &str = "rook-ceph.ceph.rook.io/bucket";

/// `../shared/fixtures`, or `$BUCKETGATE_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("BUCKETGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    assert!(
        dir.join("admission-reviews").is_dir(),
        "captured AdmissionReviews not found in {}: put shared/ beside the repository or set BUCKETGATE_FIXTURES",
        dir.display()
    );
    dir
}

/// An AdmissionReview from `admission-reviews/`, by the start of its file name ("009").
pub fn fixture(prefix: &str) -> Value {
    let dir = fixtures_dir().join("admission-reviews");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
        .collect();
    assert_eq!(names.len(), 1, "fixture {prefix}: {names:?}");
    let text = std::fs::read_to_string(dir.join(names.remove(0))).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir().join("admission-reviews"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The cluster objects the fixtures refer to: class ceph-s3, content legacy-logs, namespace team-a.
pub fn fixture_catalog() -> Catalog {
    Catalog::load_dir(&fixtures_dir().join("catalog")).unwrap()
}

pub fn served() -> Config {
    Config::default().with_provisioners([SERVED.to_string()])
}

/// A new CA and serving certificate for localhost, written into a directory of their own.
fn fresh_certs() -> (tempfile::TempDir, GeneratedCerts) {
    let cert_dir = tempfile::tempdir().unwrap();
    let certs = tls::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
    certs.write(cert_dir.path()).unwrap();
    (cert_dir, certs)
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub cert_dir: tempfile::TempDir,
    pub certs: GeneratedCerts,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(catalog: Catalog, config: Config) -> TestServer {
        Self::start_with(catalog, config, ServeOptions::default()).await
    }

    pub async fn start_with(catalog: Catalog, config: Config, options: ServeOptions) -> TestServer {
        let (cert_dir, certs) = fresh_certs();
        Self::start_in(cert_dir, certs, catalog, config, options).await
    }

    /// The fixture catalog, with the policies in `dir` (reloaded on [`PolicyStore::reload`]).
    pub async fn with_policies(dir: &Path) -> TestServer {
        let (cert_dir, certs) = fresh_certs();
        let policies = PolicyStore::new(vec![dir.to_path_buf()]);
        Self::launch(
            cert_dir,
            certs,
            fixture_catalog(),
            ConfigStore::fixed(served()),
            policies,
            ServeOptions::default(),
            None,
        )
        .await
    }

    /// The fixture catalog, with the configuration of `config` (reloaded on
    /// [`ConfigStore::reload`] or its `watch`).
    pub async fn with_config(config: Arc<ConfigStore>) -> TestServer {
        let (cert_dir, certs) = fresh_certs();
        let policies = PolicyStore::new(Vec::new());
        Self::launch(cert_dir, certs, fixture_catalog(), config, policies, ServeOptions::default(), None).await
    }

    /// `catalog`, and `api` to ask for what the catalog does not hold, as `serve` does
    /// with the API server its catalog watches.
    pub async fn with_api(catalog: Catalog, api: kube::Client) -> TestServer {
        Self::with_api_serving(catalog, served(), api).await
    }

    /// [`TestServer::with_api`], serving `config`.
    pub async fn with_api_serving(catalog: Catalog, config: Config, api: kube::Client) -> TestServer {
        let (cert_dir, certs) = fresh_certs();
        let (config, policies) = (ConfigStore::fixed(config), PolicyStore::new(Vec::new()));
        Self::launch(cert_dir, certs, catalog, config, policies, ServeOptions::default(), Some(api)).await
    }

    /// Serves the certificate already in `cert_dir` (see [`TestServer::start_with`]).
    pub async fn start_in(
        cert_dir: tempfile::TempDir,
        certs: GeneratedCerts,
        catalog: Catalog,
        config: Config,
        options: ServeOptions,
    ) -> TestServer {
        let policies = PolicyStore::new(Vec::new());
        Self::launch(cert_dir, certs, catalog, ConfigStore::fixed(config), policies, options, None).await
    }

    async fn launch(
        cert_dir: tempfile::TempDir,
        certs: GeneratedCerts,
        catalog: Catalog,
        config: Arc<ConfigStore>,
        policies: Arc<PolicyStore>,
        options: ServeOptions,
        api: Option<kube::Client>,
    ) -> TestServer {
        let store = CertStore::open(cert_dir.path()).unwrap();
        let state = Arc::new(AppState {
            catalog,
            api,
            config,
            policies,
            audit: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            certs: store,
            shutting_down: AtomicBool::new(false),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, state.clone(), options, async {
            let _ = stopped.await;
        }));
        TestServer { addr, cert_dir, certs, state, stop: Some(stop), task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client that trusts this server's CA, over TLS 1.2 or 1.3.
    pub fn client(&self) -> reqwest::Client {
        client(&[&self.certs.ca_pem], &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// POSTs a review to `/mutate` or `/validate` as the API server does.
    pub async fn review(&self, webhook: &str, body: &Value) -> Value {
        let response = self.client().post(self.url(&format!("/{webhook}?timeout=5s"))).json(body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{webhook}");
        let review: Value = response.json().await.unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], body["request"]["uid"], "the response names its request");
        review["response"].clone()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A TLS client that trusts the CAs in `ca_pems` (none: it trusts nobody) and speaks `versions`.
pub fn tls_client_config(
    ca_pems: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

pub fn client(ca_pems: &[&str], versions: &[&'static rustls::SupportedProtocolVersion]) -> reqwest::Client {
    let config = tls_client_config(ca_pems, versions);
    reqwest::Client::builder().tls_backend_preconfigured(config).tls_info(true).build().unwrap()
}

/// Applies a response's base64 JSONPatch to the request's object, as the API server does.
pub fn apply_patch(request: &Value, response: &Value) -> Value {
    use base64::Engine;
    let mut object = request["request"]["object"].clone();
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}
