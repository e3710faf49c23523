//! Deployment configuration: which provisioners this bucketgate serves, and with which
//! driver. The admission webhook's "served provisioners" check and the provisioning loop
//! read the same list.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::poll::LastRead;

/// Read from a YAML file (a ConfigMap in a cluster); `--provisioner` flags add to it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Provisioners whose BucketClasses this deployment accepts Buckets for.
    #[serde(default)]
    pub provisioners: Vec<ProvisionerConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisionerConfig {
    pub name: String,
    /// The S3 driver's settings. A provisioner without a driver is served by admission only:
    /// another controller provisions its buckets.
    #[serde(default)]
    pub s3: Option<S3Settings>,
}

impl ProvisionerConfig {
    fn has_driver(&self) -> bool {
        self.s3.is_some()
    }
}

/// How to reach an S3-compatible store (AWS, Ceph RGW, MinIO, SeaweedFS).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Settings {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://rook-ceph-rgw-my-store.rook-ceph.svc`, ...
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), which most in-cluster stores need.
    #[serde(default)]
    pub path_style: bool,
    /// Give each Bucket its own user and key through the store's IAM API. Without it every
    /// Bucket's Secret holds the provisioner's own credentials.
    #[serde(default)]
    pub iam: Option<IamSettings>,
    /// Environment variables that hold the provisioner's credentials, when the BucketClass
    /// names no Secret (`cosi.io/provisioner-secret-name`).
    #[serde(default)]
    pub credentials_from_env: EnvCredentials,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IamSettings {
    /// The IAM endpoint; the S3 endpoint when omitted (Ceph RGW, SeaweedFS).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How many IAM requests may be in flight to this endpoint at once, for all Buckets
    /// together; the others wait their turn in bucketgate, not at the store.
    #[serde(default)]
    pub max_concurrent_requests: Option<NonZeroUsize>,
}

impl IamSettings {
    /// SeaweedFS answers no faster with more in flight, and AWS throttles IAM writes.
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;
    /// The most a configuration may set: more means a typo, and a bound past tokio's
    /// semaphore limit would end the loop in a panic.
    pub const MOST_CONCURRENT_REQUESTS: usize = 1000;

    pub fn max_requests(&self) -> usize {
        self.max_concurrent_requests.map_or(Self::DEFAULT_MAX_CONCURRENT_REQUESTS, NonZeroUsize::get)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Default for EnvCredentials {
    fn default() -> Self {
        EnvCredentials { access_key_id: "AWS_ACCESS_KEY_ID".into(), secret_access_key: "AWS_SECRET_ACCESS_KEY".into() }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("configuration {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("configuration {path}: provisioner names must not be empty")]
    EmptyName { path: String },
    #[error(
        "configuration {path}: provisioner {name:?}: s3.endpoint {endpoint:?} is not an http:// or https:// URL with a host"
    )]
    Endpoint { path: String, name: String, endpoint: String },
    #[error(
        "configuration {path}: provisioner {name:?}: s3.iam.maxConcurrentRequests {bound} is more than {}: no IAM API \
         answers that many at once",
        IamSettings::MOST_CONCURRENT_REQUESTS
    )]
    IamBound { path: String, name: String, bound: usize },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, &path.display().to_string())
    }

    /// The configuration in `text`, read from `shown` (named in errors).
    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let shown = shown.to_string();
        let config: Config = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        if config.provisioners.iter().any(|p| p.name.trim().is_empty()) {
            return Err(ConfigError::EmptyName { path: shown });
        }
        // The S3 client would only fail on its first request, far from the typo.
        for provisioner in &config.provisioners {
            let bound = provisioner.s3.as_ref().and_then(|s3| s3.iam.as_ref()).map_or(0, IamSettings::max_requests);
            if bound > IamSettings::MOST_CONCURRENT_REQUESTS {
                return Err(ConfigError::IamBound { path: shown, name: provisioner.name.clone(), bound });
            }
            let endpoints = provisioner.s3.iter().flat_map(|s3| {
                std::iter::once(&s3.endpoint).chain(s3.iam.as_ref().and_then(|iam| iam.endpoint.as_ref()))
            });
            for endpoint in endpoints {
                let valid = endpoint
                    .parse::<http::Uri>()
                    .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some());
                if !valid {
                    return Err(ConfigError::Endpoint {
                        path: shown,
                        name: provisioner.name.clone(),
                        endpoint: endpoint.clone(),
                    });
                }
            }
        }
        Ok(config)
    }

    pub fn with_provisioners(mut self, names: impl IntoIterator<Item = String>) -> Config {
        for name in names {
            if !self.serves(&name) {
                self.provisioners.push(ProvisionerConfig { name, s3: None });
            }
        }
        self
    }

    pub fn serves(&self, provisioner: &str) -> bool {
        self.provisioners.iter().any(|p| p.name == provisioner)
    }

    /// Whether this deployment's provisioning loop drives `provisioner` (it has a driver),
    /// rather than serving it at admission only.
    pub fn has_driver(&self, provisioner: &str) -> bool {
        self.provisioner(provisioner).is_some_and(ProvisionerConfig::has_driver)
    }

    /// Whether this deployment's provisioning loop manages objects of `provisioner`: those
    /// with a driver here, and brownfield ones that no provisioner manages.
    pub fn drives(&self, provisioner: &str) -> bool {
        provisioner.is_empty() || self.has_driver(provisioner)
    }

    /// Whether the provisioning loop has anything to drive here.
    pub fn has_any_driver(&self) -> bool {
        self.provisioners.iter().any(ProvisionerConfig::has_driver)
    }

    /// What the provisioning loop reads of this configuration: the provisioners it drives.
    /// Two configurations with the same drivers run the same loop.
    pub fn driven(&self) -> Config {
        Config { provisioners: self.provisioners.iter().filter(|p| p.has_driver()).cloned().collect() }
    }

    /// Logs `event` with what this configuration serves, and each provisioner whose buckets
    /// another controller must provision: at start and at every reload alike.
    pub fn announce(&self, event: &str) {
        tracing::info!(provisioners = ?self.served_names(), "{event}");
        for provisioner in self.provisioners.iter().filter(|p| !p.has_driver()) {
            tracing::warn!(provisioner = %provisioner.name, "no driver configured: admission only, another controller must provision its buckets");
        }
    }

    pub fn served_names(&self) -> Vec<&str> {
        self.provisioners.iter().map(|p| p.name.as_str()).collect()
    }

    /// The served provisioner `unserved` most likely meant, if one is close: provisioner
    /// names are long and easy to get a part wrong (Rook's is `<namespace>.ceph.rook.io/bucket`,
    /// often written `rook-ceph.rook.io/bucket`, the "unsupported provisioner" of
    /// ObjectBucketClaims).
    pub fn closest_served(&self, unserved: &str) -> Option<&str> {
        crate::naming::closest(unserved, self.provisioners.iter().map(|p| p.name.as_str()))
    }

    pub fn provisioner(&self, name: &str) -> Option<&ProvisionerConfig> {
        self.provisioners.iter().find(|p| p.name == name)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
}

/// The configurations in a file's `text`, each with how to name it: the file itself, or in
/// a manifest the `config.yaml` of each ConfigMap that has one (as
/// `manifests/base/config.yaml` holds bucketgate-config's). `shown` names the file.
pub fn texts_in(text: &str, shown: &str) -> Result<Vec<(String, String)>, String> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).unwrap_or_default();
    let embedded: Vec<_> = documents
        .iter()
        .filter(|document| document["kind"] == "ConfigMap")
        .filter_map(|map| {
            let name = map["metadata"]["name"].as_str().unwrap_or_default();
            let config = map["data"]["config.yaml"].as_str()?;
            Some((format!("{shown} (ConfigMap {name}, config.yaml)"), config.to_string()))
        })
        .collect();
    if !embedded.is_empty() {
        return Ok(embedded);
    }
    // Kubernetes objects, none of them the configuration: read as one, it would be refused
    // for its `apiVersion`, which says nothing of what is missing.
    if documents.iter().any(|document| document.get("kind").is_some()) {
        return Err(format!(
            "{shown}: holds Kubernetes objects but no ConfigMap with a config.yaml (bucketgate-config)"
        ));
    }
    Ok(vec![(shown.to_string(), text.to_string())])
}

/// The configuration in force, read again when its file changes: a mounted ConfigMap is
/// updated in place, and a provisioner added there should be served without a restart, not
/// refused as unserved until someone thinks of one. A file that does not load never
/// replaces the configuration in force.
pub struct ConfigStore {
    path: Option<PathBuf>,
    /// `--provisioner` flags, added to every version of the file.
    flags: Vec<String>,
    current: watch::Sender<Arc<Config>>,
    /// The text last tried, so that an unchanged file is not parsed again, nor a broken
    /// one reported again until it changes.
    seen: LastRead<String>,
}

#[derive(Debug)]
pub enum Reload {
    /// The file as it was last read.
    Unchanged,
    /// A new configuration is in force.
    Loaded,
    /// The file changed and loads, but says what is in force already: comments edited, or
    /// a broken edit undone.
    Equivalent,
    Failed(ConfigError),
}

impl ConfigStore {
    /// The configuration in `path` (none: only `flags`) with `flags` added; it must load.
    pub fn open(path: Option<PathBuf>, flags: Vec<String>) -> Result<Arc<ConfigStore>, ConfigError> {
        let (config, seen) = match &path {
            Some(path) => {
                let text = read(path)?;
                (Config::parse(&text, &path.display().to_string())?, Some(text))
            }
            None => (Config::default(), None),
        };
        let config = Arc::new(config.with_provisioners(flags.iter().cloned()));
        Ok(Arc::new(ConfigStore { path, flags, current: watch::Sender::new(config), seen: LastRead::new(seen) }))
    }

    /// A configuration that no file changes.
    pub fn fixed(config: Config) -> Arc<ConfigStore> {
        Arc::new(ConfigStore {
            path: None,
            flags: Vec::new(),
            current: watch::Sender::new(Arc::new(config)),
            seen: LastRead::default(),
        })
    }

    /// The configuration in force; cheap, for every request.
    pub fn current(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    /// Each configuration as it comes into force, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    pub fn reload(&self) -> Reload {
        let Some(path) = &self.path else { return Reload::Unchanged };
        let text = match read(path) {
            Ok(text) => text,
            Err(error) if self.seen.is_new_failure(error.to_string()) => return Reload::Failed(error),
            Err(_) => return Reload::Unchanged,
        };
        if !self.seen.is_new(&text) {
            return Reload::Unchanged;
        }
        match Config::parse(&text, &path.display().to_string()) {
            Ok(config) => {
                let config = config.with_provisioners(self.flags.iter().cloned());
                // A comment edited is no change: the provisioning loop starts again only
                // for a configuration that differs.
                let changed = self.current.send_if_modified(|current| {
                    let changed = **current != config;
                    if changed {
                        *current = Arc::new(config);
                    }
                    changed
                });
                if changed { Reload::Loaded } else { Reload::Equivalent }
            }
            Err(error) => Reload::Failed(error),
        }
    }

    /// Reads the file again every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        if self.path.is_none() {
            return;
        }
        let store = self.clone();
        crate::poll::every(
            interval,
            "configuration",
            move || store.reload(),
            |outcome| match outcome {
                Reload::Unchanged => {}
                Reload::Loaded => {
                    self.current().announce("configuration reloaded");
                    metrics.config_reloads.succeeded();
                }
                Reload::Equivalent => metrics.config_reloads.succeeded(),
                Reload::Failed(error) => {
                    tracing::error!(%error, "configuration not reloaded; the previous one stays in force");
                    metrics.config_reloads.failed();
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_comes_into_force_and_a_broken_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "provisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n").unwrap();
        let store = ConfigStore::open(Some(path.clone()), vec!["flagged".into()]).unwrap();
        let mut changes = store.subscribe();
        assert_eq!(store.current().served_names(), ["rook-ceph.ceph.rook.io/bucket", "flagged"]);
        assert!(matches!(store.reload(), Reload::Unchanged));

        // A comment is no change: nothing restarts for it.
        std::fs::write(&path, "# the store of team a\nprovisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n").unwrap();
        assert!(matches!(store.reload(), Reload::Equivalent));
        assert!(matches!(store.reload(), Reload::Unchanged));
        assert!(!changes.has_changed().unwrap());

        std::fs::write(&path, "provisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n- name: minio.example.com\n")
            .unwrap();
        assert!(matches!(store.reload(), Reload::Loaded));
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            changes.borrow_and_update().served_names(),
            ["rook-ceph.ceph.rook.io/bucket", "minio.example.com", "flagged"],
            "the flags stay added"
        );

        std::fs::write(&path, "provisioners:\n- nme: typo\n").unwrap();
        let Reload::Failed(error) = store.reload() else { panic!("a broken file loaded") };
        assert!(error.to_string().contains("config.yaml"), "{error}");
        assert!(matches!(store.reload(), Reload::Unchanged), "reported once, not at every look");
        assert_eq!(store.current().served_names().len(), 3, "the last good configuration stays");
        assert!(!changes.has_changed().unwrap());

        // The broken edit undone: the file loads again, and nothing in force changes.
        std::fs::write(&path, "provisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n- name: minio.example.com\n")
            .unwrap();
        assert!(matches!(store.reload(), Reload::Equivalent));
        assert!(!changes.has_changed().unwrap());

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.reload(), Reload::Failed(ConfigError::Read { .. })));
        assert!(matches!(store.reload(), Reload::Unchanged), "reported once, not at every look");
        assert_eq!(store.current().served_names().len(), 3);
        // Back as it was: it loads, and says so (the metrics' gauge goes back to 1 on it).
        std::fs::write(&path, text).unwrap();
        assert!(matches!(store.reload(), Reload::Equivalent));

        let fixed = ConfigStore::open(None, vec!["flagged".into()]).unwrap();
        assert!(matches!(fixed.reload(), Reload::Unchanged));
        assert_eq!(fixed.current().served_names(), ["flagged"]);
        std::fs::remove_file(&path).unwrap();
        assert!(ConfigStore::open(Some(path), Vec::new()).is_err(), "the first load must succeed");
    }

    #[test]
    fn loads_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "provisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n").unwrap();
        let config = Config::load(&good).unwrap().with_provisioners(["minio.example.com".to_string()]);
        assert_eq!(config.served_names(), ["rook-ceph.ceph.rook.io/bucket", "minio.example.com"]);
        assert_eq!(config.closest_served("rook-ceph.rook.io/bucket"), Some("rook-ceph.ceph.rook.io/bucket"));
        assert_eq!(config.closest_served("minio.example.org"), Some("minio.example.com"));
        assert_eq!(config.closest_served("ceph.example.net/s3"), None, "nothing close");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "provisioner:\n- name: x\n").unwrap();
        let err = Config::load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.yaml") && err.contains("provisioner"), "{err}");

        let s3 = dir.path().join("s3.yaml");
        std::fs::write(
            &s3,
            "provisioners:\n- name: seaweed\n  s3:\n    endpoint: http://127.0.0.1:8333\n    pathStyle: true\n    iam: {}\n",
        )
        .unwrap();
        let config = Config::load(&s3).unwrap();
        let settings = config.provisioner("seaweed").unwrap().s3.as_ref().unwrap();
        assert_eq!(settings.region, "us-east-1");
        assert!(settings.path_style && settings.iam.is_some());
        assert_eq!(settings.iam.as_ref().unwrap().max_requests(), IamSettings::DEFAULT_MAX_CONCURRENT_REQUESTS);
        assert_eq!(settings.credentials_from_env.access_key_id, "AWS_ACCESS_KEY_ID");

        let iam = |bound: &str| {
            let text = format!(
                "provisioners:\n- name: seaweed\n  s3:\n    endpoint: http://127.0.0.1:8333\n    iam: {{maxConcurrentRequests: {bound}}}\n"
            );
            Config::parse(&text, "bounds.yaml")
        };
        let config = iam("1").unwrap();
        assert_eq!(config.provisioner("seaweed").unwrap().s3.as_ref().unwrap().iam.as_ref().unwrap().max_requests(), 1);
        // No request would ever be sent.
        let err = iam("0").unwrap_err().to_string();
        assert!(err.contains("bounds.yaml") && err.contains("nonzero"), "{err}");
        assert!(iam("1000").is_ok());
        let err = iam("3000000000000000000").unwrap_err().to_string();
        assert!(err.contains("maxConcurrentRequests 3000000000000000000 is more than 1000"), "{err}");

        std::fs::write(&s3, "provisioners:\n- name: seaweed\n  s3:\n    endpoint: 127.0.0.1:8333\n").unwrap();
        let err = Config::load(&s3).unwrap_err().to_string();
        assert!(
            err.contains("provisioner \"seaweed\": s3.endpoint \"127.0.0.1:8333\" is not an http:// or https:// URL"),
            "{err}"
        );
        std::fs::write(
            &s3,
            "provisioners:\n- name: aws\n  s3:\n    endpoint: https://s3.amazonaws.com\n    iam: {endpoint: iam}\n",
        )
        .unwrap();
        assert!(matches!(Config::load(&s3), Err(ConfigError::Endpoint { .. })));

        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "provisioners:\n- name: ''\n").unwrap();
        assert!(matches!(Config::load(&empty), Err(ConfigError::EmptyName { .. })));
        assert!(matches!(Config::load(&dir.path().join("missing.yaml")), Err(ConfigError::Read { .. })));
    }
}
