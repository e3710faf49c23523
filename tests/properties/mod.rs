//! What every answer to a review must be, whatever the body or the policies, and what it
//! is checked against: used by the property tests (tests/review_properties.rs) on the
//! captured reviews and on every input the fuzzer has kept, and by the fuzz targets
//! (fuzz/fuzz_targets) on what they make up. `repo` is the repository's directory: each
//! crate that includes this module names it from its own manifest directory.

#![allow(dead_code)] // each user takes its part

use std::path::{Path, PathBuf};

use bucketgate::admission::{self, Context, Webhook};
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::policy::{PolicySet, load};
use serde_json::Value;

/// `../shared/fixtures` beside the repository, or `$BUCKETGATE_FIXTURES`.
pub fn fixtures(repo: &Path) -> PathBuf {
    std::env::var_os("BUCKETGATE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| repo.join("../shared/fixtures"))
}

/// The fixture catalog, and the configuration that serves its classes' provisioner.
pub fn catalog_and_config(repo: &Path) -> (Catalog, Config) {
    let dir = fixtures(repo).join("catalog");
    let catalog = Catalog::load_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}; set BUCKETGATE_FIXTURES", dir.display()));
    (catalog, Config::default().with_provisioners(["rook-ceph.ceph.rook.io/bucket".to_string()]))
}

/// The captured AdmissionReviews' files, in order.
pub fn captured(repo: &Path) -> Vec<PathBuf> {
    let dir = fixtures(repo).join("admission-reviews");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; set BUCKETGATE_FIXTURES", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// The captured AdmissionReviews' bodies, in order.
pub fn captured_bodies(repo: &Path) -> Vec<Vec<u8>> {
    captured(repo).iter().map(|file| std::fs::read(file).unwrap()).collect()
}

/// The policies in `policies/`.
pub fn example_policies(repo: &Path) -> PolicySet {
    load::load(&[repo.join("policies")]).unwrap_or_else(|e| panic!("the example policies do not load: {e:?}"))
}

/// Checks the answers to `body`, and says whether the mutating one changed the object;
/// panics, saying which property failed, when one does.
///
/// - Any body gets an answer or an error, never a panic.
/// - Each answer is an AdmissionReview for the request's uid.
/// - A mutating answer's patch applies to the object it was made for: the API server
///   fails the user's request when it does not.
/// - Mutating is idempotent: the API server may call the webhook again on the patched
///   object (`reinvocationPolicy: IfNeeded`), and that second answer changes nothing.
///   Checked on the body as the API server would write it, from its decoded objects: a
///   member twice (which it never sends) is refused by the first reading and gone from the
///   second, as the patched object is written again.
pub fn check(body: &[u8], ctx: &Context) -> bool {
    answers(body, ctx);
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else { return false };
    let Some(patched) = answers(&serde_json::to_vec(&review).unwrap(), ctx) else { return false };
    let changed = review["request"]["object"] != patched;
    review["request"]["object"] = patched.clone();
    let again = serde_json::to_vec(&review).unwrap();
    let twice = answers(&again, ctx).expect("the patched object is read like the first");
    assert_eq!(twice, patched, "the second mutation changed the object: {}", String::from_utf8_lossy(&again));
    changed
}

/// Both webhooks' answers to `body` checked, and the object after the mutating answer's
/// patch, when the body is a request with an object.
pub fn answers(body: &[u8], ctx: &Context) -> Option<Value> {
    let request = admission::decode(body).ok()?;
    let mut patched = None;
    for webhook in [Webhook::Mutate, Webhook::Validate] {
        let response = admission::review(webhook, &request, ctx).response;
        let text = admission::encode(&response).expect("an answer encodes");
        let review: Value = serde_json::from_slice(&text).expect("an answer is JSON");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], request.uid.as_str());
        assert_eq!(review["response"]["allowed"], response.allowed);
        if webhook == Webhook::Validate {
            assert!(response.patch.is_none(), "the validating webhook answered with a patch");
            continue;
        }
        match request.json_objects(false) {
            Ok((Some(mut object), _)) => {
                if let Some(patch) = &response.patch {
                    let operations: json_patch::Patch =
                        serde_json::from_slice(patch).expect("the patch is a JSON Patch");
                    if let Err(error) = json_patch::patch(&mut object, &operations) {
                        panic!("the patch does not apply ({error}): {}", String::from_utf8_lossy(patch));
                    }
                }
                patched = Some(object);
            }
            Ok((None, _)) => assert!(response.patch.is_none(), "a patch for a request without an object"),
            // Only the typed reading takes this object (a lone surrogate escape such as
            // "\ud800", which the API server never writes): no value to apply a patch to.
            Err(_) => {}
        }
    }
    patched
}

/// A policy file loads or is refused with an error, never a panic; a file that loads
/// judges each of `reviews` by [`answers`]. Not by reinvocation: one policy may match on
/// what another sets, which is what the API server's second call is for. Says whether
/// the file loaded.
pub fn check_policy_file(text: &str, catalog: &Catalog, config: &Config, reviews: &[Vec<u8>]) -> bool {
    let Ok(policies) = load::compile(&[(PathBuf::from("policy.yaml"), text.to_string())]) else { return false };
    let ctx = Context { catalog, config, policies: &policies };
    for body in reviews {
        answers(body, &ctx);
    }
    true
}

/// Checks `text` as bucketgate's configuration file (`--config`); says whether it parsed.
///
/// - Any text parses or is refused with an error, never a panic.
/// - What parses holds what the parser promises the rest of bucketgate: every provisioner
///   named, every endpoint an http or https URL with a host, every name served.
pub fn check_config_file(text: &str) -> bool {
    let Ok(config) = Config::parse(text, "config.yaml") else { return false };
    for provisioner in &config.provisioners {
        assert!(!provisioner.name.trim().is_empty(), "a provisioner without a name: {config:?}");
        assert!(config.served_names().contains(&provisioner.name.as_str()), "{} not served", provisioner.name);
        let endpoints = provisioner.s3.iter().flat_map(|s3| {
            std::iter::once(s3.endpoint.clone()).chain(s3.iam.as_ref().and_then(|iam| iam.endpoint.clone()))
        });
        for endpoint in endpoints {
            let uri: http::Uri = endpoint.parse().unwrap_or_else(|e| panic!("endpoint {endpoint:?}: {e}"));
            assert!(matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(), "{endpoint:?}");
        }
    }
    true
}

/// Checks `text` as a file of the offline catalog (`serve --catalog`, `policy test`); says
/// whether it made a catalog. Any text makes one or is refused, never a panic, and the
/// catalog holds no more objects than the file has documents.
pub fn check_catalog_file(text: &str) -> bool {
    let path = PathBuf::from("catalog.yaml");
    let Ok(documents) = Catalog::documents(&path, text) else { return false };
    let count = documents.len();
    let Ok(catalog) = Catalog::from_documents(documents.into_iter().map(|d| (path.clone(), d))) else { return false };
    let (classes, contents, namespaces) = catalog.len();
    assert!(classes + contents + namespaces <= count, "{count} documents made more objects");
    true
}

/// Checks `text` as a policy test file (`bucketgate policy test`) run against `policies`;
/// says whether it is one. Any text is refused with an error or runs, never a panic, and
/// running gives one result for each case of each suite, each named for its case.
pub fn check_policy_test_file(text: &str, policies: &PolicySet) -> bool {
    let path = Path::new("policy.test.yaml");
    let Ok(suites) = bucketgate::policy::testing::parse_suites(path, text) else { return false };
    let results = bucketgate::policy::testing::run_file(path, text, policies).expect("parsed once, parses again");
    let cases: Vec<&str> = suites.iter().flat_map(|s| s.cases.iter().map(|c| c.name.as_str())).collect();
    let named: Vec<&str> = results.iter().map(|r| r.case.as_str()).collect();
    assert_eq!(named, cases, "a result for each case, in order");
    true
}
