//! The policy file format, `policy.bucketgate.dev/v1alpha1`. Unknown fields are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "policy.bucketgate.dev/v1alpha1";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A violation denies the request.
    #[default]
    Enforce,
    /// A violation is returned to the client as an admission warning.
    Warn,
    /// A violation is allowed and recorded in the response's auditAnnotations and in metrics.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// What a failed evaluation (a value of the wrong type, a path into a string) counts as.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// As a violation, reported in the policy's mode: fail closed.
    #[default]
    Fail,
    /// As a pass, logged and counted: fail open.
    Ignore,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub r#match: MatchSpec,
    /// Conditions that must all hold.
    #[serde(default)]
    pub validate: Vec<ConditionSpec>,
    #[serde(default)]
    pub mutate: Vec<MutationSpec>,
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// Bucket, BucketClass, BucketContent; all when empty.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// CREATE, UPDATE, DELETE; CREATE and UPDATE when empty.
    #[serde(default)]
    pub operations: Vec<String>,
    /// Namespace names or globs (`team-*`); any namespace when empty. A policy that names
    /// namespaces or a namespace selector never matches cluster-scoped kinds.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// The object's labels, as a webhook's `objectSelector`: the policy matches when the
    /// new or the old object matches (on CREATE only the new one, on DELETE the old one).
    /// In the mutating webhook the new object's labels include bucketgate's own
    /// `cosi.io/provisioner`.
    #[serde(default)]
    pub object_selector: Option<LabelSelectorSpec>,
    /// Usernames or globs (`system:serviceaccount:*`); anyone when empty.
    #[serde(default)]
    pub users: Vec<String>,
    /// Usernames or globs the policy never judges, whatever `users` says.
    #[serde(default)]
    pub exclude_users: Vec<String>,
    /// Groups or globs; any group when empty.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Groups or globs whose members the policy never judges (`system:masters`, say, for a
    /// way around a policy in an emergency).
    #[serde(default)]
    pub exclude_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorSpec {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelExpressionSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelExpressionSpec {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// One node of a condition tree: exactly one of `all`, `any`, `not` or `path`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionSpec>>,
    /// JSONPath into the request document: `$.object`, `$.oldObject`, `$.request`,
    /// `$.namespace`, `$.class`, `$.content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Shown when this node fails; `{{value}}` and `{{path}}` quote the offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One mutation: exactly one of the fields.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_default: Option<SetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<PathSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    /// A plain member path under `$.object`, such as `$.object.metadata.labels['team']`.
    pub path: String,
    pub value: Value,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    pub path: String,
}

/// Limits that need the catalog. They apply to Bucket CREATE requests.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// The most Buckets one namespace may have.
    #[serde(default)]
    pub max_buckets: Option<usize>,
    /// The most Buckets, by the value of a namespace label.
    #[serde(default)]
    pub max_buckets_by_namespace_label: Option<ByLabel<usize>>,
    /// The BucketClasses a namespace may use, by the value of a namespace label.
    #[serde(default)]
    pub allowed_classes_by_namespace_label: Option<ByLabel<Vec<String>>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ByLabel<T> {
    pub label: String,
    pub values: BTreeMap<String, T>,
    /// For namespaces without the label or with another value; no limit when absent.
    #[serde(default)]
    pub default: Option<T>,
}

impl<T> ByLabel<T> {
    pub fn for_labels(&self, labels: &BTreeMap<String, String>) -> Option<&T> {
        labels.get(&self.label).and_then(|v| self.values.get(v)).or(self.default.as_ref())
    }
}
