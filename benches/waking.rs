//! What waking the Buckets of each BucketContent costs the provisioning loop when the
//! catalog hands it every content, as it does when a replica starts leading and after each
//! of its lists: 10,000 contents, each bound by one of 10,000 Buckets, found through the
//! loop's index (`provision::waiting`) and, for comparison, by a look at every Bucket in the
//! watch's store, as the loop found them before. And what the leader's scrape costs with
//! those Buckets: `bucketgate_buckets` counts them all at each one. Run with
//! `cargo bench --bench waking`.

use std::hint::black_box;

use bucketgate::api::{Bucket, BucketClass, BucketSpec};
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::metrics::Metrics;
use bucketgate::provision::waiting::Waiting;
use bucketgate::provision::{plan, tally};
use criterion::{Criterion, criterion_group, criterion_main};
use kube::runtime::{reflector, watcher};

const BUCKETS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let (store, mut writer) = reflector::store::<Bucket>();
    let waiting = Waiting::default();
    for i in 0..BUCKETS {
        let mut bucket = Bucket::new(&format!("bucket-{i}"), BucketSpec::default());
        bucket.metadata.namespace = Some(format!("team-{}", i % 100));
        bucket.spec.bucket_class_name = Some(format!("class-{}", i % 1_000));
        bucket.spec.bucket_content_name = Some(format!("bc-{i}"));
        let event = watcher::Event::Apply(bucket);
        waiting.apply(&event);
        writer.apply_watcher_event(&event);
    }
    let contents: Vec<String> = (0..BUCKETS).map(|i| format!("bc-{i}")).collect();
    let mut group = c.benchmark_group("the Buckets of 10,000 contents, among 10,000 Buckets");
    group.sample_size(10);
    group.bench_function("through the index", |b| {
        b.iter(|| contents.iter().map(|content| waiting.on_content(black_box(content)).len()).sum::<usize>())
    });
    group.bench_function("by a look at every Bucket", |b| {
        b.iter(|| {
            contents
                .iter()
                .map(|content| {
                    store.state_filter(|bucket| plan::content_bound(bucket) == Some(black_box(content))).len()
                })
                .sum::<usize>()
        })
    });
    group.finish();

    // A scrape of the leader: the classes' one provisioner driven here, each Bucket's
    // content unknown to the catalog, so each is looked up and then found by its class.
    let classes = (0..1_000).map(|i| {
        let class = serde_json::json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass",
            "metadata": {"name": format!("class-{i}")}, "provisioner": "p", "supportedProtocols": ["s3"]});
        serde_json::from_value::<BucketClass>(class).unwrap()
    });
    let catalog = Catalog::from_objects(classes, [], []);
    let config =
        Config::parse("provisioners:\n  - name: p\n    s3: {endpoint: 'http://127.0.0.1:8333'}\n", "bench").unwrap();
    let metrics = Metrics::default();
    let _counting = metrics.bucket_states.follow(tally(store, catalog, config));
    let mut group = c.benchmark_group("a scrape of /metrics on the leader, with 10,000 Buckets");
    group.sample_size(10);
    group.bench_function("bucketgate_buckets counted", |b| b.iter(|| metrics.encode().len()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
