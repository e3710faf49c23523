//! The cost of one admission decision, decoded body to encoded answer: a mutate and a
//! validate decision on the captured reviews (a Bucket CREATE each, and a BucketClass
//! UPDATE that is denied), then Bucket decisions with 1, 10 and 100 policies in force. Run with `cargo bench --bench admission`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bucketgate::admission::{self, Context, Webhook};
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::policy::{PolicySet, load};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    std::env::var_os("BUCKETGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

fn review_file(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("admission-reviews").join(name)).unwrap()).unwrap()
}

/// `n` policies like the examples: half check labels and prefixes, half mutate.
fn policies(n: usize) -> PolicySet {
    let files: Vec<(PathBuf, String)> = (0..n)
        .map(|i| {
            let body = if i % 2 == 0 {
                format!("  validate:\n    - path: $.object.metadata.labels['app']\n      required: true\n      pattern: '^[a-z]+$'\n    - any:\n        - path: $.object.spec.bucketPrefix\n          maxLength: 20\n        - path: $.namespace.labels['tier{i}']\n          required: true\n")
            } else {
                format!("  mutate:\n    - setDefault:\n        path: $.object.metadata.labels['owner{i}']\n        value: shared\n")
            };
            let text = format!("apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: p{i}\nspec:\n  mode: warn\n  match:\n    kinds: [Bucket]\n{body}");
            (PathBuf::from(format!("p{i}.yaml")), text)
        })
        .collect();
    load::compile(&files).unwrap_or_else(|e| panic!("{e:?}"))
}

fn decide(webhook: Webhook, body: &[u8], ctx: &Context) -> Vec<u8> {
    let request = admission::decode(body).unwrap();
    admission::encode(&admission::review(webhook, &request, ctx).response).unwrap()
}

/// `allowed` of the answer, read back from the text.
fn allowed(webhook: Webhook, body: &[u8], ctx: &Context) -> bool {
    let review: Value = serde_json::from_slice(&decide(webhook, body, ctx)).unwrap();
    review["response"]["allowed"].as_bool().unwrap()
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::load_dir(&fixtures().join("catalog")).unwrap();
    let config = Config::default().with_provisioners(["rook-ceph.ceph.rook.io/bucket".to_string()]);
    let mutate = serde_json::to_vec(&review_file("009-mutate-Bucket-CREATE.json")).unwrap();
    let mut validate = review_file("010-validate-Bucket-CREATE.json");
    validate["request"]["object"]["spec"] = json!({"protocol": "s3", "bucketClassName": "ceph-s3", "bucketPrefix": "photos-", "secretName": "photos-creds"});
    let validate = serde_json::to_vec(&validate).unwrap();
    let none = PolicySet { policies: Vec::new(), loaded_at: SystemTime::now() };

    let ctx = Context { catalog: &catalog, config: &config, policies: &none };
    assert!(allowed(Webhook::Mutate, &mutate, &ctx));
    assert!(allowed(Webhook::Validate, &validate, &ctx));
    c.bench_function("mutate Bucket CREATE, no policies", |b| {
        b.iter(|| decide(Webhook::Mutate, black_box(&mutate), &ctx))
    });
    c.bench_function("validate Bucket CREATE, no policies", |b| {
        b.iter(|| decide(Webhook::Validate, black_box(&validate), &ctx))
    });
    let class_update = serde_json::to_vec(&review_file("016-validate-BucketClass-UPDATE.json")).unwrap();
    assert!(!allowed(Webhook::Validate, &class_update, &ctx));
    c.bench_function("validate BucketClass UPDATE (denied), no policies", |b| {
        b.iter(|| decide(Webhook::Validate, black_box(&class_update), &ctx))
    });

    for n in [1, 10, 100] {
        let set = policies(n);
        let ctx = Context { catalog: &catalog, config: &config, policies: &set };
        c.bench_function(&format!("validate Bucket CREATE, {n} policies"), |b| {
            b.iter(|| decide(Webhook::Validate, black_box(&validate), &ctx))
        });
        c.bench_function(&format!("mutate Bucket CREATE, {n} policies"), |b| {
            b.iter(|| decide(Webhook::Mutate, black_box(&mutate), &ctx))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
