//! The three kinds of the Object Bucket Provisioning KEP, group `cosi.io/v1alpha1`.
//!
//! The Rust types are the source of truth: `bucketgate crds` renders the CRDs in
//! `manifests/crds/` from them. CEL rules here are what the API server can enforce on its
//! own, so the cluster stays safe when the webhook is down; the webhook repeats them with
//! messages that say how to fix the object.

// kube-derive takes one `printcolumn(...)` per column; clippy reads their repeated
// `type_ = "string"` arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::naming::{DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN};

pub const GROUP: &str = "cosi.io";
pub const VERSION: &str = "v1alpha1";
/// Label carrying the (sanitized) provisioner name on Buckets and BucketContents.
pub const PROVISIONER_LABEL: &str = "cosi.io/provisioner";
/// Finalizer that holds Buckets and BucketContents until the backend agrees.
pub const FINALIZER: &str = "cosi.io/finalizer";
/// Set to "true" on a Bucket to release it without asking the backend (bucket gone or
/// unreachable); its data, if any is left, is not deleted.
pub const FORCE_RELEASE_ANNOTATION: &str = "cosi.io/force-release";

/// Whether `object` carries [`FINALIZER`].
pub fn held(object: &impl kube::Resource) -> bool {
    object.meta().finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// Whether `object` asks to be released without its store ([`FORCE_RELEASE_ANNOTATION`]).
pub fn force_release_asked(object: &impl kube::Resource) -> bool {
    object.meta().annotations.as_ref().and_then(|a| a.get(FORCE_RELEASE_ANNOTATION)).map(String::as_str) == Some("true")
}

/// Data-path protocol of a bucket.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    #[serde(rename = "s3")]
    S3,
    #[serde(rename = "gcs")]
    Gcs,
    #[serde(rename = "azureBlob")]
    AzureBlob,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::S3, Protocol::Gcs, Protocol::AzureBlob];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::S3 => "s3",
            Protocol::Gcs => "gcs",
            Protocol::AzureBlob => "azureBlob",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Access granted to credentials handed out for a bucket.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    #[serde(rename = "ro")]
    ReadOnly,
    #[serde(rename = "wo")]
    WriteOnly,
    #[serde(rename = "rw")]
    ReadWrite,
}

/// What happens to the backend bucket when its Kubernetes objects go away.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReleasePolicy {
    /// The bucket and its contents are destroyed. The default, as for StorageClasses.
    #[default]
    Delete,
    /// The bucket and its data are kept; only the Kubernetes objects go.
    Retain,
}

impl fmt::Display for ReleasePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleasePolicy::Delete => "Delete",
            ReleasePolicy::Retain => "Retain",
        })
    }
}

/// A user's request for a bucket, in the user's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cosi.io",
    version = "v1alpha1",
    kind = "Bucket",
    namespaced,
    status = "BucketStatus",
    shortname = "bkt",
    category = "objectstorage",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.bucketClassName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    // Why it is, or is not, Ready: a Bound Bucket whose bucket is missing at its store says so here.
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Content", type_ = "string", json_path = ".status.bucketContentName"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // A BucketContent being deleted asks for the Buckets bound to it by these, not for all.
    selectable = ".spec.bucketContentName",
    selectable = ".status.bucketContentName"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.protocol) || (has(self.protocol) && self.protocol == oldSelf.protocol)").message("spec.protocol is immutable once set"),
    validation = Rule::new("!has(oldSelf.bucketPrefix) || (has(self.bucketPrefix) && self.bucketPrefix == oldSelf.bucketPrefix)").message("spec.bucketPrefix is immutable once set"),
    validation = Rule::new("!has(oldSelf.bucketClassName) || (has(self.bucketClassName) && self.bucketClassName == oldSelf.bucketClassName)").message("spec.bucketClassName is immutable once set"),
    validation = Rule::new("!has(oldSelf.secretName) || (has(self.secretName) && self.secretName == oldSelf.secretName)").message("spec.secretName is immutable once set"),
    validation = Rule::new("!has(oldSelf.bucketContentName) || (has(self.bucketContentName) && self.bucketContentName == oldSelf.bucketContentName)").message("spec.bucketContentName is immutable once set")
)]
pub struct BucketSpec {
    /// Data-path protocol. Filled in from the class when the class supports only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Prefix of the generated backend bucket name (lower case; a unique suffix follows).
    #[schemars(length(max = 63))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_prefix: Option<String>,
    /// BucketClass to provision from. The default class for the protocol when omitted.
    #[schemars(length(max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_class_name: Option<String>,
    /// Secret in the Bucket's namespace that receives the credentials.
    #[schemars(length(max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Bind to this existing BucketContent (sharing and brownfield) instead of provisioning.
    #[schemars(length(max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_content_name: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketPhase {
    Pending,
    Bound,
    Failed,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_content_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BucketPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was written for. kstatus (Flux, kpt, cli-utils)
    /// reads a status written for an older generation as still in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How a provisioner creates buckets. Cluster-scoped; fields at the top level as in the KEP.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cosi.io",
    version = "v1alpha1",
    kind = "BucketClass",
    no_spec,
    shortname = "bktclass",
    category = "objectstorage",
    printcolumn(name = "Provisioner", type_ = "string", json_path = ".provisioner"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".isDefaultBucketClass"),
    printcolumn(name = "Protocols", type_ = "string", json_path = ".supportedProtocols"),
    printcolumn(name = "ReleasePolicy", type_ = "string", json_path = ".releasePolicy"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)").message("parameters are immutable: create a new BucketClass instead"),
    validation = Rule::new("has(self.provisioner) == has(oldSelf.provisioner) && (!has(self.provisioner) || self.provisioner == oldSelf.provisioner)").message("provisioner is immutable: create a new BucketClass instead"),
    validation = Rule::new("has(self.releasePolicy) == has(oldSelf.releasePolicy) && (!has(self.releasePolicy) || self.releasePolicy == oldSelf.releasePolicy)").message("releasePolicy is immutable: create a new BucketClass instead")
)]
#[serde(rename_all = "camelCase")]
pub struct BucketClassSpec {
    /// Name of the provisioner (driver) that creates buckets of this class.
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// Buckets that name no class get the default class for their protocol.
    #[serde(default)]
    pub is_default_bucket_class: bool,
    #[schemars(length(min = 1))]
    pub supported_protocols: Vec<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// Delete when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicy>,
    /// Passed to the provisioner; copied into every BucketContent of this class.
    #[schemars(schema_with = "parameters_schema")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl BucketClassSpec {
    pub fn provisioner(&self) -> &str {
        self.provisioner.as_deref().unwrap_or("")
    }
}

/// Parameters are compared whole by CEL rules; bounding them keeps the API server's cost
/// estimate for those rules within its budget.
fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 128,
        "additionalProperties": { "type": "string", "maxLength": 4096 }
    })
}

/// A namespace allowed to bind Buckets to a BucketContent, pinned by uid so that a namespace
/// deleted and recreated under the same name does not inherit access.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.name) && self.name != '' && has(self.uid) && self.uid != ''").message("each bindableNamespaces entry needs the namespace's name and uid"))]
pub struct BindableNamespace {
    #[schemars(length(max = 63), pattern(DNS1123_LABEL_PATTERN))]
    #[serde(default)]
    pub name: String,
    #[schemars(length(max = 128))]
    #[serde(default)]
    pub uid: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Protocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_version: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcsProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureBlobProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// Connection data of a bucket; never credentials.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub protocol_type: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_blob: Option<AzureBlobProtocol>,
}

/// A bucket in an object store, as the cluster knows it. Cluster-scoped.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cosi.io",
    version = "v1alpha1",
    kind = "BucketContent",
    status = "BucketContentStatus",
    shortname = "bktcontent",
    category = "objectstorage",
    printcolumn(name = "Provisioner", type_ = "string", json_path = ".spec.provisioner"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol.type"),
    printcolumn(name = "ReleasePolicy", type_ = "string", json_path = ".spec.releasePolicy"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.parameters) == has(oldSelf.parameters) && (!has(self.parameters) || self.parameters == oldSelf.parameters)").message("spec.parameters are immutable"),
    validation = Rule::new("(has(self.provisioner) && self.provisioner != '') || (has(self.releasePolicy) && self.releasePolicy == 'Retain')").message("a BucketContent without a provisioner (brownfield or static) must have releasePolicy Retain")
)]
pub struct BucketContentSpec {
    /// Empty for brownfield and static buckets, which no driver manages.
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    #[schemars(length(max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_class_name: Option<String>,
    /// Namespaces whose Buckets may bind to this content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindable_namespaces: Vec<BindableNamespace>,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    /// A copy of the class's parameters.
    #[schemars(schema_with = "parameters_schema")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl BucketContentSpec {
    pub fn provisioner(&self) -> &str {
        self.provisioner.as_deref().unwrap_or("")
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketContentPhase {
    Bound,
    Released,
    Failed,
    Retrying,
}

impl BucketContentPhase {
    /// As the status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketContentPhase::Bound => "Bound",
            BucketContentPhase::Released => "Released",
            BucketContentPhase::Failed => "Failed",
            BucketContentPhase::Retrying => "Retrying",
        }
    }
}

impl Bucket {
    pub fn phase(&self) -> Option<BucketPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// The BucketContent its status names: the one it is bound to, or was until a failure.
    pub fn status_content(&self) -> Option<&str> {
        self.status.as_ref()?.bucket_content_name.as_deref()
    }

    /// The conditions in the status; none before it has one.
    pub fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    /// The condition of type `type_` in the status, if there is one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }
}

impl BucketContent {
    pub fn phase(&self) -> Option<BucketContentPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// See [`BucketContentStatus::key_holders`].
    pub fn key_holders(&self) -> impl Iterator<Item = (&str, &str)> {
        self.status.iter().flat_map(|s| s.key_holders.iter()).map(|(uid, holder)| (uid.as_str(), holder.as_str()))
    }

    /// Why a Bucket not yet bound to this content may not bind it now: it is being deleted
    /// (its deletion would then wait on that Bucket for as long as it lives), or it was
    /// released when its Bucket was deleted (the KEP does not reuse contents). Buckets bound
    /// before stay bound. Admission and the provisioning loop both apply this.
    pub fn closed_to_binding(&self) -> Option<ClosedToBinding> {
        if self.metadata.deletion_timestamp.is_some() {
            Some(ClosedToBinding::Deleting)
        } else if self.phase() == Some(BucketContentPhase::Released) {
            Some(ClosedToBinding::Released)
        } else {
            None
        }
    }
}

/// See [`BucketContent::closed_to_binding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedToBinding {
    Deleting,
    Released,
}

impl ClosedToBinding {
    /// The reason of the Bucket's condition and Event when the loop meets this.
    pub fn reason(self) -> &'static str {
        match self {
            ClosedToBinding::Deleting => "ContentDeleting",
            ClosedToBinding::Released => "ContentReleased",
        }
    }

    /// What the Bucket's owner reads, from the webhook's refusal or from the loop's
    /// condition alike, with what to do about it.
    pub fn message(self, content_name: &str) -> String {
        match self {
            ClosedToBinding::Deleting => format!(
                "BucketContent {content_name:?} is being deleted, so it cannot be bound: ask its owner whether it \
                 stays, or bind another"
            ),
            ClosedToBinding::Released => format!(
                "BucketContent {content_name:?} was released when the Bucket it was made for was deleted, and is \
                 not bound again: to use its bucket, ask a cluster admin for a BucketContent without a provisioner \
                 that names the bucket (releasePolicy: Retain)"
            ),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketContentStatus {
    /// Why the content is in its phase, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BucketContentPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Buckets other than the one the content was made for that hold a key made for
    /// them alone at its store, by uid: `namespace/name`. Written when the key is made and
    /// taken off when it is revoked, so that the key of a Bucket that went without being
    /// released (its finalizer taken off by hand) is found and revoked: a content made by
    /// an admin, or shared, names no Bucket of its own that would say so.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_holders: BTreeMap<String, String>,
}

/// Reads a JSON value as one of these types. The error names the offending field where
/// serde can tell (fields flattened into the top level, as in BucketClass, it cannot).
pub fn from_value<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<K, String> {
    serde_path_to_error::deserialize(value).map_err(|e| describe(e.path(), e.inner()))
}

pub(crate) fn describe(path: &serde_path_to_error::Path, error: &impl fmt::Display) -> String {
    match path.to_string().as_str() {
        "." | "?" => error.to_string(),
        path => format!("{path}: {error}"),
    }
}
