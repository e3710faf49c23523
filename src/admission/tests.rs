//! One test per rule, on requests built here. The captured API server requests are
//! exercised over HTTPS in tests/admission.rs.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::*;
use crate::api::{BucketClass, BucketContent, FINALIZER};

const SERVED: &str = "rook-ceph.ceph.rook.io/bucket";
const TEAM_A_UID: &str = "uid-team-a";

fn class(name: &str, provisioner: &str, default: bool, protocols: &[&str]) -> BucketClass {
    crate::api::from_value(json!({
        "apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": name},
        "provisioner": provisioner, "isDefaultBucketClass": default, "supportedProtocols": protocols,
        "parameters": {"store": "a"}
    }))
    .unwrap()
}

fn content(name: &str, spec: Value) -> BucketContent {
    crate::api::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

fn legacy() -> BucketContent {
    content(
        "legacy",
        json!({"provisioner": "", "releasePolicy": "Retain",
        "bindableNamespaces": [{"name": "team-a", "uid": TEAM_A_UID}],
        "protocol": {"type": "s3", "s3": {"bucketName": "legacy"}}}),
    )
}

fn namespace(name: &str, uid: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "uid": uid}})).unwrap()
}

fn catalog(classes: Vec<BucketClass>) -> Catalog {
    Catalog::from_objects(classes, [legacy()], [namespace("team-a", TEAM_A_UID), namespace("team-b", "uid-team-b")])
}

fn standard() -> Catalog {
    catalog(vec![class("ceph", SERVED, true, &["s3"]), class("multi", SERVED, false, &["s3", "gcs"])])
}

fn config() -> Config {
    Config::default().with_provisioners([SERVED.to_string()])
}

fn request(kind: &str, operation: &str, namespace: Option<&str>, object: Value, old: Value) -> Request {
    let kind = Kind::named(kind).unwrap();
    let review = synthetic_review(kind, operation, namespace, json!({"username": "dev"}), object, old);
    decode(review.to_string().as_bytes()).unwrap()
}

fn bucket(spec: Value) -> Value {
    json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "b", "namespace": "team-a"}, "spec": spec})
}

fn create_bucket(namespace: &str, spec: Value) -> Request {
    let mut object = bucket(spec);
    object["metadata"]["namespace"] = json!(namespace);
    request("Bucket", "CREATE", Some(namespace), object, Value::Null)
}

/// Runs a webhook and returns the response with the patch applied to the request object.
fn run(webhook: Webhook, req: &Request, catalog: &Catalog) -> (Response, Option<Value>) {
    let ctx = Context { catalog, config: &config(), policies: &crate::policy::PolicySet::default() };
    let response = review(webhook, req, &ctx).response;
    let patched = response.patch.as_ref().map(|patch| {
        let mut object = req.json_objects(false).unwrap().0.unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    });
    (response, patched)
}

fn denial(webhook: Webhook, req: &Request, catalog: &Catalog) -> (u16, String) {
    let (response, _) = run(webhook, req, catalog);
    assert!(!response.allowed, "expected a denial, got {response:?}");
    (response.result.code, response.result.message)
}

fn allowed(webhook: Webhook, req: &Request, catalog: &Catalog) -> Response {
    let (response, _) = run(webhook, req, catalog);
    assert!(response.allowed, "expected allowed, got {:?}", response.result.message);
    response
}

#[test]
fn default_class_protocol_label_and_finalizer_are_filled_in() {
    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    let (response, patched) = run(Webhook::Mutate, &req, &standard());
    assert!(response.allowed);
    let patched = patched.unwrap();
    assert_eq!(patched["spec"]["bucketClassName"], "ceph");
    assert_eq!(patched["metadata"]["labels"]["cosi.io/provisioner"], "rook-ceph.ceph.rook.io-bucket");
    assert_eq!(patched["metadata"]["finalizers"], json!(["cosi.io/finalizer"]));

    // A class with one protocol fills in the protocol.
    let req = create_bucket("team-a", json!({"bucketClassName": "ceph"}));
    let (_, patched) = run(Webhook::Mutate, &req, &standard());
    assert_eq!(patched.unwrap()["spec"]["protocol"], "s3");
    // A class with several does not guess.
    let req = create_bucket("team-a", json!({"bucketClassName": "multi"}));
    let (_, patched) = run(Webhook::Mutate, &req, &standard());
    assert!(patched.unwrap()["spec"].get("protocol").is_none());
}

#[test]
fn default_class_is_refused_when_missing_or_ambiguous() {
    let req = create_bucket("team-a", json!({"protocol": "gcs"}));
    let (_, message) = denial(Webhook::Mutate, &req, &standard());
    assert!(message.contains("no default BucketClass for protocol gcs; classes that support gcs: multi"), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "azureBlob"}));
    let (_, message) = denial(Webhook::Mutate, &req, &standard());
    assert!(message.contains("no BucketClass supports protocol azureBlob"), "{message}");

    let two = catalog(vec![class("a", SERVED, true, &["s3"]), class("b", SERVED, true, &["s3", "gcs"])]);
    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    let (_, message) = denial(Webhook::Mutate, &req, &two);
    assert!(message.contains("several BucketClasses are the default for protocol s3 (a, b)"), "{message}");

    let req = create_bucket("team-a", json!({}));
    let (code, message) = denial(Webhook::Mutate, &req, &standard());
    assert_eq!(code, 422);
    assert!(message.starts_with("Bucket \"team-a/b\": spec.protocol is not set"), "{message}");
}

#[test]
fn finalizer_is_not_added_again_while_deleting() {
    let mut object = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-21T15:21:17Z");
    let old = object.clone();
    let req = request("Bucket", "UPDATE", Some("team-a"), object, old);
    let (response, patched) = run(Webhook::Mutate, &req, &standard());
    assert!(response.allowed && patched.is_none(), "{response:?}");
}

#[test]
fn bucket_with_a_valid_class_is_allowed() {
    let req = create_bucket(
        "team-a",
        json!({"protocol": "s3", "bucketClassName": "ceph",
        "bucketPrefix": "photos-", "secretName": "photos-creds"}),
    );
    let response = allowed(Webhook::Validate, &req, &standard());
    assert!(response.warnings.is_none());
}

#[test]
fn unserved_provisioner_is_refused_naming_both() {
    let with_other = catalog(vec![class("other", "other.example.com/s3", false, &["s3"])]);
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "other"}));
    let (_, message) = denial(Webhook::Validate, &req, &with_other);
    assert!(message.contains("uses provisioner \"other.example.com/s3\", which this bucketgate deployment does not serve (it serves rook-ceph.ceph.rook.io/bucket)"), "{message}");

    // Rook's provisioner as ObjectBucketClaim users often write it ("unsupported provisioner").
    let near = catalog(vec![class("rook", "rook-ceph.rook.io/bucket", false, &["s3"])]);
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "rook"}));
    let (_, message) = denial(Webhook::Validate, &req, &near);
    assert!(
        message.contains(r#"(it serves rook-ceph.ceph.rook.io/bucket; did you mean "rook-ceph.ceph.rook.io/bucket"?)"#),
        "{message}"
    );
}

#[test]
fn class_problems_are_refused() {
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "nope"}));
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("\"nope\" names no BucketClass; classes that support s3: ceph, multi"), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "gcs", "bucketClassName": "ceph"}));
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("does not support protocol gcs (it supports s3)"), "{message}");

    let static_class = catalog(vec![class("static", "", false, &["s3"])]);
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "static"}));
    let (_, message) = denial(Webhook::Validate, &req, &static_class);
    assert!(message.contains("has no provisioner, so it cannot create buckets"), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("spec.bucketClassName is required"), "{message}");
}

#[test]
fn prefix_and_secret_name_are_checked_together() {
    let req = create_bucket(
        "team-a",
        json!({"protocol": "s3", "bucketClassName": "ceph",
        "bucketPrefix": "YosemitePhotos-", "secretName": "Photos_Creds"}),
    );
    let (code, message) = denial(Webhook::Validate, &req, &standard());
    assert_eq!(code, 422);
    assert!(message.contains("spec.bucketPrefix \"YosemitePhotos-\" has upper-case letters (YP); s3 bucket names are lower case: use \"yosemitephotos-\""), "{message}");
    assert!(message.contains("spec.secretName \"Photos_Creds\" contains 'P'"), "{message}");
    assert!(message.contains("such as \"photos-creds\""), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "ceph", "bucketPrefix": "logs.v1-"}));
    let response = allowed(Webhook::Validate, &req, &standard());
    assert!(response.warnings.unwrap()[0].contains("dotted bucket names"));
}

#[test]
fn binding_needs_the_namespace_by_name_and_uid() {
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    allowed(Webhook::Validate, &req, &standard());

    let req = create_bucket("team-b", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    let (code, message) = denial(Webhook::Validate, &req, &standard());
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "namespace \"team-b\" may not bind BucketContent \"legacy\": it is not in spec.bindableNamespaces (team-a)"
        ),
        "{message}"
    );

    // team-a deleted and recreated: same name, new uid.
    let recreated = Catalog::from_objects([], [legacy()], [namespace("team-a", "uid-new")]);
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    let (code, message) = denial(Webhook::Validate, &req, &recreated);
    assert_eq!(code, 403);
    assert!(message.contains("only with uid uid-team-a, but \"team-a\" now has uid uid-new"), "{message}");

    let unknown = Catalog::from_objects([], [legacy()], []);
    let (code, message) = denial(Webhook::Validate, &req, &unknown);
    assert_eq!(code, 403);
    assert!(message.contains("not known to bucketgate yet"), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "gcs", "bucketContentName": "legacy"}));
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("spec.protocol is gcs but BucketContent \"legacy\" serves s3"), "{message}");

    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "missing"}));
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("\"missing\" names no BucketContent"), "{message}");
}

#[test]
fn a_content_being_deleted_or_released_cannot_be_bound() {
    let mut deleting = legacy();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    deleting.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let catalog = Catalog::from_objects([], [deleting], [namespace("team-a", TEAM_A_UID)]);
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    let (code, message) = denial(Webhook::Validate, &req, &catalog);
    assert_eq!(code, 422);
    assert!(
        message.ends_with(
            "BucketContent \"legacy\" is being deleted, so it cannot be bound: ask its owner whether it stays, or bind another"
        ),
        "{message}"
    );

    let mut released = legacy();
    released.status = Some(crate::api::BucketContentStatus {
        phase: Some(crate::api::BucketContentPhase::Released),
        ..Default::default()
    });
    let catalog = Catalog::from_objects([], [released], [namespace("team-a", TEAM_A_UID)]);
    let (_, message) = denial(Webhook::Validate, &req, &catalog);
    assert!(message.contains("BucketContent \"legacy\" was released when the Bucket it was made for"), "{message}");
}

#[test]
fn binding_fills_the_protocol_from_the_content() {
    let req = create_bucket("team-a", json!({"bucketContentName": "legacy"}));
    let (_, patched) = run(Webhook::Mutate, &req, &standard());
    let patched = patched.unwrap();
    assert_eq!(patched["spec"]["protocol"], "s3");
    assert!(patched["spec"].get("bucketClassName").is_none());
    // A content without a provisioner gives no label.
    assert!(patched["metadata"].get("labels").is_none());
}

#[test]
fn bucket_spec_is_immutable_once_set() {
    let old = bucket(json!({"protocol": "s3", "bucketClassName": "ceph", "secretName": "a"}));
    let new = bucket(json!({"protocol": "s3", "bucketClassName": "multi", "secretName": "a"}));
    let req = request("Bucket", "UPDATE", Some("team-a"), new, old.clone());
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("spec.bucketClassName is immutable once set: was \"ceph\", now \"multi\""), "{message}");

    let unset = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    let req = request("Bucket", "UPDATE", Some("team-a"), unset, old.clone());
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("spec.secretName is immutable once set: was \"a\", now unset"), "{message}");

    // Newly set fields are judged as on create.
    let set = bucket(json!({"protocol": "s3", "bucketClassName": "ceph", "secretName": "a", "bucketPrefix": "Bad"}));
    let req = request("Bucket", "UPDATE", Some("team-a"), set, old.clone());
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("spec.bucketPrefix \"Bad\""), "{message}");

    // Label edits on an unchanged spec pass even when the class is gone (ratcheting).
    let mut relabeled = old.clone();
    relabeled["metadata"]["labels"] = json!({"tier": "gold"});
    let req = request("Bucket", "UPDATE", Some("team-a"), relabeled, old);
    allowed(Webhook::Validate, &req, &Catalog::from_objects([], [], []));
}

#[test]
fn only_one_default_class_per_protocol() {
    let new = serde_json::to_value(class("second", SERVED, true, &["s3", "gcs"])).unwrap();
    let req = request("BucketClass", "CREATE", None, new, Value::Null);
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("cannot be the default BucketClass for s3: ceph already is"), "{message}");
    assert!(!message.contains("for gcs"), "{message}");

    // Re-applying the existing default is not a conflict with itself.
    let same = serde_json::to_value(class("ceph", SERVED, true, &["s3"])).unwrap();
    let req = request("BucketClass", "CREATE", None, same, Value::Null);
    allowed(Webhook::Validate, &req, &standard());
}

#[test]
fn class_fields_are_checked_and_immutable() {
    let empty = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "x"},
        "provisioner": SERVED, "supportedProtocols": []});
    let req = request("BucketClass", "CREATE", None, empty, Value::Null);
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("supportedProtocols is empty"), "{message}");

    let bad = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "x"},
        "provisioner": SERVED, "supportedProtocols": ["s3"], "releasePolicy": "Shred"});
    let req = request("BucketClass", "CREATE", None, bad, Value::Null);
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(message.contains("unknown variant `Shred`, expected `Delete` or `Retain`"), "{message}");

    let old = serde_json::to_value(class("multi", SERVED, false, &["s3", "gcs"])).unwrap();
    let mut new = old.clone();
    new["parameters"]["store"] = json!("b");
    new["provisioner"] = json!("other");
    new["releasePolicy"] = json!("Retain");
    let req = request("BucketClass", "UPDATE", None, new, old.clone());
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    for field in
        ["parameters are immutable", "provisioner is immutable", "releasePolicy is immutable: was Delete, now Retain"]
    {
        assert!(message.contains(field), "{field}: {message}");
    }

    let unserved = serde_json::to_value(class("new", "else.example.com", false, &["s3"])).unwrap();
    let req = request("BucketClass", "CREATE", None, unserved, Value::Null);
    let response = allowed(Webhook::Validate, &req, &standard());
    assert!(response.warnings.unwrap()[0].contains("not served by this bucketgate deployment"));
    let misspelt = serde_json::to_value(class("rook", "rook-ceph.rook.io/bucket", false, &["s3"])).unwrap();
    let req = request("BucketClass", "CREATE", None, misspelt, Value::Null);
    let warning = allowed(Webhook::Validate, &req, &standard()).warnings.unwrap().remove(0);
    assert!(warning.contains(r#"did you mean "rook-ceph.ceph.rook.io/bucket"?"#), "{warning}");

    let req = request("BucketClass", "DELETE", None, Value::Null, old);
    assert!(allowed(Webhook::Validate, &req, &standard()).warnings.is_none());
    let default = serde_json::to_value(class("ceph", SERVED, true, &["s3"])).unwrap();
    let req = request("BucketClass", "DELETE", None, Value::Null, default);
    let warning = allowed(Webhook::Validate, &req, &standard()).warnings.unwrap().remove(0);
    assert!(warning.contains("was the default BucketClass for s3"), "{warning}");
}

/// A class or content whose provisioner-Secret parameters would fail every Bucket later is
/// refused where this deployment provisions, and warned about where another controller does.
#[test]
fn provisioner_secret_parameters_are_judged_at_creation() {
    let driving: Config = serde_saphyr::from_str(&format!(
        "provisioners: [{{name: {SERVED}, s3: {{endpoint: 'http://rgw.example'}}}}, {{name: other.example.com}}]"
    ))
    .unwrap();
    let judge = |kind: &str, object: Value, old: Value| {
        let operation = if old.is_null() { "CREATE" } else { "UPDATE" };
        validate::validate(
            Kind::named(kind).unwrap(),
            &request(kind, operation, None, object, old),
            &standard(),
            &driving,
        )
    };
    let typo = json!({"cosi.io/provisioner-secret-name": "${pvc.name}", "cosi.io/provisioner-secret-namespace": "s3"});

    let mut ours = serde_json::to_value(class("new", SERVED, false, &["s3"])).unwrap();
    ours["parameters"] = typo.clone();
    let verdict = judge("BucketClass", ours.clone(), Value::Null);
    assert_eq!(verdict.errors.len(), 1, "{verdict:?}");
    assert!(verdict.errors[0].contains(r#""${pvc.name}" is not replaced"#), "{verdict:?}");

    let mut theirs = serde_json::to_value(class("new", "other.example.com", false, &["s3"])).unwrap();
    theirs["parameters"] = typo.clone();
    let verdict = judge("BucketClass", theirs, Value::Null);
    assert!(verdict.errors.is_empty(), "{verdict:?}");
    assert!(verdict.warnings.iter().any(|w| w.contains("is not replaced")), "{verdict:?}");

    // A Bucket's name would choose among the Secrets of an admin's namespace.
    let chosen = json!({"cosi.io/provisioner-secret-name": "${bucket.name}",
        "cosi.io/provisioner-secret-namespace": "bucketgate-system"});
    ours["parameters"] = chosen.clone();
    let verdict = judge("BucketClass", ours.clone(), Value::Null);
    assert_eq!(verdict.errors.len(), 1, "{verdict:?}");
    assert!(verdict.errors[0].contains("whoever names a Bucket would choose which Secret"), "{verdict:?}");
    ours["parameters"] = typo.clone();

    let shared = content(
        "shared",
        json!({"provisioner": SERVED, "protocol": {"type": "s3", "s3": {"bucketName": "b"}},
            "parameters": {"cosi.io/provisioner-secret-name": "admin"}}),
    );
    let verdict = judge("BucketContent", serde_json::to_value(&shared).unwrap(), Value::Null);
    assert!(verdict.errors.iter().any(|e| e.contains("but not cosi.io/provisioner-secret-namespace")), "{verdict:?}");

    // A class made before the rule: its parameters cannot change, so an edit of its other
    // fields, which are judged again, is not refused for them.
    let mut edited = ours.clone();
    edited["isDefaultBucketClass"] = json!(true);
    let verdict = judge("BucketClass", edited, ours);
    assert!(verdict.errors.iter().all(|e| !e.contains("not replaced")), "{verdict:?}");
}

/// The KEP's per-Bucket provisioner Secret (`${bucket.name}` in `${bucket.namespace}`) is
/// the Secret a Bucket's credentials go into by default: a Bucket of such a class (or
/// content) must name another in spec.secretName, or it would wait for ever on a Secret
/// bucketgate never writes over. The class is warned about when it is made.
#[test]
fn a_buckets_credentials_are_not_written_into_its_provisioner_secret() {
    let driving: Config =
        serde_saphyr::from_str(&format!("provisioners: [{{name: {SERVED}, s3: {{endpoint: 'http://rgw.example'}}}}]"))
            .unwrap();
    let per_bucket = json!({"cosi.io/provisioner-secret-name": "${bucket.name}",
        "cosi.io/provisioner-secret-namespace": "${bucket.namespace}"});
    let mut class_value = serde_json::to_value(class("per-bucket", SERVED, false, &["s3"])).unwrap();
    class_value["parameters"] = per_bucket.clone();
    let made = validate::validate(
        Kind::BucketClass,
        &request("BucketClass", "CREATE", None, class_value.clone(), Value::Null),
        &standard(),
        &driving,
    );
    assert!(made.errors.is_empty(), "{made:?}");
    assert!(made.warnings.iter().any(|w| w.contains("must set spec.secretName")), "{made:?}");

    let mut shared = legacy();
    shared.metadata.name = Some("shared".into());
    shared.spec.provisioner = Some(SERVED.into());
    shared.spec.parameters = serde_json::from_value(per_bucket).unwrap();
    let catalog = Catalog::from_objects(
        [crate::api::from_value(class_value).unwrap(), class("ceph", SERVED, true, &["s3"])],
        [shared],
        [namespace("team-a", TEAM_A_UID)],
    );
    let judge = |spec: Value| validate::validate(Kind::Bucket, &create_bucket("team-a", spec), &catalog, &driving);
    let refused = judge(json!({"protocol": "s3", "bucketClassName": "per-bucket"}));
    assert_eq!(refused.errors.len(), 1, "{refused:?}");
    assert!(
        refused.errors[0].starts_with(
            "the Bucket's credentials would be written into Secret \"b\", the provisioner Secret that BucketClass \
             \"per-bucket\" names for it (cosi.io/provisioner-secret-name)"
        ) && refused.errors[0].ends_with("set spec.secretName to another name, such as \"b-credentials\""),
        "{refused:?}"
    );
    let named = judge(json!({"protocol": "s3", "bucketClassName": "per-bucket", "secretName": "b"}));
    assert_eq!(named.errors.len(), 1, "its own name, written out: {named:?}");
    let elsewhere = judge(json!({"protocol": "s3", "bucketClassName": "per-bucket", "secretName": "b-credentials"}));
    assert!(elsewhere.errors.is_empty(), "{elsewhere:?}");
    let binding = judge(json!({"protocol": "s3", "bucketContentName": "shared"}));
    assert!(binding.errors.iter().any(|e| e.contains("that BucketContent \"shared\" names")), "{binding:?}");
    // A class that names one Secret for all its Buckets is none of theirs.
    let fixed = judge(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    assert!(fixed.errors.is_empty(), "{fixed:?}");
    // A class made before the rule that a Bucket's name may not choose an admin's Secret:
    // no new Bucket of it does.
    let mut old = class("chosen", SERVED, false, &["s3"]);
    old.spec.parameters = serde_json::from_value(json!({"cosi.io/provisioner-secret-name": "${bucket.name}",
        "cosi.io/provisioner-secret-namespace": "bucketgate-system"}))
    .unwrap();
    let before = Catalog::from_objects([old], [], [namespace("team-a", TEAM_A_UID)]);
    let spec = json!({"protocol": "s3", "bucketClassName": "chosen", "secretName": "b-credentials"});
    let refused = validate::validate(Kind::Bucket, &create_bucket("team-a", spec), &before, &driving);
    assert_eq!(refused.errors.len(), 1, "{refused:?}");
    assert!(
        refused.errors[0].starts_with("BucketClass \"chosen\": parameters cosi.io/provisioner-secret-name"),
        "{refused:?}"
    );
    // Another controller's Buckets (a provisioner served here for admission only) are its own.
    let spec = json!({"protocol": "s3", "bucketClassName": "per-bucket"});
    let theirs = validate::validate(Kind::Bucket, &create_bucket("team-a", spec), &catalog, &config());
    assert!(theirs.errors.is_empty(), "{theirs:?}");
}

/// What a class asks of each bucket is judged when it is made, where this deployment drives
/// its provisioner: every Bucket of a class asking what no store can do would fail later.
#[test]
fn class_parameters_no_store_could_carry_out_are_refused() {
    let driving: Config = serde_saphyr::from_str(&format!(
        "provisioners: [{{name: {SERVED}, s3: {{endpoint: 'http://rgw.example'}}}}, {{name: other.example.com}}]"
    ))
    .unwrap();
    let judge = |provisioner: &str, release: &str, parameters: Value| {
        let mut object = serde_json::to_value(class("new", provisioner, false, &["s3"])).unwrap();
        object["parameters"] = parameters;
        object["releasePolicy"] = release.into();
        let req = request("BucketClass", "CREATE", None, object, Value::Null);
        validate::validate(Kind::named("BucketClass").unwrap(), &req, &standard(), &driving)
    };
    let verdict = judge(SERVED, "Delete", json!({"versioning": "true", "objectLockRetentionDays": "30"}));
    let said = verdict.errors.join("\n");
    assert!(said.contains(r#"versioning is "true": write Enabled or Disabled"#), "{said}");
    assert!(said.contains("needs both objectLockRetentionMode and objectLockRetentionDays"), "{said}");
    assert!(said.contains("needs objectLock: Enabled"), "{said}");
    // Another controller's parameters are its own business.
    assert!(judge("other.example.com", "Delete", json!({"versioning": "true"})).errors.is_empty());
    // Encryption at rest: a KMS key only with the KMS; neither parameter is warned about.
    let verdict = judge(SERVED, "Delete", json!({"serverSideEncryption": "AES256", "kmsKeyId": "alias/photos"}));
    assert!(verdict.errors.iter().any(|e| e.contains("remove kmsKeyId, or write aws:kms")), "{verdict:?}");
    let verdict = judge(SERVED, "Delete", json!({"serverSideEncryption": "aws:kms", "kmsKeyId": "alias/photos"}));
    assert!(verdict.errors.is_empty() && verdict.warnings.is_empty(), "{verdict:?}");

    // A default retention keeps objects a Delete cannot remove: said, not refused.
    let retained =
        json!({"objectLock": "Enabled", "objectLockRetentionMode": "COMPLIANCE", "objectLockRetentionDays": "30"});
    let verdict = judge(SERVED, "Delete", retained.clone());
    assert!(verdict.errors.is_empty(), "{verdict:?}");
    let warning = verdict.warnings.iter().find(|w| w.contains("is kept for 30 days (COMPLIANCE)")).expect("a warning");
    assert!(warning.contains("releasePolicy: Retain"), "{warning}");
    let verdict = judge(SERVED, "Retain", retained);
    assert!(verdict.errors.is_empty() && verdict.warnings.is_empty(), "{verdict:?}");

    // Key rotation: an age the loop can keep; without iam there is no key of its own to rotate.
    let verdict = judge(SERVED, "Delete", json!({"keyMaxAgeDays": "1", "keyRotationGraceHours": "24"}));
    assert!(verdict.errors.iter().any(|e| e.contains("make the grace shorter than the age")), "{verdict:?}");
    let verdict = judge(SERVED, "Delete", json!({"keyMaxAgeDays": "30"}));
    assert!(verdict.errors.is_empty(), "{verdict:?}");
    assert!(verdict.warnings.iter().any(|w| w.contains("has no iam configured")), "{verdict:?}");
}

/// A class carrying the `region` of a Rook or lib-bucket-provisioner StorageClass would get
/// buckets in the configured region without a word: the warning says where the region comes from.
#[test]
fn class_parameters_the_driver_does_not_read_are_warned_about() {
    let driving: Config = serde_saphyr::from_str(&format!(
        "provisioners: [{{name: {SERVED}, s3: {{endpoint: 'http://rgw.example', region: eu-west-1}}}}, {{name: other.example.com}}]"
    ))
    .unwrap();
    let judge = |provisioner: &str, parameters: Value| {
        let mut object = serde_json::to_value(class("new", provisioner, false, &["s3"])).unwrap();
        object["parameters"] = parameters;
        let req = request("BucketClass", "CREATE", None, object, Value::Null);
        validate::validate(Kind::named("BucketClass").unwrap(), &req, &standard(), &driving)
    };
    let verdict = judge(SERVED, json!({"region": "us-west-2", "objectStoreName": "my-store"}));
    assert!(verdict.errors.is_empty(), "a warning, not a refusal: {verdict:?}");
    let warning = verdict.warnings.iter().find(|w| w.contains("not read")).expect("a warning");
    assert!(warning.contains(r#"["objectStoreName", "region"] are not read by bucketgate's S3 driver"#), "{warning}");
    assert!(warning.contains(r#""http://rgw.example", region "eu-west-1""#), "{warning}");

    let secret = json!({"cosi.io/provisioner-secret-name": "admin", "cosi.io/provisioner-secret-namespace": "s3",
        "versioning": "Enabled", "objectLock": "Disabled"});
    let verdict = judge(SERVED, secret);
    assert!(verdict.warnings.iter().all(|w| !w.contains("not read")), "{verdict:?}");
    // A near miss of a parameter it reads is named.
    let verdict = judge(SERVED, json!({"Versioning": "Enabled", "object-lock": "Enabled", "tier": "gold"}));
    let warning = verdict.warnings.iter().find(|w| w.contains("not read")).expect("a warning");
    assert!(warning.contains(r#"did you mean "versioning" for "Versioning"?"#), "{warning}");
    assert!(warning.contains(r#"did you mean "objectLock" for "object-lock"?"#), "{warning}");
    assert!(!warning.contains(r#"for "tier""#), "{warning}");
    // Another controller's parameters are its own business.
    let verdict = judge("other.example.com", json!({"region": "us-west-2"}));
    assert!(verdict.warnings.iter().all(|w| !w.contains("not read")), "{verdict:?}");
}

#[test]
fn static_contents_must_retain_and_name_their_bucket() {
    let object = serde_json::to_value(content("c", json!({"provisioner": "", "releasePolicy": "Delete",
        "protocol": {"type": "s3"}, "bindableNamespaces": [{"name": "team-a", "uid": ""}, {"name": "Bad_NS", "uid": "x"}]}))).unwrap();
    let req = request("BucketContent", "CREATE", None, object, Value::Null);
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    for part in [
        "spec.releasePolicy is Delete, but this BucketContent has no provisioner",
        "spec.protocol.s3.bucketName is required",
        "spec.bindableNamespaces[0] needs both name and uid",
        "spec.bindableNamespaces[1].name \"Bad_NS\" is not a namespace name",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }

    let object = serde_json::to_value(legacy()).unwrap();
    let req = request("BucketContent", "CREATE", None, object.clone(), Value::Null);
    assert!(allowed(Webhook::Validate, &req, &standard()).warnings.is_none());
    // The namespace exists with another uid: allowed, with a warning.
    let req = request("BucketContent", "CREATE", None, object, Value::Null);
    let other = Catalog::from_objects([], [], [namespace("team-a", "uid-new")]);
    let warning = allowed(Webhook::Validate, &req, &other).warnings.unwrap().remove(0);
    assert!(warning.contains("has uid uid-new, not uid-team-a"), "{warning}");
}

#[test]
fn content_parameters_and_provisioner_are_immutable() {
    let old = serde_json::to_value(content(
        "c",
        json!({"provisioner": SERVED, "protocol": {"type": "s3"}, "parameters": {"a": "1"}}),
    ))
    .unwrap();
    let mut new = old.clone();
    new["spec"]["parameters"]["a"] = json!("2");
    new["spec"]["provisioner"] = json!("other");
    let req = request("BucketContent", "UPDATE", None, new, old.clone());
    let (_, message) = denial(Webhook::Validate, &req, &standard());
    assert!(
        message.contains("spec.parameters are immutable") && message.contains("spec.provisioner is immutable"),
        "{message}"
    );

    // Greenfield contents get the provisioner label and the finalizer.
    let req = request("BucketContent", "CREATE", None, old, Value::Null);
    let (_, patched) = run(Webhook::Mutate, &req, &standard());
    let patched = patched.unwrap();
    assert_eq!(patched["metadata"]["labels"]["cosi.io/provisioner"], "rook-ceph.ceph.rook.io-bucket");
    assert_eq!(patched["metadata"]["finalizers"], json!(["cosi.io/finalizer"]));
}

#[test]
fn taking_a_namespace_off_a_shared_content_warns_of_what_its_buckets_lose() {
    let old = serde_json::to_value(legacy()).unwrap();
    let mut new = old.clone();
    new["spec"]["bindableNamespaces"] = json!([{"name": "team-b", "uid": "b-uid"}]);
    let req = request("BucketContent", "UPDATE", None, new, old.clone());
    let response = allowed(Webhook::Validate, &req, &standard());
    let warnings = response.warnings.unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("namespace \"team-a\" (uid {TEAM_A_UID}) leaves spec.bindableNamespaces"))
                && w.contains("bucketgate revokes their keys")),
        "{warnings:?}"
    );
    // Adding one takes nothing away.
    let mut more = old.clone();
    more["spec"]["bindableNamespaces"].as_array_mut().unwrap().push(json!({"name": "team-b", "uid": "b-uid"}));
    let req = request("BucketContent", "UPDATE", None, more, old);
    let warnings = allowed(Webhook::Validate, &req, &standard()).warnings.unwrap_or_default();
    assert!(!warnings.iter().any(|w| w.contains("leaves")), "{warnings:?}");
}

#[test]
fn objects_that_do_not_parse_are_refused_but_deletes_pass() {
    let req = create_bucket("team-a", json!({"protocol": "ftp"}));
    let (_, message) = denial(Webhook::Mutate, &req, &standard());
    assert!(
        message.contains("the object does not match the Bucket schema: spec.protocol: unknown variant `ftp`"),
        "{message}"
    );

    let req = request("Bucket", "DELETE", Some("team-a"), Value::Null, bucket(json!({"protocol": "ftp"})));
    let response = allowed(Webhook::Validate, &req, &standard());
    assert!(response.warnings.unwrap()[0].contains("old object does not match"));
}

#[test]
fn deleting_a_bucket_warns_when_its_data_goes_too() {
    let owned = content("owned", json!({"provisioner": SERVED, "releasePolicy": "Delete", "protocol": {"type": "s3"}}));
    let catalog = Catalog::from_objects([], [owned], []);
    let mut old = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    old["status"] = json!({"bucketContentName": "owned", "phase": "Bound"});
    let req = request("Bucket", "DELETE", Some("team-a"), Value::Null, old);
    let warning = allowed(Webhook::Validate, &req, &catalog).warnings.unwrap().remove(0);
    assert!(warning.contains("every object in it will be destroyed"), "{warning}");
}

/// What a refusal (or a short patch) turned on and the catalog did not hold, or held in a
/// version that refused, is named, so that the server can read it from the API server and
/// decide again. Nothing is named where the request is admitted as it stands.
#[test]
fn answers_given_for_want_of_a_catalog_object_name_it() {
    let rechecks = |webhook: Webhook, req: &Request, catalog: &Catalog| {
        let ctx = Context { catalog, config: &config(), policies: &crate::policy::PolicySet::default() };
        review(webhook, req, &ctx).rechecks
    };
    let content = |name: &str| Recheck::BucketContent(name.into());
    let named_class = |name: &str| Recheck::BucketClass(name.into());
    let team_a = || Recheck::Namespace("team-a".into());

    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "fresh"}));
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), [content("fresh")]);
    // The mutating webhook admits it, but without the content's protocol and label.
    assert_eq!(rechecks(Webhook::Mutate, &req, &standard()), [content("fresh")]);

    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketClassName": "fresh"}));
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), [named_class("fresh")]);
    assert_eq!(rechecks(Webhook::Mutate, &req, &standard()), [named_class("fresh")]);

    // Not granted, as far as the catalog knows: the grant may be newer.
    let req = create_bucket("team-b", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), [content("legacy")]);

    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    let no_namespaces = Catalog::from_objects([], [legacy()], []);
    assert_eq!(rechecks(Webhook::Validate, &req, &no_namespaces), [team_a()]);
    // Either the namespace or the grant may be the newer.
    let recreated = Catalog::from_objects([], [legacy()], [namespace("team-a", "uid-new")]);
    assert_eq!(rechecks(Webhook::Validate, &req, &recreated), [team_a(), content("legacy")]);

    // No default class for the protocol, or two: the classes may have changed since.
    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    let no_default = catalog(vec![class("ceph", SERVED, false, &["s3"])]);
    assert_eq!(rechecks(Webhook::Mutate, &req, &no_default), [Recheck::BucketClasses]);
    let two = catalog(vec![class("a", SERVED, true, &["s3"]), class("b", SERVED, true, &["s3"])]);
    assert_eq!(rechecks(Webhook::Mutate, &req, &two), [Recheck::BucketClasses]);
    // Without a protocol no class could be chosen anyway.
    assert_eq!(rechecks(Webhook::Mutate, &create_bucket("team-a", json!({})), &no_default), []);
    let new_default = class("new", SERVED, true, &["s3"]);
    let req = request("BucketClass", "CREATE", None, serde_json::to_value(&new_default).unwrap(), Value::Null);
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), [Recheck::BucketClasses]);

    // Admitted: nothing to ask.
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), []);
    assert_eq!(rechecks(Webhook::Mutate, &req, &standard()), []);
    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    assert_eq!(rechecks(Webhook::Mutate, &req, &standard()), []);
    // A Bucket outlives its content: its updates do not ask for it each time.
    let object = bucket(json!({"protocol": "s3", "bucketContentName": "gone"}));
    let req = request("Bucket", "UPDATE", Some("team-a"), object.clone(), object);
    assert_eq!(rechecks(Webhook::Mutate, &req, &standard()), []);
    assert_eq!(rechecks(Webhook::Validate, &req, &standard()), []);
}

/// With what the API server gave, the same request is decided as if the watch had
/// brought it: the content's protocol patched in, the grant honoured.
#[test]
fn objects_read_from_the_api_server_decide_the_review_again() {
    let req = create_bucket("team-a", json!({"bucketContentName": "legacy"}));
    let empty = Catalog::from_objects([], [], [namespace("team-a", TEAM_A_UID)]);
    let (_, patched) = run(Webhook::Mutate, &req, &empty);
    assert_eq!(patched.unwrap()["spec"].get("protocol"), None);

    let fetched = empty.with_fetched(crate::catalog::Fetched::of([], [legacy()], []));
    let (_, patched) = run(Webhook::Mutate, &req, &fetched);
    assert_eq!(patched.unwrap()["spec"]["protocol"], "s3");
    let req = create_bucket("team-a", json!({"protocol": "s3", "bucketContentName": "legacy"}));
    allowed(Webhook::Validate, &req, &fetched);

    // A default class applied with the Bucket; listed, the classes are all there are.
    let req = create_bucket("team-a", json!({"protocol": "s3"}));
    let old = catalog(vec![class("old", SERVED, true, &["s3"]), class("ceph", SERVED, false, &["s3"])]);
    let listed = old.with_fetched(crate::catalog::Fetched::listing([class("ceph", SERVED, true, &["s3"])]));
    let (_, patched) = run(Webhook::Mutate, &req, &listed);
    assert_eq!(patched.unwrap()["spec"]["bucketClassName"], "ceph");
    assert!(listed.class("old").is_none() && old.class("old").is_some());
}

/// bucketgate's loop drives SERVED here (it has a store), so its Buckets' release is the
/// loop's: taken past it only by those the API server says may.
fn driving() -> Config {
    let yaml = format!("provisioners:\n- name: {SERVED}\n  s3:\n    endpoint: http://127.0.0.1:8333\n");
    Config::parse(&yaml, "test").unwrap()
}

fn review_driving(req: &Request, catalog: &Catalog) -> Reviewed {
    let ctx = Context { catalog, config: &driving(), policies: &crate::policy::PolicySet::default() };
    review(Webhook::Validate, req, &ctx)
}

/// A Bucket of class "ceph" (SERVED) in team-a, being deleted, with or without its
/// finalizer and the force-release annotation.
fn deleting_bucket(finalizer: bool, forced: bool) -> Value {
    let mut object = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-24T10:00:00Z");
    if finalizer {
        object["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if forced {
        object["metadata"]["annotations"] = json!({"cosi.io/force-release": "true"});
    }
    object
}

#[test]
fn releasing_a_bucket_by_hand_is_for_whom_the_api_server_lets_release() {
    let unheld =
        request("Bucket", "UPDATE", Some("team-a"), deleting_bucket(false, false), deleting_bucket(true, false));
    // First the webhook asks; until it has the answer, it refuses.
    let first = review_driving(&unheld, &standard());
    assert!(!first.response.allowed);
    assert_eq!(first.rechecks, [Recheck::MayRelease("team-a".into())]);
    assert_eq!(first.response.result.code, 403);
    let message = &first.response.result.message;
    assert!(message.contains("only the provisioning loop takes cosi.io/finalizer off a Bucket"), "{message}");
    assert!(message.contains("could not be asked of the API server: try again"), "{message}");

    // The answer decides: a namespace's editor may not, a cluster admin (or bucketgate) may.
    let denied = standard().with_fetched(crate::catalog::Fetched::release_answer(false));
    let refused = review_driving(&unheld, &denied);
    assert!(!refused.response.allowed && refused.rechecks.is_empty());
    let message = &refused.response.result.message;
    assert!(
        message.contains(
            r#"dev may not: that takes the verb "release" on buckets.cosi.io in namespace "team-a", which cluster admins have"#
        ),
        "{message}"
    );
    let granted = standard().with_fetched(crate::catalog::Fetched::release_answer(true));
    assert!(review_driving(&unheld, &granted).response.allowed);

    // Asking the loop to release without the store is the same: on create or later.
    let forced = request("Bucket", "UPDATE", Some("team-a"), deleting_bucket(true, true), deleting_bucket(true, false));
    let message = review_driving(&forced, &denied).response.result.message;
    assert!(message.contains(": cosi.io/force-release=true has the Bucket released without its store"), "{message}");
    assert!(review_driving(&forced, &granted).response.allowed);
    let mut created = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
    created["metadata"]["annotations"] = json!({"cosi.io/force-release": "true"});
    let create = request("Bucket", "CREATE", Some("team-a"), created, Value::Null);
    assert_eq!(review_driving(&create, &standard()).rechecks, [Recheck::MayRelease("team-a".into())]);

    // What does not release by hand asks nothing: the finalizer kept, the annotation there
    // before, a Bucket without the finalizer to begin with.
    let kept = request("Bucket", "UPDATE", Some("team-a"), deleting_bucket(true, true), deleting_bucket(true, true));
    let never =
        request("Bucket", "UPDATE", Some("team-a"), deleting_bucket(false, false), deleting_bucket(false, false));
    for req in [&kept, &never] {
        let reviewed = review_driving(req, &standard());
        assert!(reviewed.response.allowed && reviewed.rechecks.is_empty(), "{:?}", reviewed.response);
    }
    // Nor where another controller releases: a provisioner served here without a store, or
    // a deployment that drives none.
    let elsewhere = catalog(vec![class("ceph", "other.example.com/s3", true, &["s3"])]);
    assert!(review_driving(&unheld, &elsewhere).response.allowed);
    allowed(Webhook::Validate, &unheld, &standard());
}
