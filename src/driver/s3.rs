//! The S3 driver, for any S3-compatible endpoint (AWS, Ceph RGW, MinIO, SeaweedFS), with
//! per-bucket users through the IAM API where the store has one.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, timeout::TimeoutConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{Connection, Credentials, Driver, DriverError, Grant};
use crate::api::AccessMode;
use crate::config::S3Settings;

const POLICY_NAME: &str = "bucketgate-bucket";

/// An HTTPS client over rustls with ring. Its connection pool belongs to the Tokio runtime
/// that first uses it, so share one only within a runtime (the provisioning loop does).
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

pub struct S3Driver {
    s3: aws_sdk_s3::Client,
    iam: Option<aws_sdk_iam::Client>,
    settings: S3Settings,
    credentials: Credentials,
}

impl S3Driver {
    pub fn new(settings: &S3Settings, credentials: Credentials) -> S3Driver {
        S3Driver::with_http_client(settings, credentials, http_client())
    }

    pub fn with_http_client(settings: &S3Settings, credentials: Credentials, http: SharedHttpClient) -> S3Driver {
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
            .http_client(http.clone())
            .timeout_config(timeouts())
            // Checksums only where S3 requires them: older Ceph and MinIO releases refuse the
            // newer default trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        let iam = settings.iam.as_ref().map(|iam| {
            let config = aws_sdk_iam::Config::builder()
                .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
                .region(aws_sdk_iam::config::Region::new(settings.region.clone()))
                .endpoint_url(iam.endpoint.as_deref().unwrap_or(&settings.endpoint))
                .credentials_provider(provider)
                .http_client(http.clone())
                .timeout_config(timeouts())
                .build();
            aws_sdk_iam::Client::from_conf(config)
        });
        S3Driver { s3: aws_sdk_s3::Client::from_conf(s3), iam, settings: settings.clone(), credentials }
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
    fn user_name(holder: &str) -> String {
        format!("bucketgate-{holder}")
    }
}

/// Sorts an SDK error into retry or give up, keeping the store's own words.
fn classify<E, R>(what: &str, error: SdkError<E, R>) -> DriverError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or_default();
            let text = format!("{what}: {code}: {message}");
            match code {
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "InvalidBucketName"
                | "BucketAlreadyExists"
                | "InvalidClientTokenId"
                | "MalformedPolicyDocument" => DriverError::Permanent(text),
                _ => DriverError::Transient(text),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            DriverError::Transient(format!("{what}: the store did not answer: {}", error_chain(&error)))
        }
        _ => DriverError::Transient(format!("{what}: {}", error_chain(&error))),
    }
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
pub fn bucket_policy(bucket: &str, mode: AccessMode) -> String {
    let actions: &[&str] = match mode {
        AccessMode::ReadOnly => &["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
        AccessMode::WriteOnly => &["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetBucketLocation"],
        AccessMode::ReadWrite => &[
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:AbortMultipartUpload",
        ],
    };
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": actions,
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        }],
    })
    .to_string()
}

#[async_trait]
impl Driver for S3Driver {
    async fn create_bucket(&self, name: &str) -> Result<Connection, DriverError> {
        match self.s3.head_bucket().bucket(name).send().await {
            Ok(_) => return Ok(self.connection(name)),
            // 404: not there yet. 403: another owner's bucket, or a key the store refuses;
            // a HEAD answer has no body to tell which, so the create below says.
            Err(error) if matches!(status(&error), Some(403 | 404)) => {}
            Err(error) => return Err(classify("checking the bucket", error)),
        }
        match self.s3.create_bucket().bucket(name).send().await {
            Ok(_) => Ok(self.connection(name)),
            Err(error) if code(&error) == Some("BucketAlreadyOwnedByYou") => Ok(self.connection(name)),
            Err(error) if code(&error) == Some("BucketAlreadyExists") => {
                Err(DriverError::Permanent(format!("bucket name {name:?} is taken by another owner of the store")))
            }
            Err(error) => Err(classify("creating the bucket", error)),
        }
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), DriverError> {
        // Empty it first: S3 deletes only empty buckets, and the KEP's Delete destroys the
        // contents too.
        let mut pages = self.s3.list_objects_v2().bucket(name).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error) if code(&error) == Some("NoSuchBucket") => return Ok(()),
                Err(error) => return Err(classify("listing the bucket's objects", error)),
            };
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|object| object.key())
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let delete = Delete::builder()
                .set_objects(Some(keys))
                .quiet(true)
                .build()
                .map_err(|e| DriverError::Permanent(format!("deleting objects: {e}")))?;
            self.s3
                .delete_objects()
                .bucket(name)
                .delete(delete)
                .send()
                .await
                .map_err(|error| classify("deleting the bucket's objects", error))?;
        }
        match self.s3.delete_bucket().bucket(name).send().await {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("NoSuchBucket") => Ok(()),
            Err(error) => Err(classify("deleting the bucket", error)),
        }
    }

    async fn grant(&self, bucket: &str, holder: &str, mode: AccessMode) -> Result<Grant, DriverError> {
        let Some(iam) = &self.iam else {
            return Ok(Grant { credentials: self.credentials.clone(), scoped: false });
        };
        let user = Self::user_name(holder);
        match iam.create_user().user_name(&user).send().await {
            Ok(_) => {}
            Err(error) if code(&error) == Some("EntityAlreadyExists") => {}
            Err(error) => return Err(classify("creating the IAM user", error)),
        }
        iam.put_user_policy()
            .user_name(&user)
            .policy_name(POLICY_NAME)
            .policy_document(bucket_policy(bucket, mode))
            .send()
            .await
            .map_err(|error| classify("limiting the IAM user to its bucket", error))?;
        // Keys from an attempt that crashed before its Secret was written are no one's.
        self.delete_keys(iam, &user).await?;
        let key = iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .map_err(|error| classify("creating an access key", error))?;
        let key = key.access_key().ok_or_else(|| DriverError::Transient("the store returned no access key".into()))?;
        Ok(Grant {
            credentials: Credentials {
                access_key_id: key.access_key_id().to_string(),
                secret_access_key: key.secret_access_key().to_string(),
            },
            scoped: true,
        })
    }

    async fn revoke(&self, holder: &str) -> Result<(), DriverError> {
        let Some(iam) = &self.iam else { return Ok(()) };
        let user = Self::user_name(holder);
        self.delete_keys(iam, &user).await?;
        match iam.delete_user_policy().user_name(&user).policy_name(POLICY_NAME).send().await {
            Ok(_) => {}
            Err(error) if code(&error) == Some("NoSuchEntity") => {}
            Err(error) => return Err(classify("removing the IAM user's policy", error)),
        }
        match iam.delete_user().user_name(&user).send().await {
            Ok(_) => Ok(()),
            Err(error) if code(&error) == Some("NoSuchEntity") => Ok(()),
            Err(error) => Err(classify("deleting the IAM user", error)),
        }
    }
}

impl S3Driver {
    async fn delete_keys(&self, iam: &aws_sdk_iam::Client, user: &str) -> Result<(), DriverError> {
        let keys = match iam.list_access_keys().user_name(user).send().await {
            Ok(keys) => keys,
            Err(error) if code(&error) == Some("NoSuchEntity") => return Ok(()),
            Err(error) => return Err(classify("listing access keys", error)),
        };
        for key in keys.access_key_metadata() {
            if let Some(id) = key.access_key_id() {
                match iam.delete_access_key().user_name(user).access_key_id(id).send().await {
                    Ok(_) => {}
                    Err(error) if code(&error) == Some("NoSuchEntity") => {}
                    Err(error) => return Err(classify("deleting an old access key", error)),
                }
            }
        }
        Ok(())
    }
}
