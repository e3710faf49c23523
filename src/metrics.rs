//! Prometheus metrics, served as text on `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
pub struct PolicyLabels {
    pub policy: String,
    pub mode: &'static str,
    /// pass, violation or error.
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<AdmissionLabels, Counter>,
    pub latency: Family<AdmissionLabels, Histogram>,
    pub certificate_reloads: Family<ResultLabel, Counter>,
    pub policy_evaluations: Family<PolicyLabels, Counter>,
    pub policy_reloads: Family<ResultLabel, Counter>,
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
        let certificate_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Serving certificate reloads after the files changed",
            certificate_reloads.clone(),
        );
        let policy_evaluations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Policy evaluations by policy, mode and result (audit-mode violations show here)",
            policy_evaluations.clone(),
        );
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        registry.register("policy_reloads", "Policy directory reloads after a change", policy_reloads.clone());
        Metrics { registry, requests, latency, certificate_reloads, policy_evaluations, policy_reloads }
    }
}

impl Metrics {
    pub fn observe(&self, labels: AdmissionLabels, elapsed: Duration) {
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
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
