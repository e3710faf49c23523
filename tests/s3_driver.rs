//! The S3 driver against a real S3 server that checks signatures: SeaweedFS, started by
//! `bash scripts/test`, which exports BUCKETGATE_S3_ENDPOINT and its admin key.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::RuntimeComponents;
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use base64::Engine;
use md5::{Digest, Md5};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockMode, ObjectLockRetentionMode, Tag,
    Tagging, VersioningConfiguration,
};
use bucketgate::api::AccessMode;
use bucketgate::config::{EnvCredentials, IamSettings, S3Settings};
use bucketgate::driver::options::{Encryption, Retention, RetentionMode};
use bucketgate::driver::s3::{S3Driver, S3Drivers, http_client};
use bucketgate::driver::{BucketOptions, Credentials, Deletion, Driver, DriverError};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run these tests with bash scripts/test"))
}

fn settings(iam: bool) -> S3Settings {
    S3Settings {
        endpoint: env("BUCKETGATE_S3_ENDPOINT"),
        region: "us-east-1".into(),
        path_style: true,
        iam: iam.then(IamSettings::default),
        credentials_from_env: EnvCredentials::default(),
    }
}

/// With IAM, at most `bound` of its requests in flight.
fn iam_bounded(bound: usize) -> S3Settings {
    let iam = IamSettings { max_concurrent_requests: NonZeroUsize::new(bound), ..IamSettings::default() };
    S3Settings { iam: Some(iam), ..settings(true) }
}

/// The bucket's default encryption at the store: its algorithm and KMS key.
async fn encryption_at(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(String, Option<String>), String> {
    let answer = s3.get_bucket_encryption().bucket(bucket).send().await.map_err(code)?;
    let rules = answer.server_side_encryption_configuration.map(|c| c.rules).unwrap_or_default();
    let default = rules.first().and_then(|rule| rule.apply_server_side_encryption_by_default()).ok_or("no default")?;
    Ok((default.sse_algorithm().as_str().to_string(), default.kms_master_key_id().map(str::to_string)))
}

/// A bucket with an object lock (and so versioned), as `objectLock: Enabled` asks.
const LOCKED: BucketOptions = BucketOptions {
    versioning: true,
    object_lock: true,
    retention: None,
    expiration_days: None,
    abort_uploads_days: None,
    encryption: None,
};

fn admin() -> Credentials {
    Credentials { access_key_id: env("BUCKETGATE_S3_ACCESS_KEY"), secret_access_key: env("BUCKETGATE_S3_SECRET_KEY") }
}

/// Held by every test here that writes to the store's IAM API, and alone by the one that
/// checks what a policy finer than SeaweedFS's coarse actions denies. While SeaweedFS (4.48)
/// applies any IAM write, for a moment it judges the other users' requests by the coarse
/// actions it derives from their policies (`s3:DeleteObject` is its `Write`, which allows
/// a versioned delete too): with four such checks at once, 7 of 40 keys could delete a
/// version, where 30 checked one after another never could. A store's race, not the
/// policy bucketgate writes (README, "What that key must be allowed").
static IAM_WRITES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A bucket name no other test or run uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The store's error code, or the whole error where it sent none.
fn code<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    match aws_sdk_s3::error::ProvideErrorMetadata::code(&error) {
        Some(code) => format!("{code:?}"),
        None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error)),
    }
}

/// New and deleted IAM keys reach the store's S3 side within seconds, not at once (as on
/// AWS): waits up to 10 s for `check` to give `want`.
async fn eventually<F, Fut>(want: Result<(), String>, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = std::time::Instant::now();
    loop {
        let got = check().await;
        let matches = match (&want, &got) {
            (Ok(()), Ok(())) => true,
            (Err(w), Err(g)) => w.is_empty() || w == g,
            _ => false,
        };
        if matches {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "wanted {want:?}, still {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .map(|_| ())
        .map_err(code)
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    client.get_object().bucket(bucket).key(key).send().await.map(|_| ()).map_err(code)
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn create_is_idempotent_and_delete_removes_the_objects_too() {
    let driver = S3Driver::new(&settings(false), admin());
    let name = unique("create");
    assert!(!driver.has_bucket(&name).await.unwrap());
    let connection = driver.create_bucket(&name, &BucketOptions::default()).await.unwrap();
    assert!(driver.has_bucket(&name).await.unwrap());
    assert_eq!(connection.bucket_name, name);
    assert_eq!(connection.endpoint, env("BUCKETGATE_S3_ENDPOINT"));
    assert_eq!((connection.region.as_str(), connection.signature_version.as_str()), ("us-east-1", "s3v4"));
    // Again, as after a crash between creating the bucket and recording it.
    assert_eq!(driver.create_bucket(&name, &BucketOptions::default()).await.unwrap(), connection);

    for key in ["a", "b/c", "d e"] {
        put(driver.client(), &name, key).await.unwrap();
    }
    assert_eq!(driver.delete_bucket(&name).await.unwrap(), Deletion::Deleted);
    assert!(!driver.has_bucket(&name).await.unwrap(), "the bucket is gone");
    // Success, said apart: the loop checks that it looked where the bucket was made.
    assert_eq!(driver.delete_bucket(&name).await.expect("deleting a deleted bucket is success"), Deletion::NotFound);
}

/// What is left in a bucket: object versions, delete markers, unfinished uploads.
async fn left_in(client: &aws_sdk_s3::Client, bucket: &str) -> (usize, usize, usize) {
    let versions = client.list_object_versions().bucket(bucket).send().await.unwrap();
    let uploads = client.list_multipart_uploads().bucket(bucket).send().await.unwrap();
    (versions.versions().len(), versions.delete_markers().len(), uploads.uploads().len())
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn emptying_takes_old_versions_delete_markers_and_unfinished_uploads() {
    // AWS refuses to delete a bucket that keeps any version or delete marker, and Ceph RGW
    // one with an unfinished multipart upload (SeaweedFS deletes either; so the emptying is
    // checked here on its own).
    let driver = S3Driver::new(&settings(false), admin());
    let s3 = driver.client();
    let name = unique("versioned");
    driver.create_bucket(&name, &BucketOptions { versioning: true, ..Default::default() }).await.unwrap();
    for key in ["v", "v", "kept"] {
        put(s3, &name, key).await.unwrap();
    }
    s3.delete_object().bucket(&name).key("v").send().await.unwrap();
    let upload = s3.create_multipart_upload().bucket(&name).key("big").send().await.unwrap();
    let part = ByteStream::from_static(b"part of something larger");
    let upload_id = upload.upload_id().unwrap();
    s3.upload_part().bucket(&name).key("big").upload_id(upload_id).part_number(1).body(part).send().await.unwrap();
    assert_eq!(left_in(s3, &name).await, (3, 1, 1), "three versions, a delete marker, an upload");

    driver.empty_bucket(&name).await.unwrap();
    assert_eq!(left_in(s3, &name).await, (0, 0, 0));
    driver.delete_bucket(&name).await.unwrap();
    assert!(s3.head_bucket().bucket(&name).send().await.is_err(), "the bucket is gone");
}

/// Writes `key` under an object lock in compliance mode for a day: no one can delete that
/// version before then.
async fn put_locked(client: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    let until = aws_sdk_s3::primitives::DateTime::from_secs(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 86_400,
    );
    (client.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"data")))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_bucket_that_cannot_be_emptied_says_what_is_left_and_why() {
    let driver = S3Driver::new(&settings(false), admin());
    let s3 = driver.client();
    let name = unique("locked");
    driver.create_bucket(&name, &LOCKED).await.unwrap();
    put_locked(s3, &name, "evidence").await;
    put(s3, &name, "scratch").await.unwrap();

    match driver.delete_bucket(&name).await {
        Err(DriverError::Permanent(message)) => {
            assert!(message.contains("1 could not be deleted"), "{message}");
            assert!(message.contains("\"evidence\" (version "), "{message}");
            assert!(message.contains("AccessDenied"), "{message}");
        }
        other => panic!("expected a permanent error naming the locked object, got {other:?}"),
    }
    s3.head_bucket().bucket(&name).send().await.expect("the bucket stays while it holds data");
    assert_eq!(left_in(s3, &name).await, (1, 0, 0), "what could be deleted was: only the locked version is left");
}

/// A request as the driver sent it: the query, its Content-MD5 header, its body.
#[derive(Debug, Clone)]
struct SentRequest {
    uri: String,
    md5: Option<String>,
    body: String,
}

/// The real HTTP client, with each request written down on its way to the store.
#[derive(Debug, Clone, Default)]
struct Recording {
    sent: Arc<Mutex<Vec<SentRequest>>>,
    /// Answers the requests whose URI ends so (`?delete`: DeleteObjects) as a store
    /// without the operation does, not passing them on.
    not_implemented: Option<&'static str>,
    /// IAM requests sent and not yet answered, and the most there were at once.
    iam_in_flight: Arc<AtomicUsize>,
    iam_most_in_flight: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    sent: Recording,
}

impl HttpClient for Recording {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let inner = http_client().http_connector(settings, components);
        SharedHttpConnector::new(RecordingConnector { inner, sent: self.clone() })
    }
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).to_string();
        let md5 = request.headers().get("content-md5").map(str::to_string);
        let uri = request.uri().to_string();
        self.sent.sent.lock().unwrap().push(SentRequest { uri: uri.clone(), md5, body });
        if self.sent.not_implemented.is_some_and(|operation| uri.ends_with(operation)) {
            // What Google Cloud Storage's XML API answered before it had DeleteObjects.
            let error = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code><Message>A header \
                         or query you provided requested a function that is not implemented.</Message></Error>";
            let response = HttpResponse::new(501.try_into().unwrap(), SdkBody::from(error));
            return HttpConnectorFuture::ready(Ok(response));
        }
        if !request.body().bytes().unwrap_or_default().starts_with(b"Action=") {
            return self.inner.call(request);
        }
        // An IAM request (a form with its Action): counted until its answer comes.
        let (in_flight, most) = (self.sent.iam_in_flight.clone(), self.sent.iam_most_in_flight.clone());
        most.fetch_max(in_flight.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        let answer = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let answer = answer.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        })
    }
}

impl Recording {
    /// A driver whose requests this records.
    fn driver(&self, settings: &S3Settings) -> S3Driver {
        S3Driver::with_http_client(settings, admin(), SharedHttpClient::new(self.clone()))
    }

    fn sent(&self) -> Vec<SentRequest> {
        self.sent.lock().unwrap().clone()
    }
}

/// A plain bucket named from `prefix`, made through a driver whose requests are recorded.
async fn recorded_plain_bucket(prefix: &str) -> (Recording, S3Driver, String) {
    let recording = Recording::default();
    let driver = recording.driver(&settings(false));
    let name = unique(prefix);
    driver.create_bucket(&name, &BucketOptions::default()).await.unwrap();
    (recording, driver, name)
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn deleting_objects_says_the_content_md5_older_minio_requires() {
    let (recording, driver, name) = recorded_plain_bucket("md5").await;
    put(driver.client(), &name, "a").await.unwrap();
    driver.delete_bucket(&name).await.unwrap();
    assert!(driver.client().head_bucket().bucket(&name).send().await.is_err(), "the bucket is gone");

    let sent = recording.sent();
    let deletes: Vec<&SentRequest> = sent.iter().filter(|r| r.uri.ends_with("?delete")).collect();
    assert_eq!(deletes.len(), 1, "one DeleteObjects: {sent:#?}");
    assert!(deletes[0].body.contains("<Key>a</Key>"), "{:?}", deletes[0].body);
    let expected = base64::engine::general_purpose::STANDARD.encode(Md5::digest(deletes[0].body.as_bytes()));
    assert_eq!(deletes[0].md5.as_deref(), Some(expected.as_str()), "Content-MD5 of the body as sent");
    assert!(
        sent.iter().filter(|r| !r.uri.ends_with("?delete")).all(|r| r.md5.is_none()),
        "only DeleteObjects: {sent:#?}"
    );
}

/// What a class asks of each bucket is set at the store, again when the bucket is there
/// already (a crash after its create), and a store that cannot do it says which parameter.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn what_a_class_asks_of_its_buckets_is_set_at_the_store() {
    let recording = Recording::default();
    let driver = recording.driver(&settings(false));
    let s3 = driver.client();
    let versioned = BucketOptions { versioning: true, ..Default::default() };
    let name = unique("versioned");
    // Made plain by an attempt that crashed before setting anything.
    driver.create_bucket(&name, &BucketOptions::default()).await.unwrap();
    assert_eq!(s3.get_bucket_versioning().bucket(&name).send().await.unwrap().status(), None);
    driver.create_bucket(&name, &versioned).await.unwrap();
    let versioning = s3.get_bucket_versioning().bucket(&name).send().await.unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));
    let unlocked = s3.get_object_lock_configuration().bucket(&name).send().await.map_err(code).unwrap_err();
    assert!(unlocked.contains("ObjectLockConfigurationNotFound"), "{unlocked}");

    // Objects expiring: in a versioned bucket, the versions they leave behind too.
    for versioning in [false, true] {
        let name = unique("expiring");
        let expiring = BucketOptions { versioning, expiration_days: Some(30), ..Default::default() };
        driver.create_bucket(&name, &expiring).await.unwrap();
        let lifecycle = s3.get_bucket_lifecycle_configuration().bucket(&name).send().await.unwrap();
        let [rule] = lifecycle.rules() else { panic!("one rule: {lifecycle:?}") };
        assert_eq!(rule.status(), &ExpirationStatus::Enabled);
        assert_eq!(rule.expiration().and_then(|e| e.days()), Some(30));
        let noncurrent = rule.noncurrent_version_expiration().and_then(|e| e.noncurrent_days());
        assert_eq!(noncurrent, versioning.then_some(30), "{rule:?}");
    }
    // Unfinished uploads aborted, a rule of its own beside the expiration's.
    let name = unique("tidy");
    let tidy = BucketOptions { expiration_days: Some(30), abort_uploads_days: Some(7), ..Default::default() };
    driver.create_bucket(&name, &tidy).await.unwrap();
    let lifecycle = s3.get_bucket_lifecycle_configuration().bucket(&name).send().await.unwrap();
    assert_eq!(
        lifecycle_rules(&lifecycle),
        [(Some("bucketgate-abort-incomplete-uploads"), None, Some(7)), (Some("bucketgate-expiration"), Some(30), None)]
    );

    let retention = Retention { mode: RetentionMode::Governance, days: 3 };
    let locked =
        BucketOptions { versioning: true, object_lock: true, retention: Some(retention), ..BucketOptions::default() };
    let name = unique("locked");
    driver.create_bucket(&name, &locked).await.unwrap();
    driver.create_bucket(&name, &locked).await.expect("idempotent");
    let lock = s3.get_object_lock_configuration().bucket(&name).send().await.unwrap();
    let lock = lock.object_lock_configuration().unwrap();
    assert_eq!(lock.object_lock_enabled(), Some(&ObjectLockEnabled::Enabled));
    let default = lock.rule().and_then(|rule| rule.default_retention()).unwrap();
    assert_eq!((default.mode(), default.days()), (Some(&ObjectLockRetentionMode::Governance), Some(3)));
    let versioning = s3.get_bucket_versioning().bucket(&name).send().await.unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));
    // An object written without a lock of its own gets the default one.
    put(s3, &name, "written").await.unwrap();
    let head = s3.head_object().bucket(&name).key("written").send().await.unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Governance));
    // The lock's and the lifecycle's bodies carry a Content-MD5, as DeleteObjects' does;
    // versioning's needs none.
    let sent = recording.sent();
    // (The test's own reads go through the same client, without a body.)
    let puts = |operation: &str| -> Vec<SentRequest> {
        sent.iter().filter(|r| r.uri.ends_with(operation) && !r.body.is_empty()).cloned().collect()
    };
    let (lock_puts, lifecycle_puts) = (puts("?object-lock"), puts("?lifecycle"));
    // A lifecycle's rules go in one request: one for each of the three buckets above.
    assert_eq!((lock_puts.len(), lifecycle_puts.len()), (2, 3), "{sent:#?}");
    for put in [&lock_puts[0], &lifecycle_puts[0]] {
        let expected = base64::engine::general_purpose::STANDARD.encode(Md5::digest(put.body.as_bytes()));
        assert_eq!(put.md5.as_deref(), Some(expected.as_str()), "{put:?}");
    }
    assert!(sent.iter().filter(|r| r.uri.ends_with("?versioning")).all(|r| r.md5.is_none()), "{sent:#?}");

    let without = Recording { not_implemented: Some("?versioning"), ..Default::default() };
    let name = unique("unversioned");
    match without.driver(&settings(false)).create_bucket(&name, &versioned).await {
        Err(DriverError::Permanent(message)) => {
            assert!(message.contains("turning versioning on: NotImplemented"), "{message}");
            assert!(message.contains("the class parameter versioning asks"), "{message}");
        }
        other => panic!("expected a permanent error naming the parameter, got {other:?}"),
    }
    let without = Recording { not_implemented: Some("?lifecycle"), ..Default::default() };
    match without.driver(&settings(false)).create_bucket(&unique("untidy"), &tidy).await {
        Err(DriverError::Permanent(message)) => {
            assert!(message.contains("setting the lifecycle: NotImplemented"), "{message}");
            let asked = "the class parameters expirationDays and abortIncompleteMultipartUploadDays ask; \
                         use a class without them here";
            assert!(message.contains(asked), "{message}");
        }
        other => panic!("expected a permanent error naming the parameters, got {other:?}"),
    }
}

/// What a class asked of a bucket, turned off or changed at the store outside Kubernetes,
/// is set again at the loop's look, and the rest is left as it is: the store admin's own
/// lifecycle rules, and a plain bucket, which costs no request at all.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn what_a_class_asked_and_the_store_lost_is_set_again() {
    let recording = Recording::default();
    let driver = recording.driver(&settings(false));
    let s3 = driver.client();
    let name = unique("drifting");
    let asked = BucketOptions {
        versioning: true,
        expiration_days: Some(30),
        abort_uploads_days: Some(7),
        ..Default::default()
    };
    driver.create_bucket(&name, &asked).await.unwrap();
    assert_eq!(driver.restore_options(&name, &asked).await.unwrap(), Vec::<&str>::new(), "nothing lost yet");

    let suspended = VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build();
    s3.put_bucket_versioning().bucket(&name).versioning_configuration(suspended).send().await.unwrap();
    s3.delete_bucket_lifecycle().bucket(&name).send().await.unwrap();
    let restored = driver.restore_options(&name, &asked).await.unwrap();
    assert_eq!(restored, ["versioning", "expirationDays", "abortIncompleteMultipartUploadDays"]);
    let versioning = s3.get_bucket_versioning().bucket(&name).send().await.unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));
    let lifecycle = s3.get_bucket_lifecycle_configuration().bucket(&name).send().await.unwrap();
    assert_eq!(
        lifecycle_rules(&lifecycle),
        [(Some("bucketgate-abort-incomplete-uploads"), None, Some(7)), (Some("bucketgate-expiration"), Some(30), None)]
    );
    assert_eq!(driver.restore_options(&name, &asked).await.unwrap(), Vec::<&str>::new(), "set once");

    // The expiration shortened at the store, beside a rule of the store admin's own, and
    // the rule aborting uploads left out.
    let rule = |id: &str, prefix: &str, days: i32| {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .unwrap()
    };
    let changed = BucketLifecycleConfiguration::builder()
        .rules(rule("bucketgate-expiration", "", 1))
        .rules(rule("admin-logs", "logs/", 2))
        .build()
        .unwrap();
    s3.put_bucket_lifecycle_configuration().bucket(&name).lifecycle_configuration(changed).send().await.unwrap();
    let restored = driver.restore_options(&name, &asked).await.unwrap();
    assert_eq!(restored, ["expirationDays", "abortIncompleteMultipartUploadDays"]);
    let lifecycle = s3.get_bucket_lifecycle_configuration().bucket(&name).send().await.unwrap();
    assert_eq!(
        lifecycle_rules(&lifecycle),
        [
            (Some("admin-logs"), Some(2), None),
            (Some("bucketgate-abort-incomplete-uploads"), None, Some(7)),
            (Some("bucketgate-expiration"), Some(30), None)
        ]
    );

    // A default retention taken off a locked bucket.
    let retention = Retention { mode: RetentionMode::Governance, days: 3 };
    let locked =
        BucketOptions { versioning: true, object_lock: true, retention: Some(retention), ..Default::default() };
    let name = unique("unretained");
    driver.create_bucket(&name, &locked).await.unwrap();
    assert_eq!(driver.restore_options(&name, &locked).await.unwrap(), Vec::<&str>::new());
    let bare = ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).build();
    s3.put_object_lock_configuration().bucket(&name).object_lock_configuration(bare).send().await.unwrap();
    let restored = driver.restore_options(&name, &locked).await.unwrap();
    assert_eq!(restored, ["objectLockRetentionMode", "objectLockRetentionDays"]);
    let lock = s3.get_object_lock_configuration().bucket(&name).send().await.unwrap();
    let default = lock.object_lock_configuration().and_then(|c| c.rule()).and_then(|r| r.default_retention()).unwrap();
    assert_eq!((default.mode(), default.days()), (Some(&ObjectLockRetentionMode::Governance), Some(3)));

    let plain = unique("plain");
    driver.create_bucket(&plain, &BucketOptions::default()).await.unwrap();
    let before = recording.sent().len();
    assert_eq!(driver.restore_options(&plain, &BucketOptions::default()).await.unwrap(), Vec::<&str>::new());
    assert_eq!(recording.sent().len(), before, "a plain bucket costs no request");
}

/// Each lifecycle rule's id, expiration and days before unfinished uploads are aborted, by id.
fn lifecycle_rules(
    lifecycle: &aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationOutput,
) -> Vec<(Option<&str>, Option<i32>, Option<i32>)> {
    let mut rules: Vec<_> = lifecycle
        .rules()
        .iter()
        .map(|r| {
            let abort = r.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation());
            (r.id(), r.expiration().and_then(|e| e.days()), abort)
        })
        .collect();
    rules.sort();
    rules
}

/// A store without DeleteObjects (it answers NotImplemented) has its buckets emptied an
/// object at a time: every version and delete marker, and what an object lock keeps is
/// named as DeleteObjects would name it.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_store_without_delete_objects_is_emptied_an_object_at_a_time() {
    let recording = Recording { not_implemented: Some("?delete"), ..Default::default() };
    let driver = recording.driver(&settings(false));
    let s3 = driver.client();
    let name = unique("onebyone");
    driver.create_bucket(&name, &LOCKED).await.unwrap();
    for key in ["a", "a", "b/c"] {
        put(s3, &name, key).await.unwrap();
    }
    s3.delete_object().bucket(&name).key("b/c").send().await.unwrap();
    assert_eq!(left_in(s3, &name).await, (3, 1, 0), "two versions of a, one of b/c, its delete marker");
    put_locked(s3, &name, "evidence").await;

    match driver.delete_bucket(&name).await {
        Err(DriverError::Permanent(message)) => {
            assert!(message.contains("1 could not be deleted: \"evidence\" (version "), "{message}");
            assert!(message.contains("AccessDenied"), "{message}");
        }
        other => panic!("expected a permanent error naming the locked object, got {other:?}"),
    }
    assert_eq!(left_in(s3, &name).await, (1, 0, 0), "all but the locked version went");
    let sent = recording.sent();
    assert!(sent.iter().any(|r| r.uri.ends_with("?delete")), "DeleteObjects was tried first: {sent:#?}");
    let one_by_one = sent.iter().filter(|r| r.uri.contains("versionId=") && !r.uri.contains("?delete")).count();
    assert!(one_by_one >= 5, "each version and marker deleted on its own: {sent:#?}");
}

/// `serverSideEncryption: AES256`: what is written without asking is encrypted with the
/// store's keys, and read back as written. A default encryption removed at the store, or
/// changed to another KMS key, is set again at the next look.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_class_asking_for_encryption_at_rest_gets_it_and_keeps_it() {
    let driver = S3Driver::new(&settings(false), admin());
    let s3 = driver.client();
    let name = unique("sealed");
    let asked = BucketOptions { encryption: Some(Encryption::S3), ..Default::default() };
    driver.create_bucket(&name, &asked).await.unwrap();
    assert_eq!(encryption_at(s3, &name).await, Ok(("AES256".into(), None)));
    put(s3, &name, "payroll").await.unwrap();
    let head = s3.head_object().bucket(&name).key("payroll").send().await.unwrap();
    assert_eq!(head.server_side_encryption().map(|e| e.as_str()), Some("AES256"), "encrypted without asking");
    get(s3, &name, "payroll").await.expect("and read back");
    assert_eq!(driver.restore_options(&name, &asked).await.unwrap(), Vec::<&str>::new(), "nothing lost yet");
    s3.delete_bucket_encryption().bucket(&name).send().await.unwrap();
    assert_eq!(driver.restore_options(&name, &asked).await.unwrap(), ["serverSideEncryption"]);
    assert_eq!(encryption_at(s3, &name).await, Ok(("AES256".into(), None)));

    // A KMS key: SeaweedFS keeps the configuration (its writes need a KMS it is not given here).
    let key = "arn:aws:kms:us-east-1:111122223333:key/photos";
    let kms = BucketOptions { encryption: Some(Encryption::Kms(Some(key.into()))), ..Default::default() };
    assert_eq!(driver.restore_options(&name, &kms).await.unwrap(), ["serverSideEncryption", "kmsKeyId"]);
    assert_eq!(encryption_at(s3, &name).await, Ok(("aws:kms".into(), Some(key.into()))));
    let other = BucketOptions { encryption: Some(Encryption::Kms(Some("alias/other".into()))), ..Default::default() };
    assert_eq!(driver.restore_options(&name, &other).await.unwrap(), ["serverSideEncryption", "kmsKeyId"]);
    let any_key = BucketOptions { encryption: Some(Encryption::Kms(None)), ..Default::default() };
    assert_eq!(driver.restore_options(&name, &any_key).await.unwrap(), Vec::<&str>::new(), "no key named: any");
    driver.delete_bucket(&name).await.unwrap();
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_bucket_outside_us_east_1_is_created_with_its_location() {
    // SeaweedFS takes the constraint and ignores it: what is checked is that it was sent.
    let created_with = |recording: &Recording, name: &str| {
        let path = format!("/{name}");
        let create =
            recording.sent().into_iter().find(|r| r.uri.trim_end_matches('/').ends_with(&path) && !r.body.is_empty());
        create.map(|r| r.body)
    };
    let mut elsewhere = settings(false);
    elsewhere.region = "eu-west-1".into();
    let recording = Recording::default();
    let driver = recording.driver(&elsewhere);
    let name = unique("located");
    let connection =
        driver.create_bucket(&name, &BucketOptions::default()).await.expect("the store takes the location constraint");
    assert_eq!(connection.region, "eu-west-1");
    let body = created_with(&recording, &name).expect("CreateBucket with a configuration");
    assert!(body.contains("<LocationConstraint>eu-west-1</LocationConstraint>"), "{body}");
    driver.delete_bucket(&name).await.unwrap();

    // us-east-1 is AWS's default, which it refuses to be told.
    let (recording, driver, name) = recorded_plain_bucket("default").await;
    assert_eq!(created_with(&recording, &name), None, "no configuration for us-east-1");
    driver.delete_bucket(&name).await.unwrap();
}

/// Keys for many Buckets at once, each through a driver of its own as the loop makes them:
/// the store's IAM API is asked no more than its bound at once, whichever driver asks, and
/// every key comes. (Unbounded, a hundred at once timed out against SeaweedFS.)
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn keys_asked_for_at_once_reach_the_iam_api_no_more_than_its_bound_at_once() {
    let _writing = IAM_WRITES.read().await;
    let recording = Recording::default();
    let settings = iam_bounded(2);
    let metrics = bucketgate::metrics::Metrics::default();
    let drivers = S3Drivers::new(SharedHttpClient::new(recording.clone()), metrics.iam_requests.clone());
    let bucket = unique("keys");
    drivers.driver(&settings, admin()).create_bucket(&bucket, &BucketOptions::default()).await.unwrap();
    let grants = (0..8).map(|_| {
        let (driver, holder, bucket) = (drivers.driver(&settings, admin()), unique("holder"), bucket.clone());
        async move { (driver.grant(&bucket, &holder, AccessMode::ReadWrite).await, driver, holder) }
    });
    let granted = futures::future::join_all(grants).await;
    let keys: std::collections::BTreeSet<String> =
        granted.iter().map(|(grant, ..)| grant.as_ref().unwrap().credentials.access_key_id.clone()).collect();
    assert_eq!(keys.len(), 8, "a key each");
    assert_eq!(recording.iam_most_in_flight.load(Ordering::SeqCst), 2, "the bound, and no more");
    assert!(recording.sent().iter().filter(|r| r.body.starts_with("Action=")).count() >= 8 * 4);
    // All answered: none in flight or waiting, as the leader's /metrics shows it.
    let endpoint = settings.iam.as_ref().and_then(|iam| iam.endpoint.clone()).unwrap_or(settings.endpoint.clone());
    let shown = metrics.encode();
    for state in ["in_flight", "waiting"] {
        let line = format!("bucketgate_backend_iam_requests{{endpoint=\"{endpoint}\",state=\"{state}\"}} 0");
        assert!(shown.contains(&line), "{line} not in:\n{shown}");
    }
    for (_, driver, holder) in granted {
        driver.revoke(&holder).await.unwrap();
    }
    drivers.driver(&settings, admin()).delete_bucket(&bucket).await.unwrap();
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn scoped_credentials_work_for_their_bucket_and_not_another() {
    let _writing = IAM_WRITES.read().await;
    let driver = S3Driver::new(&settings(true), admin());
    let (mine, other) = (unique("mine"), unique("other"));
    driver.create_bucket(&mine, &BucketOptions::default()).await.unwrap();
    driver.create_bucket(&other, &BucketOptions::default()).await.unwrap();
    put(driver.client(), &other, "seed").await.unwrap();
    let holder = unique("holder");

    let grant = driver.grant(&mine, &holder, AccessMode::ReadWrite).await.unwrap();
    assert!(grant.scoped);
    assert_ne!(grant.credentials, admin());
    let workload = S3Driver::new(&settings(false), grant.credentials.clone());
    eventually(Ok(()), || put(workload.client(), &mine, "photo")).await;
    get(workload.client(), &mine, "photo").await.expect("reads its own bucket");
    assert_eq!(put(workload.client(), &other, "x").await, Err("\"AccessDenied\"".into()));
    assert_eq!(get(workload.client(), &other, "seed").await, Err("\"AccessDenied\"".into()));

    // A second grant replaces the key: the first stops working.
    let again = driver.grant(&mine, &holder, AccessMode::ReadOnly).await.unwrap();
    assert_ne!(again.credentials, grant.credentials);
    eventually(Err(String::new()), || put(workload.client(), &mine, "late")).await;
    let reader = S3Driver::new(&settings(false), again.credentials.clone());
    eventually(Ok(()), || get(reader.client(), &mine, "photo")).await;
    assert_eq!(put(reader.client(), &mine, "nope").await, Err("\"AccessDenied\"".into()));

    driver.revoke(&holder).await.unwrap();
    eventually(Err(String::new()), || get(reader.client(), &mine, "photo")).await;
    driver.revoke(&holder).await.expect("revoking twice is success");
    driver.delete_bucket(&mine).await.unwrap();
    driver.delete_bucket(&other).await.unwrap();
}

/// A bucket encrypted with a KMS key of its own: its key may use that key, as AWS asks of
/// every read and write there; SeaweedFS takes the policy (its writes would need a KMS).
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_key_to_a_bucket_with_a_kms_key_may_use_that_key() {
    let _writing = IAM_WRITES.read().await;
    let recording = Recording::default();
    let driver = recording.driver(&settings(true));
    let name = unique("kms");
    let key = "arn:aws:kms:us-east-1:111122223333:key/photos";
    let sealed = BucketOptions { encryption: Some(Encryption::Kms(Some(key.into()))), ..Default::default() };
    driver.create_bucket(&name, &sealed).await.unwrap();
    let holder = unique("holder");
    let grant = driver.grant(&name, &holder, AccessMode::ReadOnly).await.unwrap();
    let policies: Vec<String> =
        recording.sent().into_iter().filter(|r| r.body.starts_with("Action=PutUserPolicy")).map(|r| r.body).collect();
    let [policy] = &policies[..] else { panic!("one policy: {policies:?}") };
    assert!(policy.contains("kms%3ADecrypt") && !policy.contains("kms%3AGenerateDataKey"), "{policy}");
    assert!(policy.contains("key%2Fphotos"), "that key: {policy}");
    let workload = S3Driver::new(&settings(false), grant.credentials);
    let listed = || async { workload.client().list_objects_v2().bucket(&name).send().await.map(|_| ()).map_err(code) };
    eventually(Ok(()), listed).await;
    driver.revoke(&holder).await.unwrap();
    driver.delete_bucket(&name).await.unwrap();
}

/// A rotation makes a second key beside the one in use, with the same reach; both work until
/// the old one is retired. A key left by a rotation that never reached its Secret is
/// removed by the next.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_rotated_key_works_beside_the_old_until_that_is_retired() {
    let _writing = IAM_WRITES.read().await;
    let driver = S3Driver::new(&settings(true), admin());
    let (mine, other) = (unique("mine"), unique("other"));
    driver.create_bucket(&mine, &BucketOptions::default()).await.unwrap();
    driver.create_bucket(&other, &BucketOptions::default()).await.unwrap();
    let holder = unique("holder");
    let first = driver.grant(&mine, &holder, AccessMode::ReadWrite).await.unwrap().credentials;
    let old = S3Driver::new(&settings(false), first.clone());
    eventually(Ok(()), || put(old.client(), &mine, "photo")).await;

    let lost = driver.rotate(&holder, &first.access_key_id).await.unwrap();
    let second = driver.rotate(&holder, &first.access_key_id).await.unwrap();
    assert!(second != first && second != lost);
    let new = S3Driver::new(&settings(false), second.clone());
    eventually(Ok(()), || get(new.client(), &mine, "photo")).await;
    put(new.client(), &mine, "after").await.expect("the new key writes as the old did");
    assert_eq!(put(new.client(), &other, "x").await, Err("\"AccessDenied\"".into()), "and reaches no other bucket");
    get(old.client(), &mine, "after").await.expect("the old key works until retired");
    let left = S3Driver::new(&settings(false), lost);
    eventually(Err(String::new()), || get(left.client(), &mine, "photo")).await;

    driver.retire(&holder, &second.access_key_id).await.unwrap();
    eventually(Err(String::new()), || get(old.client(), &mine, "photo")).await;
    get(new.client(), &mine, "photo").await.expect("the new key is kept");
    driver.retire(&holder, &second.access_key_id).await.expect("retiring twice is success");

    driver.revoke(&holder).await.unwrap();
    eventually(Err(String::new()), || get(new.client(), &mine, "photo")).await;
    let without_iam = S3Driver::new(&settings(false), admin()).rotate(&holder, "any").await;
    assert!(
        matches!(without_iam, Err(DriverError::Permanent(message)) if message.contains("only where the provisioner has iam"))
    );
    driver.delete_bucket(&mine).await.unwrap();
    driver.delete_bucket(&other).await.unwrap();
}

/// A versioned bucket's key reads what was overwritten, and cannot destroy it; it may lock
/// what it writes.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_key_reads_earlier_versions_and_cannot_delete_them() {
    let _alone = IAM_WRITES.write().await;
    let driver = S3Driver::new(&settings(true), admin());
    let name = unique("history");
    driver.create_bucket(&name, &LOCKED).await.unwrap();
    let holder = unique("holder");
    let grant = driver.grant(&name, &holder, AccessMode::ReadWrite).await.unwrap();
    let workload = S3Driver::new(&settings(false), grant.credentials);
    let s3 = workload.client();
    eventually(Ok(()), || put(s3, &name, "report")).await;
    put(s3, &name, "report").await.unwrap();
    let listed = s3.list_object_versions().bucket(&name).send().await.map_err(code).expect("lists the versions");
    let earlier = listed.versions().iter().find(|v| v.is_latest() == Some(false)).expect("an earlier version");
    let version = earlier.version_id().unwrap();
    let got = s3.get_object().bucket(&name).key("report").version_id(version).send().await.map_err(code);
    assert!(got.is_ok(), "reads the earlier version: {got:?}");
    let deleted = s3.delete_object().bucket(&name).key("report").version_id(version).send().await.map_err(code);
    assert_eq!(deleted.map(|_| ()), Err("\"AccessDenied\"".into()), "a version is not the workload's to destroy");
    // A plain delete only hides the object behind a delete marker.
    s3.delete_object().bucket(&name).key("report").send().await.map_err(code).unwrap();
    // Locked for two seconds, so that the bucket can be deleted after.
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let locking = s3.put_object().bucket(&name).key("evidence").body(ByteStream::from_static(b"data"));
    let locking = locking.object_lock_mode(ObjectLockMode::Governance).object_lock_retain_until_date(until.into());
    assert_eq!(locking.send().await.map(|_| ()).map_err(code), Ok(()), "writes under a lock of its own");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    driver.revoke(&holder).await.unwrap();
    driver.delete_bucket(&name).await.unwrap();
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn without_iam_the_provisioner_key_is_handed_out_and_said_so() {
    let driver = S3Driver::new(&settings(false), admin());
    let grant = driver.grant("any", "holder", AccessMode::ReadWrite).await.unwrap();
    assert!(!grant.scoped);
    assert_eq!(grant.credentials, admin());
    driver.revoke("holder").await.unwrap();
}

#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn bad_credentials_fail_for_good_and_an_unreachable_store_is_retried() {
    let wrong = Credentials { access_key_id: env("BUCKETGATE_S3_ACCESS_KEY"), secret_access_key: "wrong".into() };
    let driver = S3Driver::new(&settings(false), wrong);
    match driver.create_bucket(&unique("badkey"), &BucketOptions::default()).await {
        Err(DriverError::Permanent(message)) => assert!(message.contains("SignatureDoesNotMatch"), "{message}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    let mut unreachable = settings(false);
    unreachable.endpoint = "http://127.0.0.1:9".into();
    match S3Driver::new(&unreachable, admin()).create_bucket("x-unreachable", &BucketOptions::default()).await {
        // The connection error does not say where: the message does.
        Err(DriverError::Transient(message)) => {
            assert!(message.contains("the store at http://127.0.0.1:9 did not answer"), "{message}")
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// A team's hundred Buckets at once, their keys made through the store's IAM API: with
/// `maxConcurrentRequests` at its default, and with no effective bound. Prints the time to
/// the last key, the median, and the failures; asserts nothing. Each round's users are
/// deleted after it: SeaweedFS's IAM writes slow with every user it holds.
/// `bash scripts/bench`, or with SeaweedFS started:
/// `cargo test --release --test s3_driver benchmark_ -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a benchmark: bash scripts/bench"]
async fn benchmark_keys_for_many_buckets_at_once() {
    let _writing = IAM_WRITES.read().await;
    const BUCKETS: usize = 100;
    let bucket = unique("keys-bench");
    S3Driver::new(&settings(true), admin()).create_bucket(&bucket, &BucketOptions::default()).await.unwrap();
    for bound in [IamSettings::DEFAULT_MAX_CONCURRENT_REQUESTS, BUCKETS] {
        let settings = iam_bounded(bound);
        let drivers = S3Drivers::new(http_client(), Default::default());
        let started = std::time::Instant::now();
        let grants = (0..BUCKETS).map(|_| {
            let (driver, holder, bucket) = (drivers.driver(&settings, admin()), unique("bench"), bucket.clone());
            async move {
                let result = driver.grant(&bucket, &holder, AccessMode::ReadWrite).await;
                (result.map(|_| started.elapsed()), holder)
            }
        });
        let done = futures::future::join_all(grants).await;
        let total = started.elapsed();
        let mut times: Vec<_> = done.iter().filter_map(|(result, _)| result.as_ref().ok().copied()).collect();
        times.sort();
        let failures: Vec<String> = done.iter().filter_map(|(r, _)| r.as_ref().err().map(|e| e.to_string())).collect();
        println!(
            "{BUCKETS} keys at once, at most {bound} IAM requests in flight: the last after {total:.1?}, the median \
             after {:.1?}; {} failed{}",
            times.get(times.len() / 2).copied().unwrap_or_default(),
            failures.len(),
            failures.first().map(|f| format!(", the first: {f}")).unwrap_or_default()
        );
        let driver = drivers.driver(&settings, admin());
        for (_, holder) in &done {
            let _ = driver.revoke(holder).await;
        }
    }
    S3Driver::new(&settings(false), admin()).delete_bucket(&bucket).await.unwrap();
}

/// A bucket is tagged with whom it is for, the tags replaced when given again (a retry after
/// a crash), and a store that keeps no tags on buckets (NotImplemented) is said apart.
#[tokio::test]
#[ignore = "needs an S3 server: bash scripts/test starts SeaweedFS"]
async fn a_bucket_is_tagged_with_whom_it_is_for() {
    let (_recording, driver, name) = recorded_plain_bucket("tagged").await;
    let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let first = tags(&[("cosi.io/namespace", "team-a"), ("cosi.io/bucket", "photos")]);
    assert!(driver.tag_bucket(&name, &first).await.unwrap());
    let second = tags(&[("cosi.io/namespace", "team-a"), ("cosi.io/bucketclass", "standard")]);
    assert!(driver.tag_bucket(&name, &second).await.unwrap());
    // What the store has, sorted.
    let tags_at = async |bucket: &str| -> Vec<(String, String)> {
        let got = driver.client().get_bucket_tagging().bucket(bucket).send().await.unwrap();
        let mut got: Vec<(String, String)> =
            got.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
        got.sort();
        got
    };
    assert_eq!(tags_at(&name).await, tags(&[("cosi.io/bucketclass", "standard"), ("cosi.io/namespace", "team-a")]));

    let without = Recording { not_implemented: Some("?tagging"), ..Default::default() };
    let without = without.driver(&settings(false));
    assert!(!without.tag_bucket(&name, &first).await.unwrap());
    let missing = driver.tag_bucket(&unique("nowhere"), &first).await.unwrap_err();
    assert!(missing.to_string().contains("tagging the bucket"), "{missing}");

    // At a timed look: the store admin replaced them with one of their own; ours go back
    // beside it, once.
    let theirs = Tag::builder().key("cost-center").value("42").build().unwrap();
    let tagging = Tagging::builder().tag_set(theirs).build().unwrap();
    driver.client().put_bucket_tagging().bucket(&name).tagging(tagging).send().await.unwrap();
    assert!(driver.restore_tags(&name, &first).await.unwrap(), "put back");
    let expected = tags(&[("cosi.io/bucket", "photos"), ("cosi.io/namespace", "team-a"), ("cost-center", "42")]);
    assert_eq!(tags_at(&name).await, expected);
    assert!(!driver.restore_tags(&name, &first).await.unwrap(), "all there: nothing written");
    // A bucket never tagged (made before bucketgate tagged): the store has no tag set.
    let untagged = unique("untagged");
    driver.create_bucket(&untagged, &BucketOptions::default()).await.unwrap();
    assert!(driver.restore_tags(&untagged, &first).await.unwrap());
    assert_eq!(tags_at(&untagged).await, tags(&[("cosi.io/bucket", "photos"), ("cosi.io/namespace", "team-a")]));
    assert!(!without.restore_tags(&name, &first).await.unwrap(), "a store without tags is passed over");
    let missing = driver.restore_tags(&unique("nowhere"), &first).await.unwrap_err();
    assert!(missing.to_string().contains("reading the bucket's tags"), "{missing}");
}
