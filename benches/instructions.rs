//! The instructions of admission decisions, counted by callgrind: the decisions of
//! `benches/admission.rs`, each in a process of its own, after one decision on the same
//! review as a warm-up (its first-use costs are not a decision's). Unlike the times, these
//! counts do not move with what else the machine is doing. Each benchmark counts
//! [`DECISIONS`] decisions, so a figure read with its last two digits dropped is one
//! decision's: counted once, a decision would take in whole the allocator's housekeeping
//! that comes every so many allocations (jemalloc's cache flushes, 13% of a mutate decision
//! when it fell in one). Beside them, the same reviews read through as JSON with nothing
//! kept: the least any decoding can cost, against which the decisions' own work shows.
//! Needs valgrind and the gungraun-runner of the gungraun version in Cargo.lock
//! (`scripts/bench` installs both); run with `cargo bench --bench instructions`.

mod common;

use std::hint::black_box;

use bucketgate::admission::Webhook;
use bucketgate::policy::PolicySet;
use common::{Cases, decide, label_policy, policies, quota_policy};
use gungraun::{LibraryBenchmarkConfig, library_benchmark, library_benchmark_group, main};
use serde::de::IgnoredAny;

/// Decisions counted together; see the module's comment.
const DECISIONS: usize = 100;

/// A review to decide, with all it is decided against.
struct Decision {
    webhook: Webhook,
    review: fn(&Cases) -> &[u8],
    cases: Cases,
    policies: PolicySet,
}

impl Decision {
    /// Answered once already, so that what is counted finds the caches filled.
    fn warmed(webhook: Webhook, review: fn(&Cases) -> &[u8], cases: Cases, policies: PolicySet) -> Decision {
        let decision = Decision { webhook, review, cases, policies };
        decision.answer();
        decision
    }

    fn answer(&self) -> Vec<u8> {
        decide(self.webhook, black_box((self.review)(&self.cases)), &self.cases.context(&self.policies))
    }
}

fn mutate(cases: &Cases) -> &[u8] {
    &cases.mutate
}

fn validate(cases: &Cases) -> &[u8] {
    &cases.validate
}

fn class_update(cases: &Cases) -> &[u8] {
    &cases.class_update
}

fn warmed(webhook: Webhook, review: fn(&Cases) -> &[u8], n: usize) -> Decision {
    Decision::warmed(webhook, review, Cases::load(), policies(n))
}

/// A Bucket CREATE judged by one policy on its labels, through `pattern` or, with `filter`,
/// through a JSONPath filter's `match()` (README, Policies).
fn labels_checked(filter: bool) -> Decision {
    Decision::warmed(Webhook::Validate, validate, Cases::load(), label_policy(filter))
}

/// A Bucket CREATE under a quota policy, which counts the Buckets of its namespace, with
/// `buckets` Buckets in the cluster.
fn quota_counted(buckets: usize) -> Decision {
    let cases = Cases { catalog: Cases::catalog_with_buckets(buckets), ..Cases::load() };
    Decision::warmed(Webhook::Validate, validate, cases, quota_policy())
}

// Returns the decision with its answers, so that dropping them and its catalog is not counted.
#[library_benchmark]
#[bench::mutate_bucket_create(args = (Webhook::Mutate, mutate, 0), setup = warmed)]
#[bench::validate_bucket_create(args = (Webhook::Validate, validate, 0), setup = warmed)]
#[bench::validate_bucketclass_update_denied(args = (Webhook::Validate, class_update, 0), setup = warmed)]
#[benches::validate_bucket_create_policies(args = [(Webhook::Validate, validate, 1), (Webhook::Validate, validate, 10), (Webhook::Validate, validate, 100)], setup = warmed)]
#[benches::mutate_bucket_create_policies(args = [(Webhook::Mutate, mutate, 1), (Webhook::Mutate, mutate, 10), (Webhook::Mutate, mutate, 100)], setup = warmed)]
#[bench::labels_checked_by_pattern(args = (false), setup = labels_checked)]
#[bench::labels_checked_by_a_filter_match(args = (true), setup = labels_checked)]
#[bench::quota_counted_among_10000_buckets(args = (10_000), setup = quota_counted)]
fn decision(decision: Decision) -> (Vec<Vec<u8>>, Decision) {
    ((0..DECISIONS).map(|_| decision.answer()).collect(), decision)
}

// The least any decoding of the same review can cost: serde_json reading it through and
// keeping nothing (`IgnoredAny`), which checks that it is JSON, as every reading must
// before a decision rests on it. The difference from `decision` is what bucketgate's own
// decoding, rules and response add.
#[library_benchmark]
#[bench::mutate_bucket_create(args = (mutate), setup = loaded)]
#[bench::validate_bucket_create(args = (validate), setup = loaded)]
#[bench::validate_bucketclass_update_denied(args = (class_update), setup = loaded)]
fn json_only(body: Vec<u8>) -> (usize, Vec<u8>) {
    let read_through =
        (0..DECISIONS).filter(|_| serde_json::from_slice::<IgnoredAny>(black_box(&body)).is_ok()).count();
    (read_through, body)
}

fn loaded(review: fn(&Cases) -> &[u8]) -> Vec<u8> {
    review(&Cases::load()).to_vec()
}

library_benchmark_group!(name = decisions, benchmarks = [decision, json_only]);

main!(
    config = LibraryBenchmarkConfig::default().pass_through_env("BUCKETGATE_FIXTURES");
    library_benchmark_groups = decisions
);
