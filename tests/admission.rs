//! The AdmissionReviews captured from kube-apiserver v1.36, and variations of them, sent to
//! the real server over TLS. Patches are applied to the exact objects the API server sent.

mod common;

use std::time::Duration;

use bucketgate::catalog::Catalog;
use bucketgate::config::ConfigStore;
use common::*;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};

/// Every capture gets a well-formed answer: the right uid, allowed or denied as the rules say.
#[tokio::test]
async fn every_captured_review_is_answered() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let denied = ["004", "010", "016"];
    let names = fixture_names();
    assert_eq!(names.len(), 30, "{names:?}");
    for name in names {
        let webhook = if name.contains("-mutate-") { "mutate" } else { "validate" };
        let body = fixture(&name[..3]);
        let response = server.review(webhook, &body).await;
        let expect_allowed = !denied.contains(&&name[..3]);
        assert_eq!(response["allowed"], expect_allowed, "{name}: {response}");
        if webhook == "validate" {
            assert!(response.get("patch").is_none(), "{name}: validating webhooks never patch");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn bucket_create_gets_default_class_label_and_finalizer() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let body = fixture("009");
    let response = server.review("mutate", &body).await;
    assert_eq!(response["allowed"], true);
    let mut expected = body["request"]["object"].clone();
    expected["spec"]["bucketClassName"] = json!("ceph-s3");
    expected["metadata"]["labels"]["cosi.io/provisioner"] = json!("rook-ceph.ceph.rook.io-bucket");
    expected["metadata"]["finalizers"] = json!(["cosi.io/finalizer"]);
    assert_eq!(apply_patch(&body, &response), expected);

    // The dry run of the same request gets the same answer: admission has no side effects.
    let dry = fixture("003");
    assert_eq!(dry["request"]["dryRun"], true);
    let dry_response = server.review("mutate", &dry).await;
    assert_eq!(dry_response["patch"], response["patch"]);
    server.stop().await;
}

/// The mutating and then the validating webhook, as the API server chains them: the KEP's
/// own `YosemitePhotos-` prefix is refused with the fix, and the fixed Bucket passes.
#[tokio::test]
async fn kep_example_prefix_is_refused_after_mutation_and_fixed_prefix_passes() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let mutated = apply_patch(&fixture("009"), &server.review("mutate", &fixture("009")).await);
    let mut validate = fixture("010");
    validate["request"]["object"]["spec"] = mutated["spec"].clone();
    validate["request"]["object"]["metadata"]["labels"] = mutated["metadata"]["labels"].clone();
    validate["request"]["object"]["metadata"]["finalizers"] = mutated["metadata"]["finalizers"].clone();
    let response = server.review("validate", &validate).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(
        response["status"]["message"],
        "Bucket \"team-a/photos\": spec.bucketPrefix \"YosemitePhotos-\" has upper-case letters (YP); \
         s3 bucket names are lower case: use \"yosemitephotos-\""
    );

    validate["request"]["object"]["spec"]["bucketPrefix"] = json!("yosemitephotos-");
    let response = server.review("validate", &validate).await;
    assert_eq!(response["allowed"], true, "{response}");

    // Without the mutating webhook the missing class is named too.
    let response = server.review("validate", &fixture("010")).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.bucketClassName is required"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn generate_name_create_binds_to_the_shared_content() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let body = fixture("013");
    assert!(body["request"].get("name").is_none(), "the capture is a generateName create");
    let response = server.review("mutate", &body).await;
    let mut expected = body["request"]["object"].clone();
    // The content has no provisioner, so there is no label to add; the finalizer goes on.
    expected["metadata"]["finalizers"] = json!(["cosi.io/finalizer"]);
    assert_eq!(apply_patch(&body, &response), expected);

    let response = server.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

/// The tenancy boundary: a recreated namespace (same name, new uid) and a namespace not
/// listed are both refused with 403, naming what to change.
#[tokio::test]
async fn binding_is_refused_for_recreated_and_unlisted_namespaces() {
    let recreated: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a", "uid": "9f0c0000-0000-4000-8000-000000000001"}}))
            .unwrap();
    let base = fixture_catalog();
    let catalog = Catalog::from_objects(
        base.classes().iter().map(|c| (**c).clone()),
        [(*base.content("legacy-logs").unwrap()).clone()],
        [recreated],
    );
    let server = TestServer::start(catalog, served()).await;
    let response = server.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("Bucket \"team-a/shared-gx4hp\": BucketContent \"legacy-logs\" lets namespace \"team-a\" bind only with uid 7239d61f-6c63-4400-865a-b393ebab86df, but \"team-a\" now has uid 9f0c0000-0000-4000-8000-000000000001"), "{message}");
    server.stop().await;

    let server = TestServer::start(fixture_catalog(), served()).await;
    let mut other = fixture("014");
    other["request"]["namespace"] = json!("team-b");
    other["request"]["object"]["metadata"]["namespace"] = json!("team-b");
    let response = server.review("validate", &other).await;
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("namespace \"team-b\" may not bind BucketContent \"legacy-logs\""), "{message}");
    server.stop().await;
}

/// The seed report's "unsupported provisioner", refused at admission instead of leaving the
/// claim pending.
#[tokio::test]
async fn unserved_provisioner_is_refused_at_once() {
    let server = TestServer::start(fixture_catalog(), bucketgate::config::Config::default()).await;
    let mut body = fixture("010");
    body["request"]["object"]["spec"]["bucketClassName"] = json!("ceph-s3");
    body["request"]["object"]["spec"]["bucketPrefix"] = json!("photos-");
    let response = server.review("validate", &body).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("uses provisioner \"rook-ceph.ceph.rook.io/bucket\", which this bucketgate deployment does not serve (it serves none)"),
        "{message}"
    );
    server.stop().await;
}

/// The admin's fix for the above, `kubectl edit configmap bucketgate-config`, is served
/// without a restart once the kubelet has updated the mounted file.
#[tokio::test]
async fn a_provisioner_added_to_the_configuration_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "provisioners:\n- name: minio.example.com\n").unwrap();
    let config = ConfigStore::open(Some(path.clone()), Vec::new()).unwrap();
    let server = TestServer::with_config(config.clone()).await;
    let metrics = server.state.metrics.clone();
    tokio::spawn(config.watch(Duration::from_millis(20), metrics.clone()));
    let mut body = fixture("010");
    body["request"]["object"]["spec"]["bucketClassName"] = json!("ceph-s3");
    body["request"]["object"]["spec"]["bucketPrefix"] = json!("photos-");
    let response = server.review("validate", &body).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("which this bucketgate deployment does not serve"), "{message}");

    // A broken edit first: the configuration in force stays, and the metrics say so.
    std::fs::write(&path, "provisioners:\n- nmae: rook-ceph.ceph.rook.io/bucket\n").unwrap();
    let reloads = |result: &'static str| metrics.config_reloads.count(result);
    wait_until("the broken file to be read", || reloads("error") == 1).await;
    assert_eq!(server.review("validate", &body).await["allowed"], false);
    // Still said after the polls that find the file as it was: what an alert waits on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(metrics.encode().contains("bucketgate_config_last_reload_successful 0\n"), "{}", metrics.encode());

    std::fs::write(&path, "provisioners:\n- name: minio.example.com\n- name: rook-ceph.ceph.rook.io/bucket\n").unwrap();
    wait_until("the mended file to come into force", || reloads("success") == 1).await;
    assert!(metrics.encode().contains("bucketgate_config_last_reload_successful 1\n"), "{}", metrics.encode());
    let response = server.review("validate", &body).await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn class_parameters_are_immutable_and_deleting_the_default_warns() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let response = server.review("validate", &fixture("016")).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("BucketClass \"ceph-s3\": parameters are immutable"), "{message}");
    assert!(
        message.contains("\"objectStoreName\": \"my-store\"") && message.contains("\"objectStoreName\": \"other\""),
        "{message}"
    );

    // The mutating webhook has nothing to do for a class.
    let response = server.review("mutate", &fixture("015")).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());

    let response = server.review("validate", &fixture("030")).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!([
            "\"ceph-s3\" was the default BucketClass for s3: Buckets that name no class will be refused until another class is the default"
        ])
    );
    server.stop().await;
}

#[tokio::test]
async fn status_updates_and_deletes_pass_untouched() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    for (prefix, webhook) in [
        ("019", "mutate"),
        ("020", "validate"),
        ("021", "mutate"),
        ("022", "validate"),
        ("025", "mutate"),
        ("026", "validate"),
        ("027", "mutate"),
        ("028", "validate"),
        ("029", "mutate"),
    ] {
        let body = fixture(prefix);
        let response = server.review(webhook, &body).await;
        assert_eq!(response["allowed"], true, "{prefix}");
        assert!(response.get("patch").is_none(), "{prefix}: {response}");
        assert!(response.get("warnings").is_none(), "{prefix}: {response}");
    }
    server.stop().await;
}

/// Objects that predate bucketgate get their finalizer on the next update.
#[tokio::test]
async fn updates_add_a_missing_finalizer_once() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    for prefix in ["017", "023"] {
        let body = fixture(prefix);
        let response = server.review("mutate", &body).await;
        let patched = apply_patch(&body, &response);
        assert_eq!(patched["metadata"]["finalizers"], json!(["cosi.io/finalizer"]), "{prefix}");
        let mut again = body.clone();
        again["request"]["object"] = patched;
        let response = server.review("mutate", &again).await;
        assert!(response.get("patch").is_none(), "{prefix}: a second pass changes nothing");
    }
    // The label-only edits in 018 and 024 leave the spec alone and pass.
    assert_eq!(server.review("validate", &fixture("018")).await["allowed"], true);
    assert_eq!(server.review("validate", &fixture("024")).await["allowed"], true);
    server.stop().await;
}

/// A label map whose keys need JSON-pointer escaping, and an object without labels at all.
#[tokio::test]
async fn patches_apply_to_the_exact_object_sent() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let mut body = fixture("009");
    body["request"]["object"]["metadata"]["labels"] = json!({"example.com/a~b": "x", "cosi.io/provisioner": "stale"});
    body["request"]["object"]["metadata"]["finalizers"] = json!(["other.io/keep"]);
    let response = server.review("mutate", &body).await;
    let patched = apply_patch(&body, &response);
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"example.com/a~b": "x", "cosi.io/provisioner": "rook-ceph.ceph.rook.io-bucket"})
    );
    assert_eq!(patched["metadata"]["finalizers"], json!(["other.io/keep", "cosi.io/finalizer"]));

    let mut bare = fixture("009");
    let meta = bare["request"]["object"]["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("annotations");
    meta.remove("managedFields");
    let response = server.review("mutate", &bare).await;
    let patched = apply_patch(&bare, &response);
    assert_eq!(patched["metadata"]["labels"], json!({"cosi.io/provisioner": "rook-ceph.ceph.rook.io-bucket"}));
    server.stop().await;
}

#[tokio::test]
async fn brownfield_content_is_checked() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let response = server.review("validate", &fixture("012")).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none(), "{response}");

    let mut deleting = fixture("012");
    deleting["request"]["object"]["spec"]["releasePolicy"] = json!("Delete");
    let bindable: &mut Value = &mut deleting["request"]["object"]["spec"]["bindableNamespaces"][0];
    bindable.as_object_mut().unwrap().remove("uid");
    let response = server.review("validate", &deleting).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("set spec.releasePolicy: Retain"), "{message}");
    assert!(message.contains("spec.bindableNamespaces[0] needs both name and uid"), "{message}");
    server.stop().await;
}
