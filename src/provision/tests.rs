//! The reconcilers against kube-rs's mock client (tower-test): each scenario lists the API
//! calls in the order the loop must make them. Behind the driver trait a recording fake
//! stands in; the S3 driver itself is tested against SeaweedFS in tests/s3_driver.rs.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::reconcile;
use super::*;
use crate::api::AccessMode;
use crate::driver::options::{Retention, RetentionMode};
use crate::driver::{BucketOptions, Connection, Deletion, Grant};

const UID: &str = "2f845f60-d4c4-4d1e-ab39-3b8cc4e25086";
const CONTENT: &str = "bucket-2f845f60-d4c4-4d1e-ab39-3b8cc4e25086";

#[derive(Default)]
struct FakeDriver {
    calls: Mutex<Vec<String>>,
    create_error: Option<DriverError>,
    revoke_error: Option<DriverError>,
    /// The store has no bucket of the name asked for.
    no_such_bucket: bool,
    /// The store cannot be asked whether it has a bucket.
    has_error: Option<DriverError>,
    /// The class parameters the store no longer had, and were set again.
    restored: Vec<&'static str>,
    /// What the store says to tags.
    tag_error: Option<DriverError>,
    rotate_error: Option<DriverError>,
}

#[async_trait]
impl Driver for FakeDriver {
    async fn create_bucket(&self, name: &str, options: &BucketOptions) -> Result<Connection, DriverError> {
        let asked = if *options == BucketOptions::default() { String::new() } else { format!(" {options:?}") };
        self.calls.lock().unwrap().push(format!("create {name}{asked}"));
        if let Some(error) = &self.create_error {
            return Err(error.clone());
        }
        Ok(connection(name))
    }
    async fn delete_bucket(&self, name: &str) -> Result<Deletion, DriverError> {
        self.calls.lock().unwrap().push(format!("delete {name}"));
        Ok(if self.no_such_bucket { Deletion::NotFound } else { Deletion::Deleted })
    }
    async fn grant(&self, bucket: &str, holder: &str, mode: AccessMode) -> Result<Grant, DriverError> {
        self.calls.lock().unwrap().push(format!("grant {bucket} {holder} {mode:?}"));
        Ok(Grant {
            credentials: Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() },
            scoped: true,
        })
    }
    async fn has_bucket(&self, name: &str) -> Result<bool, DriverError> {
        self.calls.lock().unwrap().push(format!("has {name}"));
        match &self.has_error {
            Some(error) => Err(error.clone()),
            None => Ok(!self.no_such_bucket),
        }
    }
    async fn restore_options(&self, name: &str, options: &BucketOptions) -> Result<Vec<&'static str>, DriverError> {
        self.calls.lock().unwrap().push(format!("restore {name} {options:?}"));
        Ok(self.restored.clone())
    }
    async fn revoke(&self, holder: &str) -> Result<(), DriverError> {
        self.calls.lock().unwrap().push(format!("revoke {holder}"));
        match &self.revoke_error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
    async fn rotate(&self, holder: &str, keeping: &str) -> Result<Credentials, DriverError> {
        self.calls.lock().unwrap().push(format!("rotate {holder} keeping {keeping}"));
        if let Some(error) = &self.rotate_error {
            return Err(error.clone());
        }
        Ok(Credentials { access_key_id: "AK2".into(), secret_access_key: "SK2".into() })
    }
    async fn retire(&self, holder: &str, keeping: &str) -> Result<(), DriverError> {
        self.calls.lock().unwrap().push(format!("retire {holder} keeping {keeping}"));
        Ok(())
    }
    async fn tag_bucket(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        self.calls.lock().unwrap().push(format!("tag {name} {}", joined(tags)));
        self.tag_error.clone().map_or(Ok(true), Err)
    }
    async fn restore_tags(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        self.calls.lock().unwrap().push(format!("restore tags {name} {}", joined(tags)));
        self.tag_error.clone().map_or(Ok(false), Err)
    }
}

/// Tags as the fake driver records them: `key=value,...`.
fn joined(tags: &[(String, String)]) -> String {
    tags.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

/// Where the fake driver says a bucket is: the endpoint of [`test_config`].
fn connection(bucket_name: &str) -> Connection {
    Connection {
        endpoint: "http://s3.example:8333".into(),
        region: "us-east-1".into(),
        bucket_name: bucket_name.into(),
        signature_version: "s3v4".into(),
    }
}

/// The mock API server's side: one expected call at a time.
struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

enum Reply {
    Json(Value),
    /// Answers with the request's own body, as a create would.
    Echo,
    /// Answers with the request's merge patch applied to this object, as a patch would.
    MergeInto(Value),
    NotFound,
    /// A 400, as for a field selector the API server does not support.
    BadRequest,
}

/// The (group, resource, verb) RBAC sees for a request's method, path and query.
fn rbac_request(method: &str, uri: &str) -> (String, String, String) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let watching = query.split('&').any(|p| p == "watch=true");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, mut rest) = match segments[0] {
        "api" => (String::new(), &segments[2..]),
        _ => (segments[1].to_string(), &segments[3..]),
    };
    if rest[0] == "namespaces" && rest.len() >= 3 {
        rest = &rest[2..];
    }
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    let verb = match (method, rest.len() > 1) {
        ("GET", true) => "get",
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => "unknown",
    };
    (group, resource, verb.to_string())
}

/// Whether the ClusterRole in manifests/base/rbac.yaml allows the request.
fn allowed_by_rbac(method: &str, uri: &str) -> bool {
    granted_by("ClusterRole", method, uri)
}

/// Whether the role of this kind in manifests/base/rbac.yaml (the ClusterRole, or the Role
/// for leader election in bucketgate's namespace) allows the request.
fn granted_by(kind: &str, method: &str, uri: &str) -> bool {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/rbac.yaml")).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let role = documents.iter().find(|d| d["kind"] == kind).unwrap();
    let (group, resource, verb) = rbac_request(method, uri);
    role["rules"].as_array().unwrap().iter().any(|rule| {
        let has = |field: &str, want: &str| rule[field].as_array().unwrap().iter().any(|v| v == want);
        has("apiGroups", &group) && has("resources", &resource) && has("verbs", &verb)
    })
}

impl ApiServer {
    async fn expect(&mut self, method: &str, path: &str, reply: Reply) -> Value {
        let (request, send) = self.0.next_request().await.unwrap_or_else(|| panic!("expected {method} {path}"));
        // The query is compared only where the scenario names one.
        let seen = if path.contains('?') { request.uri().to_string() } else { request.uri().path().to_string() };
        assert_eq!((request.method().as_str(), seen.as_str()), (method, path));
        assert!(allowed_by_rbac(method, path), "RBAC in manifests/base/rbac.yaml does not allow {method} {path}");
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
        let response = match reply {
            Reply::Json(value) => Response::builder().body(Body::from(serde_json::to_vec(&value).unwrap())),
            Reply::Echo => Response::builder().body(Body::from(serde_json::to_vec(&body).unwrap())),
            Reply::MergeInto(mut object) => {
                json_patch::merge(&mut object, &body);
                Response::builder().body(Body::from(serde_json::to_vec(&object).unwrap()))
            }
            Reply::BadRequest => {
                Ok(failure(StatusCode::BAD_REQUEST, "BadRequest", "field label not supported: spec.bucketContentName"))
            }
            Reply::NotFound => Ok(failure(StatusCode::NOT_FOUND, "NotFound", "not found")),
        };
        send.send_response(response.unwrap());
        body
    }
}

/// An API server's error answer: a `Status` with the reason kube-rs reads.
fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
        "code": code.as_u16(), "message": message});
    Response::builder().status(code).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap()
}

/// The reconcile's result. A request the scenario did not expect would leave the reconcile
/// waiting on the mock for ever; the timeout turns that into a failure.
async fn finish<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the reconcile made a request the scenario does not expect")
        .unwrap()
}

fn context(driver: Arc<FakeDriver>) -> (Arc<Context>, ApiServer) {
    context_of(driver, false)
}

/// A context that publishes Events, which the scenario must then expect.
fn context_with_events(driver: Arc<FakeDriver>) -> (Arc<Context>, ApiServer) {
    context_of(driver, true)
}

fn context_of(driver: Arc<FakeDriver>, events: bool) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (context_for(Client::new(service, "default"), driver, events), ApiServer(handle))
}

/// The loop's context on `client`, with `driver` behind every provisioner.
fn context_for(client: Client, driver: Arc<FakeDriver>, events: bool) -> Arc<Context> {
    let recorder =
        events.then(|| Recorder::new(client.clone(), Reporter { controller: "bucketgate".into(), instance: None }));
    let drivers: DriverFactory = Box::new(move |_, _| driver.clone() as Arc<dyn Driver>);
    Arc::new(Context::new(client, test_config(), recorder, drivers, Arc::new(Metrics::default())))
}

/// Expects the Event the loop publishes next, about the Bucket, and returns its reason and
/// note.
async fn expect_event(api: &mut ApiServer) -> (String, String) {
    expect_event_on(api, "team-a", "photos").await
}

/// Expects the next Event, about `name`; those about cluster-scoped objects go to `default`.
async fn expect_event_on(api: &mut ApiServer, namespace: &str, name: &str) -> (String, String) {
    let path = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events");
    let event = api.expect("POST", &path, Reply::Echo).await;
    assert_eq!(event["regarding"]["name"], name, "{event}");
    (event["reason"].as_str().unwrap().to_string(), event["note"].as_str().unwrap().to_string())
}

/// How many Buckets the time-to-bound histogram has counted, as Prometheus scrapes it.
fn bound_count(ctx: &Context) -> u64 {
    let text = ctx.metrics.encode();
    let line = text.lines().find_map(|l| l.strip_prefix("bucketgate_bucket_time_to_bound_seconds_count "));
    // README's query of the share bound within the target reads this bucket.
    assert!(text.contains("bucketgate_bucket_time_to_bound_seconds_bucket{le=\"30.0\"}"), "{text}");
    line.unwrap_or_else(|| panic!("no time-to-bound count in:\n{text}")).parse().unwrap()
}

fn test_config() -> Config {
    let mut config = Config::default().with_provisioners(["seaweed".to_string()]);
    config.provisioners[0].s3 = Some(S3Settings {
        endpoint: "http://s3.example:8333".into(),
        region: "us-east-1".into(),
        path_style: true,
        iam: None,
        credentials_from_env: Default::default(),
    });
    config
}

fn bucket(spec: Value, status: Value) -> Bucket {
    serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "photos", "namespace": "team-a", "uid": UID, "resourceVersion": "5", "generation": 1,
                     "creationTimestamp": "2026-11-22T10:00:00Z", "finalizers": ["cosi.io/finalizer"]},
        "spec": spec, "status": status}))
    .unwrap()
}

/// When a bound test Bucket (its uid) is looked at again if nothing changes.
fn next_look() -> Action {
    Action::requeue(plan::recheck_after(&bucket(json!({}), json!({})), plan::RECHECK_INTERVAL))
}

fn class() -> Value {
    json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "ceph"},
        "provisioner": "seaweed", "supportedProtocols": ["s3"], "accessMode": "rw", "releasePolicy": "Delete",
        "parameters": {"cosi.io/provisioner-secret-name": "${bucket.namespace}-admin", "cosi.io/provisioner-secret-namespace": "bucketgate-system"}})
}

fn provisioner_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-a-admin", "namespace": "bucketgate-system"},
        "data": {"AWS_ACCESS_KEY_ID": "YWRtaW4=", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
}

/// Expects the read of the provisioner's Secret the test class names, and answers it.
async fn expect_provisioner_secret(api: &mut ApiServer) {
    api.expect("GET", "/api/v1/namespaces/bucketgate-system/secrets/team-a-admin", Reply::Json(provisioner_secret()))
        .await;
}

/// The BucketContent the loop makes for `bucket` from the test class.
fn content_for(bucket: &Bucket) -> BucketContent {
    plan::greenfield_content(bucket, &serde_json::from_value(class()).unwrap(), "u").unwrap()
}

/// The types of the conditions in a status patch, in order.
fn condition_types(status: &Value) -> Vec<&str> {
    status["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect()
}

/// Expects the status patch of the test Bucket, which the loop saw as `shown`, and returns it.
async fn expect_bucket_status(api: &mut ApiServer, shown: Value) -> Value {
    let path = "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos/status";
    api.expect("PATCH", path, Reply::MergeInto(shown)).await
}

/// Expects the test Bucket's deletion to end: Released, its finalizer taken off.
async fn expect_let_go(api: &mut ApiServer, shown: Value, reconciling: tokio::task::JoinHandle<Result<Action, Error>>) {
    assert_eq!(expect_event(api).await.0, "Released");
    let path = "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos";
    assert_eq!(api.expect("PATCH", path, Reply::Json(shown)).await["metadata"]["finalizers"], json!([]));
    finish(reconciling).await.unwrap();
}

/// Expects the status patch of the test content, and returns it.
async fn expect_content_status(api: &mut ApiServer, content: &BucketContent) -> Value {
    let path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}/status");
    api.expect("PATCH", &path, Reply::MergeInto(serde_json::to_value(content).unwrap())).await
}

/// A deletionTimestamp of now.
fn now() -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()))
}

/// The shared brownfield BucketContent `legacy`, bindable from team-a with `uid`.
fn legacy(uid: &str) -> Value {
    json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent", "metadata": {"name": "legacy"},
        "spec": {"provisioner": "", "releasePolicy": "Retain", "bindableNamespaces": [{"name": "team-a", "uid": uid}],
                 "protocol": {"type": "s3", "s3": {"bucketName": "legacy", "endpoint": "https://s3.example"}}}})
}

/// `legacy` managed by a provisioner with a driver here (so that there are keys to make
/// and revoke), Bound.
fn managed_legacy() -> Value {
    let mut shared = legacy("ns-uid");
    shared["spec"]["provisioner"] = json!("seaweed");
    shared["spec"]["parameters"] = class()["parameters"].clone();
    shared["spec"]["protocol"]["s3"]["endpoint"] = json!("http://s3.example:8333");
    shared["status"] = json!({"phase": "Bound"});
    shared
}

fn namespace(uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "uid": uid}})
}

#[test]
fn rbac_paths_are_read_as_the_api_server_reads_them() {
    let read = |m: &str, p: &str| rbac_request(m, p);
    assert_eq!(read("GET", "/api/v1/namespaces/team-a"), ("".into(), "namespaces".into(), "get".into()));
    assert_eq!(read("POST", "/api/v1/namespaces/team-a/secrets"), ("".into(), "secrets".into(), "create".into()));
    assert_eq!(
        read("PATCH", "/apis/cosi.io/v1alpha1/namespaces/a/buckets/b/status"),
        ("cosi.io".into(), "buckets/status".into(), "patch".into())
    );
    assert_eq!(read("GET", "/apis/cosi.io/v1alpha1/buckets"), ("cosi.io".into(), "buckets".into(), "list".into()));
    assert_eq!(
        read("GET", "/apis/cosi.io/v1alpha1/buckets?&watch=true&resourceVersion=1"),
        ("cosi.io".into(), "buckets".into(), "watch".into())
    );
    assert!(
        !allowed_by_rbac("DELETE", "/api/v1/namespaces/team-a/secrets/x"),
        "bucketgate never deletes Secrets itself"
    );
}

#[tokio::test]
async fn greenfield_records_the_name_before_creating_then_writes_the_secret() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let target = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph", "bucketPrefix": "photos-", "secretName": "photos-creds"}),
        json!({}),
    );
    let backend = plan::backend_bucket_name(&target);
    let shown = Arc::new(target);
    let reconciling = tokio::spawn(reconcile::bucket(shown.clone(), ctx.clone()));

    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::NotFound).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketclasses/ceph", Reply::Json(class())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    let created = api.expect("POST", "/apis/cosi.io/v1alpha1/bucketcontents", Reply::Echo).await;
    assert_eq!(created["spec"]["protocol"]["s3"]["bucketName"], backend.as_str());
    assert_eq!(created["spec"]["bindableNamespaces"], json!([{"name": "team-a", "uid": "ns-uid"}]));
    assert!(driver.calls.lock().unwrap().is_empty(), "nothing reaches the backend before the name is recorded");
    assert_eq!(expect_event(&mut api).await, ("ContentCreated".into(), format!("created BucketContent {CONTENT}")));
    // The provisioner's credentials come from the templated Secret in the class parameters.
    expect_provisioner_secret(&mut api).await;
    let spec = api
        .expect("PATCH", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(created.clone()))
        .await;
    assert_eq!(spec["spec"]["protocol"]["s3"]["endpoint"], "http://s3.example:8333");
    let mut bound = created.clone();
    bound["status"] = json!({"phase": "Bound"});
    let status = api
        .expect("PATCH", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}/status"), Reply::Json(bound))
        .await;
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(expect_event(&mut api).await, ("BucketCreated".into(), format!("created bucket {backend}")));
    // The driver made for the create also grants: the provisioner Secret is read once.
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos-creds", Reply::NotFound).await;
    let secret = api.expect("POST", "/api/v1/namespaces/team-a/secrets", Reply::Echo).await;
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(secret["data"]["AWS_ACCESS_KEY_ID"], "QUs=", "the granted key, base64");
    use base64::Engine;
    assert_eq!(secret["data"]["BUCKET_NAME"], base64::engine::general_purpose::STANDARD.encode(&backend));
    assert_eq!(expect_event(&mut api).await, ("CredentialsIssued".into(), "wrote Secret photos-creds".into()));
    let status = expect_bucket_status(&mut api, serde_json::to_value(&*shown).unwrap()).await;
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(status["status"]["bucketContentName"], CONTENT);
    assert_eq!(status["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(status["status"]["conditions"][1]["status"], "True", "a scoped key");
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "Bound");
    assert!(note.starts_with(&format!("bound to BucketContent {CONTENT}, ")), "{note}");
    assert!(note.ends_with(" s after the Bucket was created"), "{note}");

    finish(reconciling).await.unwrap();
    let tags = format!(
        "cosi.io/namespace=team-a,cosi.io/bucket={},cosi.io/bucketcontent={CONTENT},cosi.io/bucketclass=ceph",
        shown.name_any()
    );
    assert_eq!(
        *driver.calls.lock().unwrap(),
        [format!("create {backend}"), format!("tag {backend} {tags}"), format!("grant {backend} {UID} ReadWrite")]
    );
    assert_eq!(bound_count(&ctx), 1, "bound for the first time: its time to bound is counted");
    let metrics = &ctx.metrics;
    assert_eq!(metrics.backend_count("seaweed", "create_bucket", "success"), 1);
    assert_eq!(metrics.backend_count("seaweed", "grant", "success"), 1);
}

/// Tags are for whoever looks at the store: a store that refuses them (a key without
/// s3:PutBucketTagging) is said in a Warning Event, and the Bucket goes on to be bound.
#[tokio::test]
async fn a_bucket_the_store_will_not_tag_is_said_and_goes_on() {
    let refused = DriverError::Permanent("tagging the bucket: AccessDenied".into());
    let driver = Arc::new(FakeDriver { tag_error: Some(refused), ..Default::default() });
    let (ctx, mut api) = context_with_events(driver.clone());
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let backend = plan::backend_bucket_name(&target);
    let content = content_asking(&target, json!({}));
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "BucketNotTagged");
    assert!(note.starts_with(&format!("bucket {backend} was made, without the tags")), "{note}");
    assert!(note.contains("(tagging the bucket: AccessDenied)") && note.contains("s3:PutBucketTagging"), "{note}");
    // Its connection is recorded next, as for a bucket tagged.
    let spec =
        api.expect("PATCH", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    assert_eq!(spec["spec"]["protocol"]["s3"]["bucketName"], backend.as_str());
    reconciling.abort();
}

#[tokio::test]
async fn a_bucket_bound_before_is_not_counted_as_bound_again() {
    let (ctx, mut api) = context(Arc::new(FakeDriver::default()));
    // Pending after a failure that has passed; its status still names its content.
    let target = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Pending"}),
    );
    let mut content = serde_json::to_value(content_for(&target)).unwrap();
    content["status"] = json!({"phase": "Bound"});
    let mut secret = serde_json::to_value(plan::credentials_secret(&target, &connection("b"), None)).unwrap();
    secret["metadata"]["namespace"] = json!("team-a");
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
    // The Secret is there and the Bucket not Bound: the API server's copy is asked.
    api.expect("GET", "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos", Reply::Json(shown.clone())).await;
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Bound");
    finish(reconciling).await.unwrap();
    assert_eq!(bound_count(&ctx), 0);
    assert_eq!(ctx.metrics.reconcile_count("Bucket", "success"), 1);
    assert_eq!(
        ctx.metrics.backend_count("seaweed", "create_bucket", "success"),
        0,
        "a Bound content is not made again"
    );

    // Looked at again with nothing changed: two reads (not the class, which may be gone by
    // now), no write, nothing asked of the store (not an hour since the first look).
    let mut bound = shown;
    json_patch::merge(&mut bound, &status);
    let bound: Bucket = serde_json::from_value(bound).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret)).await;
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert!(ctx.metrics.backend_count("seaweed", "create_bucket", "success") == 0);
}

/// A reconcile woken by the Bucket's own Secret, with the watch cache still showing the
/// Bucket as it was before the status written a moment ago (as many Buckets created at once
/// have it): the API server's copy is Bound already, and nothing is written or said again.
/// Where that copy is not Bound either (its status lost, as a restore from backup leaves
/// it), the condition says what the Secret says it holds, not what a status without
/// conditions would suggest.
#[tokio::test]
async fn a_bucket_seen_before_its_bound_status_is_not_written_again() {
    let ready = plan::condition(&[], "Ready", true, "Bound", format!("bound to {CONTENT}"), Some(1));
    let key = json!({"type": "CredentialsScoped", "status": "True", "reason": "BucketUser",
        "message": "the Secret's key reaches this bucket only", "lastTransitionTime": "2026-11-22T10:00:01Z", "observedGeneration": 1});
    let stale = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!(null));
    let mut content = serde_json::to_value(content_for(&stale)).unwrap();
    content["status"] = json!({"phase": "Bound"});
    let grant =
        Grant { credentials: Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() }, scoped: true };
    let mut secret = serde_json::to_value(plan::credentials_secret(&stale, &connection("b"), Some(&grant))).unwrap();
    secret["metadata"]["namespace"] = json!("team-a");
    let mut current = serde_json::to_value(&stale).unwrap();
    current["status"] = json!({"bucketContentName": CONTENT, "phase": "Bound", "conditions": [ready, key]});

    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(stale.clone()), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos", Reply::Json(current)).await;
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert_eq!(bound_count(&ctx), 0, "not counted a second time");

    let (ctx, mut api) = context_with_events(driver.clone());
    let shown = serde_json::to_value(&stale).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(stale), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret)).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos", Reply::Json(shown.clone())).await;
    let status = expect_bucket_status(&mut api, shown).await;
    assert_eq!(status["status"]["conditions"][1]["status"], "True", "{status}");
    assert_eq!(status["status"]["conditions"][1]["reason"], "BucketUser");
    assert_eq!(expect_event(&mut api).await.0, "Bound");
    finish(reconciling).await.unwrap();
    assert!(driver.calls.lock().unwrap().is_empty(), "nothing asked of the store");
}

/// Rotating a Bucket's key: its Secret deleted, the loop (woken by the Secret's watch) asks
/// the store for a new key, which replaces the old one there, and writes the Secret again.
#[tokio::test]
async fn a_deleted_secret_is_written_again_with_a_new_key() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let scoped = plan::condition(&[], "CredentialsScoped", true, "BucketUser", "its own key", Some(1));
    let target = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Bound", "conditions": [scoped]}),
    );
    let backend = plan::backend_bucket_name(&target);
    let mut content = serde_json::to_value(content_for(&target)).unwrap();
    content["status"] = json!({"phase": "Bound"});
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::NotFound).await;
    expect_provisioner_secret(&mut api).await;
    let secret = api.expect("POST", "/api/v1/namespaces/team-a/secrets", Reply::Echo).await;
    assert_eq!(secret["data"]["AWS_ACCESS_KEY_ID"], "QUs=", "the key granted now");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(expect_event(&mut api).await, ("CredentialsIssued".into(), "wrote Secret photos".into()));
    let status = expect_bucket_status(&mut api, shown).await;
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(status["status"]["conditions"][1]["type"], "CredentialsScoped");
    assert_eq!(status["status"]["conditions"][1]["status"], "True");
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert_eq!(*driver.calls.lock().unwrap(), [format!("grant {backend} {UID} ReadWrite")]);
}

/// A class that rotates keys: a Bound Bucket's key older than its age gets a new one beside
/// it, written into its Secret as it was read and said in an Event; the old key goes once
/// its grace is over (none here: at the next look, which comes at once). A key still young
/// is looked at again when due, if that is before the next timed look.
#[tokio::test]
async fn a_key_past_its_age_is_rotated_then_the_old_one_retired() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let (shown, mut content, mut secret) = bound_greenfield();
    content["spec"]["parameters"]["keyMaxAgeDays"] = json!("1");
    content["spec"]["parameters"]["keyRotationGraceHours"] = json!("0");
    let two_days_ago = jiff::Timestamp::now().checked_sub(Duration::from_secs(2 * 86_400)).unwrap();
    secret["metadata"]["creationTimestamp"] = json!(two_days_ago.to_string());
    secret["metadata"]["resourceVersion"] = json!("41");
    let bound: Bucket = serde_json::from_value(shown).unwrap();
    let (content_path, secret_path) =
        (format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), "/api/v1/namespaces/team-a/secrets/photos");

    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", secret_path, Reply::Json(secret.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let patch = api.expect("PATCH", secret_path, Reply::MergeInto(secret.clone())).await;
    assert_eq!(patch["metadata"]["resourceVersion"], "41");
    assert_eq!(patch["metadata"]["annotations"]["cosi.io/retiring-key"], "AK");
    assert_eq!(patch["data"]["AWS_ACCESS_KEY_ID"], "QUsy", "AK2");
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "KeyRotated");
    assert!(note.contains("rotating keys every day;"), "{note}");
    assert_eq!(finish(reconciling).await.unwrap(), Action::requeue(Duration::ZERO), "no grace: retired at once");
    assert_eq!(*driver.calls.lock().unwrap(), [format!("rotate {UID} keeping AK")]);

    json_patch::merge(&mut secret, &patch);
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", secret_path, Reply::Json(secret.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let retired = api.expect("PATCH", secret_path, Reply::MergeInto(secret.clone())).await;
    assert_eq!(retired["metadata"]["annotations"], json!({"cosi.io/retiring-key": null, "cosi.io/retire-after": null}));
    assert_eq!(expect_event(&mut api).await.0, "KeyRetired");
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert_eq!(driver.calls.lock().unwrap()[1], format!("retire {UID} keeping AK2"));

    // Young: nothing asked of the store; looked at again when due, within the hour.
    json_patch::merge(&mut secret, &retired);
    let almost = jiff::Timestamp::now().checked_sub(Duration::from_secs(86_400 - 600)).unwrap();
    secret["metadata"]["annotations"]["cosi.io/key-issued"] = json!(almost.to_string());
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound), ctx));
    api.expect("GET", &content_path, Reply::Json(content)).await;
    api.expect("GET", secret_path, Reply::Json(secret)).await;
    // Action keeps its delay to itself; its Debug output says it.
    let action = format!("{:?}", finish(reconciling).await.unwrap());
    let after: f64 = action.split("Some(").nth(1).and_then(|s| s.split('s').next()).unwrap().parse().unwrap();
    assert!((590.0..=600.0).contains(&after), "{action}");
    assert_eq!(driver.calls.lock().unwrap().len(), 2);
}

/// A rotation the store fails leaves the Bucket Bound and Ready (the key in use works): a
/// Warning says why, and it is tried again within minutes.
#[tokio::test]
async fn a_rotation_that_fails_leaves_the_bucket_as_it_was() {
    let unreachable = Some(DriverError::Transient("the store does not answer".into()));
    let driver = Arc::new(FakeDriver { rotate_error: unreachable, ..Default::default() });
    let (ctx, mut api) = context_with_events(driver.clone());
    let (shown, mut content, mut secret) = bound_greenfield();
    content["spec"]["parameters"]["keyMaxAgeDays"] = json!("30");
    secret["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(serde_json::from_value(shown).unwrap()), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret)).await;
    expect_provisioner_secret(&mut api).await;
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "KeyRotationFailed");
    assert!(note.ends_with("not retired: backend: the store does not answer"), "{note}");
    // No status written: the next request would be it, and there is none.
    assert_eq!(finish(reconciling).await.unwrap(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(driver.calls.lock().unwrap().len(), 1);
}

/// A context whose loop asks the store about a bound Bucket's bucket at every look after
/// the first, as it does at the timed ones (about hourly).
fn context_asking_the_store(driver: Arc<FakeDriver>) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(client.clone(), Reporter { controller: "bucketgate".into(), instance: None });
    let drivers: DriverFactory = Box::new(move |_, _| driver.clone() as Arc<dyn Driver>);
    let metrics = Arc::new(Metrics::default());
    let mut ctx = Context::new(client, test_config(), Some(recorder), drivers, metrics.clone());
    ctx.store_looks = looks::StoreLooks::new(Duration::ZERO, metrics.buckets_missing.clone());
    (Arc::new(ctx), ApiServer(handle))
}

/// A greenfield Bucket Bound to its content, its Secret holding a key of its own: as the
/// watch shows it, its content, and its Secret.
fn bound_greenfield() -> (Value, Value, Value) {
    let pending = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!(null));
    let grant =
        Grant { credentials: Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() }, scoped: true };
    let mut secret = serde_json::to_value(plan::credentials_secret(&pending, &connection("b"), Some(&grant))).unwrap();
    secret["metadata"]["namespace"] = json!("team-a");
    let mut shown = serde_json::to_value(&pending).unwrap();
    json_patch::merge(&mut shown, &plan::bound_status(&pending, CONTENT, plan::Key::BucketUser).unwrap());
    let mut content = serde_json::to_value(content_for(&pending)).unwrap();
    content["status"] = json!({"phase": "Bound"});
    (shown, content, secret)
}

/// A store without IAM: the Bucket's Secret holds the provisioner's own key. Changed at its
/// source (the provisioner Secret the class names), it is written into the Bucket's Secret
/// at the Bucket's next look, as it was read, and said; a look that finds it the same
/// writes nothing. A provisioner Secret gone since leaves the Secret as it is, and the
/// Bucket Bound.
#[tokio::test]
async fn a_secret_holding_the_provisioners_key_follows_it_when_it_changes() {
    let (mut shown, content, _) = bound_greenfield();
    let pending = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!(null));
    let old = Credentials { access_key_id: "old".into(), secret_access_key: "old-secret".into() };
    let grant = Grant { credentials: old, scoped: false };
    let mut secret = serde_json::to_value(plan::credentials_secret(&pending, &connection("b"), Some(&grant))).unwrap();
    secret["metadata"]["namespace"] = json!("team-a");
    secret["metadata"]["resourceVersion"] = json!("41");
    json_patch::merge(&mut shown, &plan::bound_status(&pending, CONTENT, plan::Key::Provisioner).unwrap());
    let bound: Bucket = serde_json::from_value(shown).unwrap();
    let (content_path, secret_path) =
        (format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), "/api/v1/namespaces/team-a/secrets/photos");

    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", secret_path, Reply::Json(secret.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let patch = api.expect("PATCH", secret_path, Reply::MergeInto(secret.clone())).await;
    // The provisioner Secret's key, admin / secret.
    assert_eq!(
        patch,
        json!({"metadata": {"resourceVersion": "41"},
        "data": {"AWS_ACCESS_KEY_ID": "YWRtaW4=", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
    );
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "KeyUpdated");
    assert!(note.starts_with("Secret photos now holds the provisioner's current key"), "{note}");
    assert!(!note.contains("admin") && !note.contains("secret"), "no key in the Event: {note}");
    assert_eq!(finish(reconciling).await.unwrap(), next_look(), "no status written: still Bound");

    json_patch::merge(&mut secret, &patch);
    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", secret_path, Reply::Json(secret.clone())).await;
    expect_provisioner_secret(&mut api).await;
    assert_eq!(finish(reconciling).await.unwrap(), next_look(), "the same key: nothing written, nothing said");

    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(bound), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content)).await;
    api.expect("GET", secret_path, Reply::Json(secret)).await;
    api.expect("GET", "/api/v1/namespaces/bucketgate-system/secrets/team-a-admin", Reply::NotFound).await;
    assert_eq!(finish(reconciling).await.unwrap(), next_look(), "the Bucket stays as it is");
    assert!(driver.calls.lock().unwrap().is_empty(), "nothing asked of the store");
}

/// A bucket deleted at the store, outside Kubernetes: the Bucket's next timed look asks
/// the store, and the Bucket says the bucket is missing and what to do, once, without making
/// an empty one in its place. Put back, it is found at the next look (minutes later), and
/// the Bucket is Ready again.
#[tokio::test]
async fn a_bucket_gone_from_its_store_is_said_and_not_made_again() {
    let driver = Arc::new(FakeDriver { no_such_bucket: true, ..Default::default() });
    let (ctx, mut api) = context_asking_the_store(driver.clone());
    let (shown, content, secret) = bound_greenfield();
    let bound: Bucket = serde_json::from_value(shown.clone()).unwrap();
    let backend = plan::backend_bucket_name(&bound);
    let content_path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}");

    // Its first look on this replica, as when it starts leading: the store is not asked.
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert!(driver.calls.lock().unwrap().is_empty());

    // The next: asked, and missing.
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Bound", "still bound to its content: {status}");
    let ready = &status["status"]["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"], &ready["reason"]),
        (&json!("Ready"), &json!("False"), &json!("BucketMissing"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("the store at http://s3.example:8333 has no bucket {backend} ")), "{message}");
    assert!(message.contains("restore the bucket at the store"), "{message}");
    assert_eq!(condition_types(&status), ["Ready", "Stalled", "CredentialsScoped"], "kept: {status}");
    let stalled = &status["status"]["conditions"][1];
    assert_eq!((&stalled["status"], &stalled["reason"]), (&json!("True"), &json!("BucketMissing")), "{status}");
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!((reason.as_str(), note.as_str()), ("BucketMissing", message));
    assert_eq!(finish(reconciling).await.unwrap(), Action::requeue(looks::while_missing(plan::RECHECK_INTERVAL)));
    assert_eq!(*driver.calls.lock().unwrap(), [format!("has {backend}")], "not made again");
    assert!(ctx.metrics.encode().contains("bucketgate_buckets_missing{provisioner=\"seaweed\"} 1\n"));

    // Still missing five minutes on: asked again, nothing written or said again.
    let mut missing = shown.clone();
    json_patch::merge(&mut missing, &status);
    let reported: Bucket = serde_json::from_value(missing.clone()).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(reported.clone()), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    assert_eq!(finish(reconciling).await.unwrap(), Action::requeue(looks::while_missing(plan::RECHECK_INTERVAL)));

    // Said missing by a bucketgate before Stalled: written again for it, not said again.
    let mut before = missing.clone();
    before["status"]["conditions"].as_array_mut().unwrap().retain(|c| c["type"] != "Stalled");
    let said_before: Bucket = serde_json::from_value(before.clone()).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(said_before), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let status = expect_bucket_status(&mut api, before).await;
    assert_eq!(condition_types(&status), ["Ready", "Stalled", "CredentialsScoped"], "{status}");
    assert_eq!(finish(reconciling).await.unwrap(), Action::requeue(looks::while_missing(plan::RECHECK_INTERVAL)));

    // Put back at the store; a replica that has not seen the Bucket before asks too.
    let (ctx, mut api) = context_asking_the_store(Arc::new(FakeDriver::default()));
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(reported), ctx.clone()));
    api.expect("GET", &content_path, Reply::Json(content)).await;
    expect_provisioner_secret(&mut api).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret)).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos", Reply::Json(missing.clone())).await;
    let status = expect_bucket_status(&mut api, missing).await;
    let ready = &status["status"]["conditions"][0];
    assert_eq!((&ready["status"], &ready["reason"]), (&json!("True"), &json!("Bound")), "{status}");
    assert_eq!(condition_types(&status), ["Ready", "CredentialsScoped"], "no longer stalled: {status}");
    assert_eq!(expect_event(&mut api).await, ("BucketFound".into(), format!("the store has bucket {backend} again")));
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert!(ctx.metrics.encode().contains("bucketgate_buckets_missing{provisioner=\"seaweed\"} 0\n"));
}

/// A store that cannot be asked at a look says nothing of the bucket: the Bucket stays
/// Ready, and the store is asked again at the next look.
#[tokio::test]
async fn a_store_that_cannot_be_asked_leaves_a_bound_bucket_as_it_was() {
    let unreachable = DriverError::Transient("connection refused".into());
    let driver = Arc::new(FakeDriver { has_error: Some(unreachable), ..Default::default() });
    let (ctx, mut api) = context_asking_the_store(driver.clone());
    let (shown, content, secret) = bound_greenfield();
    let bound: Bucket = serde_json::from_value(shown).unwrap();
    let content_path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}");
    for look in 0..3 {
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
        api.expect("GET", &content_path, Reply::Json(content.clone())).await;
        if look > 0 {
            expect_provisioner_secret(&mut api).await;
        }
        api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
        assert_eq!(finish(reconciling).await.unwrap(), next_look());
    }
    assert_eq!(driver.calls.lock().unwrap().len(), 2, "asked at each look after the first");
}

/// Versioning suspended at the store, outside Kubernetes, on a bucket whose class asked
/// for it: the Bucket's timed look turns it on again and says so. A Bucket sharing that
/// content does not: the bucket was made for another Bucket, whose look sees to it.
#[tokio::test]
async fn what_the_class_asked_of_a_bucket_is_set_again_where_the_store_lost_it() {
    let driver = Arc::new(FakeDriver { restored: vec!["versioning"], ..Default::default() });
    let (ctx, mut api) = context_asking_the_store(driver.clone());
    let (shown, _, secret) = bound_greenfield();
    let bound: Bucket = serde_json::from_value(shown).unwrap();
    let backend = plan::backend_bucket_name(&bound);
    let mut content = content_asking(&bound, json!({"versioning": "Enabled"}));
    content["status"] = json!({"phase": "Bound"});
    let content_path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}");
    for look in 0..2 {
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(bound.clone()), ctx.clone()));
        api.expect("GET", &content_path, Reply::Json(content.clone())).await;
        if look > 0 {
            expect_provisioner_secret(&mut api).await;
            let (reason, note) = expect_event(&mut api).await;
            assert_eq!(reason, "OptionsRestored");
            assert!(
                note.starts_with(&format!(
                    "the store no longer had what the class parameters versioning asked of bucket {backend} "
                )),
                "{note}"
            );
        }
        api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
        assert_eq!(finish(reconciling).await.unwrap(), next_look());
    }
    let asked = BucketOptions { versioning: true, ..Default::default() };
    let tags = format!(
        "cosi.io/namespace=team-a,cosi.io/bucket=photos,cosi.io/bucketcontent={CONTENT},cosi.io/bucketclass=ceph"
    );
    assert_eq!(
        *driver.calls.lock().unwrap(),
        [format!("has {backend}"), format!("restore {backend} {asked:?}"), format!("restore tags {backend} {tags}")],
        "and its tags are put back where they went"
    );

    let mut sharing = serde_json::to_value(&bound).unwrap();
    sharing["metadata"]["uid"] = json!("another-uid");
    sharing["spec"] = json!({"protocol": "s3", "bucketContentName": CONTENT});
    content["spec"]["bindableNamespaces"] = json!([{"name": "team-a", "uid": "u"}]);
    content["status"]["keyHolders"] = json!({"another-uid": "team-a/photos"});
    let sharing: Bucket = serde_json::from_value(sharing).unwrap();
    let mut secret = secret;
    secret["metadata"]["ownerReferences"][0]["uid"] = json!("another-uid");
    driver.calls.lock().unwrap().clear();
    for look in 0..2 {
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(sharing.clone()), ctx.clone()));
        api.expect("GET", &content_path, Reply::Json(content.clone())).await;
        api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("u"))).await;
        if look > 0 {
            expect_provisioner_secret(&mut api).await;
        }
        api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::Json(secret.clone())).await;
        finish(reconciling).await.unwrap();
    }
    assert_eq!(*driver.calls.lock().unwrap(), [format!("has {backend}")], "asked whether it is there, no more");
}

#[tokio::test]
async fn buckets_of_provisioners_without_a_driver_are_left_to_their_controller() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context(driver.clone());
    let mut other = class();
    other["provisioner"] = json!("other.example.com/s3");
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target.clone()), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::NotFound).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketclasses/ceph", Reply::Json(other)).await;
    finish(reconciling).await.unwrap();

    // Nor released by this loop: its controller removes the finalizer.
    let mut deleting = target;
    deleting.metadata.deletion_timestamp = now();
    let mut theirs = serde_json::to_value(content_for(&deleting)).unwrap();
    theirs["spec"]["provisioner"] = json!("other.example.com/s3");
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(deleting), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(theirs)).await;
    finish(reconciling).await.unwrap();
    assert!(driver.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_finalizer_is_added_beside_the_others() {
    let (ctx, mut api) = context(Arc::new(FakeDriver::default()));
    let mut target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    target.metadata.finalizers = Some(vec!["example.com/backup".into()]);
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target.clone()), ctx));
    let patch = api
        .expect(
            "PATCH",
            "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos",
            Reply::MergeInto(serde_json::to_value(&target).unwrap()),
        )
        .await;
    assert_eq!(patch["metadata"]["finalizers"], json!(["example.com/backup", "cosi.io/finalizer"]));
    finish(reconciling).await.unwrap();
}

#[tokio::test]
async fn a_secret_the_bucket_does_not_own_is_never_overwritten() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut content =
        serde_json::to_value(content_for(&bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}))))
            .unwrap();
    content["status"] = json!({"phase": "Bound"});
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph", "secretName": "taken"}), json!({}));
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    let foreign =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken", "namespace": "team-a"}, "data": {}});
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/taken", Reply::Json(foreign.clone())).await;
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["conditions"][0]["reason"], "SecretConflict");
    assert_eq!(condition_types(&status), ["Ready", "Stalled"], "only a change of someone's frees it: {status}");
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "SecretConflict");
    assert!(note.contains("Secret taken exists and is not owned by this Bucket"), "{note}");
    finish(reconciling).await.unwrap();
    let calls = driver.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| !c.starts_with("grant")), "{calls:?}");

    // Looked at again, the Secret still there: its status, which says so, is not written
    // again. (Without Events: the recorder would patch the first one as a series.)
    let mut said = shown;
    json_patch::merge(&mut said, &status);
    let (ctx, mut api) = context(driver.clone());
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(serde_json::from_value(said).unwrap()), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/taken", Reply::Json(foreign)).await;
    finish(reconciling).await.unwrap();
}

#[tokio::test]
async fn backend_failures_mark_the_content_retrying() {
    let driver = Arc::new(FakeDriver {
        create_error: Some(DriverError::Transient("connection refused".into())),
        ..Default::default()
    });
    let (ctx, mut api) = context_with_events(driver.clone());
    let content =
        serde_json::to_value(content_for(&bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}))))
            .unwrap();
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let recorded = expect_content_status(&mut api, &serde_json::from_value(content.clone()).unwrap()).await;
    assert_eq!(
        (&recorded["status"]["phase"], &recorded["status"]["message"]),
        (&json!("Retrying"), &json!("connection refused"))
    );
    // `kubectl wait --for=condition=Ready` waits on, and kstatus reads it as in progress.
    assert_eq!(condition_types(&recorded), ["Ready", "Reconciling"], "{recorded}");
    for condition in recorded["status"]["conditions"].as_array().unwrap() {
        assert_eq!((&condition["reason"], &condition["message"]), (&json!("Retrying"), &json!("connection refused")));
    }
    assert_eq!(recorded["status"]["conditions"][0]["status"], "False");
    let event = expect_event_on(&mut api, "default", CONTENT).await;
    assert_eq!(event, ("BackendFailed".into(), "connection refused".into()));
    // And on the Bucket, where its user looks.
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["conditions"][0]["reason"], "Retrying");
    // kstatus (Flux, kpt) reads it as in progress: the loop goes on by itself.
    assert_eq!(condition_types(&status), ["Ready", "Reconciling"], "{status}");
    assert_eq!(status["status"]["conditions"][1]["reason"], "Retrying");
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(expect_event(&mut api).await, ("Retrying".into(), "backend: connection refused".into()));
    let error = finish(reconciling).await.unwrap_err();
    assert!(matches!(error, Error::Driver(DriverError::Transient(_))) && !error.is_permanent());
    assert_eq!(ctx.metrics.reconcile_count("Bucket", "retry"), 1);
    assert_eq!(ctx.metrics.backend_count("seaweed", "create_bucket", "transient"), 1);
    assert_eq!(bound_count(&ctx), 0);

    // The next retry meets the same failure: said again in Events, and neither status is
    // written again (a store down for an hour would have every one written at each retry).
    let (mut content, mut target) = (content, shown);
    json_patch::merge(&mut content, &recorded);
    json_patch::merge(&mut target, &status);
    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling =
        tokio::spawn(super::reconcile_bucket(Arc::new(serde_json::from_value(target).unwrap()), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    expect_provisioner_secret(&mut api).await;
    assert_eq!(expect_event_on(&mut api, "default", CONTENT).await.0, "BackendFailed");
    assert_eq!(expect_event(&mut api).await.0, "Retrying");
    finish(reconciling).await.unwrap_err();
}

/// The class's provisioner Secret is not there yet (GitOps or External Secrets writes it a
/// moment after the Bucket): the Bucket is Pending, in progress for kstatus, says which
/// Secret it waits for, and is looked at again within seconds, not in five minutes; the
/// Secret there, the bucket is made.
#[tokio::test]
async fn a_provisioner_secret_not_there_yet_is_waited_for_and_the_bucket_goes_on_once_it_comes() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let content = serde_json::to_value(content_for(&target)).unwrap();
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target.clone()), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    let secret = "/api/v1/namespaces/bucketgate-system/secrets/team-a-admin";
    api.expect("GET", secret, Reply::NotFound).await;
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Pending", "not Failed: nothing is wrong but the wait");
    // kstatus (Flux's health checks) reads it as in progress, not as stalled.
    assert_eq!(condition_types(&status), ["Ready", "Reconciling"], "{status}");
    let message = "the provisioner Secret bucketgate-system/team-a-admin does not exist; looked for again, at \
                   growing intervals up to 5 minutes, until it does";
    for condition in status["status"]["conditions"].as_array().unwrap() {
        assert_eq!(
            (&condition["reason"], &condition["message"]),
            (&json!("ProvisionerSecretMissing"), &json!(message))
        );
    }
    assert_eq!(expect_event(&mut api).await, ("ProvisionerSecretMissing".into(), message.into()));
    let error = finish(reconciling).await.unwrap_err();
    assert!(matches!(error, Error::ProvisionerSecretMissing(_)) && !error.is_permanent(), "{error:?}");
    assert_eq!(ctx.metrics.reconcile_count("Bucket", "retry"), 1);
    // Looked for again in a second, then two, four ...: not the five minutes of a failure
    // that waits on someone.
    let waited = Arc::new(target.clone());
    assert_eq!(
        super::bucket_error_policy(waited.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(super::bucket_error_policy(waited, &error, ctx.clone()), Action::requeue(Duration::from_secs(2)));
    assert!(driver.calls.lock().unwrap().is_empty(), "the store is not asked without the key");

    // The Secret comes: the next look makes the bucket.
    let mut waiting = shown;
    json_patch::merge(&mut waiting, &status);
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(serde_json::from_value(waiting).unwrap()), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    expect_provisioner_secret(&mut api).await;
    // What follows the bucket's creation is the greenfield scenario above; the API server
    // goes away here.
    drop(api);
    finish(reconciling).await.unwrap_err();
    let made = format!("create {}", plan::backend_name(&content_for(&target)));
    assert_eq!(driver.calls.lock().unwrap().first(), Some(&made));
}

/// A greenfield content made from a class with `parameters` (the test class's, and these).
fn content_asking(target: &Bucket, parameters: Value) -> Value {
    let mut asking = class();
    for (key, value) in parameters.as_object().unwrap() {
        asking["parameters"][key] = value.clone();
    }
    let content = plan::greenfield_content(target, &serde_json::from_value(asking).unwrap(), "u").unwrap();
    serde_json::to_value(content).unwrap()
}

#[tokio::test]
async fn what_the_class_asks_of_each_bucket_is_asked_of_the_store() {
    let driver =
        Arc::new(FakeDriver { create_error: Some(DriverError::Transient("slow".into())), ..Default::default() });
    let (ctx, mut api) = context(driver.clone());
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let content = content_asking(
        &target,
        json!({"objectLock": "Enabled", "objectLockRetentionMode": "GOVERNANCE", "objectLockRetentionDays": "7",
            "expirationDays": "400", "abortIncompleteMultipartUploadDays": "3"}),
    );
    let backend = plan::backend_bucket_name(&target);
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    expect_content_status(&mut api, &serde_json::from_value(content).unwrap()).await;
    finish(reconciling).await.unwrap_err();
    let retention = Some(Retention { mode: RetentionMode::Governance, days: 7 });
    let options = BucketOptions {
        versioning: true,
        object_lock: true,
        retention,
        expiration_days: Some(400),
        abort_uploads_days: Some(3),
        encryption: None,
    };
    assert_eq!(*driver.calls.lock().unwrap(), [format!("create {backend} {options:?}")]);
}

/// A class made while the webhook was away, asking what no store can do: its content fails,
/// saying what to fix, and no bucket is made without what the class promised.
#[tokio::test]
async fn class_parameters_no_store_can_carry_out_fail_the_content_before_the_store_is_asked() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context(driver.clone());
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let content = content_asking(&target, json!({"versioning": "true"}));
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    let status = expect_content_status(&mut api, &serde_json::from_value(content).unwrap()).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["message"].as_str().unwrap();
    assert!(message.contains(r#"versioning is "true": write Enabled or Disabled"#), "{message}");
    let error = finish(reconciling).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(driver.calls.lock().unwrap().is_empty(), "{:?}", driver.calls.lock().unwrap());
}

/// A class made before admission checked its provisioner-Secret parameters fails in the
/// loop with admission's words, before any Secret is looked for, as one asking what no
/// store can do fails: on its content, every problem at once.
#[tokio::test]
async fn provisioner_secret_parameters_are_judged_again_before_use() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context(driver.clone());
    let mut typo = class();
    typo["parameters"]["cosi.io/provisioner-secret-name"] = json!("${pvc.name}");
    typo["parameters"]["versioning"] = json!("on");
    let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let content = plan::greenfield_content(&target, &serde_json::from_value(typo.clone()).unwrap(), "u").unwrap();
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(json!(content))).await;
    let status = expect_content_status(&mut api, &content).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#""${pvc.name}" is not replaced"#) && message.contains(r#"versioning is "on""#),
        "{message}"
    );
    assert!(
        message.ends_with(
            "delete this Bucket and create it again: its BucketContent keeps the parameters it was made with"
        ),
        "{message}"
    );
    let error = finish(reconciling).await.unwrap_err();
    assert!(error.is_permanent() && error.to_string().contains(r#""${pvc.name}" is not replaced"#), "{error}");
    assert!(driver.calls.lock().unwrap().is_empty(), "{:?}", driver.calls.lock().unwrap());
}

/// A content whose provisioner Secret a Bucket's name would choose, made before admission
/// refused such contents, is not bound by a Bucket made while the webhook was away: it
/// fails saying the fix, and no Secret is read nor store asked.
#[tokio::test]
async fn a_content_whose_secret_a_bucket_would_choose_is_not_bound_anew() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut shared = managed_legacy();
    shared["spec"]["parameters"] = json!({"cosi.io/provisioner-secret-name": "${bucket.name}",
        "cosi.io/provisioner-secret-namespace": "bucketgate-system"});
    let target = bucket(json!({"protocol": "s3", "bucketContentName": "legacy"}), json!({}));
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared)).await;
    let status = expect_bucket_status(&mut api, shown).await;
    assert_eq!(status["status"]["phase"], "Failed", "{status}");
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "Failed");
    assert!(note.contains("BucketContent legacy: parameters cosi.io/provisioner-secret-name"), "{note}");
    assert!(note.contains("whoever names a Bucket would choose which Secret"), "{note}");
    let error = finish(reconciling).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(driver.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn binding_from_a_recreated_namespace_is_refused_again_here() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let shared = legacy("old-uid");
    let target = bucket(json!({"protocol": "s3", "bucketContentName": "legacy"}), json!({}));
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared)).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("new-uid"))).await;
    let status = expect_bucket_status(&mut api, shown).await;
    assert_eq!(status["status"]["phase"], "Failed", "retrying cannot help");
    // kstatus reads it as failed: a GitOps sync stops waiting on it, and says why.
    assert_eq!(condition_types(&status), ["Ready", "Stalled"], "{status}");
    let stalled = &status["status"]["conditions"][1];
    assert!(stalled["message"].as_str().unwrap().contains("(uid new-uid) is not in spec.bindableNamespaces"));
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "Failed");
    assert!(note.contains("(uid new-uid) is not in spec.bindableNamespaces of BucketContent legacy"), "{note}");
    let error = finish(reconciling).await.unwrap_err();
    assert_eq!(ctx.metrics.reconcile_count("Bucket", "failed"), 1);
    assert!(
        error.is_permanent() && error.to_string().contains("(uid new-uid) is not in spec.bindableNamespaces"),
        "{error}"
    );
    assert!(driver.calls.lock().unwrap().is_empty());
}

/// Names no object can have are never put into a request's path (kube does not escape
/// them): such a Bucket, made while the webhook was away, fails saying which name, and its
/// deletion asks for no content.
#[tokio::test]
async fn names_no_object_can_have_are_not_asked_for() {
    let names = [
        ("bucketContentName", "legacy-logs?watch=true", "contains '?'"),
        ("bucketClassName", "x/../../../api/v1/secrets", "contains '/'"),
        ("secretName", "Photos", "contains 'P'"),
    ];
    for (field, name, problem) in names {
        let driver = Arc::new(FakeDriver::default());
        let (ctx, mut api) = context_with_events(driver.clone());
        let mut spec = json!({"protocol": "s3", "bucketClassName": "ceph"});
        spec[field] = json!(name);
        let target = bucket(spec, json!({}));
        let shown = serde_json::to_value(&target).unwrap();
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target.clone()), ctx.clone()));
        let status = expect_bucket_status(&mut api, shown.clone()).await;
        assert_eq!(status["status"]["phase"], "Failed", "{field}: retrying cannot help");
        let (reason, note) = expect_event(&mut api).await;
        assert_eq!(reason, "Failed");
        let said = format!("spec.{field} {name:?} {problem}");
        assert!(note.starts_with(&said) && note.contains("delete this Bucket and create it again"), "{note}");
        assert!(finish(reconciling).await.unwrap_err().is_permanent());

        if field != "bucketContentName" {
            continue;
        }
        let mut deleting = target;
        deleting.metadata.deletion_timestamp = now();
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(deleting), ctx));
        expect_let_go(&mut api, shown, reconciling).await;
        assert!(driver.calls.lock().unwrap().is_empty());
    }
}

/// bindableNamespaces is a tenancy boundary for Buckets bound already too: taking their
/// namespace off revokes their key, and listing it again does not bring a dead key back.
#[tokio::test]
async fn a_namespace_taken_off_a_shared_content_loses_its_key_and_does_not_bind_again() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    // team-a already taken off.
    let mut shared = managed_legacy();
    shared["spec"]["bindableNamespaces"] = json!([{"name": "team-b", "uid": "b-uid"}]);
    shared["status"]["keyHolders"] = json!({UID: "team-a/photos", "other-uid": "team-b/photos"});
    let conditions = json!([
        {"type": "Ready", "status": "True", "reason": "Bound", "message": "bound to legacy", "lastTransitionTime": "2026-11-22T10:00:01Z"},
        {"type": "CredentialsScoped", "status": "True", "reason": "BucketUser", "message": "scoped", "lastTransitionTime": "2026-11-22T10:00:01Z"},
    ]);
    let target = bucket(
        json!({"protocol": "s3", "bucketContentName": "legacy"}),
        json!({"bucketContentName": "legacy", "phase": "Bound", "conditions": conditions}),
    );
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    expect_provisioner_secret(&mut api).await;
    let path = "/apis/cosi.io/v1alpha1/bucketcontents/legacy/status";
    let forgotten = api.expect("PATCH", path, Reply::MergeInto(shared.clone())).await;
    assert_eq!(forgotten, json!({"status": {"keyHolders": {UID: null}}}), "its key is no longer recorded");
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let ready = &status["status"]["conditions"][0];
    assert_eq!((&ready["type"], &ready["reason"]), (&json!("Ready"), &json!("AccessRevoked")));
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("namespace team-a was removed from spec.bindableNamespaces of BucketContent legacy")
            && message.contains("its key was revoked at the store"),
        "{message}"
    );
    assert_eq!(
        condition_types(&status),
        ["Ready", "Stalled", "AccessRevoked", "CredentialsScoped"],
        "the other conditions stay"
    );
    assert_eq!(expect_event(&mut api).await.0, "AccessRevoked");
    let error = finish(reconciling).await.unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(*driver.calls.lock().unwrap(), [format!("revoke {UID}")]);
    // Its status did not record the revocation when it was looked at: looked at again.
    let looked_at: Bucket = serde_json::from_value(shown.clone()).unwrap();
    let action = super::bucket_error_policy(Arc::new(looked_at), &error, ctx.clone());
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));

    // Looked at again, still not listed: revoked already, so the store is not asked again,
    // and its status, which says so, is not written again.
    // (Without Events from here: the recorder would patch the first one as a series.)
    let (ctx, mut api) = context(driver.clone());
    let mut revoked = shown;
    json_patch::merge(&mut revoked, &status);
    let reconciling =
        tokio::spawn(super::reconcile_bucket(Arc::new(serde_json::from_value(revoked.clone()).unwrap()), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    let error = finish(reconciling).await.unwrap_err();
    assert_eq!(driver.calls.lock().unwrap().len(), 1);
    // Recorded now: it waits for its deletion rather than being looked at every 5 minutes.
    let looked_at: Bucket = serde_json::from_value(revoked.clone()).unwrap();
    assert_eq!(super::bucket_error_policy(Arc::new(looked_at), &error, ctx.clone()), Action::await_change());

    // A look that fails on the way (the namespace read answered 404): Ready says Retrying,
    // and the revocation is kept.
    let reconciling =
        tokio::spawn(super::reconcile_bucket(Arc::new(serde_json::from_value(revoked.clone()).unwrap()), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::NotFound).await;
    let blip = expect_bucket_status(&mut api, revoked.clone()).await;
    assert_eq!(blip["status"]["conditions"][0]["reason"], "Retrying");
    assert_eq!(
        condition_types(&blip),
        ["Ready", "Stalled", "AccessRevoked", "CredentialsScoped"],
        "still stalled: {blip}"
    );
    assert!(finish(reconciling).await.is_err());
    json_patch::merge(&mut revoked, &blip);

    // Listed again: the Secret still holds the revoked key, so the Bucket stays Failed.
    shared["spec"]["bindableNamespaces"] = json!([{"name": "team-a", "uid": "ns-uid"}]);
    let reconciling =
        tokio::spawn(super::reconcile_bucket(Arc::new(serde_json::from_value(revoked.clone()).unwrap()), ctx));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared)).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    let status = expect_bucket_status(&mut api, revoked).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("the namespace is listed again, but this Bucket does not bind again"), "{message}");
    assert!(finish(reconciling).await.is_err());
    assert_eq!(driver.calls.lock().unwrap().len(), 1, "no new grant, no second revoke");
}

/// A key made for a Bucket on a content not made for it is recorded on the content before
/// the Secret holding it is written (so that, were the Bucket to go unreleased, the key is
/// found), recorded for a Bucket bound before records were kept, and taken off once the
/// Bucket's release has revoked it.
#[tokio::test]
async fn a_key_on_a_content_not_made_for_its_bucket_is_recorded_there_until_revoked() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let shared = managed_legacy();
    let content_status = "/apis/cosi.io/v1alpha1/bucketcontents/legacy/status";
    let secret_path = "/api/v1/namespaces/team-a/secrets/photos";
    let target = bucket(json!({"protocol": "s3", "bucketContentName": "legacy"}), json!({}));
    let shown = serde_json::to_value(&target).unwrap();
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx.clone()));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    api.expect("GET", secret_path, Reply::NotFound).await;
    expect_provisioner_secret(&mut api).await;
    let recorded = api.expect("PATCH", content_status, Reply::MergeInto(shared.clone())).await;
    assert_eq!(recorded, json!({"status": {"keyHolders": {UID: "team-a/photos"}}}));
    let mut secret = api.expect("POST", "/api/v1/namespaces/team-a/secrets", Reply::Echo).await;
    assert_eq!(expect_event(&mut api).await.0, "CredentialsIssued");
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Bound");
    assert_eq!(expect_event(&mut api).await.0, "Bound");
    finish(reconciling).await.unwrap();
    assert_eq!(*driver.calls.lock().unwrap(), [format!("grant legacy {UID} ReadWrite")]);

    // Bound before keys were recorded: recorded at its next look, without a new key.
    let (ctx, mut api) = context(driver.clone());
    let mut bound = shown;
    json_patch::merge(&mut bound, &status);
    secret["metadata"]["namespace"] = json!("team-a");
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(serde_json::from_value(bound.clone()).unwrap()), ctx));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    api.expect("GET", secret_path, Reply::Json(secret)).await;
    assert_eq!(api.expect("PATCH", content_status, Reply::MergeInto(shared.clone())).await, recorded);
    assert_eq!(finish(reconciling).await.unwrap(), next_look());
    assert_eq!(driver.calls.lock().unwrap().len(), 1, "no new key");

    // Released: revoked, then the record taken off; the content, not made for it, stays.
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut holding = shared;
    json_patch::merge(&mut holding, &recorded);
    let mut deleting: Bucket = serde_json::from_value(bound.clone()).unwrap();
    deleting.metadata.deletion_timestamp = now();
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(deleting), ctx));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(holding.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let forgotten = api.expect("PATCH", content_status, Reply::MergeInto(holding)).await;
    assert_eq!(forgotten, json!({"status": {"keyHolders": {UID: null}}}));
    expect_let_go(&mut api, bound, reconciling).await;
    assert_eq!(driver.calls.lock().unwrap()[1..], [format!("revoke {UID}")]);
}

/// A key recorded for a Bucket the watch cache no longer has is revoked only on the API
/// server's word: a Bucket still there, a record taken off meanwhile, or a content an admin
/// asked to be released without its store leave it; a Bucket gone, or made again under its
/// name (another uid), has its key revoked, the record taken off, and a Warning on the
/// content. The content itself stays as it was.
#[tokio::test]
async fn a_key_left_by_a_bucket_gone_unreleased_is_revoked_only_on_the_api_servers_word() {
    let mut content = managed_legacy();
    content["status"]["keyHolders"] = json!({"gone-uid": "team-a/old", "bad": "not a bucket"});
    let cached: Arc<BucketContent> = Arc::new(serde_json::from_value(content.clone()).unwrap());
    let here = HashSet::from([UID.to_string()]);
    let left = plan::gone_unreleased([&cached], &here);
    let holder = plan::KeyHolder { uid: "gone-uid".into(), namespace: "team-a".into(), name: "old".into() };
    let found: Vec<_> = left.iter().map(|(_, holder, held)| (holder, *held)).collect();
    assert_eq!(found, [(&holder, plan::Held::Recorded)], "the bad record is passed over");
    let bucket_path = "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/old";
    let content_path = "/apis/cosi.io/v1alpha1/bucketcontents/legacy";
    let revoke = |ctx: Arc<Context>| {
        let (cached, holder) = (cached.clone(), holder.clone());
        tokio::spawn(
            async move { reconcile::release_gone(&cached, &holder, plan::Held::Recorded, &ctx).await.unwrap() },
        )
    };
    let mut old =
        serde_json::to_value(bucket(json!({"protocol": "s3", "bucketContentName": "legacy"}), json!({}))).unwrap();
    old["metadata"]["name"] = json!("old");
    old["metadata"]["uid"] = json!("gone-uid");
    let mut forgotten = content.clone();
    forgotten["status"]["keyHolders"] = json!({});
    let mut forced = content.clone();
    forced["metadata"]["annotations"] = json!({"cosi.io/force-release": "true"});

    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context(driver.clone());
    let looking = revoke(ctx.clone());
    api.expect("GET", bucket_path, Reply::Json(old.clone())).await;
    assert!(!finish(looking).await, "the cache was behind: the Bucket is there");
    for current in [forgotten, forced] {
        let looking = revoke(ctx.clone());
        api.expect("GET", bucket_path, Reply::NotFound).await;
        api.expect("GET", content_path, Reply::Json(current)).await;
        assert!(!finish(looking).await);
    }
    assert!(driver.calls.lock().unwrap().is_empty());

    let mut made_again = old;
    made_again["metadata"]["uid"] = json!("another-uid");
    for bucket_now in [Reply::NotFound, Reply::Json(made_again)] {
        let driver = Arc::new(FakeDriver::default());
        let (ctx, mut api) = context_with_events(driver.clone());
        let looking = revoke(ctx);
        api.expect("GET", bucket_path, bucket_now).await;
        api.expect("GET", content_path, Reply::Json(content.clone())).await;
        expect_provisioner_secret(&mut api).await;
        let patch = api.expect("PATCH", &format!("{content_path}/status"), Reply::MergeInto(content.clone())).await;
        assert_eq!(patch, json!({"status": {"keyHolders": {"gone-uid": null}}}), "only the record");
        let (reason, note) = expect_event_on(&mut api, "default", "legacy").await;
        assert_eq!(reason, "KeyRevoked");
        assert!(note.starts_with("Bucket team-a/old went without being released"), "{note}");
        assert!(finish(looking).await);
        assert_eq!(*driver.calls.lock().unwrap(), ["revoke gone-uid"]);
    }
}

/// A content deleted once no Bucket binds it revokes the keys still recorded on it (their
/// Buckets went unreleased before a sweep found them), unless asked to be released without
/// its store.
#[tokio::test]
async fn a_deleted_content_revokes_the_keys_still_recorded_on_it() {
    let list = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketList", "metadata": {}, "items": []});
    let by = |field: &str| format!("/apis/cosi.io/v1alpha1/buckets?&fieldSelector={field}.bucketContentName%3Dlegacy");
    for forced in [false, true] {
        let driver = Arc::new(FakeDriver::default());
        let (ctx, mut api) = context(driver.clone());
        let mut content = managed_legacy();
        content["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
        content["metadata"]["finalizers"] = json!(["cosi.io/finalizer"]);
        content["status"]["keyHolders"] = json!({"gone-uid": "team-a/old"});
        if forced {
            content["metadata"]["annotations"] = json!({"cosi.io/force-release": "true"});
        }
        let reconciling =
            tokio::spawn(reconcile::content(Arc::new(serde_json::from_value(content.clone()).unwrap()), ctx));
        api.expect("GET", &by("spec"), Reply::Json(list.clone())).await;
        api.expect("GET", &by("status"), Reply::Json(list.clone())).await;
        if !forced {
            expect_provisioner_secret(&mut api).await;
        }
        let patch =
            api.expect("PATCH", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::MergeInto(content)).await;
        assert_eq!(patch["metadata"]["finalizers"], json!([]));
        finish(reconciling).await.unwrap();
        let revoked: &[&str] = if forced { &[] } else { &["revoke gone-uid"] };
        assert_eq!(*driver.calls.lock().unwrap(), revoked, "Retain: no deletion");
    }
}

/// A sweep says how many keys of Buckets gone unreleased it could not revoke, by
/// provisioner (`bucketgate_unrevoked_keys`, and its alert): each is tried again at the next.
#[tokio::test]
async fn a_sweep_counts_the_keys_it_could_not_revoke() {
    let unreachable = Some(DriverError::Transient("the store does not answer".into()));
    let driver = Arc::new(FakeDriver { revoke_error: unreachable, ..Default::default() });
    let (ctx, mut api) = context(driver.clone());
    let mut content = managed_legacy();
    content["status"]["keyHolders"] = json!({"gone-uid": "team-a/old"});
    let catalog = Catalog::from_objects([], [serde_json::from_value(content.clone()).unwrap()], []);
    let sweeping = tokio::spawn(async move { super::sweep(&ctx, &catalog.contents_store(), &HashSet::new()).await });
    api.expect("GET", "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/old", Reply::NotFound).await;
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(content)).await;
    expect_provisioner_secret(&mut api).await;
    assert_eq!(finish(sweeping).await, BTreeMap::from([("seaweed".to_string(), 1)]));
    assert_eq!(*driver.calls.lock().unwrap(), ["revoke gone-uid"], "the record stays for the next sweep");
}

#[tokio::test]
async fn a_content_being_deleted_or_released_is_not_bound_but_keeps_what_it_bound_before() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut shared = legacy("ns-uid");
    shared["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
    shared["metadata"]["finalizers"] = json!(["cosi.io/finalizer"]);
    // Released, its Bucket gone: not bound again either.
    let mut released = shared.clone();
    released["metadata"].as_object_mut().unwrap().remove("deletionTimestamp");
    released["status"] = json!({"phase": "Released"});
    let refusals = [
        (
            shared.clone(),
            "ContentDeleting",
            "BucketContent \"legacy\" is being deleted, so it cannot be bound: ask its owner whether it stays, or \
             bind another",
        ),
        (
            released,
            "ContentReleased",
            "BucketContent \"legacy\" was released when the Bucket it was made for was deleted, and is not bound \
             again: to use its bucket, ask a cluster admin for a BucketContent without a provisioner that names the \
             bucket (releasePolicy: Retain)",
        ),
    ];
    for (content, reason, note) in refusals {
        let target = bucket(json!({"protocol": "s3", "bucketContentName": "legacy"}), json!({}));
        let shown = serde_json::to_value(&target).unwrap();
        let reconciling = tokio::spawn(reconcile::bucket(Arc::new(target), ctx.clone()));
        api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(content)).await;
        let status = expect_bucket_status(&mut api, shown).await;
        assert_eq!(status["status"]["phase"], "Pending");
        assert_eq!(status["status"]["conditions"][0]["reason"], reason);
        assert_eq!(expect_event(&mut api).await, (reason.to_string(), note.to_string()));
        finish(reconciling).await.unwrap();
    }

    // Bound before the deletion began: it stays bound (the deletion waits for it), and the
    // reconcile goes on to check the namespace as usual.
    let bound = bucket(
        json!({"protocol": "s3", "bucketContentName": "legacy"}),
        json!({"bucketContentName": "legacy", "phase": "Bound"}),
    );
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(bound), ctx));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(shared)).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::NotFound).await;
    assert!(finish(reconciling).await.is_err(), "the missing namespace ends this reconcile");
    assert!(driver.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deleting_a_bucket_revokes_its_key_and_deletes_its_content() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let owner = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Bound"}),
    );
    let mut content = serde_json::to_value(content_for(&owner)).unwrap();
    // Where the provisioner points, written another way: the key is revoked there.
    content["spec"]["protocol"]["s3"]["endpoint"] = json!("HTTP://s3.example:8333/");
    let mut deleting = owner.clone();
    deleting.metadata.deletion_timestamp = now();
    let reconciling = tokio::spawn(reconcile::bucket(Arc::new(deleting), ctx));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    api.expect("DELETE", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    assert_eq!(expect_event(&mut api).await, ("Released".into(), "released; removing the finalizer".into()));
    let patch = api
        .expect(
            "PATCH",
            "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos",
            Reply::Json(serde_json::to_value(&owner).unwrap()),
        )
        .await;
    assert_eq!(patch["metadata"]["finalizers"], json!([]));
    assert_eq!(patch["metadata"]["resourceVersion"], "5", "a stale object cannot drop a finalizer");
    finish(reconciling).await.unwrap();
    assert_eq!(*driver.calls.lock().unwrap(), [format!("revoke {UID}")]);
}

/// A content whose Bucket the watch cache no longer has is released only on the API
/// server's word: a Bucket still there (the cache behind), or a content released meanwhile,
/// is left alone; a Bucket gone, or made again under its name (another uid), has the old
/// Bucket's key revoked and the content marked Released, its data kept.
#[tokio::test]
async fn a_content_whose_bucket_went_unreleased_is_released_only_on_the_api_servers_word() {
    let owner = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Bound"}),
    );
    let mut content = serde_json::to_value(content_for(&owner)).unwrap();
    content["status"] = json!({"phase": "Bound"});
    let cached: BucketContent = serde_json::from_value(content.clone()).unwrap();
    let bucket_path = "/apis/cosi.io/v1alpha1/namespaces/team-a/buckets/photos";
    let content_path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}");
    let holder = plan::bound_owner(&cached).unwrap();
    let release = |ctx: Arc<Context>| {
        let (cached, holder) = (cached.clone(), holder.clone());
        tokio::spawn(async move { reconcile::release_gone(&cached, &holder, plan::Held::Owner, &ctx).await.unwrap() })
    };
    let mut released_meanwhile = content.clone();
    released_meanwhile["status"]["phase"] = json!("Released");
    let mut made_again = serde_json::to_value(&owner).unwrap();
    made_again["metadata"]["uid"] = json!("another-uid");

    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context(driver.clone());
    let looking = release(ctx.clone());
    api.expect("GET", bucket_path, Reply::Json(serde_json::to_value(&owner).unwrap())).await;
    assert!(!finish(looking).await, "the cache was behind: the Bucket is there");
    let looking = release(ctx.clone());
    api.expect("GET", bucket_path, Reply::NotFound).await;
    api.expect("GET", &content_path, Reply::Json(released_meanwhile)).await;
    assert!(!finish(looking).await, "released meanwhile");
    assert!(driver.calls.lock().unwrap().is_empty());

    for bucket_now in [Reply::NotFound, Reply::Json(made_again)] {
        let driver = Arc::new(FakeDriver::default());
        let (ctx, mut api) = context_with_events(driver.clone());
        let looking = release(ctx);
        api.expect("GET", bucket_path, bucket_now).await;
        api.expect("GET", &content_path, Reply::Json(content.clone())).await;
        expect_provisioner_secret(&mut api).await;
        let status = api.expect("PATCH", &format!("{content_path}/status"), Reply::MergeInto(content.clone())).await;
        assert_eq!(status["status"]["phase"], "Released");
        let (reason, note) = expect_event_on(&mut api, "default", CONTENT).await;
        assert_eq!(reason, "BucketGone");
        assert!(note.starts_with("Bucket team-a/photos went without being released"), "{note}");
        assert!(finish(looking).await);
        assert_eq!(*driver.calls.lock().unwrap(), [format!("revoke {UID}")], "no deletion");
    }
}

/// A Bucket whose content was removed by hand under it is released, but its own key, which
/// nothing says where to revoke any more, is named in a Warning rather than left unseen.
#[tokio::test]
async fn a_key_that_cannot_be_revoked_for_want_of_its_content_is_said() {
    for scoped in [true, false] {
        let driver = Arc::new(FakeDriver::default());
        let (ctx, mut api) = context_with_events(driver.clone());
        let condition = plan::condition(&[], "CredentialsScoped", scoped, "BucketUser", "its own key", Some(1));
        let mut deleting = bucket(
            json!({"protocol": "s3", "bucketClassName": "ceph"}),
            json!({"bucketContentName": CONTENT, "phase": "Bound", "conditions": [condition]}),
        );
        deleting.metadata.deletion_timestamp = now();
        let shown = serde_json::to_value(&deleting).unwrap();
        let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(deleting), ctx));
        api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::NotFound).await;
        if scoped {
            let (reason, note) = expect_event(&mut api).await;
            assert_eq!(reason, "KeyNotRevoked");
            assert!(note.starts_with(&format!("BucketContent {CONTENT} is gone")), "{note}");
            assert!(note.ends_with(&format!("IAM user bucketgate-{UID})")), "{note}");
        }
        expect_let_go(&mut api, shown, reconciling).await;
        assert!(driver.calls.lock().unwrap().is_empty());
    }
}

/// A Bucket whose release fails keeps its finalizer and its phase, and its Events say what
/// its deletion waits on: otherwise it would only stay Terminating, saying nothing.
#[tokio::test]
async fn a_failing_release_says_what_the_deletion_waits_on() {
    let driver = Arc::new(FakeDriver {
        revoke_error: Some(DriverError::Transient("connection refused".into())),
        ..Default::default()
    });
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut deleting = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Bound"}),
    );
    deleting.metadata.deletion_timestamp = now();
    let content = serde_json::to_value(content_for(&deleting)).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(deleting), ctx.clone()));
    api.expect("GET", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), Reply::Json(content)).await;
    expect_provisioner_secret(&mut api).await;
    assert_eq!(
        expect_event(&mut api).await,
        ("ReleaseFailed".into(), "the deletion waits: backend: connection refused".into())
    );
    let error = finish(reconciling).await.unwrap_err();
    assert!(matches!(error, Error::Driver(DriverError::Transient(_))), "{error}");
    assert_eq!(*driver.calls.lock().unwrap(), [format!("revoke {UID}")]);
}

/// The same for a BucketContent whose bucket cannot be deleted for want of the provisioner's
/// Secret: not the store's failure, which its status would show, so an Event says it.
#[tokio::test]
async fn a_content_whose_release_fails_says_what_its_deletion_waits_on() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut content = content_for(&bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({})));
    content.metadata.deletion_timestamp = now();
    let list = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketList", "metadata": {}, "items": []});
    let by =
        |field: &str| format!("/apis/cosi.io/v1alpha1/buckets?&fieldSelector={field}.bucketContentName%3D{CONTENT}");
    let reconciling = tokio::spawn(super::reconcile_content(Arc::new(content), ctx.clone()));
    api.expect("GET", &by("spec"), Reply::Json(list.clone())).await;
    api.expect("GET", &by("status"), Reply::Json(list)).await;
    api.expect("GET", "/api/v1/namespaces/bucketgate-system/secrets/team-a-admin", Reply::NotFound).await;
    let (reason, note) = expect_event_on(&mut api, "default", CONTENT).await;
    assert_eq!(reason, "ReleaseFailed");
    assert!(note.starts_with("the deletion waits: ") && note.contains("team-a-admin"), "{note}");
    assert!(finish(reconciling).await.is_err());
    assert!(driver.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_deleted_content_waits_for_bound_buckets_then_deletes_the_bucket() {
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let owner = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let mut content = content_for(&owner);
    content.metadata.deletion_timestamp = now();
    let backend = plan::backend_bucket_name(&owner);
    let sharer = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "reader", "namespace": "team-b"},
        "spec": {"protocol": "s3", "bucketContentName": CONTENT}});
    let list = |items: Vec<Value>| json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketList", "metadata": {}, "items": items});

    let by =
        |field: &str| format!("/apis/cosi.io/v1alpha1/buckets?&fieldSelector={field}.bucketContentName%3D{CONTENT}");

    let reconciling = tokio::spawn(reconcile::content(Arc::new(content.clone()), ctx.clone()));
    api.expect("GET", &by("spec"), Reply::Json(list(vec![sharer.clone()]))).await;
    api.expect("GET", &by("status"), Reply::Json(list(vec![]))).await;
    let waiting = "deletion waits for the Buckets bound to it: team-b/reader";
    assert_eq!(expect_content_status(&mut api, &content).await["status"]["message"], waiting);
    finish(reconciling).await.unwrap();
    assert!(driver.calls.lock().unwrap().is_empty(), "the bucket stays while a Bucket is bound");

    // An API server without selectable fields for custom resources refuses the selector:
    // every Bucket is read instead, and those bound to the content still hold it.
    let reconciling = tokio::spawn(reconcile::content(Arc::new(content.clone()), ctx.clone()));
    api.expect("GET", &by("spec"), Reply::BadRequest).await;
    let unbound = serde_json::to_value(bucket(json!({"protocol": "s3"}), json!({}))).unwrap();
    api.expect("GET", "/apis/cosi.io/v1alpha1/buckets?", Reply::Json(list(vec![sharer, unbound]))).await;
    assert_eq!(expect_content_status(&mut api, &content).await["status"]["message"], waiting);
    finish(reconciling).await.unwrap();

    let reconciling = tokio::spawn(reconcile::content(Arc::new(content.clone()), ctx));
    api.expect("GET", &by("spec"), Reply::Json(list(vec![]))).await;
    api.expect("GET", &by("status"), Reply::Json(list(vec![]))).await;
    expect_provisioner_secret(&mut api).await;
    let (reason, note) = expect_event_on(&mut api, "default", CONTENT).await;
    assert_eq!((reason.as_str(), note), ("BucketDeleted", format!("deleted bucket {backend} and its objects")));
    let patch = api
        .expect(
            "PATCH",
            &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"),
            Reply::MergeInto(serde_json::to_value(&content).unwrap()),
        )
        .await;
    assert_eq!(patch["metadata"]["finalizers"], json!([]));
    finish(reconciling).await.unwrap();
    assert_eq!(*driver.calls.lock().unwrap(), [format!("delete {backend}")]);
}

/// A bucket to delete that the store does not have is taken for deleted where it was made.
/// Where its content records another endpoint than its provisioner's now, it is not: the
/// content fails, saying where the bucket is, rather than leaving it and its data behind
/// with no record of them.
#[tokio::test]
async fn a_bucket_not_found_where_it_was_not_made_is_not_taken_for_deleted() {
    let driver = Arc::new(FakeDriver { no_such_bucket: true, ..Default::default() });
    let (ctx, mut api) = context_with_events(driver.clone());
    let owner = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({}));
    let mut content = content_for(&owner);
    content.metadata.deletion_timestamp = now();
    let backend = plan::backend_bucket_name(&owner);
    let list = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketList", "metadata": {}, "items": []});
    let by =
        |field: &str| format!("/apis/cosi.io/v1alpha1/buckets?&fieldSelector={field}.bucketContentName%3D{CONTENT}");
    // The provisioner's endpoint in test_config, as recorded (with a slash), and another.
    for (recorded, moved) in [("http://s3.example:8333/", false), ("http://old-store:8333", true)] {
        content.spec.protocol.s3.as_mut().unwrap().endpoint = Some(recorded.into());
        let reconciling = tokio::spawn(reconcile::content(Arc::new(content.clone()), ctx.clone()));
        api.expect("GET", &by("spec"), Reply::Json(list.clone())).await;
        api.expect("GET", &by("status"), Reply::Json(list.clone())).await;
        expect_provisioner_secret(&mut api).await;
        if moved {
            let status = expect_content_status(&mut api, &content).await;
            assert_eq!(status["status"]["phase"], "Failed");
            let message = status["status"]["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("bucket {backend} is not at http://s3.example:8333")), "{message}");
            assert!(message.contains("records it at http://old-store:8333"), "{message}");
            assert!(message.contains("cosi.io/force-release=true"), "{message}");
            assert_eq!(expect_event_on(&mut api, "default", CONTENT).await.0, "BackendFailed");
            assert!(finish(reconciling).await.is_err(), "the finalizer stays");
        } else {
            let (reason, note) = expect_event_on(&mut api, "default", CONTENT).await;
            assert_eq!((reason.as_str(), note), ("BucketDeleted", format!("bucket {backend} was gone already")));
            let merged = Reply::MergeInto(serde_json::to_value(&content).unwrap());
            let patch = api.expect("PATCH", &format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}"), merged).await;
            assert_eq!(patch["metadata"]["finalizers"], json!([]));
            finish(reconciling).await.unwrap();
        }
    }
}

/// A key is made or revoked only at a store that has the bucket: were the provisioner
/// pointed at another store since the content recorded where its bucket is, a key made
/// there would not reach the bucket, and a revocation there would leave the key where the
/// bucket is working after its Bucket is gone or its namespace taken off. The Bucket says
/// why, and what to do. A store that has it is the same store under another address.
#[tokio::test]
async fn a_key_is_neither_made_nor_revoked_where_its_bucket_is_not() {
    let moved = |mut content: Value| {
        content["spec"]["protocol"]["s3"]["endpoint"] = json!("http://old-store:8333");
        content["status"] = json!({"phase": "Bound"});
        content
    };
    let greenfield = bucket(
        json!({"protocol": "s3", "bucketClassName": "ceph"}),
        json!({"bucketContentName": CONTENT, "phase": "Bound"}),
    );
    let backend = plan::backend_bucket_name(&greenfield);
    let content = moved(serde_json::to_value(content_for(&greenfield)).unwrap());
    let content_path = format!("/apis/cosi.io/v1alpha1/bucketcontents/{CONTENT}");
    let says_where = |message: &str| {
        assert!(
            message.contains("it is not at http://s3.example:8333, where provisioner seaweed now points"),
            "{message}"
        );
        assert!(message.contains("records it at http://old-store:8333"), "{message}");
        assert!(message.contains("Point the provisioner back at http://old-store:8333"), "{message}");
        assert!(message.contains("set spec.protocol.s3.endpoint of BucketContent"), "{message}");
    };

    // Its Secret deleted: no new key at the store the provisioner points at now.
    let driver = Arc::new(FakeDriver { no_such_bucket: true, ..Default::default() });
    let (ctx, mut api) = context_with_events(driver.clone());
    let shown = serde_json::to_value(&greenfield).unwrap();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(greenfield.clone()), ctx));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::NotFound).await;
    expect_provisioner_secret(&mut api).await;
    let status = expect_bucket_status(&mut api, shown.clone()).await;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("no key can be made for bucket {backend}: ")), "{message}");
    says_where(message);
    assert_eq!(expect_event(&mut api).await.0, "Failed");
    assert!(finish(reconciling).await.unwrap_err().is_permanent());

    // Deleted: the deletion waits rather than revoke nothing, and says how it may go on.
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut deleting = greenfield.clone();
    deleting.metadata.deletion_timestamp = now();
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(deleting), ctx));
    api.expect("GET", &content_path, Reply::Json(content.clone())).await;
    expect_provisioner_secret(&mut api).await;
    let (reason, note) = expect_event(&mut api).await;
    assert_eq!(reason, "ReleaseFailed");
    assert!(note.starts_with("the deletion waits: this Bucket's key cannot be revoked from bucket"), "{note}");
    says_where(&note);
    assert!(note.contains("annotate the Bucket cosi.io/force-release=true"), "{note}");
    assert!(finish(reconciling).await.is_err(), "the finalizer stays");

    // Its namespace taken off a shared content: nor is its key taken for revoked.
    let (ctx, mut api) = context_with_events(driver.clone());
    let mut shared = legacy("ns-uid");
    shared["spec"]["provisioner"] = json!("seaweed");
    shared["spec"]["parameters"] = class()["parameters"].clone();
    shared["spec"]["bindableNamespaces"] = json!([]);
    let sharer = bucket(
        json!({"protocol": "s3", "bucketContentName": "legacy"}),
        json!({"bucketContentName": "legacy", "phase": "Bound"}),
    );
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(sharer.clone()), ctx));
    api.expect("GET", "/apis/cosi.io/v1alpha1/bucketcontents/legacy", Reply::Json(moved(shared))).await;
    api.expect("GET", "/api/v1/namespaces/team-a", Reply::Json(namespace("ns-uid"))).await;
    expect_provisioner_secret(&mut api).await;
    let status = expect_bucket_status(&mut api, serde_json::to_value(&sharer).unwrap()).await;
    assert_eq!(status["status"]["phase"], "Failed");
    assert_eq!(status["status"]["conditions"][0]["reason"], "Failed", "not AccessRevoked: the key still works");
    let message = status["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("this Bucket's key cannot be revoked from bucket legacy: "), "{message}");
    assert!(!message.contains("force-release"), "{message}");
    assert_eq!(expect_event(&mut api).await.0, "Failed");
    assert!(finish(reconciling).await.unwrap_err().is_permanent());
    let asked: Vec<String> = [&backend, &backend, "legacy"].iter().map(|b| format!("has {b}")).collect();
    assert_eq!(*driver.calls.lock().unwrap(), asked, "the store asked, and nothing granted or revoked");

    // A store that has the bucket: the same store under another address. The Secret keeps
    // the address the content records, where its workloads reach the bucket.
    let driver = Arc::new(FakeDriver::default());
    let (ctx, mut api) = context_with_events(driver.clone());
    let reconciling = tokio::spawn(super::reconcile_bucket(Arc::new(greenfield), ctx));
    api.expect("GET", &content_path, Reply::Json(content)).await;
    api.expect("GET", "/api/v1/namespaces/team-a/secrets/photos", Reply::NotFound).await;
    expect_provisioner_secret(&mut api).await;
    let secret = api.expect("POST", "/api/v1/namespaces/team-a/secrets", Reply::Echo).await;
    let recorded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "http://old-store:8333");
    assert_eq!(secret["data"]["AWS_ENDPOINT_URL"], recorded.as_str(), "{secret}");
    assert_eq!(expect_event(&mut api).await.0, "CredentialsIssued");
    assert_eq!(expect_bucket_status(&mut api, shown).await["status"]["phase"], "Bound");
    finish(reconciling).await.unwrap();
    assert_eq!(*driver.calls.lock().unwrap(), [format!("has {backend}"), format!("grant {backend} {UID} ReadWrite")]);
}

/// What the mock API server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    accept: String,
    body: Value,
}

impl Seen {
    fn watches(&self, path: &str) -> bool {
        self.method == "GET" && self.uri.starts_with(&format!("{path}?")) && self.uri.contains("watch=true")
    }
}

/// The API server as the leader's controllers meet it: lists answered from `buckets` (the
/// only kind with objects), every watch held open until the test answers it (an answered
/// watch has ended, and the watcher starts another), a Bucket's status patch merged into
/// it, anything else NotFound.
#[derive(Default)]
struct Cluster {
    seen: Mutex<Vec<Seen>>,
    held: Mutex<Vec<(String, tower_test::mock::SendResponse<Response<Body>>)>>,
    /// The one Lease, `bucketgate-provisioner`, once created.
    lease: Mutex<Option<Value>>,
    /// Paths answered 403 Forbidden, as where RBAC lacks a grant.
    forbidden: Mutex<Vec<String>>,
    /// Reads of objects whose path starts with one of these are held, as watches are,
    /// until the test answers them.
    slow: Mutex<Vec<String>>,
}

impl Cluster {
    /// A client of this API server, which holds `buckets`.
    fn start(self: &Arc<Self>, buckets: Vec<Value>) -> Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(self.clone().serve(handle, buckets));
        Client::new(service, "default")
    }

    async fn serve(
        self: Arc<Self>,
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        buckets: Vec<Value>,
    ) {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let path = request.uri().path().to_string();
            let accept = request.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = request.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.seen.lock().unwrap().push(Seen {
                method: method.clone(),
                uri: uri.clone(),
                accept,
                body: body.clone(),
            });
            let verb = rbac_request(&method, &uri).2;
            if self.forbidden.lock().unwrap().contains(&path) {
                send.send_response(failure(StatusCode::FORBIDDEN, "Forbidden", &format!("{path} is forbidden")));
                continue;
            }
            if path.contains("/leases") && verb != "watch" {
                send.send_response(self.lease_reply(&verb, &body));
                continue;
            }
            let slow = verb == "get" && self.slow.lock().unwrap().iter().any(|prefix| path.starts_with(prefix));
            let reply = match verb.as_str() {
                "watch" => {
                    self.held.lock().unwrap().push((path, send));
                    continue;
                }
                _ if slow => {
                    self.held.lock().unwrap().push((path, send));
                    continue;
                }
                "list" => {
                    let items = if path == "/apis/cosi.io/v1alpha1/buckets" { buckets.clone() } else { vec![] };
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
                }
                "patch" if path.ends_with("/buckets/photos/status") => {
                    let mut bucket = buckets[0].clone();
                    json_patch::merge(&mut bucket, &body);
                    bucket
                }
                _ => {
                    send.send_response(failure(StatusCode::NOT_FOUND, "NotFound", "not found"));
                    continue;
                }
            };
            send.send_response(Response::new(Body::from(serde_json::to_vec(&reply).unwrap())));
        }
    }

    /// The Lease's side: get, create and patch (a merge stands in for the strategic merge
    /// and apply patches the lease manager sends, which set and clear flat fields).
    fn lease_reply(&self, verb: &str, body: &Value) -> Response<Body> {
        let mut lease = self.lease.lock().unwrap();
        match (verb, lease.as_mut()) {
            ("create", None) => {
                let mut created = body.clone();
                created["metadata"]["namespace"] = "bucketgate-system".into();
                created["metadata"]["resourceVersion"] = "1".into();
                *lease = Some(created);
            }
            ("patch", Some(current)) => json_patch::merge(current, body),
            ("get", Some(_)) => {}
            ("list", current) => {
                let items: Vec<Value> = current.iter().map(|lease| (*lease).clone()).collect();
                let list =
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items});
                return Response::new(Body::from(serde_json::to_vec(&list).unwrap()));
            }
            _ => return failure(StatusCode::NOT_FOUND, "NotFound", "not found"),
        }
        Response::new(Body::from(serde_json::to_vec(lease.as_ref().unwrap()).unwrap()))
    }

    fn lease_holder(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap();
        lease.as_ref().and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    }

    /// Waits until the requests seen so far satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        if !waited(|| done(&self.seen.lock().unwrap())).await {
            panic!("waited 5 s for {what}; the API server saw {:#?}", self.seen.lock().unwrap());
        }
    }

    /// Ends the open watch of `path` with these watch events.
    /// Answers the held reads under `prefix`: NotFound.
    fn not_found(&self, prefix: &str) {
        let mut held = self.held.lock().unwrap();
        for (_, send) in held.extract_if(.., |(path, _)| path.starts_with(prefix)) {
            send.send_response(failure(StatusCode::NOT_FOUND, "NotFound", "not found"));
        }
    }

    fn deliver(&self, path: &str, events: &[Value]) {
        let mut held = self.held.lock().unwrap();
        let at = held.iter().position(|(p, _)| p == path).unwrap_or_else(|| panic!("no open watch of {path}"));
        let (_, send) = held.remove(at);
        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
        send.send_response(Response::new(Body::from(lines.into_bytes())));
    }
}

/// A new leader is handed every Bucket at once; it asks about no more of a store's at a
/// time than its bound, goes on to the others as those end, and meanwhile the Buckets of
/// another store are not held up behind them.
#[tokio::test]
async fn a_leader_reconciles_no_more_buckets_of_a_store_at_once_than_its_bound() {
    let cluster = Arc::new(Cluster::default());
    let shared = "/apis/cosi.io/v1alpha1/bucketcontents/shared-";
    let far = "/apis/cosi.io/v1alpha1/bucketcontents/far";
    cluster.slow.lock().unwrap().extend([shared.to_string(), far.to_string()]);
    let binding = |i: usize, content: String| {
        let mut b = bucket(json!({"protocol": "s3", "bucketContentName": content}), json!({}));
        b.metadata.name = Some(format!("photos-{i}"));
        b.metadata.uid = Some(format!("uid-{i}"));
        serde_json::to_value(b).unwrap()
    };
    // Five Buckets of contents the catalog does not know, one of another provisioner's.
    let mut buckets: Vec<Value> = (0..5).map(|i| binding(i, format!("shared-{i}"))).collect();
    buckets.push(binding(5, "far".into()));
    let client = cluster.start(buckets);
    let mut elsewhere = content_for(&bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}), json!({})));
    elsewhere.metadata.name = Some("far".into());
    elsewhere.spec.provisioner = Some("elsewhere".into());
    let catalog = Catalog::from_objects([], [elsewhere], []);
    let ctx = context_for(client, Arc::default(), false);
    let controllers = tokio::spawn(run_controllers(ctx.clone(), catalog, 2));

    let asked =
        |seen: &[Seen], path: &str| seen.iter().filter(|s| s.method == "GET" && s.uri.starts_with(path)).count();
    let waits = "two Buckets to look for their contents, and the other store's for its own";
    cluster.wait_for(waits, |seen| asked(seen, shared) == 2 && asked(seen, far) == 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(asked(&cluster.seen.lock().unwrap(), shared), 2, "more than the bound at once");
    // What `bucketgate_provisioning_reconciles_in_progress` shows.
    let turns = |provisioner: &str, state| {
        let labels = crate::metrics::TurnLabels { provisioner: provisioner.into(), state };
        ctx.metrics.reconcile_turns.get_or_create(&labels).get()
    };
    assert_eq!((turns("", "in_flight"), turns("", "waiting")), (2, 3));
    assert_eq!((turns("elsewhere", "in_flight"), turns("elsewhere", "waiting")), (1, 0));
    // Those two end (their contents are not found): two more begin.
    cluster.not_found(shared);
    cluster.wait_for("two more Buckets to look for theirs", |seen| asked(seen, shared) == 4).await;
    controllers.abort();
}

#[tokio::test]
async fn the_leader_watches_each_kind_once_and_a_content_wakes_what_waits_on_it() {
    let waiting = bucket(json!({"protocol": "s3", "bucketContentName": "shared"}), json!({}));
    let cluster = Arc::new(Cluster::default());
    let client = cluster.start(vec![serde_json::to_value(&waiting).unwrap()]);
    // As `serve` runs them: the admission catalog on every replica, the controllers on the
    // leader, fed by the catalog's BucketContents and BucketClasses.
    let (catalog, watches) = Catalog::watch(client.clone());
    let catalog_watches = tokio::spawn(watches);
    let ctx = context_for(client, Arc::default(), false);
    let controllers = tokio::spawn(run_controllers(ctx.clone(), catalog, 32));

    let content_path = "/apis/cosi.io/v1alpha1/bucketcontents/shared";
    let looked_up = |seen: &[Seen]| seen.iter().filter(|s| s.method == "GET" && s.uri == content_path).count();
    cluster.wait_for("the listed Bucket to look for its content", |seen| looked_up(seen) == 1).await;
    // (path, by metadata only, how many watches): the loop's Buckets and Secrets (it holds
    // no credentials it does not need: those it wrote, and the provisioner Secrets an admin
    // labelled), the catalog's Bucket names, contents, classes and namespaces.
    let watched = [
        ("/apis/cosi.io/v1alpha1/buckets", false, 1),
        ("/api/v1/secrets", true, 2),
        ("/apis/cosi.io/v1alpha1/buckets", true, 1),
        ("/apis/cosi.io/v1alpha1/bucketcontents", false, 1),
        ("/apis/cosi.io/v1alpha1/bucketclasses", false, 1),
        ("/api/v1/namespaces", true, 1),
    ];
    let watching = |seen: &[Seen], (path, metadata, _): (&str, bool, usize)| -> usize {
        seen.iter().filter(|s| s.watches(path) && s.accept.contains("as=PartialObjectMetadata") == metadata).count()
    };
    cluster.wait_for("a watch of each kind", |seen| watched.iter().all(|w| watching(seen, *w) == w.2)).await;
    // Time for a second watch of a kind, had one been opened.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let seen = cluster.seen.lock().unwrap().clone();
    for w in watched {
        assert_eq!(watching(&seen, w), w.2, "{w:?} watched {} times: {seen:#?}", watching(&seen, w));
    }
    let all_watches = seen.iter().filter(|s| s.uri.contains("watch=true")).count();
    assert_eq!(all_watches, watched.iter().map(|w| w.2).sum::<usize>(), "no other watch: {seen:#?}");
    let selecting = |label: &str| format!("labelSelector={}&", label.replace('/', "%2F"));
    let mut selectors: Vec<String> = seen
        .iter()
        .filter(|s| s.watches("/api/v1/secrets"))
        .map(|s| {
            [plan::BUCKET_NAME_LABEL, plan::PROVISIONER_SECRET_LABEL]
                .into_iter()
                .filter(|l| s.uri.contains(&selecting(l)))
                .collect()
        })
        .collect();
    selectors.sort();
    assert_eq!(selectors, ["cosi.io/bucket-name", "cosi.io/provisioner-secret"], "only Secrets so labelled: {seen:#?}");

    // The content appears, being deleted: the Bucket waiting on it looks again at once (its
    // next retry is 30 s away), and the content controller, fed by the same watch, finds
    // the Bucket that holds its deletion. Another content, not being deleted, comes first:
    // the content controller, which acts only on deletions, is not given it.
    let mut other = content_for(&waiting);
    other.metadata.name = Some("other".into());
    other.metadata.resource_version = Some("2".into());
    let mut shared = content_for(&waiting);
    shared.metadata.name = Some("shared".into());
    shared.metadata.resource_version = Some("3".into());
    shared.metadata.deletion_timestamp = now();
    shared.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]);
    cluster.deliver(
        "/apis/cosi.io/v1alpha1/bucketcontents",
        &[
            json!({"type": "ADDED", "object": serde_json::to_value(&other).unwrap()}),
            json!({"type": "ADDED", "object": serde_json::to_value(&shared).unwrap()}),
        ],
    );
    cluster.wait_for("the Bucket to look for its content again", |seen| looked_up(seen) == 2).await;
    let status_path = format!("{content_path}/status");
    cluster
        .wait_for("the content's deletion to wait for the Bucket", |seen| {
            seen.iter().any(|s| {
                s.method == "PATCH"
                    && s.uri.trim_end_matches('?') == status_path
                    && s.body["status"]["message"].as_str().is_some_and(|m| m.contains("team-a/photos"))
            })
        })
        .await;
    controllers.abort();
    catalog_watches.abort();
    // The one reconcile of a content is the deletion's, which the mock API server refuses
    // to record (it has no such content): a retry, and no success.
    assert_eq!(ctx.metrics.reconcile_count("BucketContent", "success"), 0, "a content not being deleted was queued");
    assert!(ctx.metrics.reconcile_count("BucketContent", "retry") >= 1);

    for request in cluster.seen.lock().unwrap().iter() {
        assert!(
            allowed_by_rbac(&request.method, &request.uri),
            "RBAC does not allow {} {}",
            request.method,
            request.uri
        );
    }
}

/// A catalog with nothing in it, for the loop's tests that need no content or class.
fn empty_catalog() -> Catalog {
    Catalog::from_objects(Vec::new(), Vec::new(), Vec::new())
}

/// Waits up to 5 s for `done`; whether it came. The caller asserts what it waited for.
async fn waited(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

fn test_replica(identity: &str) -> Replica {
    Replica {
        lease_namespace: "bucketgate-system".into(),
        identity: identity.into(),
        max_concurrent_reconciles: 32,
        recheck_interval: plan::RECHECK_INTERVAL,
    }
}

/// One replica's leader election and loop, as `bucketgate serve` runs it.
fn replica(
    client: Client,
    identity: &str,
    metrics: &Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run(client, empty_catalog(), test_config(), test_replica(identity), metrics.clone(), shutdown))
}

#[tokio::test]
async fn shutting_down_stops_the_loop_and_releases_the_lease() {
    let cluster = Arc::new(Cluster::default());
    let client = cluster.start(vec![]);
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let running = replica(client, "replica-a", &metrics, shutdown);

    cluster
        .wait_for("the loop to lead and watch Buckets", |seen| {
            seen.iter().any(|s| s.watches("/apis/cosi.io/v1alpha1/buckets"))
        })
        .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"));
    assert_eq!((metrics.provisioning_enabled.get(), metrics.leader.get()), (1, 1));

    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), running).await;
    stopped.expect("the loop stops at once on shutdown").unwrap().unwrap();
    assert_eq!(cluster.lease_holder(), None, "released, not left to expire: {:?}", cluster.lease.lock().unwrap());
    assert_eq!((metrics.provisioning_enabled.get(), metrics.leader.get()), (1, 0));
}

/// An admin edits the configuration: the loop starts again with it, and stops where it has
/// no driver left to run.
#[tokio::test]
async fn a_new_configuration_starts_the_loop_again_with_it() {
    let cluster = Arc::new(Cluster::default());
    let client = cluster.start(vec![]);
    let metrics = Arc::new(Metrics::default());
    let (configs, watched) = tokio::sync::watch::channel(Arc::new(Config::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running =
        tokio::spawn(supervise(client, empty_catalog(), watched, test_replica("replica-a"), metrics.clone(), async {
            let _ = stopped.await;
        }));
    let bucket_watches = |seen: &[Seen]| seen.iter().filter(|s| s.watches("/apis/cosi.io/v1alpha1/buckets")).count();

    // No driver configured: admission only, nothing runs for the Lease.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(cluster.seen.lock().unwrap().is_empty(), "{:#?}", cluster.seen.lock().unwrap());
    assert_eq!((metrics.provisioning_enabled.get(), metrics.leader.get()), (0, 0));

    configs.send_replace(Arc::new(test_config()));
    cluster.wait_for("the loop to lead and watch Buckets", |seen| bucket_watches(seen) == 1).await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"));
    assert_eq!((metrics.provisioning_enabled.get(), metrics.leader.get()), (1, 1));

    // A provisioner served at admission only changes nothing the loop reads: it runs on.
    configs.send_replace(Arc::new(test_config().with_provisioners(["other.example/bucket".to_string()])));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(bucket_watches(&cluster.seen.lock().unwrap()), 1, "not started again");
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"));

    // Another endpoint: the Lease is released and taken again, the watches opened anew.
    let mut moved = test_config();
    moved.provisioners[0].s3.as_mut().unwrap().endpoint = "http://s3.example:9000".into();
    configs.send_replace(Arc::new(moved));
    cluster.wait_for("the loop to start again", |seen| bucket_watches(seen) == 2).await;
    let releases = cluster
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            s.method == "PATCH"
                && s.uri.contains("/leases/")
                && s.body["spec"].get("holderIdentity") == Some(&Value::Null)
        })
        .count();
    assert_eq!(releases, 1, "released once, between the two runs: {:#?}", cluster.seen.lock().unwrap());
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"));

    // The drivers taken out: the loop stops and lets the Lease go.
    configs.send_replace(Arc::new(Config::default().with_provisioners(["seaweed".to_string()])));
    waited(|| metrics.provisioning_enabled.get() == 0).await;
    assert_eq!((metrics.provisioning_enabled.get(), metrics.leader.get()), (0, 0));
    assert_eq!(cluster.lease_holder(), None);

    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), running).await;
    stopped.expect("shutdown stops the supervisor at once").unwrap().unwrap();
}

/// A rollout: the leader releases the Lease as it stops, and a follower, which had read it
/// renewed a moment before, takes it at once rather than when that reading would expire.
#[tokio::test]
async fn a_follower_takes_a_released_lease_at_once() {
    let cluster = Arc::new(Cluster::default());
    let renewed = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": "bucketgate-system", "resourceVersion": "1"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15, "acquireTime": renewed, "renewTime": renewed}});
    *cluster.lease.lock().unwrap() = Some(held.clone());
    let client = cluster.start(vec![]);
    let metrics = Arc::new(Metrics::default());
    let following = replica(client, "replica-b", &metrics, std::future::pending());
    let leases = "/apis/coordination.k8s.io/v1/namespaces/bucketgate-system/leases";
    cluster.wait_for("the follower to watch the Lease", |seen| seen.iter().any(|s| s.watches(leases))).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"), "a held Lease is left alone");
    assert_eq!(metrics.leader.get(), 0);

    // replica-a stops and releases it, as kube-lease-manager does.
    let release =
        json!({"spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null}});
    let mut released = held;
    json_patch::merge(&mut released, &release);
    released["metadata"]["resourceVersion"] = "2".into();
    *cluster.lease.lock().unwrap() = Some(released.clone());
    cluster.deliver(leases, &[json!({"type": "MODIFIED", "object": released})]);
    cluster
        .wait_for("the follower to lead (5 s, against the 15 s its last reading had left)", |seen| {
            seen.iter().any(|s| s.watches("/apis/cosi.io/v1alpha1/buckets"))
        })
        .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-b"));
    assert_eq!(metrics.leader.get(), 1);
    following.abort();

    let seen = cluster.seen.lock().unwrap().clone();
    let watch = seen.iter().find(|s| s.watches(leases)).unwrap();
    assert!(watch.uri.contains(&format!("fieldSelector=metadata.name%3D{LEASE}")), "only its own Lease: {}", watch.uri);
    for request in seen.iter().filter(|s| s.uri.contains("/leases")) {
        assert!(
            granted_by("Role", &request.method, &request.uri),
            "RBAC does not allow {} {}",
            request.method,
            request.uri
        );
    }
}

/// A replica that cannot read the Lease at first (the API server away, its Role not yet
/// granted) keeps trying, rather than answering admission without ever provisioning.
#[tokio::test]
async fn a_lease_that_cannot_be_read_at_first_is_tried_again() {
    let cluster = Arc::new(Cluster::default());
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/bucketgate-system/leases/{LEASE}");
    cluster.forbidden.lock().unwrap().push(lease.clone());
    let client = cluster.start(vec![]);
    let metrics = Arc::new(Metrics::default());
    let replica = replica(client, "replica-a", &metrics, std::future::pending());
    cluster.wait_for("a first try", |seen| seen.iter().any(|s| s.uri.starts_with(&lease))).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!replica.is_finished(), "the loop gave up: {:?}", replica.await);
    cluster.forbidden.lock().unwrap().clear();
    cluster
        .wait_for("the loop to lead once the Lease can be read", |seen| {
            seen.iter().any(|s| s.watches("/apis/cosi.io/v1alpha1/buckets"))
        })
        .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("replica-a"));
    replica.abort();
}

/// Lines logged on this thread while the returned guard lives.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(writer.clone())).finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_watch_the_loop_may_not_open_is_logged() {
    let (logs, _guard) = capture_logs();
    let cluster = Arc::new(Cluster::default());
    // One watch a controller opens itself, and the BucketContent watch of the catalog,
    // which feeds both controllers.
    let forbidden = [
        ("controller", "Bucket", "/api/v1/secrets"),
        ("kind", "BucketContent", "/apis/cosi.io/v1alpha1/bucketcontents"),
    ];
    cluster.forbidden.lock().unwrap().extend(forbidden.map(|(_, _, path)| path.to_string()));
    let client = cluster.start(vec![]);
    let (catalog, watches) = Catalog::watch(client.clone());
    let catalog_watches = tokio::spawn(watches);
    let controllers = tokio::spawn(run_controllers(context_for(client, Arc::default(), false), catalog, 32));

    let logged = || String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let line_for = |logged: &str, field: &str, kind: &str| {
        let field = format!("{field}=\"{kind}\"");
        logged.lines().find(|l| l.contains("watch failed") && l.contains(&field)).map(str::to_string)
    };
    waited(|| {
        let logged = logged();
        forbidden.iter().all(|(field, kind, _)| line_for(&logged, field, kind).is_some())
    })
    .await;
    controllers.abort();
    catalog_watches.abort();
    let logged = logged();
    for (field, kind, path) in forbidden {
        let line = line_for(&logged, field, kind).unwrap_or_else(|| panic!("{kind}: not logged:\n{logged}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&format!("{path} is forbidden")), "{line}");
    }
}

/// The loop's own writes to Buckets and BucketContents pass bucketgate's webhooks, built-in
/// rules and the example policies alike, sent as the API server would send them, and the
/// CRDs' CEL rules. The
/// end-to-end suite that would show it needs a kube-apiserver; without this, a rule that
/// refused one of them would leave Buckets stuck with the refusal as their only trace.
#[test]
fn the_loops_own_writes_pass_its_webhooks() {
    use crate::admission::{self, Kind};
    use crate::catalog::Catalog;
    use k8s_openapi::api::core::v1::Namespace;

    let class: BucketClass = serde_json::from_value(class()).unwrap();
    let team_a: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "team-a", "uid": "u", "labels": {"bucketgate.dev/tier": "gold"}}}),
    )
    .unwrap();
    // Made by a user within the example policies (a team label, a prefix of their pattern).
    let mut made = bucket(json!({"protocol": "s3", "bucketClassName": "ceph", "bucketPrefix": "photos-"}), json!({}));
    made.metadata.labels = Some([("team".to_string(), "gallery".to_string())].into());
    let content = content_for(&made);
    // The API server's answer for the loop's ServiceAccount, whose ClusterRole grants the verb
    // `release` (tests/manifests.rs holds it to that): it takes the finalizer off by right.
    let catalog = Catalog::with_buckets([class], [content.clone()], [team_a], [made.clone()])
        .with_fetched(crate::catalog::Fetched::release_answer(true));
    let config = test_config();
    let examples = crate::policy::load::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let loop_user = json!({"username": "system:serviceaccount:bucketgate-system:bucketgate",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:bucketgate-system", "system:authenticated"]});

    for policies in [crate::policy::PolicySet::default(), examples] {
        let ctx = admission::Context { catalog: &catalog, config: &config, policies: &policies };
        // Mutation, its patch applied, then validation, as the API server runs them; the
        // object as stored.
        let admitted = |what: &str, kind: Kind, operation: &str, old: Value, new: Value| -> Value {
            let namespace = new.pointer("/metadata/namespace").or(old.pointer("/metadata/namespace"));
            let namespace = namespace.and_then(Value::as_str).map(str::to_string);
            let some = |object: &Value| (!object.is_null()).then(|| object.clone());
            let chained = admission::chain(
                &ctx,
                kind,
                operation,
                namespace.as_deref(),
                loop_user.clone(),
                some(&new),
                some(&old),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(chained.allowed, "{what} ({} policies): refused: {}", policies.policies.len(), chained.message);
            let stored = chained.patched.unwrap_or(Value::Null);
            // Then the CRD's own rules, which the API server runs after the webhooks.
            if operation != "DELETE" {
                let old = (operation == "UPDATE").then_some(&old);
                let cel = match kind {
                    Kind::Bucket => crate::crds::cel::<Bucket>(&stored, old),
                    Kind::BucketContent => crate::crds::cel::<BucketContent>(&stored, old),
                    Kind::BucketClass => crate::crds::cel::<BucketClass>(&stored, old),
                };
                assert!(cel.is_ok(), "{what}: the CRD's rules refused it: {cel:?}");
            }
            stored
        };
        let merged = |object: &Value, patch: Value| {
            let mut object = object.clone();
            json_patch::merge(&mut object, &patch);
            object
        };

        // A Bucket made while the webhook was away gets the finalizer from the loop.
        let mut bare = serde_json::to_value(&made).unwrap();
        bare["metadata"]["finalizers"] = json!([]);
        let added = merged(&bare, plan::finalizer_added(&serde_json::from_value(bare["metadata"].clone()).unwrap()));
        admitted("the finalizer added", Kind::Bucket, "UPDATE", bare, added);

        // Greenfield: the content created, then what the store said written into it.
        let created = admitted(
            "the content created",
            Kind::BucketContent,
            "CREATE",
            Value::Null,
            serde_json::to_value(&content).unwrap(),
        );
        let recorded = plan::connection_recorded(&connection(plan::backend_name(&content)));
        let bound = admitted(
            "the connection recorded",
            Kind::BucketContent,
            "UPDATE",
            created.clone(),
            merged(&created, recorded),
        );
        let forced = plan::force_release_marked();
        admitted("a forced release marked", Kind::BucketContent, "UPDATE", bound.clone(), merged(&bound, forced));
        admitted("the content deleted", Kind::BucketContent, "DELETE", bound.clone(), Value::Null);

        // Deletion: the finalizers taken off, of a content and of a Bucket that no longer
        // meets a policy made after it (no team label).
        let deleting =
            |object: &Value| merged(object, json!({"metadata": {"deletionTimestamp": "2026-11-22T11:00:00Z"}}));
        let removed = |object: &Value| {
            merged(object, plan::finalizer_removed(&serde_json::from_value(object["metadata"].clone()).unwrap()))
        };
        let content_going = deleting(&bound);
        let released = removed(&content_going);
        admitted("the content's finalizer taken off", Kind::BucketContent, "UPDATE", content_going, released);
        let mut unlabelled = deleting(&serde_json::to_value(&made).unwrap());
        unlabelled["metadata"]["labels"] = json!({});
        let released = removed(&unlabelled);
        admitted("the Bucket's finalizer taken off", Kind::Bucket, "UPDATE", unlabelled, released);
    }
}

/// `bucketgate_buckets`: the leader's Buckets counted where they stand, by the provisioner
/// of their content or class; another deployment's provisioner's are left out.
#[test]
fn the_buckets_are_counted_by_provisioner_and_where_they_stand() {
    let named = |name: &str, spec: Value, status: Value| {
        let mut b = bucket(spec, status);
        b.metadata.name = Some(name.into());
        b
    };
    let ready = json!({"type": "Ready", "status": "True", "reason": "Bound", "message": "bound",
        "lastTransitionTime": "2026-11-24T10:00:00Z"});
    let missing = json!({"type": "Ready", "status": "False", "reason": "BucketMissing", "message": "gone",
        "lastTransitionTime": "2026-11-24T10:00:00Z"});
    let greenfield = json!({"protocol": "s3", "bucketClassName": "ceph"});
    let mut other_class: BucketClass = serde_json::from_value(class()).unwrap();
    other_class.metadata.name = Some("other".into());
    other_class.spec.provisioner = Some("elsewhere".into());
    let buckets = [
        named("a", greenfield.clone(), json!({"phase": "Bound", "conditions": [ready.clone()]})),
        named("b", greenfield.clone(), json!({"phase": "Bound", "conditions": [ready]})),
        named("c", greenfield.clone(), json!({"phase": "Bound", "conditions": [missing]})),
        named("d", greenfield, json!(null)),
        // Not this deployment's to drive.
        named("e", json!({"protocol": "s3", "bucketClassName": "other"}), json!(null)),
        // Its class not there yet: the loop's, under no provisioner.
        named("f", json!({"protocol": "s3", "bucketClassName": "later"}), json!(null)),
    ];
    let (store, mut writer) = reflector::store();
    for bucket in buckets {
        writer.apply_watcher_event(&watcher::Event::Apply(bucket));
    }
    let catalog = Catalog::from_objects([serde_json::from_value(class()).unwrap(), other_class], [], []);
    let counts = super::tally(store, catalog, test_config())();
    let count = |provisioner: &str, state, reason: &str| {
        let labels = BucketStateLabels { provisioner: provisioner.into(), state, reason: reason.into() };
        counts.get(&labels).copied()
    };
    assert_eq!(count("seaweed", "ready", "Bound"), Some(2));
    assert_eq!(count("seaweed", "stalled", "BucketMissing"), Some(1));
    assert_eq!(count("seaweed", "new", ""), Some(1));
    assert_eq!(count("", "new", ""), Some(1));
    assert_eq!(counts.len(), 4, "nothing of another provisioner's: {counts:?}");
}
