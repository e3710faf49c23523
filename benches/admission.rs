//! The time of one admission decision, decoded body to encoded answer: a mutate and a
//! validate decision on the captured reviews (a Bucket CREATE each, and a BucketClass
//! UPDATE that is denied), then Bucket decisions with 1, 10 and 100 policies in force, and
//! with a quota policy counting a namespace's Buckets among 10,000.
//! Run with `cargo bench --bench admission`; `benches/instructions.rs` counts the same
//! decisions' instructions.

mod common;

use std::hint::black_box;

use bucketgate::admission::Context;
use bucketgate::admission::Webhook;
use common::{Cases, decide, label_policy, policies, quota_policy};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let cases = Cases::load();
    let none = policies(0);
    let ctx = cases.context(&none);
    c.bench_function("mutate Bucket CREATE, no policies", |b| {
        b.iter(|| decide(Webhook::Mutate, black_box(&cases.mutate), &ctx))
    });
    c.bench_function("validate Bucket CREATE, no policies", |b| {
        b.iter(|| decide(Webhook::Validate, black_box(&cases.validate), &ctx))
    });
    c.bench_function("validate BucketClass UPDATE (denied), no policies", |b| {
        b.iter(|| decide(Webhook::Validate, black_box(&cases.class_update), &ctx))
    });

    for (filter, how) in [(false, "pattern"), (true, "a filter's match()")] {
        let set = label_policy(filter);
        let ctx = cases.context(&set);
        c.bench_function(&format!("validate Bucket CREATE, its labels checked by {how}"), |b| {
            b.iter(|| decide(Webhook::Validate, black_box(&cases.validate), &ctx))
        });
    }

    let quota = quota_policy();
    let crowded = Cases::catalog_with_buckets(10_000);
    let ctx = Context { catalog: &crowded, ..cases.context(&quota) };
    c.bench_function("validate Bucket CREATE, a quota policy, 10,000 Buckets in the cluster", |b| {
        b.iter(|| decide(Webhook::Validate, black_box(&cases.validate), &ctx))
    });

    for n in [1, 10, 100] {
        let set = policies(n);
        let ctx = cases.context(&set);
        c.bench_function(&format!("validate Bucket CREATE, {n} policies"), |b| {
            b.iter(|| decide(Webhook::Validate, black_box(&cases.validate), &ctx))
        });
        c.bench_function(&format!("mutate Bucket CREATE, {n} policies"), |b| {
            b.iter(|| decide(Webhook::Mutate, black_box(&cases.mutate), &ctx))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
