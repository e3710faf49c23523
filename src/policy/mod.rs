//! Admin policies on top of the built-in rules: `BucketPolicy` files of JSONPath conditions,
//! mutations and catalog limits, each in a mode (enforce, warn, audit).
//!
//! [`load`] reads and compiles a directory, [`store`] keeps the set in force and reloads it,
//! [`testing`] runs the test suites written next to the policies, [`audit`] judges the
//! objects already there. Evaluation here is pure:
//! it reads the request, the catalog and the compiled set, and writes into a [`Verdict`].

pub mod audit;
pub mod load;
mod rule;
pub mod spec;
pub mod store;
pub mod testing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use globset::{Glob, GlobMatcher};
use kube::core::{Selector, SelectorExt};
use serde_json::{Map, Value, json};

use crate::admission::{Kind, Operation, Request, Verdict, Webhook};
use crate::catalog::{Catalog, Recheck};
use rule::{Condition, Eval, Mutation};
use spec::{LimitsSpec, MatchSpec, Mode, OnError, PolicyDocument};

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub mode: Mode,
    pub on_error: OnError,
    pub source: PathBuf,
    pub line: usize,
    pub description: Option<String>,
    matcher: Matcher,
    validate: Vec<Condition>,
    mutate: Vec<Mutation>,
    limits: Option<LimitsSpec>,
}

/// The policies in force, ordered by name so that their effects are applied in a stable order.
#[derive(Debug)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub loaded_at: SystemTime,
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet { policies: Vec::new(), loaded_at: SystemTime::now() }
    }
}

/// How one policy judged one request, for metrics, logs and the audit.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub policy: String,
    pub mode: Mode,
    /// What an [`PolicyResult::Error`] counted as.
    pub on_error: OnError,
    pub result: PolicyResult,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyResult {
    Pass,
    Violation(String),
    /// The policy could not be evaluated; its `onError` decided what followed.
    Error(String),
}

impl PolicyResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyResult::Pass => "pass",
            PolicyResult::Violation(_) => "violation",
            PolicyResult::Error(_) => "error",
        }
    }
}

impl Policy {
    pub fn compile(document: PolicyDocument, source: PathBuf, line: usize) -> Result<Policy, String> {
        if document.api_version != spec::API_VERSION || document.kind != "BucketPolicy" {
            return Err(format!(
                "expected apiVersion {} and kind BucketPolicy, got {} {}",
                spec::API_VERSION,
                document.api_version,
                document.kind
            ));
        }
        let name = document.metadata.name;
        crate::naming::check_dns1123_subdomain(&name).map_err(|problem| format!("metadata.name {name:?} {problem}"))?;
        let spec = document.spec;
        if spec.validate.is_empty() && spec.mutate.is_empty() && spec.limits.is_none() {
            return Err(format!("policy {name:?} has nothing to do: give it validate, mutate or limits"));
        }
        let validate = spec
            .validate
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::compile(c, &format!("spec.validate[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut mutate = Vec::new();
        for (i, m) in spec.mutate.iter().enumerate() {
            mutate.extend(Mutation::compile(m, &format!("spec.mutate[{i}]"))?);
        }
        Ok(Policy {
            name,
            mode: spec.mode,
            on_error: spec.on_error,
            source,
            line,
            description: spec.description,
            matcher: Matcher::compile(&spec.r#match)?,
            validate,
            mutate,
            limits: spec.limits,
        })
    }

    /// What `policy lint` should say of this policy though it loads: `file:line: warning: ...`.
    pub fn warnings(&self) -> Vec<String> {
        let m = &self.matcher;
        let mut warnings = Vec::new();
        // Cluster-scoped kinds never match a policy that names namespaces, so then it is
        // about Buckets alone anyway.
        if m.kinds.is_empty() && !m.names_namespaces() && (!self.validate.is_empty() || !self.mutate.is_empty()) {
            warnings.push(format!(
                "{}:{}: warning: policy {} names no kinds, so it judges BucketClasses and BucketContents too, \
                 those the provisioning loop creates among them: set match.kinds",
                self.source.display(),
                self.line,
                self.name
            ));
        }
        warnings
    }

    fn has_work(&self, webhook: Webhook) -> bool {
        match webhook {
            Webhook::Mutate => !self.mutate.is_empty(),
            Webhook::Validate => !self.validate.is_empty() || self.limits.is_some(),
        }
    }

    fn judge(&self, facts: &Facts) -> PolicyResult {
        for condition in &self.validate {
            match condition.eval(facts.document) {
                Ok(Eval::Pass) => {}
                Ok(Eval::Fail(message)) => return PolicyResult::Violation(message),
                Err(error) => return PolicyResult::Error(error),
            }
        }
        match self.limits.as_ref().and_then(|limits| limits_violation(limits, facts)) {
            Some(message) => PolicyResult::Violation(message),
            None => PolicyResult::Pass,
        }
    }

    /// Applies this policy's mutations to `object`, all or none: on error the ones made
    /// are taken back, last first.
    fn mutate(&self, object: &mut Value) -> PolicyResult {
        let mut made = Vec::with_capacity(self.mutate.len());
        for mutation in &self.mutate {
            match mutation.apply(object) {
                Ok(undo) => made.push(undo),
                Err(error) => {
                    self.mutate.iter().zip(made).rev().for_each(|(mutation, undo)| mutation.undo(undo, object));
                    return PolicyResult::Error(error);
                }
            }
        }
        PolicyResult::Pass
    }
}

/// What a policy may look at besides the request document.
struct Facts<'a> {
    req: &'a Request,
    kind: Kind,
    catalog: &'a Catalog,
    namespace_labels: &'a BTreeMap<String, String>,
    document: &'a Value,
}

/// Quotas and allowed classes, for Bucket CREATE. The count comes from the watch cache, so
/// Buckets created in the same instant by several clients can pass a limit by a few.
fn limits_violation(limits: &LimitsSpec, facts: &Facts) -> Option<String> {
    if facts.kind != Kind::Bucket || facts.req.operation != Operation::Create {
        return None;
    }
    let namespace = facts.req.namespace.as_deref()?;
    let labels = facts.namespace_labels;
    let by_label = limits.max_buckets_by_namespace_label.as_ref().and_then(|b| b.for_labels(labels).copied());
    if let Some(max) = [limits.max_buckets, by_label].into_iter().flatten().min() {
        let count = facts.catalog.bucket_count(namespace, &facts.req.name);
        if count >= max {
            return Some(format!(
                "namespace {namespace:?} already has {count} Buckets, the most it may have is {max}: delete one first, \
                 or ask a cluster admin to raise the limit"
            ));
        }
    }
    let classes = limits.allowed_classes_by_namespace_label.as_ref()?;
    let allowed = classes.for_labels(labels)?;
    let class = facts.document.pointer("/object/spec/bucketClassName").and_then(Value::as_str)?;
    if allowed.iter().any(|a| a == class) {
        return None;
    }
    let label = match labels.get(&classes.label) {
        Some(value) => format!("{}={value}", classes.label),
        None => format!("without label {}", classes.label),
    };
    Some(format!(
        "namespace {namespace:?} ({label}) may use BucketClasses {}, not {class:?}",
        if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
    ))
}

/// Runs the policies that match the request and writes their effects into `verdict`.
/// Policies run only on requests the built-in rules admit, never on `/status`, and never on
/// an UPDATE of an object being deleted: that is its finalizers going (bucketgate's own,
/// once the bucket is released), and a policy the object has come to violate since its
/// creation, a label required after it was made, would otherwise hold it for ever.
pub fn apply(
    webhook: Webhook,
    req: &Request,
    kind: Kind,
    catalog: &Catalog,
    set: &PolicySet,
    verdict: &mut Verdict,
) -> Vec<Record> {
    if req.sub_resource.is_some() || !verdict.allowed() || set.policies.is_empty() || req.of_a_deleted_object() {
        return Vec::new();
    }
    let labels = match req.namespace.as_deref() {
        Some(namespace) => catalog.namespace_labels(namespace).unwrap_or_else(|| {
            // The request's namespace exists: the catalog has not seen it yet (one created
            // a moment ago), and policies select by its labels and read them.
            verdict.recheck(Recheck::Namespace(namespace.to_string()));
            BTreeMap::new()
        }),
        None => BTreeMap::new(),
    };
    let objects = ObjectLabels::new(req, &verdict.patch);
    let matching: Vec<&Policy> = set
        .policies
        .iter()
        .filter(|p| p.has_work(webhook) && p.matcher.matches(req, kind, &labels, &objects))
        .collect();
    if matching.is_empty() {
        return Vec::new();
    }
    // Mutations never read the old object; only validating policies get it.
    let (mut object, old) = match req.json_objects(webhook == Webhook::Validate) {
        Ok(objects) => objects,
        Err(error) => {
            verdict.deny(format!("the request's objects cannot be read for the policies: {error}"));
            return Vec::new();
        }
    };
    if webhook == Webhook::Mutate {
        // Policies see the object with the built-in changes made, as the validating webhook will.
        if let Some(object) = object.as_mut()
            && let Err(error) = json_patch::patch(object, &verdict.patch)
        {
            verdict.deny(format!("bucketgate could not apply its own patch before the policies: {error}"));
            return Vec::new();
        }
    }
    let mut records = Vec::with_capacity(matching.len());
    match webhook {
        Webhook::Validate => {
            let reads = |name: &str| matching.iter().any(|p| p.validate.iter().any(|c| c.may_read(name)));
            let include = Include { class: reads("class"), content: reads("content") };
            let document = document(req, object, old, catalog, &labels, include);
            let facts = Facts { req, kind, catalog, namespace_labels: &labels, document: &document };
            for policy in matching {
                let result = policy.judge(&facts);
                records.push(record(policy, result, verdict));
            }
        }
        Webhook::Mutate => {
            let Some(Value::Object(mut current)) = object else { return records };
            // The patch is the difference in the parts the policies may change, so only
            // those are copied and compared: a label mutation compares the labels, not
            // all of `metadata` with its managedFields.
            let mut touched = Touched::default();
            let mut before = Map::new();
            for policy in matching {
                for path in policy.mutate.iter().map(Mutation::path) {
                    touched.copy_new(path, &current, &mut before);
                }
                let mut object = Value::Object(std::mem::take(&mut current));
                let result = policy.mutate(&mut object);
                if let Value::Object(map) = object {
                    current = map;
                }
                records.push(record(policy, result, verdict));
            }
            let after = touched.take(&mut current);
            verdict.patch.extend(json_patch::diff(&Value::Object(before), &Value::Object(after)).0);
        }
    }
    records
}

/// The parts of an object that mutations may change: a top-level member (`spec`) or one
/// member below it (`metadata.labels`), so that only those need copying and comparing.
#[derive(Default)]
struct Touched(BTreeMap<String, Option<std::collections::BTreeSet<String>>>);

impl Touched {
    /// Records the part `path` changes and, when it is new, copies its value from
    /// `object` into `before` at the same place, if `object` has it. Called before the
    /// mutation runs: a part no mutation has touched yet is still as the request had it.
    fn copy_new(&mut self, path: &[String], object: &Map<String, Value>, before: &mut Map<String, Value>) {
        let Some((top, rest)) = path.split_first() else { return };
        let current = object.get(top);
        match (self.0.get_mut(top), rest.first(), current) {
            (Some(None), _, _) => {}
            (Some(Some(below)), Some(second), _) => {
                if below.insert(second.clone())
                    && let (Some(found), Some(Value::Object(copy))) =
                        (current.and_then(|v| v.get(second)), before.get_mut(top))
                {
                    copy.insert(second.clone(), found.clone());
                }
            }
            // From some members to the whole: the member as it is now, with the members
            // changed so far put back as they were.
            (Some(Some(below)), None, _) => {
                let mut whole = current.and_then(Value::as_object).cloned().unwrap_or_default();
                let copied = before.get(top).and_then(Value::as_object);
                for name in below.iter() {
                    match copied.and_then(|c| c.get(name)) {
                        Some(value) => whole.insert(name.clone(), value.clone()),
                        None => whole.remove(name),
                    };
                }
                before.insert(top.clone(), Value::Object(whole));
                self.0.insert(top.clone(), None);
            }
            (None, Some(second), Some(Value::Object(map))) => {
                let copy = map.get(second).map(|found| (second.clone(), found.clone())).into_iter().collect();
                before.insert(top.clone(), Value::Object(copy));
                self.0.insert(top.clone(), Some([second.clone()].into()));
            }
            (None, _, current) => {
                if let Some(value) = current {
                    before.insert(top.clone(), value.clone());
                }
                self.0.insert(top.clone(), None);
            }
        }
    }

    /// Moves the touched parts out of `object`, shaped as `before` is.
    fn take(&self, object: &mut Map<String, Value>) -> Map<String, Value> {
        let mut after = Map::new();
        for (top, below) in &self.0 {
            let Some(value) = object.remove(top) else { continue };
            match (below, value) {
                (Some(below), Value::Object(mut map)) => {
                    let part = below.iter().filter_map(|name| map.remove_entry(name)).collect();
                    after.insert(top.clone(), Value::Object(part));
                }
                (_, value) => {
                    after.insert(top.clone(), value);
                }
            }
        }
        after
    }
}

/// Turns a result into the policy's effect on the verdict, by its mode and `onError`.
fn record(policy: &Policy, result: PolicyResult, verdict: &mut Verdict) -> Record {
    let message = match &result {
        PolicyResult::Pass => None,
        PolicyResult::Violation(message) => Some(message.clone()),
        PolicyResult::Error(error) => match policy.on_error {
            OnError::Fail => Some(format!("could not be evaluated: {error}")),
            OnError::Ignore => {
                tracing::warn!(policy = %policy.name, %error, "policy could not be evaluated; ignored (onError: ignore)");
                None
            }
        },
    };
    if let Some(message) = message {
        match policy.mode {
            Mode::Enforce => verdict.deny(format!("policy {}: {message}", policy.name)),
            Mode::Warn => verdict.warn(format!("policy {}: {message}", policy.name)),
            Mode::Audit => verdict.audit(crate::naming::label_value(&policy.name), message),
        }
    }
    Record { policy: policy.name.clone(), mode: policy.mode, on_error: policy.on_error, result }
}

/// Whether the document carries the object's class and content: copying them costs more
/// than the rest of the document, so only when a matching policy reads them.
struct Include {
    class: bool,
    content: bool,
}

/// The document JSONPath expressions select from.
fn document(
    req: &Request,
    object: Option<Value>,
    old: Option<Value>,
    catalog: &Catalog,
    labels: &BTreeMap<String, String>,
    include: Include,
) -> Value {
    let newest = object.as_ref().or(old.as_ref());
    let field = |pointer: &str| newest.and_then(|o| o.pointer(pointer)).and_then(Value::as_str);
    let class = field("/spec/bucketClassName")
        .filter(|_| include.class)
        .and_then(|name| catalog.class(name))
        .and_then(|c| serde_json::to_value(&*c).ok());
    let content = field("/spec/bucketContentName")
        .or_else(|| field("/status/bucketContentName"))
        .filter(|_| include.content)
        .and_then(|name| catalog.content(name))
        .and_then(|c| serde_json::to_value(&*c).ok());
    let namespace =
        req.namespace.as_deref().map(|ns| json!({"name": ns, "uid": catalog.namespace_uid(ns), "labels": labels}));
    let request = json!({
        "operation": crate::admission::operation_name(&req.operation),
        "kind": req.kind.kind,
        "name": req.name,
        "namespace": req.namespace,
        "dryRun": req.dry_run,
        "userInfo": {"username": req.user_info.username, "groups": req.user_info.groups},
    });
    // Built by moving the values in: `json!` would copy each one by serializing it.
    let members = [
        ("object", object),
        ("oldObject", old),
        ("request", Some(request)),
        ("namespace", namespace),
        ("class", class),
        ("content", content),
    ];
    Value::Object(members.into_iter().map(|(name, value)| (name.to_string(), value.unwrap_or(Value::Null))).collect())
}

impl PolicySet {
    /// The names of the policies in force.
    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}:{})", self.name, self.mode.as_str(), self.source.display(), self.line)
    }
}

/// The labels of a request's new and old objects, read only if a policy selects objects.
struct ObjectLabels<'a> {
    req: &'a Request,
    /// The built-in changes so far: in the mutating webhook, the provisioner label.
    patch: &'a [json_patch::PatchOperation],
    labels: std::cell::OnceCell<[Option<BTreeMap<String, String>>; 2]>,
}

impl<'a> ObjectLabels<'a> {
    fn new(req: &'a Request, patch: &'a [json_patch::PatchOperation]) -> Self {
        ObjectLabels { req, patch, labels: std::cell::OnceCell::new() }
    }

    /// Whether the new or the old object, where there is one, matches `selector`.
    fn either_matches(&self, selector: &Selector) -> bool {
        let [new, old] = self.labels.get_or_init(|| {
            let [new, old] = self.req.object_labels();
            [new.map(|labels| self.with_patch(labels)), old]
        });
        [new, old].into_iter().flatten().any(|labels| selector.matches(labels))
    }

    /// `labels` with the patch's label changes made: policies see the object as the
    /// validating webhook will.
    fn with_patch(&self, labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let ops: Vec<_> =
            self.patch.iter().filter(|op| op.path().as_str().starts_with("/metadata/labels")).cloned().collect();
        if ops.is_empty() {
            return labels;
        }
        // An `add` of the whole map replaces it, so the map is there for either form.
        let mut object = json!({"metadata": {"labels": labels}});
        // Made against this object's labels, the operations apply to them; should one not,
        // json-patch leaves the labels as they were.
        let _ = json_patch::patch(&mut object, &ops);
        serde_json::from_value(object["metadata"]["labels"].take()).unwrap_or_default()
    }
}

/// A label selector of `spec.match.FIELD`.
fn label_selector(spec: &spec::LabelSelectorSpec, field: &str) -> Result<Selector, String> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    // As the API server says of a webhook's selectors; kube takes `In []`, which would
    // match nothing and never say so.
    for e in &spec.match_expressions {
        match (e.operator.as_str(), e.values.is_empty()) {
            ("In" | "NotIn", true) => {
                return Err(format!("spec.match.{field}: {:?} {} needs values", e.key, e.operator));
            }
            ("Exists" | "DoesNotExist", false) => {
                return Err(format!("spec.match.{field}: {:?} {} takes no values", e.key, e.operator));
            }
            _ => {}
        }
    }
    let requirements = spec.match_expressions.iter().map(|e| LabelSelectorRequirement {
        key: e.key.clone(),
        operator: e.operator.clone(),
        values: Some(e.values.clone()),
    });
    let selector = LabelSelector {
        match_labels: Some(spec.match_labels.clone()),
        match_expressions: Some(requirements.collect()),
    };
    Selector::try_from(selector).map_err(|e| format!("spec.match.{field}: {e}"))
}

#[derive(Debug)]
struct Matcher {
    kinds: Vec<Kind>,
    operations: Vec<Operation>,
    namespaces: Vec<GlobMatcher>,
    exclude_namespaces: Vec<GlobMatcher>,
    namespace_selector: Option<Selector>,
    object_selector: Option<Selector>,
    users: Vec<GlobMatcher>,
    exclude_users: Vec<GlobMatcher>,
    groups: Vec<GlobMatcher>,
    exclude_groups: Vec<GlobMatcher>,
}

impl Matcher {
    fn compile(spec: &MatchSpec) -> Result<Matcher, String> {
        let globs = |patterns: &[String], field: &str| -> Result<Vec<GlobMatcher>, String> {
            patterns
                .iter()
                .map(|p| {
                    Glob::new(p)
                        .map(|g| g.compile_matcher())
                        .map_err(|e| format!("spec.match.{field}: {p:?} is not a glob: {e}"))
                })
                .collect()
        };
        let kinds = spec
            .kinds
            .iter()
            .map(|k| {
                Kind::named(k)
                    .ok_or_else(|| format!("spec.match.kinds: {k:?} is not one of Bucket, BucketClass, BucketContent"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let operations = spec
            .operations
            .iter()
            .map(|o| match o.as_str() {
                "CREATE" => Ok(Operation::Create),
                "UPDATE" => Ok(Operation::Update),
                "DELETE" => Ok(Operation::Delete),
                other => Err(format!("spec.match.operations: {other:?} is not one of CREATE, UPDATE, DELETE")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let selector = |spec: &Option<spec::LabelSelectorSpec>, field: &str| {
            spec.as_ref().map(|s| label_selector(s, field)).transpose()
        };
        let namespace_selector = selector(&spec.namespace_selector, "namespaceSelector")?;
        let object_selector = selector(&spec.object_selector, "objectSelector")?;
        Ok(Matcher {
            kinds,
            operations: if operations.is_empty() { vec![Operation::Create, Operation::Update] } else { operations },
            namespaces: globs(&spec.namespaces, "namespaces")?,
            exclude_namespaces: globs(&spec.exclude_namespaces, "excludeNamespaces")?,
            namespace_selector,
            object_selector,
            users: globs(&spec.users, "users")?,
            exclude_users: globs(&spec.exclude_users, "excludeUsers")?,
            groups: globs(&spec.groups, "groups")?,
            exclude_groups: globs(&spec.exclude_groups, "excludeGroups")?,
        })
    }

    /// Whether the policy is about namespaces (names them or selects them): then it never
    /// matches cluster-scoped kinds.
    fn names_namespaces(&self) -> bool {
        !self.namespaces.is_empty() || self.namespace_selector.is_some()
    }

    fn matches(
        &self,
        req: &Request,
        kind: Kind,
        namespace_labels: &BTreeMap<String, String>,
        objects: &ObjectLabels,
    ) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        if !self.operations.contains(&req.operation) {
            return false;
        }
        match req.namespace.as_deref() {
            None if self.names_namespaces() => return false,
            None => {}
            Some(ns) => {
                if !self.namespaces.is_empty() && !self.namespaces.iter().any(|g| g.is_match(ns)) {
                    return false;
                }
                if self.exclude_namespaces.iter().any(|g| g.is_match(ns)) {
                    return false;
                }
                if let Some(selector) = &self.namespace_selector
                    && !selector.matches(namespace_labels)
                {
                    return false;
                }
            }
        }
        let user = &req.user_info;
        let username = user.username.as_deref();
        let any = |globs: &[GlobMatcher], name: &str| globs.iter().any(|g| g.is_match(name));
        if !self.users.is_empty() && !username.is_some_and(|u| any(&self.users, u)) {
            return false;
        }
        if username.is_some_and(|u| any(&self.exclude_users, u)) {
            return false;
        }
        let groups = user.groups.as_deref().unwrap_or_default();
        if !self.groups.is_empty() && !groups.iter().any(|group| any(&self.groups, group)) {
            return false;
        }
        if groups.iter().any(|group| any(&self.exclude_groups, group)) {
            return false;
        }
        // Last: the only check that may read the objects.
        if let Some(selector) = &self.object_selector
            && !objects.either_matches(selector)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::decode;
    use crate::api::Bucket;
    use k8s_openapi::api::core::v1::Namespace;

    fn policy(spec: Value) -> Policy {
        let document =
            json!({"apiVersion": spec::API_VERSION, "kind": "BucketPolicy", "metadata": {"name": "p"}, "spec": spec});
        Policy::compile(serde_json::from_value(document).unwrap(), "p.yaml".into(), 1).unwrap()
    }

    fn request(namespace: Option<&str>, operation: &str, user: &str, groups: &[&str]) -> Request {
        let object = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "b", "namespace": namespace},
            "spec": {"protocol": "s3", "bucketClassName": "fast"}});
        let user = json!({"username": user, "groups": groups});
        let body = crate::admission::synthetic_review(Kind::Bucket, operation, namespace, user, object, Value::Null);
        decode(body.to_string().as_bytes()).unwrap()
    }

    fn matches(spec: Value, req: &Request, labels: &[(&str, &str)]) -> bool {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        policy(json!({"match": spec, "validate": [{"path": "$.object", "required": true}]})).matcher.matches(
            req,
            Kind::Bucket,
            &labels,
            &ObjectLabels::new(req, &[]),
        )
    }

    /// A Bucket request whose new and old objects (`None`: no such object) carry `labels`.
    fn labelled(operation: &str, new: Option<Value>, old: Option<Value>) -> Request {
        let object = |labels: Option<Value>| match labels {
            Some(labels) => json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
                "metadata": {"name": "b", "namespace": "team-a", "labels": labels}, "spec": {"protocol": "s3"}}),
            None => Value::Null,
        };
        let user = json!({"username": "alice"});
        let body =
            crate::admission::synthetic_review(Kind::Bucket, operation, Some("team-a"), user, object(new), object(old));
        decode(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn objects_are_selected_by_the_labels_of_the_new_or_the_old_object() {
        let gold = json!({"objectSelector": {"matchLabels": {"tier": "gold"}}});
        let not_gold =
            json!({"objectSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}});
        let all =
            json!({"objectSelector": {"matchLabels": {"tier": "gold"}}, "operations": ["CREATE", "UPDATE", "DELETE"]});
        let create = labelled("CREATE", Some(json!({"tier": "gold"})), None);
        assert!(matches(gold.clone(), &create, &[]));
        assert!(!matches(not_gold.clone(), &create, &[]));
        // An object without labels is an object: NotIn matches it.
        assert!(matches(not_gold.clone(), &labelled("CREATE", Some(json!({})), None), &[]));
        assert!(!matches(gold.clone(), &labelled("CREATE", Some(json!({"tier": "silver"})), None), &[]));
        // Either object: a label taken off still matches, as Kubernetes' objectSelector does.
        let downgraded = labelled("UPDATE", Some(json!({"tier": "silver"})), Some(json!({"tier": "gold"})));
        assert!(matches(gold.clone(), &downgraded, &[]));
        assert!(matches(not_gold, &downgraded, &[]));
        assert!(matches(all.clone(), &labelled("DELETE", None, Some(json!({"tier": "gold"}))), &[]));
        assert!(!matches(all, &labelled("DELETE", None, Some(json!({"tier": "silver"}))), &[]));
    }

    /// In the mutating webhook the new object has bucketgate's provisioner label already, as
    /// the policies' mutations and the validating webhook see it.
    #[test]
    fn the_object_selector_sees_the_built_in_label() {
        let rook = json!({"objectSelector": {"matchLabels": {"cosi.io/provisioner": "rook"}}});
        let set = PolicySet {
            policies: vec![policy(json!({"match": rook,
                "mutate": [{"setDefault": {"path": "$.object.metadata.labels.backup", "value": "daily"}}]}))],
            loaded_at: SystemTime::now(),
        };
        // The two forms of the built-in patch: the whole map added, or one label in it.
        let whole = json!({"op": "add", "path": "/metadata/labels", "value": {"cosi.io/provisioner": "rook"}});
        let one = json!({"op": "add", "path": "/metadata/labels/cosi.io~1provisioner", "value": "rook"});
        for (labels, op) in [(Value::Null, whole), (json!({}), one.clone()), (json!({"app": "gallery"}), one)] {
            let req = labelled("CREATE", Some(labels.clone()), None);
            let mut verdict = Verdict::default();
            verdict.patch.push(serde_json::from_value(op).unwrap());
            apply(Webhook::Mutate, &req, Kind::Bucket, &Catalog::with_buckets([], [], [], []), &set, &mut verdict);
            let patched = serde_json::to_string(&verdict.patch).unwrap();
            assert!(patched.contains("daily"), "{labels}: {patched}");

            let mut unlabelled = Verdict::default();
            apply(Webhook::Mutate, &req, Kind::Bucket, &Catalog::with_buckets([], [], [], []), &set, &mut unlabelled);
            assert!(unlabelled.patch.is_empty(), "{labels}: selected without the label");
        }
    }

    #[test]
    fn matching_by_kind_operation_namespace_selector_and_user() {
        let team = request(Some("team-a"), "CREATE", "alice", &["devs"]);
        assert!(matches(json!({}), &team, &[]));
        assert!(!matches(json!({"kinds": ["BucketClass"]}), &team, &[]));
        assert!(!matches(json!({"operations": ["DELETE"]}), &team, &[]));
        assert!(
            !matches(json!({}), &request(Some("team-a"), "DELETE", "alice", &[]), &[]),
            "CREATE and UPDATE by default"
        );
        assert!(matches(json!({"namespaces": ["team-*"]}), &team, &[]));
        assert!(!matches(json!({"namespaces": ["team-*"], "excludeNamespaces": ["team-a"]}), &team, &[]));
        assert!(!matches(json!({"namespaces": ["prod-*"]}), &team, &[]));
        let selector = json!({"namespaceSelector": {"matchLabels": {"env": "production"}}});
        assert!(matches(selector.clone(), &team, &[("env", "production")]));
        assert!(!matches(selector.clone(), &team, &[("env", "dev")]));
        let expression =
            json!({"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}});
        assert!(matches(expression, &team, &[("tier", "gold")]));
        // Namespace conditions never match cluster-scoped requests.
        assert!(!matches(selector, &request(None, "CREATE", "alice", &[]), &[]));
        assert!(matches(json!({"users": ["ali*"]}), &team, &[]));
        assert!(!matches(json!({"users": ["bob"]}), &team, &[]));
        assert!(matches(json!({"groups": ["devs"]}), &team, &[]));
        assert!(!matches(json!({"groups": ["admins"]}), &team, &[]));
        // Exclusions win over inclusions, as excludeNamespaces does.
        assert!(!matches(json!({"users": ["ali*"], "excludeUsers": ["alice"]}), &team, &[]));
        assert!(matches(json!({"excludeUsers": ["system:serviceaccount:*"]}), &team, &[]));
        assert!(!matches(json!({"groups": ["devs"], "excludeGroups": ["d*"]}), &team, &[]));
        assert!(matches(json!({"excludeGroups": ["system:masters"]}), &team, &[]));
        let admin = request(Some("team-a"), "CREATE", "root", &["system:masters", "devs"]);
        assert!(!matches(json!({"excludeGroups": ["system:masters"]}), &admin, &[]), "any of the groups");
    }

    #[test]
    fn a_policy_without_kinds_is_warned_of_unless_it_is_about_namespaces() {
        let validate = json!([{"path": "$.object.metadata.labels.team", "required": true}]);
        let warnings = policy(json!({"validate": validate})).warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("p.yaml:1: warning: policy p names no kinds"), "{warnings:?}");
        assert!(policy(json!({"match": {"kinds": ["Bucket"]}, "validate": validate})).warnings().is_empty());
        assert!(policy(json!({"match": {"namespaces": ["team-*"]}, "validate": validate})).warnings().is_empty());
        assert!(policy(json!({"limits": {"maxBuckets": 3}})).warnings().is_empty(), "limits are Buckets' only");
    }

    #[test]
    fn bad_match_and_empty_policies_do_not_compile() {
        let compile = |spec: Value| {
            let document = json!({"apiVersion": spec::API_VERSION, "kind": "BucketPolicy", "metadata": {"name": "p"}, "spec": spec});
            Policy::compile(serde_json::from_value(document).unwrap(), "p.yaml".into(), 1).unwrap_err()
        };
        let validate = json!([{"path": "$.object", "required": true}]);
        assert!(compile(json!({"match": {"kinds": ["Pod"]}, "validate": validate})).contains("\"Pod\" is not one of"));
        assert!(compile(json!({"match": {"operations": ["PATCH"]}, "validate": validate})).contains("\"PATCH\""));
        assert!(compile(json!({"match": {"namespaces": ["[a"]}, "validate": validate})).contains("not a glob"));
        let bad_selector = json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}});
        assert!(compile(json!({"match": bad_selector, "validate": validate})).contains("namespaceSelector"));
        let bad_selector = json!({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}});
        assert_eq!(
            compile(json!({"match": bad_selector, "validate": validate})),
            "spec.match.objectSelector: \"a\" In needs values"
        );
        let bad_selector =
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]}});
        assert!(compile(json!({"match": bad_selector, "validate": validate})).contains("Exists takes no values"));
        assert!(compile(json!({})).contains("has nothing to do"));
    }

    #[test]
    fn limits_count_buckets_and_check_classes() {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "lab", "uid": "u", "labels": {"tier": "bronze"}}}))
                .unwrap();
        let bucket = |name: &str| -> Bucket {
            serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
                "metadata": {"name": name, "namespace": "lab"}, "spec": {}}))
            .unwrap()
        };
        let catalog = Catalog::with_buckets([], [], [namespace.clone()], [bucket("a"), bucket("c")]);
        let set = PolicySet {
            policies: vec![policy(json!({"limits": {
                "maxBucketsByNamespaceLabel": {"label": "tier", "values": {"bronze": 2}, "default": 10},
                "allowedClassesByNamespaceLabel": {"label": "tier", "values": {"bronze": ["slow"]}}}}))],
            loaded_at: SystemTime::now(),
        };
        let req = request(Some("lab"), "CREATE", "alice", &[]);
        let mut verdict = Verdict::default();
        let records = apply(Webhook::Validate, &req, Kind::Bucket, &catalog, &set, &mut verdict);
        assert_eq!(
            verdict.errors,
            [
                "policy p: namespace \"lab\" already has 2 Buckets, the most it may have is 2: delete one first, or ask a cluster admin to raise the limit"
            ]
        );
        assert_eq!(records[0].result.as_str(), "violation");

        // A Bucket of the request's name is not counted against it: one deleted a moment ago
        // that the watch still holds, or an existing Bucket judged by `policy audit`.
        let itself = Catalog::with_buckets([], [], [namespace], [bucket("a"), bucket("b")]);
        let mut verdict = Verdict::default();
        apply(Webhook::Validate, &req, Kind::Bucket, &itself, &set, &mut verdict);
        assert!(!verdict.errors[0].contains("already has"), "{:?}", verdict.errors);

        let roomy = Catalog::with_buckets(
            [],
            [],
            [serde_json::from_value::<Namespace>(json!({"metadata": {"name": "lab", "labels": {"tier": "bronze"}}}))
                .unwrap()],
            [],
        );
        let mut verdict = Verdict::default();
        apply(Webhook::Validate, &req, Kind::Bucket, &roomy, &set, &mut verdict);
        assert_eq!(
            verdict.errors,
            ["policy p: namespace \"lab\" (tier=bronze) may use BucketClasses slow, not \"fast\""]
        );

        // Status requests and requests the built-in rules already refused are not judged.
        let mut denied = Verdict::default();
        denied.deny("built-in");
        assert!(apply(Webhook::Validate, &req, Kind::Bucket, &catalog, &set, &mut denied).is_empty());
    }

    /// A namespace created a moment ago, and a Bucket in it: the policies select by its
    /// labels, so it is named for the server to read, and with it read they apply.
    #[test]
    fn a_namespace_the_catalog_has_not_seen_is_named_and_its_labels_read_from_the_api_server_apply() {
        let set = PolicySet {
            policies: vec![policy(json!({"limits": {
                "allowedClassesByNamespaceLabel": {"label": "tier", "values": {"bronze": ["fast"]}, "default": []}}}))],
            loaded_at: SystemTime::now(),
        };
        let req = request(Some("lab"), "CREATE", "alice", &[]);
        let behind = Catalog::from_objects([], [], []);
        let mut verdict = Verdict::default();
        apply(Webhook::Validate, &req, Kind::Bucket, &behind, &set, &mut verdict);
        assert_eq!(verdict.rechecks, [Recheck::Namespace("lab".into())]);
        assert_eq!(
            verdict.errors,
            ["policy p: namespace \"lab\" (without label tier) may use BucketClasses none, not \"fast\""]
        );

        let lab: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "lab", "uid": "u", "labels": {"tier": "bronze"}}}))
                .unwrap();
        let read = behind.with_fetched(crate::catalog::Fetched::of([], [], [lab]));
        let mut verdict = Verdict::default();
        apply(Webhook::Validate, &req, Kind::Bucket, &read, &set, &mut verdict);
        assert_eq!((verdict.errors.len(), verdict.rechecks.len()), (0, 0), "{:?}", verdict.errors);
    }

    /// The patch holds what the policies changed, whether they add a member the object
    /// lacks, set, remove, or fail halfway, and applies to the object the API server has.
    #[test]
    fn mutation_patches_apply_to_the_request_object() {
        let set = PolicySet {
            policies: vec![
                policy(json!({"mutate": [
                    {"set": {"path": "$.object.status.note", "value": "new top-level member"}},
                    {"remove": {"path": "$.object.spec.bucketClassName"}},
                    {"addLabels": {"team": "a"}}]})),
                policy(json!({"onError": "ignore", "mutate": [
                    {"set": {"path": "$.object.spec.tier", "value": "gold"}},
                    {"set": {"path": "$.object.metadata.name.x", "value": "through a string"}}]})),
                policy(json!({"mutate": [{"set": {"path": "$.object.metadata.annotations['a']", "value": "1"}}]})),
                // A member changed in part by one policy, then whole by another.
                policy(json!({"mutate": [{"set": {"path": "$.object.spec.tier", "value": "gold"}}]})),
                policy(
                    json!({"mutate": [{"set": {"path": "$.object.spec", "value": {"protocol": "s3", "tier": "silver"}}}]}),
                ),
            ],
            loaded_at: SystemTime::now(),
        };
        let req = request(Some("team-a"), "CREATE", "alice", &[]);
        let catalog = Catalog::from_objects([], [], []);
        let mut verdict = Verdict::default();
        let records = apply(Webhook::Mutate, &req, Kind::Bucket, &catalog, &set, &mut verdict);
        assert_eq!(
            records.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(),
            ["pass", "error", "pass", "pass", "pass"]
        );
        let mut object = req.json_objects(false).unwrap().0.unwrap();
        json_patch::patch(&mut object, &verdict.patch).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
                "metadata": {"name": "b", "namespace": "team-a", "labels": {"team": "a"}, "annotations": {"a": "1"}},
                "spec": {"protocol": "s3", "tier": "silver"}, "status": {"note": "new top-level member"}})
        );
    }
}
