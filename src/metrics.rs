//! Prometheus metrics, served as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    /// allowed, denied, or error (the request could not be read).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// BucketClass, BucketContent or Namespace.
    pub kind: &'static str,
    /// found (the catalog was behind), absent, or error.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub mode: &'static str,
    /// pass, violation or error.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub policy: String,
    /// refused, warned, recorded, or ignored (not evaluated; onError: ignore).
    pub effect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Bucket or BucketContent.
    pub kind: &'static str,
    /// success; retry (an error that may pass, tried again with backoff); failed (retrying
    /// cannot help until something changes).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The provisioner, as the BucketContent names it.
    pub provisioner: String,
    /// create_bucket, delete_bucket, grant or revoke.
    pub operation: &'static str,
    /// success, or the error's kind: transient or permanent.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IamLabels {
    /// The store's IAM endpoint.
    pub endpoint: String,
    /// in_flight (at most the store's `iam.maxConcurrentRequests`), or waiting for a turn.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnLabels {
    /// The provisioner whose Buckets the reconciles are of ("" where it is not known yet).
    pub provisioner: String,
    /// in_flight (at most `--max-concurrent-reconciles`), or waiting for a turn.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProvisionerLabel {
    pub provisioner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BucketStateLabels {
    /// The provisioner of the Bucket's content, or of its class while it has none.
    pub provisioner: String,
    /// new (no status yet), reconciling, ready, stalled or deleting.
    pub state: &'static str,
    /// The reason of the Bucket's Ready condition; empty while new or being deleted.
    pub reason: String,
}

/// What counts the Buckets, by [`BucketStateLabels`], at each scrape.
pub type BucketTally = Box<dyn Fn() -> BTreeMap<BucketStateLabels, i64> + Send + Sync>;

/// `bucketgate_buckets`: the Buckets by provisioner, state and reason, counted at each
/// scrape from what the provisioning loop holds, so only on the leader; no figures
/// elsewhere, rather than zeros that would read as "no Bucket". Counted, not kept up to
/// date one change at a time: a count can then never drift from the Buckets.
#[derive(Clone, Default)]
pub struct BucketStates {
    tally: Arc<RwLock<Option<(u64, BucketTally)>>>,
    followers: Arc<AtomicU64>,
}

impl std::fmt::Debug for BucketStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BucketStates")
    }
}

/// Counting goes on while this lives: [`BucketStates::follow`].
pub struct Following {
    states: BucketStates,
    id: u64,
}

impl BucketStates {
    /// Counts the Buckets with `tally` from now on, until the [`Following`] is dropped (the
    /// loop stopped: its replica no longer leads, or it starts again with new drivers).
    pub fn follow(&self, tally: BucketTally) -> Following {
        let id = self.followers.fetch_add(1, Ordering::Relaxed) + 1;
        *self.tally.write().unwrap_or_else(|e| e.into_inner()) = Some((id, tally));
        Following { states: self.clone(), id }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut tally = self.states.tally.write().unwrap_or_else(|e| e.into_inner());
        // A loop started again may follow before the one it replaces is dropped.
        if tally.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *tally = None;
        }
    }
}

impl Collector for BucketStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tally = self.tally.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, tally)) = tally.as_ref() else { return Ok(()) };
        let counts = tally();
        let help = "Buckets by provisioner, state (new: no status yet; reconciling; ready; stalled: waits on someone; \
                    deleting) and the reason of their Ready condition, counted by the leader at each scrape";
        let mut family = encoder.encode_descriptor("buckets", help, None, ConstGauge::new(0i64).metric_type())?;
        for (labels, count) in &counts {
            ConstGauge::new(*count).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// Reading a file again after it changed (the certificate, the policies, the
/// configuration): each attempt counted by result, and whether the file as it now is came
/// into force. The counter alone cannot say that: a broken file is reported once, not at
/// every poll, so an alert on its increase would end while the file is still broken.
#[derive(Clone, Debug)]
pub struct Reloads {
    pub total: Family<ResultLabel, Counter>,
    /// 1 while the last attempt loaded (or none was needed since start), 0 after a failure
    /// until a version that loads; as Prometheus's own `config_last_reload_successful`.
    pub last_successful: Gauge,
}

impl Reloads {
    fn register(registry: &mut Registry, what: &str, of: &str) -> Reloads {
        Reloads::register_as(
            registry,
            [&format!("{what}_reloads"), &format!("{of} reloads after a change, by result")],
            [
                &format!("{what}_last_reload_successful"),
                &format!("1 while the {} on disk is the one in force, 0 after it failed to load", of.to_lowercase()),
            ],
        )
    }

    /// Attempts counted under `total` and the last one's outcome under `last`, each a name
    /// and its help.
    fn register_as(registry: &mut Registry, total: [&str; 2], last: [&str; 2]) -> Reloads {
        let reloads = Reloads { total: Family::default(), last_successful: Gauge::default() };
        reloads.last_successful.set(1);
        registry.register(total[0], total[1], reloads.total.clone());
        registry.register(last[0], last[1], reloads.last_successful.clone());
        reloads
    }

    pub fn succeeded(&self) {
        self.total.get_or_create(&ResultLabel { result: "success" }).inc();
        self.last_successful.set(1);
    }

    pub fn failed(&self) {
        self.total.get_or_create(&ResultLabel { result: "error" }).inc();
        self.last_successful.set(0);
    }

    /// Attempts with `result` (`success` or `error`) so far.
    pub fn count(&self, result: &'static str) -> u64 {
        self.total.get_or_create(&ResultLabel { result }).get()
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<AdmissionLabels, Counter>,
    pub latency: Family<AdmissionLabels, Histogram>,
    pub lookups: Family<LookupLabels, Counter>,
    pub certificate_reloads: Reloads,
    pub certificate_expiry: Gauge,
    /// `serve --manage-certs`'s looks at the Secret and the caBundles, by result.
    pub certificate_renewals: Reloads,
    pub policy_evaluations: Family<PolicyLabels, Counter>,
    pub policy_reloads: Reloads,
    /// `serve`'s audits of the cluster's objects against the policies, by result.
    pub policy_audits: Reloads,
    pub policy_audit_objects: Family<AuditLabels, Gauge>,
    pub config_reloads: Reloads,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub time_to_bound: Histogram,
    pub backend_requests: Family<BackendLabels, Counter>,
    pub backend_duration: Family<BackendLabels, Histogram>,
    pub iam_requests: Family<IamLabels, Gauge>,
    pub reconcile_turns: Family<TurnLabels, Gauge>,
    pub buckets_missing: Family<ProvisionerLabel, Gauge>,
    pub unrevoked_keys: Family<ProvisionerLabel, Gauge>,
    pub bucket_states: BucketStates,
    pub leader: Gauge,
    pub provisioning_enabled: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bucketgate");
        let requests = Family::<AdmissionLabels, Counter>::default();
        registry.register("admission_requests", "Admission requests answered", requests.clone());
        let latency = Family::<AdmissionLabels, Histogram>::new_with_constructor(|| {
            // 25 µs to about 0.4 s: decisions take microseconds, the API server allows seconds.
            Histogram::new(exponential_buckets(0.000_025, 2.0, 15))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decode, decide and encode one review",
            latency.clone(),
        );
        let lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "admission_lookups",
            "Objects a review turned on that the catalog did not hold (or held refusing), read from the API server, \
             by kind and result (found: the catalog's watch was behind)",
            lookups.clone(),
        );
        let certificate_reloads = Reloads::register(&mut registry, "tls_certificate", "Serving certificate");
        let certificate_renewals = Reloads::register_as(
            &mut registry,
            [
                "tls_certificate_renewals",
                "With --manage-certs, looks at the certificate's Secret and the webhooks' caBundle (renewing what is due), by result",
            ],
            [
                "tls_certificate_last_renewal_successful",
                "1 while the last look of --manage-certs ended well (or none was made), 0 after it failed",
            ],
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiration_timestamp_seconds",
            "When the serving certificate in use, or the CA in ca.crt beside it that signed it, stops being valid (Unix seconds)",
            certificate_expiry.clone(),
        );
        let policy_evaluations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Policy evaluations by policy, mode and result (audit-mode violations show here)",
            policy_evaluations.clone(),
        );
        let policy_reloads = Reloads::register(&mut registry, "policy", "Policy set");
        let policy_audits = Reloads::register_as(
            &mut registry,
            ["policy_audits", "Audits of the cluster's objects against the policies, by result"],
            [
                "policy_audit_last_successful",
                "1 while the last audit of the cluster ended (or none began), 0 after it failed",
            ],
        );
        let policy_audit_objects = Family::<AuditLabels, Gauge>::default();
        registry.register(
            "policy_audit_objects",
            "Objects of the cluster that each policy refuses, warns of, records or cannot evaluate, at their creation \
             or next update, as the last audit found them",
            policy_audit_objects.clone(),
        );
        let config_reloads = Reloads::register(&mut registry, "config", "Configuration");

        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "provisioning_reconciles",
            "Reconciles of the provisioning loop by kind and result (success, retry, failed)",
            reconciles.clone(),
        );
        // Around the seed report's target of 30 s (it took 5-10 minutes by hand).
        let time_to_bound = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]);
        registry.register(
            "bucket_time_to_bound_seconds",
            "From a Bucket's creation (whole seconds, the API server's clock) to this loop first binding it",
            time_to_bound.clone(),
        );
        let backend_requests = Family::<BackendLabels, Counter>::default();
        registry.register(
            "backend_requests",
            "Calls to the storage backends by provisioner, operation and result",
            backend_requests.clone(),
        );
        let backend_duration = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            // 5 ms to about 80 s: a bucket is made in milliseconds, emptied for deletion in minutes.
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        });
        registry.register(
            "backend_request_duration_seconds",
            "Time of each call to a storage backend, by provisioner, operation and result",
            backend_duration.clone(),
        );
        let iam_requests = Family::<IamLabels, Gauge>::default();
        registry.register(
            "backend_iam_requests",
            "Requests to a store's IAM API now, by endpoint and state: in_flight, or waiting for one of the \
             iam.maxConcurrentRequests turns",
            iam_requests.clone(),
        );
        let reconcile_turns = Family::<TurnLabels, Gauge>::default();
        registry.register(
            "provisioning_reconciles_in_progress",
            "The provisioning loop's reconciles now, by provisioner and state: in_flight, or waiting for one of the \
             --max-concurrent-reconciles turns",
            reconcile_turns.clone(),
        );
        let buckets_missing = Family::<ProvisionerLabel, Gauge>::default();
        registry.register(
            "buckets_missing",
            "Buckets whose bucket their store no longer has, by provisioner, as the leader last asked the stores \
             (0 on the other replicas)",
            buckets_missing.clone(),
        );
        let unrevoked_keys = Family::<ProvisionerLabel, Gauge>::default();
        registry.register(
            "unrevoked_keys",
            "Keys made for Buckets that went without being released which the leader's last sweep could not revoke at \
             their store, by provisioner (none on the other replicas)",
            unrevoked_keys.clone(),
        );
        let bucket_states = BucketStates::default();
        registry.register_collector(Box::new(bucket_states.clone()));
        let leader = Gauge::default();
        registry.register(
            "provisioning_leader",
            "1 while the provisioning loop runs on this replica (it holds the Lease), else 0",
            leader.clone(),
        );
        let provisioning_enabled = Gauge::default();
        registry.register(
            "provisioning_enabled",
            "1 where this replica runs for the Lease (it reaches the cluster and a provisioner has a driver), else 0",
            provisioning_enabled.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            lookups,
            certificate_reloads,
            certificate_expiry,
            certificate_renewals,
            policy_evaluations,
            policy_reloads,
            policy_audits,
            policy_audit_objects,
            config_reloads,
            reconciles,
            time_to_bound,
            backend_requests,
            backend_duration,
            iam_requests,
            reconcile_turns,
            buckets_missing,
            unrevoked_keys,
            bucket_states,
            leader,
            provisioning_enabled,
        }
    }
}

impl Metrics {
    /// An audit ended with `tally`: its counts replace the last one's, so that a policy
    /// removed since has no figures left.
    pub fn audited(&self, tally: &crate::policy::audit::Tally) {
        self.policy_audits.succeeded();
        self.policy_audit_objects.clear();
        for (policy, counts) in &tally.policies {
            for (effect, n) in counts.by_effect() {
                let labels = AuditLabels { policy: policy.clone(), effect };
                self.policy_audit_objects.get_or_create(&labels).set(n as i64);
            }
        }
    }

    pub fn observe(&self, labels: AdmissionLabels, elapsed: Duration) {
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    pub fn looked_up(&self, kind: &'static str, result: &'static str) {
        self.lookups.get_or_create(&LookupLabels { kind, result }).inc();
    }

    /// How often an object of `kind` the catalog did not hold was read with `result`.
    pub fn lookup_count(&self, kind: &'static str, result: &'static str) -> u64 {
        self.lookups.get(&LookupLabels { kind, result }).map(|c| c.get()).unwrap_or(0)
    }

    pub fn record_policies(&self, records: &[crate::policy::Record]) {
        for record in records {
            let labels = PolicyLabels {
                policy: record.policy.clone(),
                mode: record.mode.as_str(),
                result: record.result.as_str(),
            };
            self.policy_evaluations.get_or_create(&labels).inc();
        }
    }

    pub fn observe_backend(&self, labels: BackendLabels, elapsed: Duration) {
        self.backend_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.backend_requests.get_or_create(&labels).inc();
    }

    pub fn reconciled(&self, kind: &'static str, result: &'static str) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, result }).inc();
    }

    /// How often reconciles of `kind` ended with `result`.
    #[cfg(test)]
    pub fn reconcile_count(&self, kind: &'static str, result: &'static str) -> u64 {
        self.reconciles.get(&ReconcileLabels { kind, result }).map(|c| c.get()).unwrap_or(0)
    }

    /// How often `operation` on `provisioner`'s backend ended with `result`.
    #[cfg(test)]
    pub fn backend_count(&self, provisioner: &str, operation: &'static str, result: &'static str) -> u64 {
        let labels = BackendLabels { provisioner: provisioner.to_string(), operation, result };
        self.backend_requests.get(&labels).map(|c| c.get()).unwrap_or(0)
    }

    /// How often `policy` in `mode` ended with `result`, for `GET /policies`.
    pub fn policy_count(&self, policy: &str, mode: &'static str, result: &'static str) -> u64 {
        let labels = PolicyLabels { policy: policy.to_string(), mode, result };
        self.policy_evaluations.get(&labels).map(|c| c.get()).unwrap_or(0)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(count: i64) -> BucketTally {
        Box::new(move || {
            let labels = BucketStateLabels { provisioner: "p".into(), state: "ready", reason: "Bound".into() };
            BTreeMap::from([(labels, count)])
        })
    }

    /// Figures only while a loop follows its Buckets; a loop started again takes over, and
    /// the end of the one it replaced does not end the counting.
    #[test]
    fn the_buckets_are_counted_only_while_a_loop_follows_them() {
        let metrics = Metrics::default();
        let sample = |metrics: &Metrics| {
            let text = metrics.encode();
            text.lines().find(|l| l.starts_with("bucketgate_buckets{")).map(str::to_string)
        };
        assert_eq!(sample(&metrics), None);
        let first = metrics.bucket_states.follow(tally(3));
        assert_eq!(
            sample(&metrics).as_deref(),
            Some(r#"bucketgate_buckets{provisioner="p",state="ready",reason="Bound"} 3"#)
        );
        assert!(metrics.encode().contains("# TYPE bucketgate_buckets gauge\n"));
        let second = metrics.bucket_states.follow(tally(4));
        drop(first);
        assert!(sample(&metrics).is_some_and(|line| line.ends_with(" 4")));
        drop(second);
        assert_eq!(sample(&metrics), None);
    }
}
