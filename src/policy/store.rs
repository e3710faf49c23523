//! The policy set in force, reloaded when the directories change. A set that does not load
//! never replaces the one in force: the last good set stays, and the errors are kept for
//! `GET /policies`, the logs and the metrics.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::PolicySet;
use super::load::{self, LoadError};
use crate::metrics::Metrics;
use crate::poll::LastRead;

pub struct PolicyStore {
    dirs: Vec<PathBuf>,
    current: RwLock<Arc<PolicySet>>,
    state: RwLock<LoadState>,
    /// The file contents last tried, so that an unchanged directory is not compiled again.
    seen: LastRead<Vec<(PathBuf, String)>>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadState {
    /// True once a set has loaded without error; readiness waits for it.
    pub loaded: bool,
    pub last_attempt: Option<SystemTime>,
    /// Errors of the last attempt; empty when it succeeded.
    pub errors: Vec<LoadError>,
}

#[derive(Debug, PartialEq)]
pub enum Reload {
    Unchanged,
    Loaded(usize),
    Failed(Vec<LoadError>),
}

impl PolicyStore {
    /// A store for `dirs`, with a first load attempted. With no directories it holds an
    /// empty set and counts as loaded.
    pub fn new(dirs: Vec<PathBuf>) -> Arc<PolicyStore> {
        let loaded = dirs.is_empty();
        let store = Arc::new(PolicyStore {
            dirs,
            current: RwLock::new(Arc::new(PolicySet::default())),
            state: RwLock::new(LoadState { loaded, ..LoadState::default() }),
            seen: LastRead::default(),
        });
        store.reload();
        store
    }

    /// The set in force; cheap, for every request.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn state(&self) -> LoadState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn reload(&self) -> Reload {
        if self.dirs.is_empty() {
            return Reload::Unchanged;
        }
        let files = match load::read_files(&self.dirs, false) {
            Ok(files) => files,
            Err(errors) => {
                let why = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
                let news = self.seen.is_new_failure(why);
                let failed = self.failed(errors);
                return if news { failed } else { Reload::Unchanged };
            }
        };
        if !self.seen.is_new(&files) {
            return Reload::Unchanged;
        }
        match load::compile(&files) {
            Ok(set) => {
                let count = set.policies.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                *self.state.write().unwrap_or_else(|e| e.into_inner()) =
                    LoadState { loaded: true, last_attempt: Some(SystemTime::now()), errors: Vec::new() };
                Reload::Loaded(count)
            }
            Err(errors) => self.failed(errors),
        }
    }

    fn failed(&self, errors: Vec<LoadError>) -> Reload {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.last_attempt = Some(SystemTime::now());
        state.errors = errors.clone();
        Reload::Failed(errors)
    }

    /// Polls the directories every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        // The first load, at start, was logged there; a failed one is counted here.
        if !self.state().errors.is_empty() {
            metrics.policy_reloads.failed();
        }
        let store = self.clone();
        crate::poll::every(interval, "policies", move || store.reload(), |outcome| match outcome {
            Reload::Unchanged => {}
            Reload::Loaded(count) => {
                tracing::info!(policies = count, "policies reloaded");
                metrics.policy_reloads.succeeded();
            }
            Reload::Failed(errors) => {
                for error in &errors {
                    tracing::error!(file = %error.file.display(), line = error.line, problem = %error.message, "policy not loaded; the previous policies stay in force");
                }
                metrics.policy_reloads.failed();
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: NAME\nspec:\n  validate:\n    - path: $.object.spec.protocol\n      required: true\n";

    #[test]
    fn a_broken_file_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "first")).unwrap();
        let store = PolicyStore::new(vec![dir.path().to_path_buf()]);
        assert!(store.state().loaded);
        assert_eq!(store.current().names(), ["first"]);
        assert_eq!(store.reload(), Reload::Unchanged);

        std::fs::write(dir.path().join("b.yaml"), "apiVersion: [").unwrap();
        assert!(matches!(store.reload(), Reload::Failed(_)));
        assert_eq!(store.current().names(), ["first"], "the last good set stays");
        assert_eq!(store.state().errors.len(), 1);
        assert!(store.state().loaded);

        std::fs::write(dir.path().join("b.yaml"), POLICY.replace("NAME", "second")).unwrap();
        assert_eq!(store.reload(), Reload::Loaded(2));
        assert_eq!(store.current().names(), ["first", "second"]);
        assert!(store.state().errors.is_empty());

        // A file that cannot be read (a link to nothing), then as it was: that loads again.
        let b = dir.path().join("b.yaml");
        let text = std::fs::read_to_string(&b).unwrap();
        std::fs::remove_file(&b).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), &b).unwrap();
        assert!(matches!(store.reload(), Reload::Failed(_)));
        assert_eq!(store.reload(), Reload::Unchanged, "reported once, not at every look");
        assert_eq!(store.state().errors.len(), 1, "and still shown");
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&b, text).unwrap();
        assert_eq!(store.reload(), Reload::Loaded(2));
    }

    #[test]
    fn a_broken_start_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
        let store = PolicyStore::new(vec![dir.path().to_path_buf()]);
        assert!(!store.state().loaded);
        assert!(store.current().policies.is_empty());
        assert!(PolicyStore::new(Vec::new()).state().loaded);
    }

    /// A policy ConfigMap that never loaded is what the metrics must show most of all.
    #[tokio::test]
    async fn a_broken_start_shows_in_the_metrics_until_mended() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
        let store = PolicyStore::new(vec![dir.path().to_path_buf()]);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(store.watch(Duration::from_millis(10), metrics.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!((metrics.policy_reloads.count("error"), metrics.policy_reloads.last_successful.get()), (1, 0));

        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "first")).unwrap();
        for _ in 0..200 {
            if metrics.policy_reloads.last_successful.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((metrics.policy_reloads.count("success"), metrics.policy_reloads.last_successful.get()), (1, 1));
    }
}
