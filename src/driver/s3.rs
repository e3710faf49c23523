//! The S3 driver, for any S3-compatible endpoint (AWS, Ceph RGW, MinIO, SeaweedFS), with
//! per-bucket users through the IAM API where the store has one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RequestChecksumCalculation, RuntimeComponents,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionError;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, DefaultRetention, Delete, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetentionMode, ObjectLockRule, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use base64::Engine;
use md5::{Digest, Md5};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use super::options::Encryption;
use super::{BucketOptions, Connection, Credentials, Deletion, Driver, DriverError, Grant, options};
use crate::api::AccessMode;
use crate::config::S3Settings;
use crate::metrics::IamLabels;
use crate::turns::Turns;

const POLICY_NAME: &str = "bucketgate-bucket";

/// The ids of the lifecycle rules bucketgate writes; other rules are the store admin's.
const EXPIRATION_RULE: &str = "bucketgate-expiration";
const ABORT_UPLOADS_RULE: &str = "bucketgate-abort-incomplete-uploads";

/// An HTTPS client over rustls with ring. Its connection pool belongs to the Tokio runtime
/// that first uses it, so share one only within a runtime (the provisioning loop does).
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Content-MD5 on the calls whose body S3 requires an integrity header for (DeleteObjects,
/// PutObjectLockConfiguration, PutBucketLifecycleConfiguration). The SDK sends a CRC32
/// one only, which MinIO before its 2025 releases refuses (MissingContentMD5), as may other
/// stores older than S3's newer checksums; every store takes Content-MD5, and AWS checks
/// both.
#[derive(Debug)]
struct ContentMd5;

/// The operations [`ContentMd5`] adds the header to.
const NEEDS_CONTENT_MD5: [&str; 3] = ["DeleteObjects", "PutObjectLockConfiguration", "PutBucketLifecycleConfiguration"];

impl Intercept for ContentMd5 {
    fn name(&self) -> &'static str {
        "ContentMd5"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !cfg.load::<Metadata>().is_some_and(|operation| NEEDS_CONTENT_MD5.contains(&operation.name())) {
            return Ok(());
        }
        let request = context.request_mut();
        // The body is the request's XML, in memory: the SDK never streams these.
        let Some(body) = request.body().bytes() else { return Ok(()) };
        let digest = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
        request.headers_mut().insert("content-md5", digest);
        Ok(())
    }
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

/// What the S3 drivers of one process share, whichever provisioner and credentials each is
/// for: the connection pool, and for each IAM endpoint the permits for its requests in
/// flight. The loop makes a driver per reconcile; a bound per driver would bound nothing.
#[derive(Clone)]
pub struct S3Drivers {
    http: SharedHttpClient,
    iam_permits: Arc<Mutex<IamPermits>>,
    /// How many IAM requests are in flight and waiting, per endpoint.
    iam_requests: Family<IamLabels, Gauge>,
}

/// By endpoint and bound: a configuration that changes the bound starts afresh.
type IamPermits = HashMap<(String, usize), Arc<Semaphore>>;

impl S3Drivers {
    /// Counting IAM requests in `iam_requests` (see [`crate::metrics::Metrics`]).
    pub fn new(http: SharedHttpClient, iam_requests: Family<IamLabels, Gauge>) -> S3Drivers {
        S3Drivers { http, iam_permits: Arc::default(), iam_requests }
    }

    pub fn driver(&self, settings: &S3Settings, credentials: Credentials) -> S3Driver {
        let provider = aws_sdk_s3::config::Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            None,
            None,
            "bucketgate",
        );
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .endpoint_url(&settings.endpoint)
            .force_path_style(settings.path_style)
            .credentials_provider(provider.clone())
            .http_client(self.http.clone())
            .timeout_config(timeouts())
            // Checksums only where S3 requires them: older Ceph and MinIO releases refuse the
            // newer default trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .interceptor(ContentMd5)
            .build();
        let iam = settings.iam.as_ref().map(|iam| {
            let endpoint = iam.endpoint.as_deref().unwrap_or(&settings.endpoint);
            let config = aws_sdk_iam::Config::builder()
                .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
                .region(aws_sdk_iam::config::Region::new(settings.region.clone()))
                .endpoint_url(endpoint)
                .credentials_provider(provider)
                .http_client(self.http.clone())
                .timeout_config(timeouts())
                .build();
            let turns = Turns::new(self.iam_permits(endpoint, iam.max_requests()), |state| {
                self.iam_requests.get_or_create_owned(&IamLabels { endpoint: endpoint.to_string(), state })
            });
            Iam { client: aws_sdk_iam::Client::from_conf(config), turns }
        });
        S3Driver { s3: aws_sdk_s3::Client::from_conf(s3), iam, settings: settings.clone(), credentials }
    }

    fn iam_permits(&self, endpoint: &str, bound: usize) -> Arc<Semaphore> {
        let mut permits = self.iam_permits.lock().unwrap_or_else(|e| e.into_inner());
        permits.entry((endpoint.to_string(), bound)).or_insert_with(|| Arc::new(Semaphore::new(bound))).clone()
    }
}

/// A store's IAM API, asked no more than its bound allows at once. Stores serialise IAM
/// writes (SeaweedFS's each take longer the more users it holds; AWS throttles them):
/// a hundred Buckets' keys asked for at once queue at the store until its answers come
/// after the SDK's 30 s attempt timeout, and the retries queue behind the abandoned
/// attempts, which the store still carries out. Queued here, each attempt waits only for
/// the few in flight.
struct Iam {
    client: aws_sdk_iam::Client,
    turns: Turns,
}

impl Iam {
    async fn send<T>(&self, request: impl Future<Output = T>) -> T {
        self.turns.take(request).await
    }
}

pub struct S3Driver {
    s3: aws_sdk_s3::Client,
    iam: Option<Iam>,
    settings: S3Settings,
    credentials: Credentials,
}

impl S3Driver {
    /// A driver sharing nothing with others: for tools and tests.
    pub fn new(settings: &S3Settings, credentials: Credentials) -> S3Driver {
        S3Driver::with_http_client(settings, credentials, http_client())
    }

    pub fn with_http_client(settings: &S3Settings, credentials: Credentials, http: SharedHttpClient) -> S3Driver {
        S3Drivers::new(http, Family::default()).driver(settings, credentials)
    }

    /// An S3 call's failure, sorted (see [`classify`]).
    fn failed<E, R>(&self, what: &str, error: SdkError<E, R>) -> DriverError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        classify(what, &self.settings.endpoint, error)
    }

    async fn make_bucket(&self, name: &str, object_lock: bool) -> Result<(), DriverError> {
        let create =
            self.s3.create_bucket().bucket(name).set_create_bucket_configuration(location(&self.settings.region));
        // Stores other than AWS put a lock on a bucket only as it is made. No header at all
        // for a plain bucket, as before the parameter existed.
        match create.set_object_lock_enabled_for_bucket(object_lock.then_some(true)).send().await {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(error) if code(&error) == Some("BucketAlreadyExists") => {
                Err(DriverError::Permanent(format!("bucket name {name:?} is taken by another owner of the store")))
            }
            Err(error)
                if matches!(code(&error), Some("IllegalLocationConstraintException" | "InvalidLocationConstraint")) =>
            {
                Err(DriverError::Permanent(format!(
                    "{}: the store is not in region {:?}: set the provisioner's region in bucketgate-config to the store's",
                    self.failed("creating the bucket", error),
                    self.settings.region
                )))
            }
            Err(error) => Err(self.failed("creating the bucket", error)),
        }
    }

    /// What the class asks of the bucket; each call replaces what it sets, so it can be
    /// made again.
    async fn set_options(&self, name: &str, options: &BucketOptions) -> Result<(), DriverError> {
        if options.versioning && !options.object_lock {
            self.put_versioning(name).await?;
        }
        if options.object_lock {
            self.put_lock(name, options).await?;
        }
        let rules = lifecycle_rules(options)?;
        if !rules.is_empty() {
            let parameters: Vec<&str> = rules.iter().map(|(parameter, _)| *parameter).collect();
            self.put_lifecycle(name, rules.into_iter().map(|(_, rule)| rule).collect(), &parameters).await?;
        }
        if let Some(encryption) = &options.encryption {
            self.put_encryption(name, encryption).await?;
        }
        Ok(())
    }

    async fn put_encryption(&self, name: &str, encryption: &Encryption) -> Result<(), DriverError> {
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::from(encryption.algorithm()))
            .set_kms_master_key_id(encryption.kms_key().map(str::to_string))
            .build()
            .map_err(|error| DriverError::Permanent(format!("an encryption configuration: {error}")))?;
        let rule = ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(default).build();
        let configuration = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|error| DriverError::Permanent(format!("an encryption configuration: {error}")))?;
        let put = self.s3.put_bucket_encryption().bucket(name).server_side_encryption_configuration(configuration);
        put.send().await.map_err(|error| {
            self.option_failed("setting the default encryption", &encryption_parameters(encryption), error)
        })?;
        Ok(())
    }

    /// The bucket's default encryption (`None`: it has none), or the store's refusal to say.
    async fn default_encryption(
        &self,
        name: &str,
    ) -> Result<Option<ServerSideEncryptionByDefault>, SdkError<GetBucketEncryptionError, HttpResponse>> {
        match self.s3.get_bucket_encryption().bucket(name).send().await {
            Ok(answer) => {
                let rules = answer.server_side_encryption_configuration.map(|c| c.rules).unwrap_or_default();
                Ok(rules.into_iter().find_map(|rule| rule.apply_server_side_encryption_by_default))
            }
            Err(error) if code(&error) == Some("ServerSideEncryptionConfigurationNotFoundError") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The KMS key the bucket encrypts with by default, where it names one: greenfield from
    /// its class, or a brownfield bucket's own. A store that does not say (no such request,
    /// or the provisioner may not ask), or a bucket not there (yet), is taken to name none:
    /// the key is made as before the question.
    async fn kms_key_of(&self, name: &str) -> Result<Option<String>, DriverError> {
        let default = match self.default_encryption(name).await {
            Ok(default) => default,
            Err(error) if matches!(code(&error), Some("NotImplemented" | "AccessDenied" | "NoSuchBucket")) => {
                return Ok(None);
            }
            Err(error) => return Err(self.failed("reading the default encryption", error)),
        };
        let kms = default.filter(|default| default.sse_algorithm().as_str().starts_with("aws:kms"));
        Ok(kms.and_then(|default| default.kms_master_key_id).filter(|key| !key.is_empty()))
    }

    /// Whether the bucket still encrypts by default as `asked` (where a key is named, with
    /// that key).
    async fn encryption_kept(&self, name: &str, asked: &Encryption) -> Result<bool, DriverError> {
        let default = self.default_encryption(name).await;
        let default = default.map_err(|error| self.failed("reading the default encryption", error))?;
        Ok(default.is_some_and(|default| {
            default.sse_algorithm().as_str() == asked.algorithm()
                && asked.kms_key().is_none_or(|key| default.kms_master_key_id() == Some(key))
        }))
    }

    async fn put_versioning(&self, name: &str) -> Result<(), DriverError> {
        let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        let put = self.s3.put_bucket_versioning().bucket(name).versioning_configuration(enabled);
        put.send().await.map_err(|error| self.option_failed("turning versioning on", &[options::VERSIONING], error))?;
        Ok(())
    }

    async fn put_lock(&self, name: &str, options: &BucketOptions) -> Result<(), DriverError> {
        let mut lock = ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled);
        if let Some(retention) = options.retention {
            let default = DefaultRetention::builder()
                .mode(ObjectLockRetentionMode::from(retention.mode.as_str()))
                .days(i32::try_from(retention.days).unwrap_or(i32::MAX))
                .build();
            lock = lock.rule(ObjectLockRule::builder().default_retention(default).build());
        }
        let put = self.s3.put_object_lock_configuration().bucket(name).object_lock_configuration(lock.build());
        put.send()
            .await
            .map_err(|error| self.option_failed("setting the object lock", &[options::OBJECT_LOCK], error))?;
        Ok(())
    }

    /// Writes `rules` as the bucket's lifecycle, for the class `parameters` that ask for
    /// bucketgate's rules among them.
    async fn put_lifecycle(
        &self,
        name: &str,
        rules: Vec<LifecycleRule>,
        parameters: &[&str],
    ) -> Result<(), DriverError> {
        let lifecycle = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|error| DriverError::Permanent(format!("a lifecycle configuration: {error}")))?;
        let put = self.s3.put_bucket_lifecycle_configuration().bucket(name).lifecycle_configuration(lifecycle);
        put.send().await.map_err(|error| self.option_failed("setting the lifecycle", parameters, error))?;
        Ok(())
    }

    /// Whether the bucket still has the default retention `options` ask for.
    async fn retention_kept(&self, name: &str, options: &BucketOptions) -> Result<bool, DriverError> {
        let Some(asked) = options.retention else { return Ok(true) };
        let lock = match self.s3.get_object_lock_configuration().bucket(name).send().await {
            Ok(lock) => lock,
            // AWS's code; SeaweedFS leaves out the "Error".
            Err(error) if code(&error).is_some_and(|c| c.starts_with("ObjectLockConfigurationNotFound")) => {
                return Ok(false);
            }
            Err(error) => return Err(self.failed("reading the object lock", error)),
        };
        let default = lock.object_lock_configuration().and_then(|c| c.rule()).and_then(|r| r.default_retention());
        let days = i32::try_from(asked.days).unwrap_or(i32::MAX);
        Ok(default.is_some_and(|d| d.mode().map(|m| m.as_str()) == Some(asked.mode.as_str()) && d.days() == Some(days)))
    }

    /// Where bucketgate's lifecycle rules are no longer among the bucket's as `options` ask:
    /// the rules to write back (the store admin's own, and bucketgate's as asked) and the
    /// class parameters of those lost. `None` where they are all there (or none is asked).
    async fn lifecycle_lost(
        &self,
        name: &str,
        options: &BucketOptions,
    ) -> Result<Option<(Vec<LifecycleRule>, Vec<&'static str>)>, DriverError> {
        let asked = lifecycle_rules(options)?;
        if asked.is_empty() {
            return Ok(None);
        }
        let mut rules = match self.s3.get_bucket_lifecycle_configuration().bucket(name).send().await {
            Ok(lifecycle) => lifecycle.rules.unwrap_or_default(),
            Err(error) if code(&error) == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(error) => return Err(self.failed("reading the lifecycle", error)),
        };
        let kept =
            |asked: &LifecycleRule| rules.iter().any(|rule| rule.id() == asked.id() && same_actions(rule, asked));
        let lost: Vec<&'static str> =
            asked.iter().filter(|(_, rule)| !kept(rule)).map(|(parameter, _)| *parameter).collect();
        if lost.is_empty() {
            return Ok(None);
        }
        rules.retain(|rule| !asked.iter().any(|(_, asked)| asked.id() == rule.id()));
        rules.extend(asked.into_iter().map(|(_, rule)| rule));
        Ok(Some((rules, lost)))
    }

    /// A bucket option the store refused: for good where it cannot do it, said with the
    /// class parameters that asked for it.
    fn option_failed<E, R>(&self, what: &str, parameters: &[&str], error: SdkError<E, R>) -> DriverError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let cannot = matches!(code(&error), Some("NotImplemented" | "InvalidBucketState" | "InvalidRequest"));
        let failed = self.failed(what, error);
        if !cannot {
            return failed;
        }
        let asked = match parameters {
            [parameter] => format!("parameter {parameter} asks; use a class without it here"),
            _ => format!("parameters {} ask; use a class without them here", parameters.join(" and ")),
        };
        DriverError::Permanent(format!("{failed}: this store cannot do what the class {asked}"))
    }

    /// An IAM call's failure, sorted: its endpoint may be another than S3's.
    fn iam_failed<E, R>(&self, what: &str, error: SdkError<E, R>) -> DriverError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let endpoint = self.settings.iam.as_ref().and_then(|iam| iam.endpoint.as_deref());
        classify(what, endpoint.unwrap_or(&self.settings.endpoint), error)
    }

    /// The S3 client with the provisioner's credentials.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    fn connection(&self, bucket: &str) -> Connection {
        Connection {
            endpoint: self.settings.endpoint.clone(),
            region: self.settings.region.clone(),
            bucket_name: bucket.to_string(),
            signature_version: "s3v4".into(),
        }
    }

    /// The IAM user that holds `holder`'s key.
    pub fn user_name(holder: &str) -> String {
        format!("bucketgate-{holder}")
    }
}

/// How many DeleteObject calls are under way at once on a store without DeleteObjects.
const ONE_BY_ONE_AT_ONCE: usize = 16;

/// An object the store would not delete, and its error code.
struct Refused {
    text: String,
    code: String,
}

impl Refused {
    fn new(key: &str, version: Option<&str>, code: Option<&str>, message: Option<&str>) -> Refused {
        let version = version.map(|v| format!(" (version {v})")).unwrap_or_default();
        let code = code.unwrap_or("Unknown").to_string();
        Refused { text: format!("{key:?}{version}: {code}: {}", message.unwrap_or_default()), code }
    }
}

/// Sorts an SDK error into retry or give up, keeping the store's own words; a store that
/// does not answer is named by its address (`endpoint`), which the connection error does
/// not say.
fn classify<E, R>(what: &str, endpoint: &str, error: SdkError<E, R>) -> DriverError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or_default();
            let text = format!("{what}: {code}: {message}");
            if permanent(code) { DriverError::Permanent(text) } else { DriverError::Transient(text) }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            DriverError::Transient(format!("{what}: the store at {endpoint} did not answer: {}", error_chain(&error)))
        }
        _ => DriverError::Transient(format!("{what}: {}", error_chain(&error))),
    }
}

/// Store error codes that no retry can help with.
fn permanent(code: &str) -> bool {
    matches!(
        code,
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidBucketName"
            | "BucketAlreadyExists"
            | "InvalidClientTokenId"
            | "MalformedPolicyDocument"
            | "IllegalLocationConstraintException"
            | "InvalidLocationConstraint"
            // A bucket in another region than the configured one (AWS names the right one).
            | "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            // A store without the operation: S3's code, and the IAM Query API's.
            | "NotImplemented"
            | "InvalidAction"
    )
}

/// The class parameters that ask for `encryption`.
fn encryption_parameters(encryption: &Encryption) -> Vec<&'static str> {
    match encryption.kms_key() {
        Some(_) => vec![options::ENCRYPTION, options::KMS_KEY_ID],
        None => vec![options::ENCRYPTION],
    }
}

/// bucketgate's lifecycle rules for what `options` ask, each with the class parameter that
/// asks for it.
fn lifecycle_rules(options: &BucketOptions) -> Result<Vec<(&'static str, LifecycleRule)>, DriverError> {
    let mut rules = Vec::new();
    if let Some(days) = options.expiration_days {
        rules.push((options::EXPIRATION_DAYS, expiration_rule(days, options.versioning)?));
    }
    if let Some(days) = options.abort_uploads_days {
        rules.push((options::ABORT_UPLOADS_DAYS, abort_uploads_rule(days)?));
    }
    Ok(rules)
}

/// Whether the store's `rule` does what bucketgate's `asked` does. Compared by what each
/// does, not as a whole: a store may give back a rule written with an empty prefix as one
/// without a filter, or add fields of its own.
fn same_actions(rule: &LifecycleRule, asked: &LifecycleRule) -> bool {
    rule.status() == asked.status()
        && rule.expiration().and_then(|e| e.days()) == asked.expiration().and_then(|e| e.days())
        && rule.noncurrent_version_expiration().and_then(|e| e.noncurrent_days())
            == asked.noncurrent_version_expiration().and_then(|e| e.noncurrent_days())
        && rule.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation())
            == asked.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation())
}

/// The lifecycle rule of a bucket whose multipart uploads are aborted, and their parts
/// deleted, `days` after they began unless completed.
fn abort_uploads_rule(asked: u32) -> Result<LifecycleRule, DriverError> {
    let days = i32::try_from(asked).unwrap_or(i32::MAX);
    LifecycleRule::builder()
        .id(ABORT_UPLOADS_RULE)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build(),
        )
        .build()
        .map_err(|error| DriverError::Permanent(format!("aborting unfinished uploads after {asked} days: {error}")))
}

/// The lifecycle rule of a bucket whose objects expire `days` after they were written. In a
/// versioned bucket expiring only hides an object behind a delete marker; its versions go
/// `days` after they stopped being current, or they would be kept, and paid for, forever.
fn expiration_rule(asked: u32, versioned: bool) -> Result<LifecycleRule, DriverError> {
    let days = i32::try_from(asked).unwrap_or(i32::MAX);
    let rule = LifecycleRule::builder()
        .id(EXPIRATION_RULE)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(LifecycleExpiration::builder().days(days).build());
    let rule = if versioned {
        rule.noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(days).build())
    } else {
        rule
    };
    rule.build().map_err(|error| DriverError::Permanent(format!("an expiration of {asked} days: {error}")))
}

/// Where CreateBucket asks for the bucket. AWS makes buckets in us-east-1 unless told,
/// refuses a request to another region's endpoint that does not say its region
/// (IllegalLocationConstraintException), and refuses `us-east-1` said outright; other
/// stores follow it (Ceph RGW matches the constraint against its zonegroup's name).
fn location(region: &str) -> Option<CreateBucketConfiguration> {
    if region.is_empty() || region == "us-east-1" {
        return None;
    }
    Some(CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

fn status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}

/// The IAM policy that limits a user to one bucket. Only actions every store here knows:
/// SeaweedFS refuses a policy naming `s3:ListMultipartUploadParts` or
/// `s3:ListBucketMultipartUploads`, and multipart uploads need only `s3:PutObject`.
///
/// Readers read earlier versions of a versioned bucket (what versioning is for: getting
/// back what was overwritten); writers may lock what they write (object-lock headers on a
/// put need `s3:PutObjectRetention`). No key may delete a version or bypass a lock: a
/// workload, or whoever has its key, can hide an object behind a delete marker but not
/// destroy its history.
///
/// A bucket encrypted by default with a KMS key of the account's own (`kms_key`, as the
/// store names it) is written and read only by whoever may use that key: see
/// [`kms_statement`].
pub fn bucket_policy(bucket: &str, mode: AccessMode, kms_key: Option<&str>) -> String {
    let actions: &[&str] = match mode {
        AccessMode::ReadOnly => {
            &["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"]
        }
        AccessMode::WriteOnly => &[
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:GetBucketLocation",
            "s3:PutObjectRetention",
            "s3:PutObjectLegalHold",
        ],
        AccessMode::ReadWrite => &[
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:GetBucketLocation",
            "s3:AbortMultipartUpload",
            "s3:GetObjectRetention",
            "s3:PutObjectRetention",
            "s3:GetObjectLegalHold",
            "s3:PutObjectLegalHold",
        ],
    };
    let objects = serde_json::json!({
        "Effect": "Allow",
        "Action": actions,
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
    });
    let statements: Vec<serde_json::Value> =
        std::iter::once(objects).chain(kms_key.map(|key| kms_statement(key, mode))).collect();
    serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The use of a bucket's KMS key its objects need: `kms:GenerateDataKey` to write,
/// `kms:Decrypt` to read (and to write in parts: a multipart upload decrypts its data key).
/// That key only, however the bucket names it: a key's ARN as it is, a bare key id in any
/// region and account, an alias (`alias/NAME` or its ARN) through the aliases the key has.
/// Without a statement, AWS refuses every read and write of such a bucket to the key
/// (the account's default `aws/s3` key needs none: its policy lets the account use it
/// through S3).
fn kms_statement(key: &str, mode: AccessMode) -> serde_json::Value {
    let actions: &[&str] = match mode {
        AccessMode::ReadOnly => &["kms:Decrypt"],
        AccessMode::WriteOnly | AccessMode::ReadWrite => &["kms:GenerateDataKey", "kms:Decrypt"],
    };
    let alias = key.find("alias/").map(|at| &key[at..]);
    match alias {
        Some(alias) => serde_json::json!({
            "Effect": "Allow",
            "Action": actions,
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}},
        }),
        None if key.starts_with("arn:") => serde_json::json!({"Effect": "Allow", "Action": actions, "Resource": key}),
        None => {
            serde_json::json!({"Effect": "Allow", "Action": actions, "Resource": format!("arn:aws:kms:*:*:key/{key}")})
        }
    }
}

#[async_trait]
impl Driver for S3Driver {
    async fn create_bucket(&self, name: &str, options: &BucketOptions) -> Result<Connection, DriverError> {
        // Not had: not there yet, or (403) another owner's bucket or a key the store
        // refuses; a HEAD answer has no body to tell which, so the create below says.
        if !self.has_bucket(name).await? {
            self.make_bucket(name, options.object_lock).await?;
        }
        // Set each time: a crash after the create must not leave a bucket without them.
        self.set_options(name, options).await?;
        Ok(self.connection(name))
    }

    async fn delete_bucket(&self, name: &str) -> Result<Deletion, DriverError> {
        // Empty it first: S3 deletes only empty buckets, and the KEP's Delete destroys the
        // contents too.
        self.empty_bucket(name).await?;
        match self.s3.delete_bucket().bucket(name).send().await {
            Ok(_) => Ok(Deletion::Deleted),
            Err(error) if code(&error) == Some("NoSuchBucket") => Ok(Deletion::NotFound),
            Err(error) => Err(self.failed("deleting the bucket", error)),
        }
    }

    async fn grant(&self, bucket: &str, holder: &str, mode: AccessMode) -> Result<Grant, DriverError> {
        let Some(iam) = &self.iam else {
            return Ok(Grant { credentials: self.credentials.clone(), scoped: false });
        };
        let user = Self::user_name(holder);
        match iam.send(iam.client.create_user().user_name(&user).send()).await {
            Ok(_) => {}
            Err(error) if code(&error) == Some("EntityAlreadyExists") => {}
            Err(error) if matches!(code(&error), Some("NotImplemented" | "InvalidAction")) => {
                return Err(DriverError::Permanent(format!(
                    "{}: the store has no IAM API for users (Ceph RGW has one from Squid on, for an account's root \
                     user): remove iam from this provisioner's configuration to hand out the provisioner's key instead",
                    self.iam_failed("creating the IAM user", error)
                )));
            }
            Err(error) => return Err(self.iam_failed("creating the IAM user", error)),
        }
        let kms_key = self.kms_key_of(bucket).await?;
        let policy = bucket_policy(bucket, mode, kms_key.as_deref());
        let put = iam.client.put_user_policy().user_name(&user).policy_name(POLICY_NAME).policy_document(policy);
        iam.send(put.send()).await.map_err(|error| self.iam_failed("limiting the IAM user to its bucket", error))?;
        // Keys from an attempt that crashed before its Secret was written are no one's.
        self.delete_keys(iam, &user, None).await?;
        Ok(Grant { credentials: self.create_key(iam, &user).await?, scoped: true })
    }

    async fn rotate(&self, holder: &str, keeping: &str) -> Result<Credentials, DriverError> {
        let Some(iam) = &self.iam else {
            return Err(DriverError::Permanent(
                "keys are rotated only where the provisioner has iam configured: this one hands out its own key".into(),
            ));
        };
        let user = Self::user_name(holder);
        self.delete_keys(iam, &user, Some(keeping)).await?;
        self.create_key(iam, &user).await
    }

    async fn retire(&self, holder: &str, keeping: &str) -> Result<(), DriverError> {
        let Some(iam) = &self.iam else { return Ok(()) };
        self.delete_keys(iam, &Self::user_name(holder), Some(keeping)).await
    }

    async fn restore_options(&self, name: &str, options: &BucketOptions) -> Result<Vec<&'static str>, DriverError> {
        let mut restored = Vec::new();
        // With a lock, S3 keeps versioning on: nothing to suspend.
        if options.versioning && !options.object_lock {
            let versioning = self.s3.get_bucket_versioning().bucket(name).send().await;
            let versioning = versioning.map_err(|error| self.failed("reading versioning", error))?;
            if versioning.status() != Some(&BucketVersioningStatus::Enabled) {
                self.put_versioning(name).await?;
                restored.push(options::VERSIONING);
            }
        }
        if !self.retention_kept(name, options).await? {
            self.put_lock(name, options).await?;
            restored.extend([options::RETENTION_MODE, options::RETENTION_DAYS]);
        }
        if let Some((rules, lost)) = self.lifecycle_lost(name, options).await? {
            self.put_lifecycle(name, rules, &lost).await?;
            restored.extend(lost);
        }
        if let Some(asked) = &options.encryption
            && !self.encryption_kept(name, asked).await?
        {
            self.put_encryption(name, asked).await?;
            restored.extend(encryption_parameters(asked));
        }
        Ok(restored)
    }

    async fn tag_bucket(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        let tags = tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build());
        let tagging = tags
            .collect::<Result<Vec<Tag>, _>>()
            .and_then(|tags| Tagging::builder().set_tag_set(Some(tags)).build())
            .map_err(|error| DriverError::Permanent(format!("the bucket's tags: {error}")))?;
        match self.s3.put_bucket_tagging().bucket(name).tagging(tagging).send().await {
            Ok(_) => Ok(true),
            Err(error) if code(&error) == Some("NotImplemented") => Ok(false),
            Err(error) => Err(self.failed("tagging the bucket", error)),
        }
    }

    async fn restore_tags(&self, name: &str, tags: &[(String, String)]) -> Result<bool, DriverError> {
        let had: Vec<(String, String)> = match self.s3.get_bucket_tagging().bucket(name).send().await {
            Ok(got) => got.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
            Err(error) if code(&error) == Some("NoSuchTagSet") => Vec::new(),
            Err(error) if code(&error) == Some("NotImplemented") => return Ok(false),
            Err(error) => return Err(self.failed("reading the bucket's tags", error)),
        };
        match super::tags_restored(&had, tags) {
            Some(merged) => self.tag_bucket(name, &merged).await,
            None => Ok(false),
        }
    }

    async fn has_bucket(&self, name: &str) -> Result<bool, DriverError> {
        match self.s3.head_bucket().bucket(name).send().await {
            Ok(_) => Ok(true),
            // 403: another owner's bucket; not one these credentials reach.
            Err(error) if matches!(status(&error), Some(403 | 404)) => Ok(false),
            Err(error) => Err(self.failed("checking the bucket", error)),
        }
    }

    async fn revoke(&self, holder: &str) -> Result<(), DriverError> {
        let Some(iam) = &self.iam else { return Ok(()) };
        let user = Self::user_name(holder);
        self.delete_keys(iam, &user, None).await?;
        match iam.send(iam.client.delete_user_policy().user_name(&user).policy_name(POLICY_NAME).send()).await {
            Ok(_) => {}
            Err(error) if code(&error) == Some("NoSuchEntity") => {}
            Err(error) => return Err(self.iam_failed("removing the IAM user's policy", error)),
        }
        match iam.send(iam.client.delete_user().user_name(&user).send()).await {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("NoSuchEntity") => Ok(()),
            Err(error) => Err(self.iam_failed("deleting the IAM user", error)),
        }
    }
}

impl S3Driver {
    /// Removes everything a bucket holds, so that the store lets it be deleted: unfinished
    /// multipart uploads (Ceph RGW refuses to delete a bucket that has one), and every
    /// version and delete marker of every object (a versioned bucket is empty only without
    /// them). Deletes what it can and then names what it could not (an object lock's
    /// retention, say). A bucket that is gone has nothing to empty.
    pub async fn empty_bucket(&self, name: &str) -> Result<(), DriverError> {
        self.abort_uploads(name).await?;
        let mut refused = Vec::new();
        if !self.delete_versions(name, &mut refused).await? {
            self.delete_current_objects(name, &mut refused).await?;
        }
        match refused.len() {
            0 => Ok(()),
            n => {
                let shown: Vec<&str> = refused.iter().take(3).map(|r| r.text.as_str()).collect();
                let more = if n > 3 { format!("; and {} more", n - 3) } else { String::new() };
                let text =
                    format!("deleting the bucket's objects: {n} could not be deleted: {}{more}", shown.join("; "));
                Err(if refused.iter().any(|r| permanent(&r.code)) {
                    DriverError::Permanent(text)
                } else {
                    DriverError::Transient(text)
                })
            }
        }
    }

    async fn abort_uploads(&self, bucket: &str) -> Result<(), DriverError> {
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let list = self.s3.list_multipart_uploads().bucket(bucket);
            let page = match list.set_key_marker(key_marker).set_upload_id_marker(upload_marker).send().await {
                Ok(page) => page,
                Err(error) if matches!(code(&error), Some("NoSuchBucket" | "NotImplemented")) => return Ok(()),
                Err(error) => return Err(self.failed("listing the bucket's unfinished uploads", error)),
            };
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                match self.s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(id).send().await {
                    Ok(_) => {}
                    Err(error) if code(&error) == Some("NoSuchUpload") => {}
                    Err(error) => return Err(self.failed("aborting an unfinished upload", error)),
                }
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || (key_marker.is_none() && upload_marker.is_none()) {
                return Ok(());
            }
        }
    }

    /// Deletes every object version and delete marker. False when the store keeps no
    /// versions to list (its ListObjectVersions is not implemented).
    async fn delete_versions(&self, bucket: &str, refused: &mut Vec<Refused>) -> Result<bool, DriverError> {
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let list = self.s3.list_object_versions().bucket(bucket);
            let page = match list.set_key_marker(key_marker).set_version_id_marker(version_marker).send().await {
                Ok(page) => page,
                Err(error) if code(&error) == Some("NoSuchBucket") => return Ok(true),
                Err(error) if code(&error) == Some("NotImplemented") => return Ok(false),
                Err(error) => return Err(self.failed("listing the bucket's object versions", error)),
            };
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page.delete_markers().iter().map(|m| (m.key(), m.version_id()));
            let objects = versions
                .chain(markers)
                .filter_map(|(key, version)| {
                    ObjectIdentifier::builder().key(key?).set_version_id(version.map(str::to_string)).build().ok()
                })
                .collect();
            self.delete_objects(bucket, objects, refused).await?;
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || (key_marker.is_none() && version_marker.is_none()) {
                return Ok(true);
            }
        }
    }

    async fn delete_current_objects(&self, bucket: &str, refused: &mut Vec<Refused>) -> Result<(), DriverError> {
        let mut pages = self.s3.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error) if code(&error) == Some("NoSuchBucket") => return Ok(()),
                Err(error) => return Err(self.failed("listing the bucket's objects", error)),
            };
            let objects = (page.contents().iter())
                .filter_map(|object| ObjectIdentifier::builder().key(object.key()?).build().ok())
                .collect();
            self.delete_objects(bucket, objects, refused).await?;
        }
        Ok(())
    }

    /// One DeleteObjects call (a listing's page holds at most the 1,000 it takes). The
    /// store answers for each object; those it refused are added to `refused`. A store
    /// without DeleteObjects (Google Cloud Storage's XML API until 2026, Riak CS, some
    /// gateways: they answer NotImplemented) has each object deleted on its own.
    async fn delete_objects(
        &self,
        bucket: &str,
        objects: Vec<ObjectIdentifier>,
        refused: &mut Vec<Refused>,
    ) -> Result<(), DriverError> {
        if objects.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder()
            .set_objects(Some(objects.clone()))
            .quiet(true)
            .build()
            .map_err(|e| DriverError::Permanent(format!("deleting objects: {e}")))?;
        let output = match self.s3.delete_objects().bucket(bucket).delete(delete).send().await {
            Ok(output) => output,
            Err(error) if code(&error) == Some("NoSuchBucket") => return Ok(()),
            Err(error) if code(&error) == Some("NotImplemented") => {
                return self.delete_one_by_one(bucket, objects, refused).await;
            }
            Err(error) => return Err(self.failed("deleting the bucket's objects", error)),
        };
        for error in output.errors() {
            let key = error.key().unwrap_or_default();
            refused.push(Refused::new(key, error.version_id(), error.code(), error.message()));
        }
        Ok(())
    }

    /// DeleteObject for each, where the store has no DeleteObjects, a few at a time (a page
    /// holds up to 1,000). What the store refuses (an object lock's retention) is added to
    /// `refused`, as DeleteObjects would say it.
    async fn delete_one_by_one(
        &self,
        bucket: &str,
        objects: Vec<ObjectIdentifier>,
        refused: &mut Vec<Refused>,
    ) -> Result<(), DriverError> {
        use futures::StreamExt;
        let delete = |object: ObjectIdentifier| async move {
            let request = self.s3.delete_object().bucket(bucket).key(object.key());
            let result = request.set_version_id(object.version_id().map(str::to_string)).send().await;
            (object, result)
        };
        let mut deletions = futures::stream::iter(objects).map(delete).buffer_unordered(ONE_BY_ONE_AT_ONCE);
        while let Some((object, result)) = deletions.next().await {
            match result {
                Ok(_) => {}
                Err(error) if matches!(code(&error), Some("NoSuchKey" | "NoSuchVersion")) => {}
                Err(error) if code(&error) == Some("NoSuchBucket") => return Ok(()),
                Err(SdkError::ServiceError(service)) => {
                    let (code, message) = (service.err().code(), service.err().message());
                    refused.push(Refused::new(object.key(), object.version_id(), code, message));
                }
                Err(error) => return Err(self.failed("deleting an object", error)),
            }
        }
        Ok(())
    }

    async fn create_key(&self, iam: &Iam, user: &str) -> Result<Credentials, DriverError> {
        let key = iam
            .send(iam.client.create_access_key().user_name(user).send())
            .await
            .map_err(|error| self.iam_failed("creating an access key", error))?;
        let key = key.access_key().ok_or_else(|| DriverError::Transient("the store returned no access key".into()))?;
        Ok(Credentials {
            access_key_id: key.access_key_id().to_string(),
            secret_access_key: key.secret_access_key().to_string(),
        })
    }

    /// Deletes `user`'s access keys, but `keeping`.
    async fn delete_keys(&self, iam: &Iam, user: &str, keeping: Option<&str>) -> Result<(), DriverError> {
        let keys = match iam.send(iam.client.list_access_keys().user_name(user).send()).await {
            Ok(keys) => keys,
            Err(error) if code(&error) == Some("NoSuchEntity") => return Ok(()),
            Err(error) => return Err(self.iam_failed("listing access keys", error)),
        };
        for key in keys.access_key_metadata() {
            if let Some(id) = key.access_key_id().filter(|id| Some(*id) != keeping) {
                match iam.send(iam.client.delete_access_key().user_name(user).access_key_id(id).send()).await {
                    Ok(_) => {}
                    Err(error) if code(&error) == Some("NoSuchEntity") => {}
                    Err(error) => return Err(self.iam_failed("deleting an old access key", error)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_with_a_kms_key_of_its_own_gives_its_keys_the_use_of_that_key_alone() {
        let statements = |mode, key| {
            let policy: serde_json::Value = serde_json::from_str(&bucket_policy("photos", mode, key)).unwrap();
            policy["Statement"].as_array().unwrap().clone()
        };
        assert_eq!(statements(AccessMode::ReadWrite, None).len(), 1, "no KMS key named: S3 alone");
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let [_, kms] = &statements(AccessMode::ReadWrite, Some(arn))[..] else { panic!("two statements") };
        assert_eq!(kms["Action"], serde_json::json!(["kms:GenerateDataKey", "kms:Decrypt"]));
        assert_eq!(kms["Resource"], arn);
        let [_, kms] = &statements(AccessMode::ReadOnly, Some("1234abcd-12ab"))[..] else { panic!("two") };
        assert_eq!(kms["Action"], serde_json::json!(["kms:Decrypt"]), "a reader decrypts only");
        assert_eq!(kms["Resource"], "arn:aws:kms:*:*:key/1234abcd-12ab");
        for alias in ["alias/photos", "arn:aws:kms:eu-west-1:111122223333:alias/photos"] {
            let [_, kms] = &statements(AccessMode::WriteOnly, Some(alias))[..] else { panic!("two") };
            assert_eq!(kms["Resource"], "*", "{alias}");
            assert_eq!(kms["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"], "alias/photos", "{alias}");
        }
    }

    #[test]
    fn a_store_without_the_operation_is_not_asked_again_and_again() {
        let permanent_codes = [
            "NotImplemented",
            "InvalidAction",
            "AccessDenied",
            "IllegalLocationConstraintException",
            "PermanentRedirect",
        ];
        for code in permanent_codes {
            assert!(permanent(code), "{code}");
        }
        for code in ["SlowDown", "InternalError", "ServiceUnavailable", "BucketNotEmpty"] {
            assert!(!permanent(code), "{code}");
        }
    }

    #[test]
    fn buckets_outside_us_east_1_say_where_they_go() {
        assert_eq!(location("us-east-1"), None, "AWS refuses us-east-1 said outright");
        assert_eq!(location(""), None);
        let eu = location("eu-west-1").expect("a constraint");
        assert_eq!(eu.location_constraint().map(|c| c.as_str()), Some("eu-west-1"));
        let rgw = location("my-zonegroup").expect("a constraint");
        assert_eq!(rgw.location_constraint().map(|c| c.as_str()), Some("my-zonegroup"));
    }
}
