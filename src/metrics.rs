//! Prometheus metrics, served as text on `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
        let reloads = Reloads { total: Family::default(), last_successful: Gauge::default() };
        reloads.last_successful.set(1);
        registry.register(
            format!("{what}_reloads"),
            format!("{of} reloads after a change, by result"),
            reloads.total.clone(),
        );
        registry.register(
            format!("{what}_last_reload_successful"),
            format!("1 while the {} on disk is the one in force, 0 after it failed to load", of.to_lowercase()),
            reloads.last_successful.clone(),
        );
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
    pub policy_evaluations: Family<PolicyLabels, Counter>,
    pub policy_reloads: Reloads,
    pub config_reloads: Reloads,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub time_to_bound: Histogram,
    pub backend_requests: Family<BackendLabels, Counter>,
    pub backend_duration: Family<BackendLabels, Histogram>,
    pub iam_requests: Family<IamLabels, Gauge>,
    pub reconcile_turns: Family<TurnLabels, Gauge>,
    pub buckets_missing: Family<ProvisionerLabel, Gauge>,
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
        let policy_evaluations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Policy evaluations by policy, mode and result (audit-mode violations show here)",
            policy_evaluations.clone(),
        );
        let policy_reloads = Reloads::register(&mut registry, "policy", "Policy set");
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
            policy_evaluations,
            policy_reloads,
            config_reloads,
            reconciles,
            time_to_bound,
            backend_requests,
            backend_duration,
            iam_requests,
            reconcile_turns,
            buckets_missing,
            leader,
            provisioning_enabled,
        }
    }
}

impl Metrics {
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
