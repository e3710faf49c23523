//! Deployment configuration: which provisioners this bucketgate serves.

use std::path::Path;

use serde::Deserialize;

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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("configuration {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("configuration {path}: provisioner names must not be empty")]
    EmptyName { path: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let config: Config = serde_saphyr::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        if config.provisioners.iter().any(|p| p.name.trim().is_empty()) {
            return Err(ConfigError::EmptyName { path: shown });
        }
        Ok(config)
    }

    pub fn with_provisioners(mut self, names: impl IntoIterator<Item = String>) -> Config {
        for name in names {
            if !self.serves(&name) {
                self.provisioners.push(ProvisionerConfig { name });
            }
        }
        self
    }

    pub fn serves(&self, provisioner: &str) -> bool {
        self.provisioners.iter().any(|p| p.name == provisioner)
    }

    pub fn served_names(&self) -> Vec<&str> {
        self.provisioners.iter().map(|p| p.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "provisioners:\n- name: rook-ceph.ceph.rook.io/bucket\n").unwrap();
        let config = Config::load(&good).unwrap().with_provisioners(["minio.example.com".to_string()]);
        assert_eq!(config.served_names(), ["rook-ceph.ceph.rook.io/bucket", "minio.example.com"]);

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "provisioner:\n- name: x\n").unwrap();
        let err = Config::load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.yaml") && err.contains("provisioner"), "{err}");

        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "provisioners:\n- name: ''\n").unwrap();
        assert!(matches!(Config::load(&empty), Err(ConfigError::EmptyName { .. })));
        assert!(matches!(Config::load(&dir.path().join("missing.yaml")), Err(ConfigError::Read { .. })));
    }
}
