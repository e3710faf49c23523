//! Admission decisions for the cosi.io kinds.
//!
//! [`decode`] turns an HTTP body into a request or a [`ReviewError`] (an HTTP 400);
//! [`review`] is a pure function from the request, the catalog and the configuration to
//! the response. Mutation rules live in [`mutate`], validation rules in [`validate`].
//! How the objects are read for them: `held.rs` (in the same pass as the request) and
//! `lean.rs` (without the metadata no rule reads).

mod held;
mod lean;
pub mod mutate;
mod patch;
pub mod validate;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use json_patch::PatchOperation;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, Status};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::api::{GROUP, VERSION};
use crate::catalog::{Catalog, Recheck};
use crate::config::Config;
use crate::policy::{PolicySet, Record};
use held::Held;

/// One admission request, as much of it as the rules read. The objects are parsed
/// straight into their Rust types (see the `held` module), and only policies, when one matches, need
/// them as `serde_json::Value`. (kube's `AdmissionRequest<DynamicObject>` parses each object
/// into `ObjectMeta` plus a flattened map, which the rules would then have to serialize
/// again; that was half the cost of a decision.)
#[derive(Debug)]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub dry_run: bool,
    objects: Held,
}

/// A request read the general way: any kind, the objects kept as JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeneralRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: UserInfo,
    #[serde(default)]
    object: Option<Box<RawValue>>,
    #[serde(default)]
    old_object: Option<Box<RawValue>>,
    #[serde(default)]
    dry_run: bool,
}

impl From<GeneralRequest> for Request {
    fn from(r: GeneralRequest) -> Request {
        Request {
            uid: r.uid,
            kind: r.kind,
            sub_resource: r.sub_resource,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            user_info: r.user_info,
            dry_run: r.dry_run,
            objects: Held::Raw { object: r.object, old: r.old_object },
        }
    }
}

/// The AdmissionReview envelope; type fields default to empty so that a missing one gets
/// the same message as a wrong one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<GeneralRequest>,
}

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// Which of the two webhooks is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    Mutate,
    Validate,
}

impl Webhook {
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Mutate => "mutate",
            Webhook::Validate => "validate",
        }
    }
}

/// The kinds bucketgate decides about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bucket,
    BucketClass,
    BucketContent,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Bucket, Kind::BucketClass, Kind::BucketContent];

    pub fn of(req: &Request) -> Option<Kind> {
        Kind::of_gvk(&req.kind)
    }

    fn of_gvk(kind: &GroupVersionKind) -> Option<Kind> {
        if kind.group != GROUP || kind.version != VERSION {
            return None;
        }
        Kind::named(&kind.kind)
    }

    /// The kind called `name` (`Bucket`), as in requests and policy files.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bucket => "Bucket",
            Kind::BucketClass => "BucketClass",
            Kind::BucketContent => "BucketContent",
        }
    }

    /// The resource in the API's paths and in webhook rules.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Bucket => "buckets",
            Kind::BucketClass => "bucketclasses",
            Kind::BucketContent => "bucketcontents",
        }
    }
}

/// An AdmissionReview as the API server sends one for `object` (null for DELETE) and `old`
/// (null for CREATE): for `bucketgate policy test` and tests, which have objects, not
/// captured requests.
pub fn synthetic_review(
    kind: Kind,
    operation: &str,
    namespace: Option<&str>,
    user: serde_json::Value,
    object: serde_json::Value,
    old: serde_json::Value,
) -> serde_json::Value {
    let name = object.pointer("/metadata/name").or(old.pointer("/metadata/name")).cloned();
    serde_json::json!({"apiVersion": REVIEW_API_VERSION, "kind": REVIEW_KIND, "request": {
        "uid": "synthetic", "kind": {"group": GROUP, "version": VERSION, "kind": kind.name()},
        "resource": {"group": GROUP, "version": VERSION, "resource": kind.resource()},
        "name": name.unwrap_or_else(|| "".into()), "namespace": namespace, "operation": operation,
        "userInfo": user, "object": object, "oldObject": old}})
}

/// What the API server ends with for one write sent through both webhooks.
#[derive(Debug, Default)]
pub struct Chained {
    pub allowed: bool,
    /// The refusal's message, when not allowed.
    pub message: String,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    /// The object with the mutating webhook's patch applied, once that webhook admitted it.
    pub patched: Option<serde_json::Value>,
    /// How each policy that took part judged the write, in both webhooks.
    pub records: Vec<Record>,
}

/// Sends a write through the admission chain as the API server runs it: the mutating
/// webhook, its patch applied, then the validating webhook on the patched object. `object`
/// is `None` for DELETE, `old` for CREATE. An error where the write is not a request
/// bucketgate reads, or its patch does not apply.
pub fn chain(
    ctx: &Context,
    kind: Kind,
    operation: &str,
    namespace: Option<&str>,
    user: serde_json::Value,
    object: Option<serde_json::Value>,
    old: Option<serde_json::Value>,
) -> Result<Chained, String> {
    let mut object = object;
    let old = old.unwrap_or(serde_json::Value::Null);
    let mut chained = Chained { allowed: true, ..Chained::default() };
    for webhook in [Webhook::Mutate, Webhook::Validate] {
        let new = object.clone().unwrap_or(serde_json::Value::Null);
        let body = synthetic_review(kind, operation, namespace, user.clone(), new, old.clone());
        let request = decode(body.to_string().as_bytes()).map_err(|e| format!("not a valid request: {e}"))?;
        let reviewed = review(webhook, &request, ctx);
        chained.records.extend(reviewed.records);
        let response = reviewed.response;
        chained.warnings.extend(response.warnings.unwrap_or_default());
        chained.audit.extend(response.audit_annotations);
        if !response.allowed {
            chained.allowed = false;
            chained.message = response.result.message;
            break;
        }
        if let (Some(patch), Some(target)) = (&response.patch, object.as_mut()) {
            let patch: json_patch::Patch = serde_json::from_slice(patch).map_err(|e| e.to_string())?;
            json_patch::patch(target, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
        }
        if webhook == Webhook::Mutate {
            chained.patched = object.clone();
        }
    }
    Ok(chained)
}

/// Why a body is not an AdmissionReview bucketgate can answer. Each is an HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(String),
    #[error(
        "expected apiVersion {REVIEW_API_VERSION:?} and kind {REVIEW_KIND:?}, got apiVersion {api_version:?} and kind {kind:?}; register the webhook with admissionReviewVersions: [v1]"
    )]
    WrongType { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    EmptyUid,
}

pub fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    // Checked once here, so that the parser need not check each string it reads.
    let body = std::str::from_utf8(body).map_err(|e| ReviewError::Json(format!("the body is not UTF-8: {e}")))?;
    if let Some(request) = held::read(body) {
        return Ok(request);
    }
    decode_generally(body)
}

/// Reads any AdmissionReview, keeping the objects as text, and words what is wrong with it.
fn decode_generally(body: &str) -> Result<Request, ReviewError> {
    let review: Review = from_str(body).map_err(ReviewError::Json)?;
    if review.api_version != REVIEW_API_VERSION || review.kind != REVIEW_KIND {
        return Err(ReviewError::WrongType { api_version: review.api_version, kind: review.kind });
    }
    let request = review.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::EmptyUid);
    }
    Ok(request.into())
}

/// The answer to one review, as [`encode`] writes it.
#[derive(Debug, Clone)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// For a refusal: the message, HTTP code and reason that the API server shows.
    pub result: Status,
    /// The JSONPatch to apply, as JSON text.
    pub patch: Option<Vec<u8>>,
    pub warnings: Option<Vec<String>>,
    /// Recorded in the API server's audit log under the webhook's name.
    pub audit_annotations: BTreeMap<String, String>,
}

/// The response review as the API server reads it, as JSON text: the fields and names of
/// kube's `AdmissionReview`, but for the patch, which goes as base64 text, the API's JSON
/// form of `[]byte` (kube writes an array of numbers: kube-rs#1781). Written straight to
/// text: this runs on every request.
pub fn encode(response: &Response) -> serde_json::Result<Vec<u8>> {
    use base64::Engine;
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Review<'a> {
        api_version: &'a str,
        kind: &'a str,
        response: Wire<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire<'a> {
        uid: &'a str,
        allowed: bool,
        status: &'a Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch_type: Option<&'a str>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        audit_annotations: &'a BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        warnings: Option<&'a Vec<String>>,
    }
    let patch = response.patch.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    // Sized for the whole review, so that it is not reallocated as it grows.
    let room = 256
        + response.uid.len()
        + response.result.message.len()
        + patch.as_ref().map_or(0, String::len)
        + response.warnings.iter().flatten().map(|w| w.len() + 4).sum::<usize>()
        + response.audit_annotations.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
    let mut out = Vec::with_capacity(room);
    serde_json::to_writer(
        &mut out,
        &Review {
            api_version: REVIEW_API_VERSION,
            kind: REVIEW_KIND,
            response: Wire {
                uid: &response.uid,
                allowed: response.allowed,
                status: &response.result,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: &response.audit_annotations,
                warnings: response.warnings.as_ref(),
            },
        },
    )?;
    Ok(out)
}

/// Parses JSON the fast way; only when that fails is it parsed again, tracking the path,
/// so that the error can name the field.
fn from_str<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|error| {
        let mut de = serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => crate::api::describe(e.path(), e.inner()),
            Ok(_) => error.to_string(),
        }
    })
}

/// Everything a decision reads besides the request.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub config: &'a Config,
    pub policies: &'a PolicySet,
}

/// A decision and how each policy that took part judged it.
pub struct Reviewed {
    pub response: Response,
    pub records: Vec<Record>,
    /// Objects the decision turned on that the catalog lacked, or held refusing: worth
    /// reading from the API server and deciding again, as the catalog may only be behind.
    pub rechecks: Vec<Recheck>,
}

/// Answers one admission request: the built-in rules, then the admins' policies. Pure:
/// everything it knows comes in as arguments.
pub fn review(webhook: Webhook, req: &Request, ctx: &Context) -> Reviewed {
    let Some(kind) = Kind::of(req) else {
        let verdict = Verdict::warning(format!(
            "bucketgate does not handle {}/{} {}: the webhook's rules should not send it here",
            req.kind.group, req.kind.version, req.kind.kind
        ));
        return Reviewed { response: verdict.into_response(req), records: Vec::new(), rechecks: Vec::new() };
    };
    let mut verdict = match webhook {
        Webhook::Mutate => mutate::mutate(kind, req, ctx.catalog),
        Webhook::Validate => validate::validate(kind, req, ctx.catalog, ctx.config),
    };
    let records = crate::policy::apply(webhook, req, kind, ctx.catalog, ctx.policies, &mut verdict);
    let rechecks = std::mem::take(&mut verdict.rechecks);
    Reviewed { response: verdict.into_response(req), records, rechecks }
}

pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The outcome of the rules for one request, before it becomes a [`Response`].
#[derive(Debug, Default)]
pub struct Verdict {
    /// What is wrong and how to fix it; any entry denies the request.
    pub errors: Vec<String>,
    /// A tenancy refusal (403 Forbidden) rather than an invalid object (422 Invalid).
    pub forbidden: bool,
    pub warnings: Vec<String>,
    pub patch: Vec<PatchOperation>,
    /// Recorded in the API server's audit log under the webhook's name.
    pub audit_annotations: BTreeMap<String, String>,
    /// What the answer turned on as the catalog has it (see [`Recheck`]).
    pub rechecks: Vec<Recheck>,
}

impl Verdict {
    pub fn warning(message: String) -> Verdict {
        Verdict { warnings: vec![message], ..Verdict::default() }
    }

    pub fn deny(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    pub fn forbid(&mut self, message: impl Into<String>) {
        self.forbidden = true;
        self.errors.push(message.into());
    }

    /// Notes that the answer turned on `object` as the catalog has it, or lacks it: worth
    /// giving again with the API server's copy.
    pub fn recheck(&mut self, object: Recheck) {
        if !self.rechecks.contains(&object) {
            self.rechecks.push(object);
        }
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    pub fn audit(&mut self, key: String, message: String) {
        self.audit_annotations.insert(key, message);
    }

    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    fn into_response(self, req: &Request) -> Response {
        let mut response = Response {
            uid: req.uid.clone(),
            allowed: true,
            result: Status::default(),
            patch: None,
            warnings: (!self.warnings.is_empty()).then_some(self.warnings),
            audit_annotations: self.audit_annotations,
        };
        if !self.errors.is_empty() {
            response.allowed = false;
            response.result.message = format!("{}: {}", Subject(req), self.errors.join("; "));
            let (code, reason) = if self.forbidden { (403, "Forbidden") } else { (422, "Invalid") };
            response.result.code = code;
            response.result.reason = reason.to_string();
        } else if !self.patch.is_empty() {
            // About 100 bytes an operation; grown from empty, it was reallocated five times.
            let mut patch = Vec::with_capacity(128 * self.patch.len());
            match serde_json::to_writer(&mut patch, &self.patch) {
                Ok(()) => response.patch = Some(patch),
                // A patch of labels, finalizers and strings always serializes; should it not,
                // refusing is safer than admitting an object without its finalizer.
                Err(error) => {
                    response.allowed = false;
                    response.result.message = format!("bucketgate could not encode its patch: {error}");
                }
            }
        }
        response
    }
}

/// `Bucket "team-a/photos"`, as the request names its object.
struct Subject<'a>(&'a Request);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let req = self.0;
        let name = if req.name.is_empty() {
            format!("{}*", req.generate_name().unwrap_or_default())
        } else {
            req.name.clone()
        };
        match &req.namespace {
            Some(ns) => write!(f, "{} \"{ns}/{name}\"", req.kind.kind),
            None => write!(f, "{} \"{name}\"", req.kind.kind),
        }
    }
}

impl Request {
    /// `metadata.generateName` of the object, for naming an object that has no name yet.
    fn generate_name(&self) -> Option<String> {
        let [new, _] = self.object_metas();
        new?.generate_name.clone()
    }

    /// `metadata.labels` of the new and the old object, each `None` where the request has
    /// no such object; an object without labels has an empty map. For policies that select
    /// objects by label, as a webhook's `objectSelector` does.
    pub fn object_labels(&self) -> [Option<BTreeMap<String, String>>; 2] {
        self.object_metas().map(|meta| meta.map(|meta| meta.labels.clone().unwrap_or_default()))
    }

    /// Whether this is an UPDATE of an object whose deletion has begun: what is left to
    /// happen to it is its finalizers going, which must not be held up.
    pub fn of_a_deleted_object(&self) -> bool {
        self.operation == Operation::Update
            && self.object_metas().iter().flatten().any(|meta| meta.deletion_timestamp.is_some())
    }

    /// The metadata of the new and the old object, each `None` where there is none.
    fn object_metas(&self) -> [Option<Cow<'_, ObjectMeta>>; 2] {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        match &self.objects {
            Held::Read { typed, .. } => typed.metas().map(|meta| meta.map(Cow::Borrowed)),
            Held::Raw { object, old } => [object, old].map(|raw| {
                let object: Object = serde_json::from_str(raw.as_ref()?.get()).ok()?;
                Some(Cow::Owned(object.metadata))
            }),
        }
    }

    /// The new object and, when `with_old`, the old one as JSON values, for the policies.
    pub fn json_objects(
        &self,
        with_old: bool,
    ) -> serde_json::Result<(Option<serde_json::Value>, Option<serde_json::Value>)> {
        let json = |raw: &Option<Box<RawValue>>| raw.as_ref().map(|r| serde_json::from_str(r.get())).transpose();
        match &self.objects {
            Held::Raw { object, old } => Ok((json(object)?, if with_old { json(old)? } else { None })),
            Held::Read { body, .. } => {
                #[derive(Deserialize)]
                struct Review<R> {
                    request: R,
                }
                #[derive(Deserialize)]
                struct New {
                    #[serde(default)]
                    object: Option<serde_json::Value>,
                }
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Both {
                    #[serde(default)]
                    object: Option<serde_json::Value>,
                    #[serde(default)]
                    old_object: Option<serde_json::Value>,
                }
                // Each object read once, straight into a value; the old one only skipped
                // when it is not wanted.
                if with_old {
                    let Review { request: Both { object, old_object } } = serde_json::from_str(body)?;
                    Ok((object, old_object))
                } else {
                    let Review { request: New { object } } = serde_json::from_str(body)?;
                    Ok((object, None))
                }
            }
        }
    }
}

/// The typed new and old objects of a request, or the message that explains why not.
#[derive(Debug, Clone)]
struct Objects<K> {
    new: Option<K>,
    old: Option<K>,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Objects { new: None, old: None }
    }
}

/// The typed objects of `req`: borrowed when they were read with the request, parsed from
/// their text otherwise.
fn objects<K: held::Admitted>(req: &Request) -> Result<Cow<'_, Objects<K>>, String>
where
    lean::Lean<K>: DeserializeOwned,
{
    let read = |object: &Option<Box<RawValue>>, which: &str| -> Result<Option<K>, String> {
        object
            .as_ref()
            .map(|raw| from_str::<lean::Lean<K>>(raw.get()).map(|lean::Lean(object)| object))
            .transpose()
            .map_err(|e| format!("the {which} does not match the {} schema: {e}", req.kind.kind))
    };
    match &req.objects {
        Held::Raw { object, old } => {
            Ok(Cow::Owned(Objects { new: read(object, "object")?, old: read(old, "old object")? }))
        }
        Held::Read { typed, .. } => K::held(typed)
            .map(Cow::Borrowed)
            .ok_or_else(|| format!("bucketgate read the objects of this {} as another kind", req.kind.kind)),
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",
        "kind":{"group":"cosi.io","version":"v1alpha1","kind":"Bucket"},
        "resource":{"group":"cosi.io","version":"v1alpha1","resource":"buckets"},
        "operation":"DELETE","userInfo":{"username":"a"},"object":null,"oldObject":null}}"#;

    #[test]
    fn decodes_a_minimal_review() {
        let req = decode(REVIEW.as_bytes()).unwrap();
        assert_eq!(req.uid, "u1");
        assert_eq!(Kind::of(&req), Some(Kind::Bucket));
    }

    #[test]
    fn bad_bodies_get_clear_errors() {
        let err = decode(b"{not json").unwrap_err().to_string();
        assert!(
            err.starts_with("request body is not a valid AdmissionReview: key must be a string at line 1"),
            "{err}"
        );
        let err = decode(b"").unwrap_err().to_string();
        assert!(err.contains("EOF"), "{err}");
        let err = decode(b"{\"apiVersion\": \"\xff\"}").unwrap_err().to_string();
        assert!(err.starts_with("request body is not a valid AdmissionReview: the body is not UTF-8"), "{err}");
        let v1beta1 = REVIEW.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        assert!(matches!(decode(v1beta1.as_bytes()), Err(ReviewError::WrongType { .. })));
        let no_request = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(decode(no_request.as_bytes()), Err(ReviewError::MissingRequest)));
        let no_uid = REVIEW.replace(r#""uid":"u1","#, "");
        let err = decode(no_uid.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("request") && err.contains("missing field `uid`"), "{err}");
        let empty_uid = REVIEW.replace(r#""uid":"u1""#, r#""uid":"""#);
        assert!(matches!(decode(empty_uid.as_bytes()), Err(ReviewError::EmptyUid)));
        let bad_op = REVIEW.replace("DELETE", "SMASH");
        let err = decode(bad_op.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("request.operation"), "{err}");
    }

    /// The wire form is kube's own serialization of the review, but for the patch, which
    /// goes as base64 text.
    #[test]
    fn encodes_as_kube_does_with_the_patch_in_base64() {
        use kube::core::admission::AdmissionResponse;
        let req = decode(REVIEW.as_bytes()).unwrap();
        let mut denied = Verdict::warning("look".into());
        denied.forbid("no");
        denied.audit("k".into(), "v".into());
        let mut patched = Verdict::default();
        patched.patch.push(patch::add(&["metadata", "labels"], serde_json::json!({"a": "b"})));
        for response in [Verdict::default(), denied, patched].map(|v| v.into_response(&req)) {
            let ours: serde_json::Value = serde_json::from_slice(&encode(&response).unwrap()).unwrap();
            // kube builds its response only from its own request type; its fields are public.
            let mut theirs = AdmissionResponse::invalid("");
            theirs.types.api_version = REVIEW_API_VERSION.into();
            theirs.uid = response.uid.clone();
            theirs.allowed = response.allowed;
            theirs.result = response.result.clone();
            theirs.warnings = response.warnings.clone();
            theirs.audit_annotations = response.audit_annotations.clone().into_iter().collect();
            if let Some(patch) = &response.patch {
                theirs = theirs.with_patch(serde_json::from_slice(patch).unwrap()).unwrap();
            }
            let mut kube = serde_json::to_value(theirs.into_review()).unwrap();
            if let Some(patch) = &response.patch {
                use base64::Engine;
                kube["response"]["patch"] = base64::engine::general_purpose::STANDARD.encode(patch).into();
            }
            assert_eq!(ours, kube);
        }
    }

    #[test]
    fn other_kinds_are_allowed_with_a_warning() {
        let other = REVIEW.replace(r#""kind":"Bucket""#, r#""kind":"Pod""#);
        let req = decode(other.as_bytes()).unwrap();
        let catalog = Catalog::from_objects([], [], []);
        let ctx = Context { catalog: &catalog, config: &Config::default(), policies: &PolicySet::default() };
        let response = review(Webhook::Validate, &req, &ctx).response;
        assert!(response.allowed);
        assert!(response.warnings.unwrap()[0].contains("does not handle cosi.io/v1alpha1 Pod"));
    }
}
