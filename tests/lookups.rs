//! The webhook's catalog is a watch cache, behind the API server by design. Where a
//! review's answer turned on an object the catalog did not hold (or held refusing), the
//! server reads it from the API server and decides again. Here the real server over TLS,
//! with kube-rs's mock client (tower-test) as the API server; tests/envtest.rs does it
//! against a real one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucketgate::api::{BucketClass, BucketContent};
use bucketgate::catalog::Catalog;
use bucketgate::server::LOOKUP_TIMEOUT;
use common::*;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

const CONTENT_PATH: &str = "/apis/cosi.io/v1alpha1/bucketcontents/legacy-logs";
const NAMESPACE_PATH: &str = "/api/v1/namespaces/team-a";
const CLASSES_PATH: &str = "/apis/cosi.io/v1alpha1/bucketclasses";
const TEAM_A_UID: &str = "7239d61f-6c63-4400-865a-b393ebab86df";

/// How the mock API server answers.
enum Answer {
    /// Each GET from these objects by path (a POST: the answer at its path), a 404 Status for
    /// any other.
    From(Vec<(&'static str, Value)>),
    /// Never.
    Silence,
}

/// A client of a mock API server answering as `answer` says, and the requests it got
/// (method and path, and the body of a POST).
fn api_server(answer: Answer) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let method = request.method().clone();
            let logged = if method == http::Method::POST {
                use http_body_util::BodyExt;
                let body = request.into_body().collect().await.unwrap().to_bytes();
                format!("{method} {path} {}", String::from_utf8_lossy(&body))
            } else {
                format!("{method} {path}")
            };
            log.lock().unwrap().push(logged);
            let Answer::From(objects) = &answer else {
                unanswered.push(send);
                continue;
            };
            let response = match objects.iter().find(|(p, _)| *p == path) {
                Some((_, object)) => Response::new(Body::from(serde_json::to_vec(object).unwrap())),
                None => {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": format!("{path} not found")});
                    let body = Body::from(serde_json::to_vec(&status).unwrap());
                    Response::builder().status(StatusCode::NOT_FOUND).body(body).unwrap()
                }
            };
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), seen)
}

/// A catalog of `classes` and `content`, and namespace team-a where `team_a`.
fn catalog(classes: Vec<BucketClass>, content: Option<BucketContent>, team_a: bool) -> Catalog {
    let namespace = json!({"metadata": {"name": "team-a", "uid": TEAM_A_UID}});
    let namespaces = team_a.then(|| serde_json::from_value(namespace).unwrap());
    Catalog::from_objects(classes, content, namespaces)
}

/// The fixture catalog's classes (ceph-s3, the default for s3).
fn fixture_classes() -> Vec<BucketClass> {
    fixture_catalog().classes().iter().map(|c| (**c).clone()).collect()
}

/// The fixture catalog without its BucketContent.
fn without_content() -> Catalog {
    catalog(fixture_classes(), None, true)
}

/// The fixture content `legacy-logs`, as the API server would return it.
fn legacy_logs() -> Value {
    serde_json::to_value(&*fixture_catalog().content("legacy-logs").unwrap()).unwrap()
}

/// The captured generateName Bucket bound to `legacy-logs` (013 mutate, 014 validate),
/// without its protocol: the mutating webhook fills it in from the content.
fn binding(prefix: &str) -> Value {
    let mut review = fixture(prefix);
    review["request"]["object"]["spec"].as_object_mut().unwrap().remove("protocol");
    review
}

/// A BucketContent and a Bucket naming it, applied together: the Bucket's reviews reach
/// the webhook before the content's watch event reaches its catalog.
#[tokio::test]
async fn a_bucket_naming_a_content_the_catalog_has_not_seen_yet_is_decided_with_the_api_servers_copy() {
    // What the catalog alone says: the reason for this change.
    let alone = TestServer::start(without_content(), served()).await;
    let response = alone.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap().contains("names no BucketContent"), "{response}");
    alone.stop().await;

    let (api, seen) = api_server(Answer::From(vec![(CONTENT_PATH, legacy_logs())]));
    let server = TestServer::with_api(without_content(), api).await;
    let mutate = binding("013");
    let patched = apply_patch(&mutate, &server.review("mutate", &mutate).await);
    assert_eq!(patched["spec"]["protocol"], "s3", "the content's protocol");
    assert_eq!(patched["metadata"]["finalizers"], json!(["cosi.io/finalizer"]));
    let response = server.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(*seen.lock().unwrap(), [format!("GET {CONTENT_PATH}"), format!("GET {CONTENT_PATH}")]);
    assert_eq!(server.state.metrics.lookup_count("BucketContent", "found"), 2);
    server.stop().await;
}

/// The owner adds a namespace to the grant, and a Bucket is created in it at once: the
/// catalog's copy of the content does not list the namespace yet, nor does it know the
/// (new) namespace. The first object read lets the rules get to the second.
#[tokio::test]
async fn a_grant_and_a_namespace_newer_than_the_catalog_are_read_in_turn() {
    let mut before: BucketContent = serde_json::from_value(legacy_logs()).unwrap();
    before.spec.bindable_namespaces.retain(|b| b.name != "team-a");
    let catalog = catalog(fixture_classes(), Some(before), false);
    let namespace = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "team-a", "uid": TEAM_A_UID}});
    let (api, seen) = api_server(Answer::From(vec![(CONTENT_PATH, legacy_logs()), (NAMESPACE_PATH, namespace)]));
    let server = TestServer::with_api(catalog, api).await;
    let response = server.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(*seen.lock().unwrap(), [format!("GET {CONTENT_PATH}"), format!("GET {NAMESPACE_PATH}")]);
    assert_eq!(server.state.metrics.lookup_count("Namespace", "found"), 1);
    server.stop().await;
}

/// A platform team's default class applied with a Bucket that names no class: the classes
/// are listed, and the default chosen from them.
#[tokio::test]
async fn a_default_class_the_catalog_has_not_seen_yet_is_chosen_from_the_api_servers_list() {
    let mut class = (*fixture_catalog().class("ceph-s3").unwrap()).clone();
    let listed = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClassList",
        "metadata": {"resourceVersion": "7"}, "items": [class]});
    class.spec.is_default_bucket_class = false;
    let catalog = catalog(vec![class], None, true);
    let (api, seen) = api_server(Answer::From(vec![(CLASSES_PATH, listed)]));
    let server = TestServer::with_api(catalog, api).await;
    let response = server.review("mutate", &fixture("009")).await;
    assert_eq!(apply_patch(&fixture("009"), &response)["spec"]["bucketClassName"], "ceph-s3", "{response}");
    assert_eq!(*seen.lock().unwrap(), [format!("GET {CLASSES_PATH}")]);
    server.stop().await;
}

/// Where the API server has no such object either, the refusal is the catalog's, word for
/// word; and admitted requests never wait on the API server.
#[tokio::test]
async fn what_the_api_server_does_not_have_either_is_refused_as_before_and_admitted_requests_ask_nothing() {
    let expected = {
        let alone = TestServer::start(without_content(), served()).await;
        let response = alone.review("validate", &fixture("014")).await;
        alone.stop().await;
        response
    };
    let (api, seen) = api_server(Answer::From(Vec::new()));
    let server = TestServer::with_api(without_content(), api).await;
    let response = server.review("validate", &fixture("014")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"], expected["status"]);
    assert_eq!(*seen.lock().unwrap(), [format!("GET {CONTENT_PATH}")]);
    assert_eq!(server.state.metrics.lookup_count("BucketContent", "absent"), 1);

    // A Bucket with a default class, and the class itself: all in the catalog.
    for (webhook, prefix) in [("mutate", "009"), ("validate", "008")] {
        let response = server.review(webhook, &fixture(prefix)).await;
        assert_eq!(response["allowed"], true, "{prefix}: {response}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "no further request");
    server.stop().await;
}

/// A name is the requester's to choose, unchecked when the webhooks see it; one that no
/// object can have (a path, a query) is never sent to the API server as part of a path.
#[tokio::test]
async fn names_that_no_object_can_have_are_not_asked_for() {
    let (api, seen) = api_server(Answer::From(vec![(CONTENT_PATH, legacy_logs())]));
    let server = TestServer::with_api(without_content(), api).await;
    for name in
        ["legacy-logs/../../../../api/v1/namespaces/kube-system/secrets/token", "legacy-logs?watch=true", "Legacy-Logs"]
    {
        let mut review = fixture("014");
        review["request"]["object"]["spec"]["bucketContentName"] = json!(name);
        let response = server.review("validate", &review).await;
        assert_eq!(response["allowed"], false, "{name}");
        assert!(response["status"]["message"].as_str().unwrap().contains("names no BucketContent"), "{response}");
    }
    assert_eq!(*seen.lock().unwrap(), Vec::<String>::new());
    assert_eq!(server.state.metrics.lookup_count("BucketContent", "absent"), 3);
    server.stop().await;
}

/// An API server that does not answer costs the review at most the lookup's time, and the
/// catalog's refusal still comes back inside the webhook's 5 s timeout.
#[tokio::test]
async fn an_api_server_that_does_not_answer_leaves_the_catalogs_refusal_in_time() {
    let (api, seen) = api_server(Answer::Silence);
    let server = TestServer::with_api(without_content(), api).await;
    let started = Instant::now();
    let response = server.review("validate", &fixture("014")).await;
    let took = started.elapsed();
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap().contains("names no BucketContent"), "{response}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(server.state.metrics.lookup_count("BucketContent", "error"), 1);
    // Not a measure of speed: past 5 s the API server has given up on the webhook, and with
    // failurePolicy Fail refuses the write with a timeout instead of the reason.
    assert!(took >= LOOKUP_TIMEOUT && took < Duration::from_secs(5), "{took:?}");
    server.stop().await;
}

const REVIEW_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// Taking the finalizer off a Bucket being deleted, or asking for its release without its
/// store, leaves its key working: the webhook asks the API server's authorizer whether the
/// requester may (RBAC's verb `release` on buckets), as the requester, and decides by the
/// answer. A namespace's editor may not; a cluster admin, or bucketgate itself, may.
#[tokio::test]
async fn releasing_a_bucket_by_hand_is_decided_by_the_api_servers_authorizer() {
    // The captured Bucket UPDATE, as a developer of team-a who takes the finalizer off the
    // Bucket after deleting it, its store being down.
    let mut review = fixture("018");
    let request = &mut review["request"];
    request["userInfo"] = json!({"username": "dev", "uid": "u-dev", "groups": ["developers", "system:authenticated"]});
    for (object, finalizers) in [("oldObject", json!(["cosi.io/finalizer"])), ("object", Value::Null)] {
        request[object]["metadata"]["deletionTimestamp"] = json!("2026-11-24T10:00:00Z");
        request[object]["metadata"]["finalizers"] = finalizers;
        request[object]["spec"]["bucketClassName"] = json!("ceph-s3");
    }
    // This deployment's loop drives the class's provisioner: its release is the loop's.
    let yaml = format!("provisioners:\n- name: {SERVED}\n  s3:\n    endpoint: http://127.0.0.1:9\n");
    let config = bucketgate::config::Config::parse(&yaml, "test").unwrap();

    for allowed in [false, true] {
        let answer = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {}, "status": {"allowed": allowed}});
        let (api, seen) = api_server(Answer::From(vec![(REVIEW_PATH, answer)]));
        let server = TestServer::with_api_serving(fixture_catalog(), config.clone(), api).await;
        let response = server.review("validate", &review).await;
        assert_eq!(response["allowed"], allowed, "{response}");
        if !allowed {
            assert_eq!(response["status"]["code"], 403);
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.contains("only the provisioning loop takes cosi.io/finalizer off a Bucket"), "{message}");
            assert!(message.contains(r#"dev may not: that takes the verb "release" on buckets.cosi.io"#), "{message}");
        }
        // Asked once, as the requester, about exactly that.
        let seen = seen.lock().unwrap().clone();
        let [asked] = seen.as_slice() else { panic!("one question, not {seen:?}") };
        let body: Value = serde_json::from_str(asked.strip_prefix(&format!("POST {REVIEW_PATH} ")).unwrap()).unwrap();
        assert_eq!(body["spec"]["user"], "dev");
        assert_eq!(body["spec"]["uid"], "u-dev");
        assert_eq!(body["spec"]["groups"], json!(["developers", "system:authenticated"]));
        assert_eq!(
            body["spec"]["resourceAttributes"],
            json!({"group": "cosi.io", "resource": "buckets", "verb": "release", "namespace": "team-a"})
        );
        let lookups = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(
            lookups.contains(r#"bucketgate_admission_lookups_total{kind="SubjectAccessReview",result="found"} 1"#),
            "{lookups}"
        );
        server.stop().await;
    }

    // An authorizer that does not answer in time: refused, saying so.
    let (api, _) = api_server(Answer::Silence);
    let server = TestServer::with_api_serving(fixture_catalog(), config, api).await;
    let response = server.review("validate", &review).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("could not be asked of the API server: try again"), "{message}");
    server.stop().await;
}
