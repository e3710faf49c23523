//! What both decision benchmarks decide on: the captured reviews, the fixture catalog, and
//! sets of policies like the examples.

use std::path::{Path, PathBuf};

use bucketgate::admission::{self, Context, Webhook};
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::policy::{PolicySet, load};
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
pub fn policies(n: usize) -> PolicySet {
    let files: Vec<(PathBuf, String)> = (0..n)
        .map(|i| {
            let body = if i % 2 == 0 {
                format!("  validate:\n    - path: $.object.metadata.labels['app']\n      required: true\n      pattern: '^[a-z]+$'\n    - any:\n        - path: $.object.spec.bucketPrefix\n          maxLength: 20\n        - path: $.namespace.labels['tier{i}']\n          required: true\n")
            } else {
                format!("  mutate:\n    - setDefault:\n        path: $.object.metadata.labels['owner{i}']\n        value: shared\n")
            };
            bucket_policy(&format!("p{i}"), &body)
        })
        .collect();
    load::compile(&files).unwrap_or_else(|e| panic!("{e:?}"))
}

/// One policy that checks every label value against `^[a-z-]+$`: through the condition's
/// `pattern`, compiled at load, or through a JSONPath filter's `match()`, which the engine
/// compiles again for every value it tests.
pub fn label_policy(filter: bool) -> PolicySet {
    let check = if filter {
        "  validate:\n    - path: \"$.object.metadata.labels[?!match(@, '[a-z-]+')]\"\n      forbidden: true\n"
    } else {
        "  validate:\n    - path: $.object.metadata.labels.*\n      pattern: '^[a-z-]+$'\n"
    };
    load::compile(&[bucket_policy("labels", check)]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A quota of 20 Buckets a namespace, which counts the namespace's Buckets on every Bucket
/// CREATE.
pub fn quota_policy() -> PolicySet {
    let text = "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: quota\nspec:\n  mode: enforce\n  match:\n    kinds: [Bucket]\n    operations: [CREATE]\n  limits:\n    maxBuckets: 20\n";
    load::compile(&[(PathBuf::from("quota.yaml"), text.to_string())]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The file of a policy named `name` that warns on Buckets, with `spec` lines `body`.
fn bucket_policy(name: &str, body: &str) -> (PathBuf, String) {
    let text = format!(
        "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: {name}\nspec:\n  mode: warn\n  match:\n    kinds: [Bucket]\n{body}"
    );
    (PathBuf::from(format!("{name}.yaml")), text)
}

/// One decision, decoded body to encoded answer.
pub fn decide(webhook: Webhook, body: &[u8], ctx: &Context) -> Vec<u8> {
    let request = admission::decode(body).unwrap();
    admission::encode(&admission::review(webhook, &request, ctx).response).unwrap()
}

/// The reviews decided on, as the API server sends them (compact), and what they are
/// decided against. Loading checks that each is answered as its name says.
pub struct Cases {
    pub catalog: Catalog,
    pub config: Config,
    /// A Bucket CREATE that gets a default class, label and finalizer.
    pub mutate: Vec<u8>,
    /// A Bucket CREATE that names its class and is allowed.
    pub validate: Vec<u8>,
    /// A BucketClass UPDATE that changes its parameters, denied.
    pub class_update: Vec<u8>,
}

impl Cases {
    pub fn load() -> Cases {
        let catalog = Catalog::load_dir(&fixtures().join("catalog")).unwrap();
        let config = Config::default().with_provisioners(["rook-ceph.ceph.rook.io/bucket".to_string()]);
        let mutate = serde_json::to_vec(&review_file("009-mutate-Bucket-CREATE.json")).unwrap();
        let mut validate = review_file("010-validate-Bucket-CREATE.json");
        validate["request"]["object"]["spec"] = json!({"protocol": "s3", "bucketClassName": "ceph-s3", "bucketPrefix": "photos-", "secretName": "photos-creds"});
        let validate = serde_json::to_vec(&validate).unwrap();
        let class_update = serde_json::to_vec(&review_file("016-validate-BucketClass-UPDATE.json")).unwrap();
        let cases = Cases { catalog, config, mutate, validate, class_update };
        let none = policies(0);
        let ctx = cases.context(&none);
        assert!(allowed(Webhook::Mutate, &cases.mutate, &ctx));
        assert!(allowed(Webhook::Validate, &cases.validate, &ctx));
        assert!(!allowed(Webhook::Validate, &cases.class_update, &ctx));
        cases
    }

    /// The fixture catalog with `buckets` Buckets spread over 1,000 namespaces, ten of them
    /// in the reviews' namespace.
    pub fn catalog_with_buckets(buckets: usize) -> Catalog {
        let dir = fixtures().join("catalog");
        let mut documents = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            documents.extend(Catalog::documents(&path, &text).unwrap().into_iter().map(|doc| (path.clone(), doc)));
        }
        documents.extend((0..buckets).map(|i| {
            let namespace = if i < 10 { "team-a".to_string() } else { format!("team-{i}") };
            let bucket = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
                "metadata": {"name": format!("bucket-{i}"), "namespace": namespace, "uid": format!("uid-{i}")},
                "spec": {"protocol": "s3", "bucketClassName": "ceph-s3"}});
            (PathBuf::from("generated"), bucket)
        }));
        let catalog = Catalog::from_documents(documents).unwrap();
        assert_eq!(catalog.bucket_count("team-a", ""), 10);
        catalog
    }

    pub fn context<'a>(&'a self, policies: &'a PolicySet) -> Context<'a> {
        Context { catalog: &self.catalog, config: &self.config, policies }
    }
}

/// `allowed` of the answer, read back from the text.
fn allowed(webhook: Webhook, body: &[u8], ctx: &Context) -> bool {
    let review: Value = serde_json::from_slice(&decide(webhook, body, ctx)).unwrap();
    review["response"]["allowed"].as_bool().unwrap()
}
