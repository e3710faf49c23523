//! Backends behind one small trait. A driver creates, deletes and grants access to buckets;
//! it knows nothing of Kubernetes.

pub mod options;
pub mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::api::AccessMode;
use crate::metrics::{BackendLabels, Metrics};
pub use options::BucketOptions;

/// An access key pair. Debug output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Credentials handed to a workload, and whether they reach only its bucket.
#[derive(Debug, Clone)]
pub struct Grant {
    pub credentials: Credentials,
    /// True when the key was made for this bucket alone (an IAM user); false when it is the
    /// provisioner's own key.
    pub scoped: bool,
}

/// Where a bucket is, for the BucketContent's protocol section and the workload's Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub endpoint: String,
    pub region: String,
    pub bucket_name: String,
    pub signature_version: String,
}

/// What deleting a bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The store has no bucket of that name (any more).
    NotFound,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DriverError {
    /// Worth retrying: the backend is unreachable, slow or failing.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: bad credentials, a bucket name taken by someone else.
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Driver: Send + Sync {
    /// Creates the bucket with `options`. A bucket of that name that is already ours is
    /// success, its options set again, so that a retry after a crash never fails, never
    /// makes a second one and never leaves an option unset.
    async fn create_bucket(&self, name: &str, options: &BucketOptions) -> Result<Connection, DriverError>;

    /// Deletes the bucket and every object in it. A bucket that is gone is success, said
    /// apart: the caller may know it should have been there.
    async fn delete_bucket(&self, name: &str) -> Result<Deletion, DriverError>;

    /// Credentials for `bucket` with `mode`, for the workload identified by `holder` (stable
    /// across retries). Keys made for `holder` before are replaced.
    async fn grant(&self, bucket: &str, holder: &str, mode: AccessMode) -> Result<Grant, DriverError>;

    /// Removes what [`Driver::grant`] made for `holder`. Nothing to remove is success.
    async fn revoke(&self, holder: &str) -> Result<(), DriverError>;

    /// A new key for `holder`, beside `keeping` (the one its Secret holds, which goes on
    /// working until [`Driver::retire`]); `holder`'s other keys, left by an attempt that
    /// ended before its Secret was written, are removed first. Only for keys of its own
    /// ([`Grant::scoped`]).
    async fn rotate(&self, holder: &str, keeping: &str) -> Result<Credentials, DriverError>;

    /// Removes `holder`'s keys but `keeping`: the key a rotation replaced stops working.
    async fn retire(&self, holder: &str, keeping: &str) -> Result<(), DriverError>;

    /// Whether the store has a bucket of that name that these credentials reach.
    async fn has_bucket(&self, name: &str) -> Result<bool, DriverError>;

    /// Sets again what `options` ask of the bucket where the store no longer has it (turned
    /// off or changed there, outside Kubernetes), and returns the class parameters it set
    /// again. Reads only what `options` ask: a plain bucket costs no request.
    async fn restore_options(&self, name: &str, options: &BucketOptions) -> Result<Vec<&'static str>, DriverError>;

    /// Gives the bucket `tags` (key, value), in place of any it has: only for a bucket made
    /// for them. `false` where the store keeps no tags on buckets.
    async fn tag_bucket(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError>;

    /// Puts back those of `tags` the bucket does not have (removed or changed at the store,
    /// or never given: a bucket made before bucketgate tagged), keeping its other tags.
    /// `true` where some were put back; `false` where it had them all, or the store keeps no
    /// tags on buckets.
    async fn restore_tags(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError>;
}

/// The tags a bucket that has `had` should have for `ours` to be among them: `had` less
/// the keys of `ours`, and `ours`. `None` where it has them all already.
pub fn tags_restored(had: &[(String, String)], ours: &[(String, String)]) -> Option<Vec<(String, String)>> {
    if ours.iter().all(|tag| had.contains(tag)) {
        return None;
    }
    let theirs = had.iter().filter(|(key, _)| !ours.iter().any(|(ours, _)| ours == key));
    Some(theirs.chain(ours).cloned().collect())
}

/// A driver whose calls are counted and timed in the metrics under its provisioner's name,
/// so that a failing or slow store shows on a dashboard before Buckets pile up Pending.
pub struct Metered {
    inner: Arc<dyn Driver>,
    provisioner: String,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Driver>, provisioner: &str, metrics: Arc<Metrics>) -> Metered {
        Metered { inner, provisioner: provisioner.to_string(), metrics }
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(DriverError::Transient(_)) => "transient",
            Err(DriverError::Permanent(_)) => "permanent",
        };
        let labels = BackendLabels { provisioner: self.provisioner.clone(), operation, result: outcome };
        self.metrics.observe_backend(labels, started.elapsed());
        result
    }
}

#[async_trait]
impl Driver for Metered {
    async fn create_bucket(&self, name: &str, options: &BucketOptions) -> Result<Connection, DriverError> {
        self.call("create_bucket", self.inner.create_bucket(name, options)).await
    }

    async fn delete_bucket(&self, name: &str) -> Result<Deletion, DriverError> {
        self.call("delete_bucket", self.inner.delete_bucket(name)).await
    }

    async fn grant(&self, bucket: &str, holder: &str, mode: AccessMode) -> Result<Grant, DriverError> {
        self.call("grant", self.inner.grant(bucket, holder, mode)).await
    }

    async fn revoke(&self, holder: &str) -> Result<(), DriverError> {
        self.call("revoke", self.inner.revoke(holder)).await
    }

    async fn rotate(&self, holder: &str, keeping: &str) -> Result<Credentials, DriverError> {
        self.call("rotate", self.inner.rotate(holder, keeping)).await
    }

    async fn retire(&self, holder: &str, keeping: &str) -> Result<(), DriverError> {
        self.call("retire", self.inner.retire(holder, keeping)).await
    }

    async fn has_bucket(&self, name: &str) -> Result<bool, DriverError> {
        self.call("has_bucket", self.inner.has_bucket(name)).await
    }

    async fn restore_options(&self, name: &str, options: &BucketOptions) -> Result<Vec<&'static str>, DriverError> {
        self.call("restore_options", self.inner.restore_options(name, options)).await
    }

    async fn tag_bucket(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        self.call("tag_bucket", self.inner.tag_bucket(name, tags)).await
    }

    async fn restore_tags(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        self.call("restore_tags", self.inner.restore_tags(name, tags)).await
    }
}

#[cfg(test)]
mod tests {
    use super::tags_restored;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn tags_are_put_back_beside_the_admins_own() {
        let ours = tags(&[("cosi.io/namespace", "team-a"), ("cosi.io/bucket", "photos")]);
        assert_eq!(tags_restored(&ours, &ours), None, "all there: nothing to write");
        let mut with_theirs = tags(&[("cost-center", "42")]);
        with_theirs.extend(ours.clone());
        assert_eq!(tags_restored(&with_theirs, &ours), None);
        assert_eq!(tags_restored(&[], &ours), Some(ours.clone()), "a bucket made before tagging");
        let changed = tags(&[("cost-center", "42"), ("cosi.io/namespace", "team-b"), ("cosi.io/bucket", "photos")]);
        let expected = tags(&[("cost-center", "42"), ("cosi.io/namespace", "team-a"), ("cosi.io/bucket", "photos")]);
        assert_eq!(tags_restored(&changed, &ours), Some(expected), "one changed at the store: set back, theirs kept");
    }
}
