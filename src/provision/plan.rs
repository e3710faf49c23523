//! Pure decisions of the provisioning loop: what a Bucket's BucketContent, Secret and
//! status look like, and which Buckets a change to another object concerns. No I/O here.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::api::{
    BindableNamespace, Bucket, BucketClass, BucketContent, BucketContentPhase, BucketContentSpec, BucketPhase,
    ClosedToBinding, FINALIZER, FORCE_RELEASE_ANNOTATION, PROVISIONER_LABEL, Protocol, ProtocolSpec, S3Protocol,
};
use crate::driver::options::KeyRotation;
use crate::driver::{BucketOptions, Connection, DriverError, Grant};
use crate::naming::{
    BUCKET_NAME_SUFFIX_LEN, check_dns1123_label, check_dns1123_subdomain, check_secret_parameters, content_name_for,
    label_value, secret_chosen_by_bucket, short_hash,
};

/// Labels that tie a greenfield BucketContent to the Bucket it was made for.
pub const BUCKET_NAMESPACE_LABEL: &str = "cosi.io/bucket-namespace";
pub const BUCKET_NAME_LABEL: &str = "cosi.io/bucket-name";
pub const BUCKET_UID_LABEL: &str = "cosi.io/bucket-uid";

/// The label (any value) an admin puts on a provisioner Secret to have the loop watch it,
/// by its metadata: the Buckets it keys are looked at as it comes or changes.
pub const PROVISIONER_SECRET_LABEL: &str = "cosi.io/provisioner-secret";

/// The backend bucket name: the Bucket's prefix and a suffix from its uid, so that the same
/// Bucket always gets the same name and two Buckets never share one.
pub fn backend_bucket_name(bucket: &Bucket) -> String {
    let prefix = bucket.spec.bucket_prefix.as_deref().unwrap_or_default();
    format!("{prefix}{}", short_hash(&bucket.uid().unwrap_or_default(), BUCKET_NAME_SUFFIX_LEN))
}

/// The Secret a Bucket's credentials go to: `spec.secretName`, else the Bucket's own name
/// (as ObjectBucketClaims do).
pub fn secret_name(bucket: &Bucket) -> String {
    bucket.spec.secret_name.clone().unwrap_or_else(|| bucket.name_any())
}

/// What is wrong with a name in the Bucket's spec that no object can have, if one is. The
/// loop puts these names into request paths, which kube does not escape ("x?watch=true"
/// would read another object). The webhook and the CRD's schema refuse them; a Bucket made
/// while neither did (before the schema had its pattern, and kept since by the API server's
/// ratcheting) is failed with this instead.
pub fn unnameable(bucket: &Bucket) -> Option<String> {
    let spec = &bucket.spec;
    let names = [
        ("bucketClassName", "BucketClass", &spec.bucket_class_name),
        ("bucketContentName", "BucketContent", &spec.bucket_content_name),
        ("secretName", "Secret", &spec.secret_name),
    ];
    names.into_iter().find_map(|(field, kind, name)| {
        let name = name.as_deref()?;
        let problem = check_dns1123_subdomain(name).err()?;
        Some(format!(
            "spec.{field} {name:?} {problem}, so no {kind} can have it: delete this Bucket and create it again with a valid name"
        ))
    })
}

/// The BucketContent for a greenfield Bucket. The backend name is in it before the backend
/// is asked for anything, so a crash at any point finds the name again.
pub fn greenfield_content(bucket: &Bucket, class: &BucketClass, namespace_uid: &str) -> Result<BucketContent, String> {
    let protocol = bucket.spec.protocol.ok_or("spec.protocol is not set")?;
    if protocol != Protocol::S3 {
        return Err(format!("protocol {protocol} has no driver here; bucketgate provisions s3 buckets"));
    }
    // Admission refuses this for new classes and their Buckets; judged again here for a
    // class made before, or a Bucket made while the webhook was away.
    if let Some(problem) = secret_chosen_by_bucket(&class.spec.parameters) {
        return Err(format!("BucketClass {:?}: {problem}", class.name_any()));
    }
    let namespace = bucket.namespace().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (BUCKET_NAMESPACE_LABEL.to_string(), namespace.clone()),
        (BUCKET_NAME_LABEL.to_string(), label_value(&bucket.name_any())),
        (BUCKET_UID_LABEL.to_string(), bucket.uid().unwrap_or_default()),
    ]);
    let provisioner = class.spec.provisioner().to_string();
    labels.insert(PROVISIONER_LABEL.to_string(), label_value(&provisioner));
    let mut content = BucketContent::new(
        &content_name_for(&bucket.uid().unwrap_or_default()),
        BucketContentSpec {
            provisioner: Some(provisioner),
            release_policy: Some(class.spec.release_policy.unwrap_or_default()),
            access_mode: class.spec.access_mode,
            bucket_class_name: Some(class.name_any()),
            bindable_namespaces: vec![BindableNamespace { name: namespace, uid: namespace_uid.to_string() }],
            protocol: ProtocolSpec {
                protocol_type: Some(protocol),
                s3: Some(S3Protocol { bucket_name: Some(backend_bucket_name(bucket)), ..Default::default() }),
                ..Default::default()
            },
            parameters: class.spec.parameters.clone(),
        },
    );
    content.metadata.labels = Some(labels);
    content.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    Ok(content)
}

/// What `content`'s class asks of the store for its bucket, or why no bucket can be made
/// from it: every problem with its parameters, in admission's words. Admission refuses such
/// a class; one made while the webhook was away, or before a check existed, is judged here,
/// before a provisioner Secret is looked for or the store is asked.
pub fn asked_of_store(content: &BucketContent) -> Result<BucketOptions, String> {
    let parameters = &content.spec.parameters;
    let mut problems = check_secret_parameters(parameters);
    match BucketOptions::from_parameters(parameters) {
        Ok(options) if problems.is_empty() => return Ok(options),
        Ok(_) => {}
        Err(more) => problems.extend(more),
    }
    // The content keeps the parameters it was made with (they are immutable): mending the
    // class helps new Buckets only.
    Err(format!(
        "the class's parameters cannot be carried out: {}. Mend the BucketClass, then delete this Bucket and create \
         it again: its BucketContent keeps the parameters it was made with",
        problems.join("; ")
    ))
}

/// The loop's writes, as JSON merge patches; the contract test sends these same bodies
/// through bucketgate's webhooks and the CRDs' rules.
///
/// bucketgate's finalizer added beside the others (a merge patch replaces the whole list).
/// The resourceVersion makes this, and its removal, fail rather than drop another
/// controller's finalizer on a race.
pub fn finalizer_added(meta: &ObjectMeta) -> serde_json::Value {
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_string());
    serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}})
}

/// bucketgate's finalizer taken off, the others kept.
pub fn finalizer_removed(meta: &ObjectMeta) -> serde_json::Value {
    let keep: Vec<&String> = meta.finalizers.iter().flatten().filter(|f| *f != FINALIZER).collect();
    serde_json::json!({"metadata": {"finalizers": keep, "resourceVersion": meta.resource_version}})
}

/// Where the store made a content's bucket, written into the content.
pub fn connection_recorded(connection: &Connection) -> serde_json::Value {
    serde_json::json!({"spec": {"protocol": {"s3": {
        "endpoint": connection.endpoint, "bucketName": connection.bucket_name,
        "region": connection.region, "signatureVersion": connection.signature_version}}}})
}

/// A content marked to be released without asking its store.
pub fn force_release_marked() -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {FORCE_RELEASE_ANNOTATION: "true"}}})
}

/// A Bucket that holds a key made for it alone on a content: the one a greenfield content
/// was made for (its labels name it), or another, recorded in the content's status
/// ([`crate::api::BucketContentStatus::key_holders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl KeyHolder {
    /// `None` for names no Bucket can have: labels and status can be edited by hand, and
    /// such a name is nothing to ask the API server for.
    fn new(uid: &str, namespace: &str, name: &str) -> Option<KeyHolder> {
        check_dns1123_label(namespace).ok()?;
        check_dns1123_subdomain(name).ok()?;
        Some(KeyHolder { uid: uid.to_string(), namespace: namespace.to_string(), name: name.to_string() })
    }

    /// Every holder `content` records in its status (`uid: namespace/name`).
    pub fn all(content: &BucketContent) -> Vec<KeyHolder> {
        let parse = |(uid, holder): (&str, &str)| {
            let (namespace, name) = holder.split_once('/')?;
            KeyHolder::new(uid, namespace, name)
        };
        content.key_holders().filter_map(parse).collect()
    }
}

/// The Bucket a greenfield `content` was made for and is Bound to, as its labels name it:
/// `None` for contents made by hand (no such labels), and those being deleted or no longer
/// Bound.
pub fn bound_owner(content: &BucketContent) -> Option<KeyHolder> {
    if content.metadata.deletion_timestamp.is_some() || content.phase() != Some(BucketContentPhase::Bound) {
        return None;
    }
    let label = |key: &str| content.labels().get(key).filter(|v| !v.is_empty());
    KeyHolder::new(label(BUCKET_UID_LABEL)?, label(BUCKET_NAMESPACE_LABEL)?, label(BUCKET_NAME_LABEL)?)
}

/// How a content says a Bucket holds a key on it ([`KeyHolder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The Bucket a greenfield content was made for and is Bound to ([`bound_owner`]).
    Owner,
    /// Another, recorded in its status ([`KeyHolder::all`]); not on a content an admin asked
    /// to be released without its store.
    Recorded,
}

/// Whether `content` (as the API server has it now) still says `holder` holds a key on it.
pub fn still_held(content: &BucketContent, holder: &KeyHolder, held: Held) -> bool {
    match held {
        Held::Owner => bound_owner(content).as_ref() == Some(holder),
        Held::Recorded => !crate::api::force_release_asked(content) && KeyHolder::all(content).contains(holder),
    }
}

/// Of `contents`, the Buckets holding a key on one that are not among `buckets` (uids): they
/// went without being released, their finalizer taken off by someone allowed to, or while
/// no webhook ran, and their keys still work at the store. A watch cache may be behind: the
/// loop asks the API server before it acts on one.
pub fn gone_unreleased<'a>(
    contents: impl IntoIterator<Item = &'a Arc<BucketContent>>,
    buckets: &HashSet<String>,
) -> Vec<(Arc<BucketContent>, KeyHolder, Held)> {
    let mut gone = Vec::new();
    for content in contents {
        let owner = bound_owner(content).map(|holder| (holder, Held::Owner));
        let recorded = KeyHolder::all(content).into_iter().map(|holder| (holder, Held::Recorded));
        for (holder, held) in owner.into_iter().chain(recorded) {
            if !buckets.contains(&holder.uid) && still_held(content, &holder, held) {
                gone.push((content.clone(), holder, held));
            }
        }
    }
    gone
}

/// The status patch that records `bucket` among `content`'s key holders, where it holds a
/// key made for it alone (`key`) on a content not made for it and is not recorded yet.
/// Written once the key is made, before the Secret holding it, and for Buckets bound before
/// holders were recorded.
pub fn key_holder_unrecorded(bucket: &Bucket, content: &BucketContent, key: Key) -> Option<serde_json::Value> {
    let uid = bucket.uid()?;
    if key != Key::BucketUser || made_for(content, bucket) || content.key_holders().any(|(held, _)| held == uid) {
        return None;
    }
    let holder = format!("{}/{}", bucket.namespace().unwrap_or_default(), bucket.name_any());
    Some(serde_json::json!({"status": {"keyHolders": {uid: holder}}}))
}

/// The status patch that takes `uid` off `content`'s key holders once its key is revoked;
/// `None` where it is not among them.
pub fn key_holder_removed(content: &BucketContent, uid: &str) -> Option<serde_json::Value> {
    content
        .key_holders()
        .any(|(held, _)| held == uid)
        .then(|| serde_json::json!({"status": {"keyHolders": {uid: null}}}))
}

/// What the Event on a content says of a key revoked for `holder`, gone unreleased.
pub fn key_left_message(holder: &KeyHolder) -> String {
    format!(
        "Bucket {}/{} went without being released (its finalizer taken off by hand, or removed while bucketgate's \
         webhooks were away): the key made for it at the store was revoked; the bucket and its data are untouched",
        holder.namespace, holder.name
    )
}

/// What a content whose Bucket went unreleased says (phase Released, the data kept whatever
/// its release policy).
pub fn orphan_message(namespace: &str, name: &str) -> String {
    format!(
        "Bucket {namespace}/{name} went without being released (its finalizer taken off by hand, or removed while \
         bucketgate's webhooks were away): the key made for it at the store, if any, was revoked, and the bucket and \
         its data are kept, whatever the release policy. Delete this BucketContent to have them released as its \
         releasePolicy says"
    )
}

/// Whether `content` was made for `bucket`.
pub fn made_for(content: &BucketContent, bucket: &Bucket) -> bool {
    content.labels().get(BUCKET_UID_LABEL) == bucket.uid().as_ref()
}

/// The workload's Secret: the keys ObjectBucketClaim users already read, plus the variables
/// AWS SDKs pick up on their own. Owned by the Bucket, so it goes when the Bucket goes; it
/// says which key it holds ([`KEY_ANNOTATION`]).
pub fn credentials_secret(bucket: &Bucket, connection: &Connection, grant: Option<&Grant>) -> Secret {
    let (host, port) = host_and_port(&connection.endpoint);
    let mut data = BTreeMap::from([
        ("BUCKET_NAME".to_string(), connection.bucket_name.clone()),
        ("BUCKET_HOST".to_string(), host),
        ("BUCKET_PORT".to_string(), port.to_string()),
        ("BUCKET_REGION".to_string(), connection.region.clone()),
        ("AWS_REGION".to_string(), connection.region.clone()),
        ("AWS_ENDPOINT_URL".to_string(), connection.endpoint.clone()),
    ]);
    if let Some(grant) = grant {
        data.insert(ACCESS_KEY_ID.into(), grant.credentials.access_key_id.clone());
        data.insert(SECRET_ACCESS_KEY.into(), grant.credentials.secret_access_key.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(bucket)),
            namespace: bucket.namespace(),
            labels: Some(BTreeMap::from([(BUCKET_NAME_LABEL.to_string(), label_value(&bucket.name_any()))])),
            annotations: Some(BTreeMap::from([(KEY_ANNOTATION.to_string(), Key::of(grant).value().to_string())])),
            owner_references: bucket.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// On a Bucket's Secret: which [`Key`] it holds.
pub const KEY_ANNOTATION: &str = "cosi.io/key";

/// Where a Bucket's Secret holds its key, as AWS SDKs read them from the environment.
const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// The key a Bucket's Secret holds, which its `CredentialsScoped` condition reports. Kept
/// on the Secret, which is read from the API server, rather than worked out again from the
/// Bucket's status, which a watch cache may not have yet when the Secret is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Made for this Bucket alone (an IAM user): it reaches its bucket only.
    BucketUser,
    /// The provisioner's own key: the store has no IAM API configured.
    Provisioner,
    /// None: a brownfield bucket that no provisioner manages; the Secret says where it is.
    None,
}

impl Key {
    pub fn of(grant: Option<&Grant>) -> Key {
        match grant {
            Some(grant) if grant.scoped => Key::BucketUser,
            Some(_) => Key::Provisioner,
            None => Key::None,
        }
    }

    fn value(self) -> &'static str {
        match self {
            Key::BucketUser => "bucket-user",
            Key::Provisioner => "provisioner",
            Key::None => "none",
        }
    }

    /// What `secret` says it holds; `None` for a Secret without the annotation (written
    /// by an earlier bucketgate, or changed by hand).
    pub fn recorded(secret: &Secret) -> Option<Key> {
        let value = secret.annotations().get(KEY_ANNOTATION)?;
        [Key::BucketUser, Key::Provisioner, Key::None].into_iter().find(|key| key.value() == value)
    }

    /// For a Secret that does not say: what `bucket`'s condition said when the Secret was
    /// written, and no key where no provisioner manages `content`.
    pub fn assumed(bucket: &Bucket, content: &BucketContent) -> Key {
        if content.spec.provisioner().is_empty() {
            Key::None
        } else if bucket.condition("CredentialsScoped").is_some_and(|c| c.status == "True") {
            Key::BucketUser
        } else {
            Key::Provisioner
        }
    }

    fn condition(self, existing: &[Condition], generation: Option<i64>) -> Condition {
        let (status, reason, message) = match self {
            Key::BucketUser => (true, "BucketUser", "the Secret's key reaches this bucket only"),
            Key::Provisioner => (
                false,
                "ProvisionerCredentials",
                "the store has no IAM API configured: the Secret holds the provisioner's own key",
            ),
            Key::None => {
                (false, "NoKey", "no provisioner manages this bucket: the Secret says where it is, and holds no key")
            }
        };
        condition(existing, "CredentialsScoped", status, reason, message, generation)
    }
}

/// The status patch that marks `bucket` Bound to the BucketContent `content`, its Secret
/// holding `key`; `None` when its status says so already.
pub fn bound_status(bucket: &Bucket, content: &str, key: Key) -> Option<serde_json::Value> {
    let (conditions, generation) = (bucket.conditions(), bucket.metadata.generation);
    let ready = condition(conditions, "Ready", true, "Bound", format!("bound to {content}"), generation);
    let scoped = key.condition(conditions, generation);
    // The conditions carry the generation: equal, they were written for this one. A status
    // written before `observedGeneration` was (no field) is not written again for it alone.
    let observed = bucket.status.as_ref().and_then(|s| s.observed_generation);
    let unchanged = bucket.phase() == Some(BucketPhase::Bound)
        && bucket.status_content() == Some(content)
        && conditions == [ready.clone(), scoped.clone()]
        && observed.is_none_or(|o| Some(o) == generation);
    // The conditions' list is replaced whole: Reconciling and Stalled go.
    let status = serde_json::json!({"status": {"bucketContentName": content, "phase": BucketPhase::Bound,
        "conditions": [ready, scoped], "observedGeneration": generation}});
    (!unchanged).then_some(status)
}

/// Whether `secret` belongs to `bucket` (it is the Secret's controller).
pub fn owned_by(secret: &Secret, bucket: &Bucket) -> bool {
    let uid = bucket.uid();
    secret.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref() && o.controller == Some(true))
}

/// Why a Bucket does not get the Secret of its Secret's name, which it does not own: what
/// to say, and when to look again. Never overwritten either way.
#[derive(Debug, PartialEq)]
pub struct Taken {
    /// The Ready condition's reason: [`SECRET_CONFLICT`] or [`SECRET_OF_EARLIER_BUCKET`].
    pub reason: &'static str,
    pub message: String,
    /// Said in a Warning Event (someone must act), else a Normal one.
    pub warning: bool,
    pub retry: Duration,
}

/// [`Taken`] for `secret`, not `bucket`'s own.
pub fn secret_taken(secret: &Secret, bucket: &Bucket) -> Taken {
    let name = secret.name_any();
    if left_by_earlier(secret, bucket) {
        // Its deletion by the garbage collector wakes the Bucket (the Secret's owner has
        // its name); the retry is for a collector that is slow.
        return Taken {
            reason: SECRET_OF_EARLIER_BUCKET,
            message: format!(
                "Secret {name} is that of an earlier Bucket {}, deleted: Kubernetes' garbage collector deletes it \
                 in a moment, and this Bucket then gets its own",
                bucket.name_any()
            ),
            warning: false,
            retry: Duration::from_secs(10),
        };
    }
    Taken {
        reason: SECRET_CONFLICT,
        message: format!("Secret {name} exists and is not owned by this Bucket: choose another spec.secretName"),
        warning: true,
        retry: Duration::from_secs(60),
    }
}

/// Whether `secret` belongs to an earlier Bucket of `bucket`'s name: one deleted (two
/// cannot be at once), whose Secret Kubernetes' garbage collector has not deleted yet, as
/// when a Bucket is deleted and made again at once (`kubectl replace --force`, an
/// application installed again).
fn left_by_earlier(secret: &Secret, bucket: &Bucket) -> bool {
    let (name, uid) = (bucket.name_any(), bucket.uid());
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == "Bucket"
            && o.api_version.split('/').next() == Some(crate::api::GROUP)
            && o.name == name
            && Some(&o.uid) != uid.as_ref()
    })
}

/// On a Bucket's Secret once its key was rotated: when the key it holds was made (before,
/// the Secret's creation says), and the key it replaced, which works until the time named.
pub const KEY_ISSUED_ANNOTATION: &str = "cosi.io/key-issued";
pub const RETIRING_KEY_ANNOTATION: &str = "cosi.io/retiring-key";
pub const RETIRE_AFTER_ANNOTATION: &str = "cosi.io/retire-after";

/// What a Bucket's own key is due for, where its class rotates keys ([`KeyRotation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTurn {
    /// Nothing now; the next turn is due after this long.
    Later(Duration),
    /// The key is older than the class allows: a new one is made beside it.
    Rotate { keeping: String },
    /// The grace of the key a rotation replaced is over: every key but `keeping` goes.
    Retire { keeping: String },
}

/// [`KeyTurn`] of the key `secret` holds, at `now`; `None` for a Secret that holds no key.
/// A time edited by hand that does not parse is taken as due: the safe side of a key's age.
pub fn key_turn(secret: &Secret, rotation: KeyRotation, now: jiff::Timestamp) -> Option<KeyTurn> {
    let keeping = secret_value(secret, ACCESS_KEY_ID)?;
    let annotation = |key: &str| secret.annotations().get(key).map(String::as_str);
    let after = |at: jiff::Timestamp| match at.duration_since(now) {
        ahead if ahead.is_positive() => Some(ahead.unsigned_abs()),
        _ => None,
    };
    if annotation(RETIRING_KEY_ANNOTATION).is_some() {
        let until = annotation(RETIRE_AFTER_ANNOTATION).and_then(|at| at.parse().ok()).and_then(after);
        return Some(match until {
            Some(wait) => KeyTurn::Later(wait),
            None => KeyTurn::Retire { keeping },
        });
    }
    let issued = match annotation(KEY_ISSUED_ANNOTATION) {
        Some(at) => at.parse().ok(),
        None => secret.metadata.creation_timestamp.as_ref().map(|created| created.0),
    };
    let due = issued.and_then(|issued: jiff::Timestamp| issued.checked_add(rotation.max_age).ok()).and_then(after);
    Some(match due {
        Some(wait) => KeyTurn::Later(wait),
        None => KeyTurn::Rotate { keeping },
    })
}

/// The Secret patch of a rotation at `now`: the new key, and the key it replaces named with
/// the time it stops working. On the Secret as it was read (its resourceVersion): a Secret
/// changed since is not written over.
pub fn key_rotated(
    secret: &Secret,
    new: &crate::driver::Credentials,
    retiring: &str,
    rotation: KeyRotation,
    now: jiff::Timestamp,
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version, "annotations": {
            KEY_ISSUED_ANNOTATION: whole_seconds(now).to_string(),
            RETIRING_KEY_ANNOTATION: retiring,
            RETIRE_AFTER_ANNOTATION: retired_at(rotation, now).to_string(),
        }},
        "data": key_data(new),
    })
}

/// A key as a Secret's `data` holds it.
fn key_data(key: &crate::driver::Credentials) -> serde_json::Value {
    let encoded = |value: &str| serde_json::to_value(ByteString(value.as_bytes().to_vec())).unwrap_or_default();
    serde_json::json!({ACCESS_KEY_ID: encoded(&key.access_key_id), SECRET_ACCESS_KEY: encoded(&key.secret_access_key)})
}

/// The patch that gives `secret`, which holds the provisioner's own key ([`Key::Provisioner`]),
/// the key the provisioner has now, `current`; `None` where it holds that one. On the
/// Secret as it was read: one changed since is not written over.
pub fn provisioner_key_changed(secret: &Secret, current: &crate::driver::Credentials) -> Option<serde_json::Value> {
    let held = |key| secret_value(secret, key);
    let same = held(ACCESS_KEY_ID).as_ref() == Some(&current.access_key_id)
        && held(SECRET_ACCESS_KEY).as_ref() == Some(&current.secret_access_key);
    (!same).then(|| {
        serde_json::json!({"metadata": {"resourceVersion": secret.metadata.resource_version}, "data": key_data(current)})
    })
}

/// The Secret patch once the replaced key is retired.
pub fn key_retired(secret: &Secret) -> serde_json::Value {
    serde_json::json!({"metadata": {"resourceVersion": secret.metadata.resource_version,
        "annotations": {RETIRING_KEY_ANNOTATION: null, RETIRE_AFTER_ANNOTATION: null}}})
}

/// What a rotation at `now` tells the Bucket's owner.
pub fn rotated_message(secret: &str, rotation: KeyRotation, now: jiff::Timestamp) -> String {
    let every = match rotation.max_age.as_secs() / 86_400 {
        1 => "day".to_string(),
        days => format!("{days} days"),
    };
    let until = retired_at(rotation, now);
    format!(
        "Secret {secret} holds a new key, its class rotating keys every {every}; the key it replaces works until \
         {until}: pods that read the key into their environment take the new one when they restart (a mounted Secret \
         is updated in place)"
    )
}

/// When the key a rotation at `now` replaces stops working.
fn retired_at(rotation: KeyRotation, now: jiff::Timestamp) -> jiff::Timestamp {
    let now = whole_seconds(now);
    now.checked_add(rotation.grace).unwrap_or(now)
}

/// `at` to the second, as annotations say times.
fn whole_seconds(at: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(at.as_second()).unwrap_or(at)
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(key)?;
    String::from_utf8(value.0.clone()).ok().filter(|value| !value.is_empty())
}

fn host_and_port(endpoint: &str) -> (String, u16) {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) => {
            let default = if uri.scheme_str() == Some("http") { 80 } else { 443 };
            (uri.host().unwrap_or_default().to_string(), uri.port_u16().unwrap_or(default))
        }
        Err(_) => (endpoint.to_string(), 443),
    }
}

/// A condition, keeping the transition time when its status did not change.
pub fn condition(
    existing: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The status patch that marks `bucket` not ready: `phase`, and a Ready condition with
/// `reason` and `message`, beside kstatus's `Reconciling` or `Stalled` ([`waits_on_someone`]).
pub fn not_ready(bucket: &Bucket, phase: BucketPhase, reason: &str, message: String) -> serde_json::Value {
    let (existing, generation) = (bucket.conditions(), bucket.metadata.generation);
    let progress = if stalls(bucket, phase, reason) { STALLED } else { RECONCILING };
    let progress = condition(existing, progress, true, reason, message.clone(), generation);
    let ready = condition(existing, "Ready", false, reason, message, generation);
    status_with(bucket, phase, vec![ready, progress])
}

/// The status patch of a Bucket whose access was revoked (see [`ACCESS_REVOKED`]): Failed,
/// and a condition of that type besides Ready, which later failures keep.
pub fn revoked(bucket: &Bucket, message: String) -> serde_json::Value {
    let (existing, generation) = (bucket.conditions(), bucket.metadata.generation);
    let ready = condition(existing, "Ready", false, ACCESS_REVOKED, message.clone(), generation);
    let stalled = condition(existing, STALLED, true, ACCESS_REVOKED, message.clone(), generation);
    let revoked = condition(existing, ACCESS_REVOKED, true, "NamespaceNotBindable", message, generation);
    status_with(bucket, BucketPhase::Failed, vec![ready, stalled, revoked])
}

/// `phase` and the conditions `set`, with the Bucket's other conditions kept (a merge patch
/// replaces the whole list): `CredentialsScoped` goes on saying what the Secret holds. Of
/// `Reconciling` and `Stalled`, only one `set` has stays.
fn status_with(bucket: &Bucket, phase: BucketPhase, mut set: Vec<Condition>) -> serde_json::Value {
    let replaced =
        |c: &Condition| set.iter().any(|s| s.type_ == c.type_) || [RECONCILING, STALLED].contains(&&*c.type_);
    let kept: Vec<Condition> = bucket.conditions().iter().filter(|c| !replaced(c)).cloned().collect();
    set.extend(kept);
    let generation = bucket.metadata.generation;
    serde_json::json!({"status": {"phase": phase, "conditions": set, "observedGeneration": generation}})
}

/// Whether writing the status patch `patch` would change what `object` shows. Conditions
/// keep their transition time where their status stays ([`condition`]), so a patch that
/// says again what the object says is equal to it.
pub fn changes(object: &impl serde::Serialize, patch: &serde_json::Value) -> bool {
    let Ok(shown) = serde_json::to_value(object) else { return true };
    let mut patched = shown.clone();
    json_patch::merge(&mut patched, patch);
    patched != shown
}

/// The status patch of a BucketContent the loop made, in `phase`, with `message`: the KEP's
/// phase and message, and the conditions that `kubectl wait --for=condition=Ready` and
/// kstatus read. `Ready` is `True` only when Bound; beside it, [`RECONCILING`] while its
/// store is retried, [`STALLED`] once it failed for good. Released is neither: it is where
/// a content kept by its release policy ends. The list is replaced whole, as a Bucket's is.
pub fn content_status(content: &BucketContent, phase: BucketContentPhase, message: String) -> serde_json::Value {
    let existing = content.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = content.metadata.generation;
    // The phase is the reason: each phase has one cause the message tells.
    let reason = phase.as_str();
    let ready = phase == BucketContentPhase::Bound;
    let mut conditions = vec![condition(existing, "Ready", ready, reason, message.clone(), generation)];
    let progress = match phase {
        BucketContentPhase::Retrying => Some(RECONCILING),
        BucketContentPhase::Failed => Some(STALLED),
        BucketContentPhase::Bound | BucketContentPhase::Released => None,
    };
    conditions.extend(progress.map(|type_| condition(existing, type_, true, reason, message.clone(), generation)));
    serde_json::json!({"status": {"phase": phase, "message": message, "conditions": conditions}})
}

/// kstatus's condition of a Bucket the loop is still working on: not bound yet, its store
/// retried, its BucketContent not there yet (it may come with the same `kubectl apply`).
/// Flux's health checks, kpt and `kstatus` read it as in progress; Argo CD, with the check in
/// `manifests/argocd/`, as Progressing.
pub const RECONCILING: &str = "Reconciling";

/// kstatus's condition of a Bucket that will not go on without someone's change: Failed,
/// its access revoked, its bucket missing at the store, a Secret of its name not its own,
/// its BucketContent released or being deleted. kstatus reads it as failed, with its
/// message; Argo CD, with the check in `manifests/argocd/`, as Degraded.
pub const STALLED: &str = "Stalled";

/// Whether a Bucket not Ready for `reason`, in `phase`, waits on a person rather than on
/// the loop: kstatus's [`STALLED`] rather than [`RECONCILING`].
pub fn waits_on_someone(phase: BucketPhase, reason: &str) -> bool {
    let closed = [ClosedToBinding::Released, ClosedToBinding::Deleting];
    phase == BucketPhase::Failed
        || [BUCKET_MISSING, SECRET_CONFLICT].contains(&reason)
        || closed.iter().any(|c| c.reason() == reason)
}

/// Whether `bucket`, not Ready for `reason` in `phase`, is kstatus's [`STALLED`]: it waits on
/// someone, or its access was revoked (it never binds again: a passing failure on its way
/// changes nothing).
fn stalls(bucket: &Bucket, phase: BucketPhase, reason: &str) -> bool {
    waits_on_someone(phase, reason) || access_revoked(bucket)
}

/// Where `bucket` stands, for the `bucketgate_buckets` gauge: `deleting`, `new` (no Ready
/// condition yet: the loop has not looked at it), `ready`, `stalled` (as [`not_ready`] writes
/// [`STALLED`], so a status written before that condition existed counts too) or
/// `reconciling`; and the reason of its Ready condition.
pub fn standing(bucket: &Bucket) -> (&'static str, String) {
    if bucket.metadata.deletion_timestamp.is_some() {
        return ("deleting", String::new());
    }
    let Some(ready) = bucket.condition("Ready") else { return ("new", String::new()) };
    let stalled = bucket.phase().is_some_and(|phase| stalls(bucket, phase, &ready.reason));
    let state = match (ready.status == "True", stalled) {
        (true, _) => "ready",
        (false, true) => "stalled",
        (false, false) => "reconciling",
    };
    (state, ready.reason.clone())
}

/// The reason a Bucket stays Pending when a Secret of its Secret's name is not its own:
/// bucketgate never overwrites it, and `spec.secretName` cannot change.
pub const SECRET_CONFLICT: &str = "SecretConflict";

/// The reason a Bucket stays Pending while the provisioner Secret its class names is not
/// there: kstatus's Reconciling, not Stalled, since that Secret most often comes by itself
/// moments later (see [`super::Error::ProvisionerSecretMissing`]).
pub const PROVISIONER_SECRET_MISSING: &str = "ProvisionerSecretMissing";

/// The reason a Bucket waits while the Secret of its name is an earlier Bucket's
/// ([`left_by_earlier`]): the garbage collector deletes it in a moment, and the loop then
/// writes the Bucket's own. Nobody need do anything, so not a [`STALLED`] one.
pub const SECRET_OF_EARLIER_BUCKET: &str = "SecretOfEarlierBucket";

/// How often a bound Bucket is looked at again when nothing has changed, unless configured
/// (`--recheck-interval`).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a bound Bucket waits to be looked at again when nothing has changed: `interval`
/// (an hour, [`RECHECK_INTERVAL`]), and up to half of it more, the same for the Bucket each
/// time, picked by its uid. The
/// watches bring every change to the Bucket, its Secret and its class at once; this only
/// catches what they cannot see (a BucketContent deleted by hand, a bucket deleted at its
/// store: [`super::looks`]), at two or three reads of the API server a Bucket, and a
/// question to its store. A replica that starts leading looks
/// at every Bucket at once: with one period for all, every hour would bring them all back
/// together (10,000 Buckets, up to 30,000 reads within seconds); spread, they come at about
/// six a second.
pub fn recheck_after(bucket: &Bucket, interval: Duration) -> Duration {
    let picked = u64::from_str_radix(&short_hash(&bucket.uid().unwrap_or_default(), 8), 16).unwrap_or(0);
    let spread = u64::try_from(interval.as_millis() / 2).unwrap_or(u64::MAX).max(1);
    interval + Duration::from_millis(picked % spread)
}

/// The class `bucket` waits on: the one it names, while it is not bound. A class created or
/// changed may let it go on now rather than at its next retry, which for a missing class is
/// minutes away.
pub fn class_waited_on(bucket: &Bucket) -> Option<&str> {
    let waits = bucket.metadata.deletion_timestamp.is_none() && bucket.phase() != Some(BucketPhase::Bound);
    bucket.spec.bucket_class_name.as_deref().filter(|_| waits)
}

/// The BucketContent `bucket` binds, or waits to bind: a content created, or its
/// `bindableNamespaces` changed, may let a waiting Bucket bind now, and take a bound one's
/// access away now rather than at its next look ([`recheck_after`]).
pub fn content_bound(bucket: &Bucket) -> Option<&str> {
    bucket.spec.bucket_content_name.as_deref().filter(|_| bucket.metadata.deletion_timestamp.is_none())
}

/// The condition type (and the Ready reason) of a Bucket whose access to a shared
/// BucketContent was withdrawn: its key is gone, and it does not bind again. A condition
/// of its own, so that a later failure (the API server away for a moment), which rewrites
/// Ready, does not erase it.
pub const ACCESS_REVOKED: &str = "AccessRevoked";

/// Whether `bucket`'s access was revoked (see [`ACCESS_REVOKED`]).
pub fn access_revoked(bucket: &Bucket) -> bool {
    bucket.condition(ACCESS_REVOKED).is_some_and(|c| c.status == "True")
}

/// Why a Bucket bound to the shared `content` from `namespace` has lost its access, and
/// what became of the key in its Secret. `listed_again`: the namespace is back in
/// `bindableNamespaces`, but the key stays revoked.
pub fn revoked_message(bucket: &Bucket, content: &BucketContent, namespace: &str, listed_again: bool) -> String {
    let name = content.metadata.name.as_deref().unwrap_or_default();
    let key = match Key::assumed(bucket, content) {
        Key::None => "its Secret holds connection data only",
        Key::Provisioner => {
            "its Secret holds the provisioner's own key, which bucketgate cannot revoke: rotate that key at the store"
        }
        Key::BucketUser => "its key was revoked at the store",
    };
    if listed_again {
        format!(
            "access to BucketContent {name} was withdrawn when namespace {namespace} left its spec.bindableNamespaces, \
             and {key}; the namespace is listed again, but this Bucket does not bind again: delete it and create a new one"
        )
    } else {
        format!(
            "namespace {namespace} was removed from spec.bindableNamespaces of BucketContent {name}: this Bucket lost \
             its access, and {key}; delete the Bucket, or ask the content's owner to list the namespace again and \
             create a new Bucket"
        )
    }
}

/// The Ready reason of a Bucket whose bucket its store no longer has (see
/// [`super::looks`]). Its phase stays `Bound`: it is still bound to its content, whose
/// record of the bucket is what lets the bucket be put back and found again.
pub const BUCKET_MISSING: &str = "BucketMissing";

/// Whether `bucket` reports its bucket missing from its store.
pub fn reports_missing(bucket: &Bucket) -> bool {
    bucket.condition("Ready").is_some_and(|c| c.status == "False" && c.reason == BUCKET_MISSING)
}

/// What a Bucket bound to `content` says when the store its provisioner points at now
/// (`configured`) has no such bucket, and what to do. bucketgate does not make it again:
/// an empty bucket of the same name would hide that its objects were lost, and a bucket
/// only moved (the provisioner pointed at another store) would be made twice.
pub fn missing_from_store(content: &BucketContent, configured: &str) -> String {
    let (name, bucket, provisioner) = (content.name_any(), backend_name(content), content.spec.provisioner());
    let found =
        format!("the store at {configured} has no bucket {bucket} that provisioner {provisioner}'s key reaches");
    if let Some(recorded) = moved_from(content, configured) {
        return format!(
            "{found}, and BucketContent {name} records it at {recorded}: point the provisioner back at {recorded}, \
             or, once the bucket is at {configured}, set spec.protocol.s3.endpoint of BucketContent {name} to it"
        );
    }
    format!(
        "{found}: it was deleted there, or the key lost its access to it, outside Kubernetes. bucketgate does not make \
         it again, since its objects would not come back with it: restore the bucket at the store (this Bucket is \
         Ready again within minutes), or delete this Bucket and create a new one for a new, empty bucket"
    )
}

/// The tags a bucket made for `bucket` is given at its store: whom it is for, where a store
/// admin, or a bill broken down by tag, sees only the bucket's name.
pub fn bucket_tags(bucket: &Bucket, content: &BucketContent) -> Vec<(String, String)> {
    let mut tags = vec![
        ("cosi.io/namespace".to_string(), bucket.namespace().unwrap_or_default()),
        ("cosi.io/bucket".to_string(), bucket.name_any()),
        ("cosi.io/bucketcontent".to_string(), content.name_any()),
    ];
    if let Some(class) = &bucket.spec.bucket_class_name {
        tags.push(("cosi.io/bucketclass".to_string(), class.clone()));
    }
    tags
}

/// What a Warning Event says of a bucket made without its tags. They are asked for as the
/// bucket is made, and put back at its timed looks: not worth a retry, which would hold up
/// the Bucket.
pub fn not_tagged(backend: &str, error: &DriverError) -> String {
    let fix = match error {
        DriverError::Permanent(_) => "the provisioner's key needs s3:PutBucketTagging",
        DriverError::Transient(_) => "they are put back at the Bucket's next timed look",
    };
    format!(
        "bucket {backend} was made, without the tags that name this Bucket at the store ({error}): {fix}. \
         The Bucket works without them"
    )
}

/// What a Bucket is told when the store no longer had what `restored`, class parameters,
/// asked of the bucket of `content`, and they were set again.
pub fn options_restored(content: &BucketContent, restored: &[&str]) -> String {
    format!(
        "the store no longer had what the class parameters {} asked of bucket {} (changed there, outside Kubernetes): set again as \
         BucketContent {} records it. A bucket's options change through its class, for new Buckets",
        restored.join(", "),
        backend_name(content),
        content.name_any()
    )
}

/// How long `bucket` took from its creation to being bound at `now`: the API server's
/// creation time (whole seconds) against this process's clock. Zero when the two clocks
/// disagree the other way, so that every bound Bucket is counted; `None` when its status
/// names a content already, so that a Bucket bound again after a failure is not counted a
/// second time, with its age.
pub fn time_to_bound(bucket: &Bucket, now: jiff::Timestamp) -> Option<Duration> {
    if bucket.status_content().is_some() {
        return None;
    }
    let created = bucket.metadata.creation_timestamp.as_ref()?.0;
    Some(now.duration_since(created).try_into().unwrap_or_default())
}

/// The endpoint a content records its bucket at, where its provisioner now points at
/// another (a trailing slash and case aside): the provisioner was pointed at another store,
/// or the store was given another address. `None` where they agree, or the content records
/// no endpoint (its bucket is not made yet).
fn moved_from<'a>(content: &'a BucketContent, configured: &str) -> Option<&'a str> {
    let recorded = content.spec.protocol.s3.as_ref()?.endpoint.as_deref().filter(|e| !e.is_empty())?;
    let same = |a: &str, b: &str| a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'));
    (!same(recorded, configured)).then_some(recorded)
}

/// The name of a content's bucket at its store, as the content records it.
pub fn backend_name(content: &BucketContent) -> &str {
    content.spec.protocol.s3.as_ref().and_then(|s3| s3.bucket_name.as_deref()).unwrap_or_default()
}

/// Why a bucket to delete that the store did not find must not count as deleted: its
/// content records it at another endpoint than its provisioner's now. The provisioner was
/// pointed at another store; taking "not found there" for "deleted" would leave the bucket
/// and its data behind with no record of them. `None` where it was looked for where it was
/// made (or the content records no endpoint).
pub fn recorded_elsewhere(content: &BucketContent, configured: &str) -> Option<String> {
    let recorded = moved_from(content, configured)?;
    Some(format!(
        "bucket {} is not at {configured}, where provisioner {} now points, and this BucketContent records it at \
         {recorded}: point the provisioner back at {recorded} to delete it there, or annotate the BucketContent \
         {FORCE_RELEASE_ANNOTATION}=true to release it without deleting (whatever is at {recorded} stays)",
        backend_name(content),
        content.spec.provisioner(),
    ))
}

/// What is asked of the store about a Bucket's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWork {
    /// A key made, for a Secret written again.
    Grant,
    /// A key revoked because the namespace was taken off the content.
    Revoke,
    /// A key revoked because its Bucket is being deleted.
    Release,
}

/// Why a Bucket's key may not be made or revoked at the store its content's provisioner
/// points at now, where the content records its bucket at another endpoint: asked before
/// the store is (`None` where the endpoints agree), used if the store has no such bucket.
/// Keys are the store's own: a key made at another store would not reach the bucket, and
/// a revocation there would find nothing and leave the key where the bucket is working,
/// past the deletion of its Bucket or the end of its namespace's grant. A store that has
/// the bucket is taken for the same store under another address (a brownfield content may
/// record the address its workloads use, the provisioner the one bucketgate uses).
pub fn key_elsewhere(content: &BucketContent, configured: &str, work: KeyWork) -> Option<String> {
    let recorded = moved_from(content, configured)?;
    let (name, bucket, provisioner) = (content.name_any(), backend_name(content), content.spec.provisioner());
    let what = match work {
        KeyWork::Grant => "no key can be made for",
        KeyWork::Revoke | KeyWork::Release => "this Bucket's key cannot be revoked from",
    };
    let why = match work {
        KeyWork::Grant => "a key made there would not reach it".to_string(),
        KeyWork::Revoke | KeyWork::Release => format!("revoking it there would leave the key at {recorded} working"),
    };
    let force = match work {
        KeyWork::Release => format!(
            "; or annotate the Bucket {FORCE_RELEASE_ANNOTATION}=true to release it without revoking (the key at \
             {recorded} then stays until removed there)"
        ),
        KeyWork::Grant | KeyWork::Revoke => String::new(),
    };
    Some(format!(
        "{what} bucket {bucket}: it is not at {configured}, where provisioner {provisioner} now points, and \
         BucketContent {name} records it at {recorded}; {why}. Point the provisioner back at {recorded}; or, once \
         the bucket is at {configured}, set spec.protocol.s3.endpoint of BucketContent {name} to it{force}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Credentials;
    use serde_json::json;

    fn bucket(spec: serde_json::Value) -> Bucket {
        serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "photos", "namespace": "team-a", "uid": "2f845f60-d4c4-4d1e-ab39-3b8cc4e25086"},
            "spec": spec}))
        .unwrap()
    }

    /// `object` with `status` merged into what it shows, as the next reconcile sees it.
    fn patched<K: serde::Serialize + serde::de::DeserializeOwned>(object: &K, status: &serde_json::Value) -> K {
        let mut shown = serde_json::to_value(object).unwrap();
        json_patch::merge(&mut shown, status);
        serde_json::from_value(shown).unwrap()
    }

    fn types(status: &serde_json::Value) -> Vec<&str> {
        status["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect()
    }

    /// kstatus (Flux, kpt) reads a Bucket by `Reconciling`, `Stalled` and
    /// `observedGeneration`; each status the loop writes leaves exactly one reading.
    #[test]
    fn each_status_says_whether_the_loop_or_someone_else_is_waited_on() {
        let mut fresh = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        fresh.metadata.generation = Some(1);
        let retrying = not_ready(&fresh, BucketPhase::Pending, "Retrying", "connection refused".into());
        assert_eq!(types(&retrying), ["Ready", RECONCILING]);
        assert_eq!(retrying["status"]["observedGeneration"], 1);
        let seen = patched(&fresh, &retrying);

        // The store refuses for good: Stalled takes Reconciling's place.
        let failed = not_ready(&seen, BucketPhase::Failed, "Failed", "access denied".into());
        assert_eq!(types(&failed), ["Ready", STALLED]);
        assert_eq!(
            (&failed["status"]["conditions"][1]["reason"], &failed["status"]["conditions"][1]["message"]),
            (&json!("Failed"), &json!("access denied"))
        );
        let seen = patched(&seen, &failed);

        // Bound: neither stays, and the status is of this generation.
        let bound = bound_status(&seen, "bucket-x", Key::BucketUser).unwrap();
        assert_eq!(types(&bound), ["Ready", "CredentialsScoped"]);
        let seen = patched(&seen, &bound);
        assert_eq!(bound_status(&seen, "bucket-x", Key::BucketUser), None, "written once");

        // A field set later (a new generation): written again, for it.
        let mut changed = seen.clone();
        changed.metadata.generation = Some(2);
        let again = bound_status(&changed, "bucket-x", Key::BucketUser).expect("the new generation is observed");
        assert_eq!(again["status"]["observedGeneration"], 2);

        // Its bucket gone at the store, or its access revoked: someone has to act.
        let missing = not_ready(&seen, BucketPhase::Bound, BUCKET_MISSING, "gone".into());
        assert_eq!(types(&missing), ["Ready", STALLED, "CredentialsScoped"]);
        let said = patched(&seen, &missing);
        assert!(!changes(&said, &not_ready(&said, BucketPhase::Bound, BUCKET_MISSING, "gone".into())), "said already");
        assert!(changes(&said, &not_ready(&said, BucketPhase::Bound, BUCKET_MISSING, "moved".into())));
        assert!(changes(&seen, &missing));
        let revoked = revoked(&patched(&seen, &missing), "taken off".into());
        assert_eq!(types(&revoked), ["Ready", STALLED, ACCESS_REVOKED, "CredentialsScoped"]);

        for (phase, reason, stalled) in [
            (BucketPhase::Pending, "Retrying", false),
            (BucketPhase::Pending, "ContentNotFound", false),
            (BucketPhase::Pending, SECRET_CONFLICT, true),
            (BucketPhase::Pending, "ContentReleased", true),
            (BucketPhase::Pending, "ContentDeleting", true),
            (BucketPhase::Failed, "Failed", true),
            (BucketPhase::Bound, BUCKET_MISSING, true),
        ] {
            assert_eq!(waits_on_someone(phase, reason), stalled, "{phase:?} {reason}");
        }
    }

    /// Where a Bucket stands for `bucketgate_buckets`, from each status the loop writes, and
    /// from a Failed one written before `Stalled` existed.
    #[test]
    fn a_bucket_stands_where_its_status_says() {
        let mut fresh = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        fresh.metadata.generation = Some(1);
        assert_eq!(standing(&fresh), ("new", String::new()));
        let retrying = patched(&fresh, &not_ready(&fresh, BucketPhase::Pending, "Retrying", "refused".into()));
        assert_eq!(standing(&retrying), ("reconciling", "Retrying".into()));
        let conflict = patched(&fresh, &not_ready(&fresh, BucketPhase::Pending, SECRET_CONFLICT, "taken".into()));
        assert_eq!(standing(&conflict), ("stalled", SECRET_CONFLICT.into()));
        let bound = patched(&retrying, &bound_status(&retrying, "bucket-x", Key::BucketUser).unwrap());
        assert_eq!(standing(&bound), ("ready", "Bound".into()));
        let revoked = patched(&bound, &revoked(&bound, "taken off".into()));
        assert_eq!(standing(&revoked), ("stalled", ACCESS_REVOKED.into()));
        // A revoked Bucket whose look failed on the way stays stalled.
        let blip = patched(&revoked, &not_ready(&revoked, BucketPhase::Pending, "Retrying", "404".into()));
        assert_eq!(standing(&blip), ("stalled", "Retrying".into()));
        let mut older = patched(
            &fresh,
            &json!({"status": {"phase": "Failed", "conditions": [{"type": "Ready",
            "status": "False", "reason": "Failed", "message": "no", "lastTransitionTime": "2026-11-20T10:00:00Z"}]}}),
        );
        assert_eq!(standing(&older), ("stalled", "Failed".into()));
        older.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(standing(&older), ("deleting", String::new()));
    }

    /// A content's status says what its phase says, in the conditions `kubectl wait` and
    /// kstatus read: Ready only when Bound; Reconciling while retried; Stalled when failed.
    #[test]
    fn a_contents_conditions_follow_its_phase() {
        let mut content = greenfield_content(&bucket(json!({"protocol": "s3"})), &class(), "u").unwrap();
        content.metadata.generation = Some(1);
        let retrying = content_status(&content, BucketContentPhase::Retrying, "connection refused".into());
        assert_eq!(types(&retrying), ["Ready", RECONCILING]);
        let conditions = retrying["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            conditions.iter().map(|c| (&c["status"], &c["reason"], &c["observedGeneration"])).collect::<Vec<_>>(),
            [(&json!("False"), &json!("Retrying"), &json!(1)), (&json!("True"), &json!("Retrying"), &json!(1))]
        );
        assert_eq!(retrying["status"]["message"], "connection refused");
        let seen = patched(&content, &retrying);
        assert!(!changes(&seen, &content_status(&seen, BucketContentPhase::Retrying, "connection refused".into())));
        assert!(changes(&seen, &content_status(&seen, BucketContentPhase::Retrying, "timed out".into())));

        let failed = content_status(&seen, BucketContentPhase::Failed, "access denied".into());
        assert_eq!(types(&failed), ["Ready", STALLED]);
        // Ready was False and stays so: its transition time stays.
        assert_eq!(failed["status"]["conditions"][0]["lastTransitionTime"], conditions[0]["lastTransitionTime"]);

        let bound = content_status(&patched(&seen, &failed), BucketContentPhase::Bound, "bucket b created".into());
        assert_eq!(types(&bound), ["Ready"], "neither Reconciling nor Stalled stays: {bound}");
        assert_eq!(
            (&bound["status"]["phase"], &bound["status"]["conditions"][0]["status"]),
            (&json!("Bound"), &json!("True"))
        );
        use BucketContentPhase::{Bound, Failed, Released, Retrying};
        for phase in [Bound, Released, Failed, Retrying] {
            assert_eq!(json!(phase), json!(phase.as_str()), "the reason is the phase as the status spells it");
        }
        let released = content_status(&patched(&seen, &bound), BucketContentPhase::Released, "kept".into());
        assert_eq!(types(&released), ["Ready"]);
        assert_eq!(
            (&released["status"]["conditions"][0]["status"], &released["status"]["conditions"][0]["reason"]),
            (&json!("False"), &json!("Released"))
        );
    }

    fn class() -> BucketClass {
        serde_json::from_value(
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "ceph"},
            "provisioner": "rook-ceph.ceph.rook.io/bucket", "supportedProtocols": ["s3"], "accessMode": "rw",
            "parameters": {"store": "a"}}),
        )
        .unwrap()
    }

    #[test]
    fn a_class_concerns_the_unbound_buckets_that_name_it_and_a_content_all_that_bind_it() {
        let named = |name: &str, spec: serde_json::Value, phase: Option<&str>| {
            let mut b = bucket(spec);
            b.metadata.name = Some(name.into());
            b.status = phase.map(|p| serde_json::from_value(json!({"phase": p})).unwrap());
            b
        };
        let mut deleting = named("deleting", json!({"protocol": "s3", "bucketClassName": "ceph"}), None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let buckets = [
            named("failed", json!({"protocol": "s3", "bucketClassName": "ceph"}), Some("Failed")),
            named("new", json!({"protocol": "s3", "bucketClassName": "ceph"}), None),
            named("bound", json!({"protocol": "s3", "bucketClassName": "ceph"}), Some("Bound")),
            named("other", json!({"protocol": "s3", "bucketClassName": "minio"}), Some("Pending")),
            named("sharing", json!({"protocol": "s3", "bucketContentName": "legacy"}), Some("Pending")),
            named("bound-sharing", json!({"protocol": "s3", "bucketContentName": "legacy"}), Some("Bound")),
            deleting,
        ];
        let names = |waits: &dyn Fn(&Bucket) -> bool| {
            buckets.iter().filter(|b| waits(b)).map(|b| b.metadata.name.clone().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(names(&|b| class_waited_on(b) == Some("ceph")), ["failed", "new"]);
        // A bound Bucket too: a change to the content's grant may take its access away.
        assert_eq!(names(&|b| content_bound(b) == Some("legacy")), ["sharing", "bound-sharing"]);
        assert!(names(&|b| content_bound(b) == Some("ceph")).is_empty());
    }

    #[test]
    fn bound_buckets_are_looked_at_again_each_at_its_own_moment_of_a_half_hour() {
        let with_uid = |uid: String| {
            let mut b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
            b.metadata.uid = Some(uid);
            b
        };
        let after: Vec<u64> =
            (0..1200).map(|i| recheck_after(&with_uid(format!("uid-{i}")), RECHECK_INTERVAL).as_secs()).collect();
        assert!(after.iter().all(|s| (3600..5400).contains(s)), "{after:?}");
        let again = recheck_after(&with_uid("uid-7".into()), RECHECK_INTERVAL);
        assert_eq!(again.as_secs(), after[7], "the same each time");
        // Each five minutes of the half hour gets about a sixth of them (200).
        let mut slots = [0; 6];
        for s in &after {
            slots[((s - 3600) / 300) as usize] += 1;
        }
        assert!(slots.iter().all(|n| (140..260).contains(n)), "{slots:?}");
        // A configured interval is spread the same way.
        let short = Duration::from_secs(2);
        let after: Vec<Duration> = (0..100).map(|i| recheck_after(&with_uid(format!("uid-{i}")), short)).collect();
        assert!(after.iter().all(|d| (short..short * 3 / 2).contains(d)), "{after:?}");
        assert!(after.iter().any(|d| *d > short + Duration::from_millis(900)), "spread over the half: {after:?}");
    }

    #[test]
    fn time_to_bound_counts_from_the_creation_timestamp() {
        let mut b = bucket(json!({"protocol": "s3"}));
        let now: jiff::Timestamp = "2026-11-22T10:00:12.5Z".parse().unwrap();
        assert_eq!(time_to_bound(&b, now), None, "no creation time, nothing to count from");
        b.metadata.creation_timestamp = Some(Time("2026-11-22T10:00:00Z".parse().unwrap()));
        assert_eq!(time_to_bound(&b, now), Some(std::time::Duration::from_millis(12_500)));
        let behind: jiff::Timestamp = "2026-11-22T09:59:59Z".parse().unwrap();
        assert_eq!(time_to_bound(&b, behind), Some(std::time::Duration::ZERO), "a clock behind the API server's");
        b.status = Some(crate::api::BucketStatus { bucket_content_name: Some("c".into()), ..Default::default() });
        assert_eq!(time_to_bound(&b, now), None, "bound before");
    }

    #[test]
    fn backend_names_are_stable_valid_and_distinct() {
        let b = bucket(json!({"protocol": "s3", "bucketPrefix": "photos-"}));
        let name = backend_bucket_name(&b);
        assert_eq!(name, backend_bucket_name(&b));
        assert!(name.starts_with("photos-") && name.len() == 7 + 16, "{name}");
        assert!(crate::naming::check_bucket_prefix(&name, Protocol::S3).errors.is_empty());
        let mut other = b.clone();
        other.metadata.uid = Some("a2b9d61c-96a8-4d1a-9532-630184d2c774".into());
        assert_ne!(name, backend_bucket_name(&other));
    }

    #[test]
    fn a_bound_content_whose_bucket_is_gone_is_found_and_no_other() {
        let b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        let made = greenfield_content(&b, &class(), "ns-uid").unwrap();
        let bound = |mut content: BucketContent| {
            content.status = Some(serde_json::from_value(json!({"phase": "Bound"})).unwrap());
            content
        };
        let uid = b.uid().unwrap();
        let owner = KeyHolder { uid: uid.clone(), namespace: "team-a".into(), name: b.name_any() };
        assert_eq!(bound_owner(&bound(made.clone())), Some(owner.clone()));
        assert_eq!(bound_owner(&made), None, "not Bound yet: the loop is still at it");
        let mut deleting = bound(made.clone());
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(bound_owner(&deleting), None, "being released");
        let mut by_hand = bound(made.clone());
        by_hand.metadata.labels = None;
        assert_eq!(bound_owner(&by_hand), None, "an admin's content: no Bucket of its own");

        let contents = [bound(made.clone()), made, deleting, by_hand].map(Arc::new);
        let here = HashSet::from([uid]);
        assert!(gone_unreleased(&contents, &here).is_empty(), "its Bucket is there");
        let gone = gone_unreleased(&contents, &HashSet::new());
        assert_eq!(gone.len(), 1);
        assert!(Arc::ptr_eq(&gone[0].0, &contents[0]));
        assert_eq!((&gone[0].1, gone[0].2), (&owner, Held::Owner));
        let message = orphan_message("team-a", "photos");
        assert!(message.starts_with("Bucket team-a/photos went without being released"), "{message}");
        assert!(message.contains("Delete this BucketContent to have them released"), "{message}");
    }

    #[test]
    fn a_secret_holding_the_provisioners_key_is_given_its_key_once_changed() {
        let b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        let key = |id: &str, secret: &str| crate::driver::Credentials {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
        };
        let grant = Grant { credentials: key("AK1", "SK1"), scoped: false };
        let mut secret = credentials_secret(&b, &connection(), Some(&grant));
        secret.metadata.resource_version = Some("7".into());
        assert_eq!(provisioner_key_changed(&secret, &key("AK1", "SK1")), None, "the same key: nothing to write");
        let patch = provisioner_key_changed(&secret, &key("AK2", "SK2")).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7"},
            "data": {"AWS_ACCESS_KEY_ID": "QUsy", "AWS_SECRET_ACCESS_KEY": "U0sy"}})
        );
        // A new secret for the same key id (an access key's secret reset at the store).
        assert!(provisioner_key_changed(&secret, &key("AK1", "SK2")).is_some());
        secret.data = None;
        assert!(provisioner_key_changed(&secret, &key("AK1", "SK1")).is_some(), "emptied by hand: written again");
    }

    #[test]
    fn a_key_is_rotated_when_its_age_is_up_and_the_old_one_retired_after_the_grace() {
        let b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        let grant = Grant {
            credentials: crate::driver::Credentials { access_key_id: "AK1".into(), secret_access_key: "SK1".into() },
            scoped: true,
        };
        let mut secret = credentials_secret(&b, &connection(), Some(&grant));
        secret.metadata.creation_timestamp = Some(Time("2026-11-01T00:00:00Z".parse().unwrap()));
        secret.metadata.resource_version = Some("7".into());
        let hour = Duration::from_secs(3600);
        let rotation = KeyRotation { max_age: hour * 24 * 30, grace: hour * 24 };
        let at = |time: &str| -> jiff::Timestamp { time.parse().unwrap() };
        assert_eq!(key_turn(&secret, rotation, at("2026-11-30T23:00:00Z")), Some(KeyTurn::Later(hour)));
        let keeping = "AK1".to_string();
        let due = Some(KeyTurn::Rotate { keeping: keeping.clone() });
        assert_eq!(key_turn(&secret, rotation, at("2026-12-01T00:00:00Z")), due, "30 days after its Secret was made");

        let new = crate::driver::Credentials { access_key_id: "AK2".into(), secret_access_key: "SK2".into() };
        let now = at("2026-12-01T00:30:00.25Z");
        let patch = key_rotated(&secret, &new, "AK1", rotation, now);
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "not over a Secret changed since");
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({"cosi.io/key-issued": "2026-12-01T00:30:00Z", "cosi.io/retiring-key": "AK1",
                   "cosi.io/retire-after": "2026-12-02T00:30:00Z"})
        );
        assert_eq!(patch["data"], json!({"AWS_ACCESS_KEY_ID": "QUsy", "AWS_SECRET_ACCESS_KEY": "U0sy"}));
        let mut rotated = serde_json::to_value(&secret).unwrap();
        json_patch::merge(&mut rotated, &patch);
        let rotated: Secret = serde_json::from_value(rotated).unwrap();
        let message = rotated_message("photos", rotation, now);
        assert!(message.contains("every 30 days; the key it replaces works until 2026-12-02T00:30:00Z"), "{message}");

        assert_eq!(key_turn(&rotated, rotation, at("2026-12-01T12:30:00Z")), Some(KeyTurn::Later(hour * 12)));
        let retire = KeyTurn::Retire { keeping: "AK2".into() };
        assert_eq!(key_turn(&rotated, rotation, at("2026-12-02T00:30:00Z")), Some(retire.clone()));
        let mut retired = serde_json::to_value(&rotated).unwrap();
        json_patch::merge(&mut retired, &key_retired(&rotated));
        let retired: Secret = serde_json::from_value(retired).unwrap();
        assert_eq!(key_turn(&retired, rotation, at("2026-12-02T00:30:00Z")), Some(KeyTurn::Later(hour * 24 * 29)));
        assert_eq!(retired.annotations().get(KEY_ANNOTATION).map(String::as_str), Some("bucket-user"), "kept");

        // Times edited by hand that do not parse count as due.
        let mut edited = rotated.clone();
        edited.annotations_mut().insert(RETIRE_AFTER_ANNOTATION.into(), "tomorrow".into());
        assert_eq!(key_turn(&edited, rotation, at("2026-12-01T01:00:00Z")), Some(retire));
        edited.annotations_mut().remove(RETIRING_KEY_ANNOTATION);
        edited.annotations_mut().insert(KEY_ISSUED_ANNOTATION.into(), "yesterday".into());
        assert_eq!(
            key_turn(&edited, rotation, at("2026-12-01T01:00:00Z")),
            Some(KeyTurn::Rotate { keeping: "AK2".into() })
        );
        assert_eq!(key_turn(&credentials_secret(&b, &connection(), None), rotation, now), None, "no key in it");
    }

    #[test]
    fn only_a_key_of_its_own_on_a_content_not_made_for_it_is_recorded_there() {
        let b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        let uid = b.uid().unwrap();
        let made = greenfield_content(&b, &class(), "ns-uid").unwrap();
        let mut other = b.clone();
        other.metadata.uid = Some("other-uid".into());
        other.metadata.name = Some("reader".into());
        let record = json!({"status": {"keyHolders": {"other-uid": "team-a/reader"}}});
        assert_eq!(key_holder_unrecorded(&other, &made, Key::BucketUser), Some(record.clone()), "sharing it");
        assert_eq!(key_holder_unrecorded(&b, &made, Key::BucketUser), None, "made for it: its labels say so");
        for key in [Key::Provisioner, Key::None] {
            assert_eq!(key_holder_unrecorded(&other, &made, key), None, "no key made for it: {key:?}");
        }
        let mut holding = serde_json::to_value(&made).unwrap();
        json_patch::merge(&mut holding, &record);
        let holding: BucketContent = serde_json::from_value(holding).unwrap();
        assert_eq!(key_holder_unrecorded(&other, &holding, Key::BucketUser), None, "recorded already");
        assert_eq!(
            key_holder_removed(&holding, "other-uid"),
            Some(json!({"status": {"keyHolders": {"other-uid": null}}}))
        );
        assert_eq!(key_holder_removed(&holding, &uid), None, "nothing to take off");
    }

    #[test]
    fn greenfield_content_copies_the_class_and_pins_the_namespace() {
        let b = bucket(json!({"protocol": "s3", "bucketClassName": "ceph", "bucketPrefix": "photos-"}));
        let content = greenfield_content(&b, &class(), "ns-uid").unwrap();
        assert_eq!(content.name_any(), "bucket-2f845f60-d4c4-4d1e-ab39-3b8cc4e25086");
        assert_eq!(content.spec.provisioner(), "rook-ceph.ceph.rook.io/bucket");
        assert_eq!(content.spec.release_policy, Some(crate::api::ReleasePolicy::Delete));
        assert_eq!(content.spec.parameters.get("store").map(String::as_str), Some("a"));
        assert_eq!(
            content.spec.bindable_namespaces,
            [BindableNamespace { name: "team-a".into(), uid: "ns-uid".into() }]
        );
        assert_eq!(content.spec.protocol.s3.as_ref().unwrap().bucket_name, Some(backend_bucket_name(&b)));
        assert_eq!(content.finalizers(), [FINALIZER]);
        assert!(made_for(&content, &b));
        let gcs = bucket(json!({"protocol": "gcs", "bucketClassName": "ceph"}));
        assert!(greenfield_content(&gcs, &class(), "u").unwrap_err().contains("gcs"));
        // A class made before admission refused it: the Bucket's name would choose the Secret.
        let mut chosen = class();
        chosen.spec.parameters.insert("cosi.io/provisioner-secret-name".into(), "${bucket.name}".into());
        chosen.spec.parameters.insert("cosi.io/provisioner-secret-namespace".into(), "bucketgate-system".into());
        let refused = greenfield_content(&b, &chosen, "ns-uid").unwrap_err();
        assert!(refused.starts_with("BucketClass \"ceph\": parameters cosi.io/provisioner-secret-name"), "{refused}");
    }

    /// What a revoked Bucket is told of its Secret's key follows what the key is: only a key
    /// of its own was revoked; the provisioner's is the admin's to rotate.
    #[test]
    fn a_revoked_bucket_is_told_what_became_of_its_key() {
        let content = greenfield_content(&bucket(json!({"protocol": "s3"})), &class(), "u").unwrap();
        let with_key = |scoped: bool| {
            let mut b = bucket(json!({"protocol": "s3"}));
            let scoped = condition(&[], "CredentialsScoped", scoped, "R", "m", Some(1));
            b.status = Some(crate::api::BucketStatus { conditions: vec![scoped], ..Default::default() });
            b
        };
        let told = |b: &Bucket, content: &BucketContent| revoked_message(b, content, "team-a", false);
        assert!(told(&with_key(true), &content).contains("and its key was revoked at the store;"));
        let own = told(&with_key(false), &content);
        assert!(own.contains("the provisioner's own key, which bucketgate cannot revoke: rotate"), "{own}");
        let mut brownfield = content.clone();
        brownfield.spec.provisioner = None;
        assert!(told(&with_key(false), &brownfield).contains("its Secret holds connection data only"));
        let again = revoked_message(&with_key(true), &content, "team-a", true);
        assert!(again.contains("the namespace is listed again, but this Bucket does not bind again"), "{again}");
    }

    fn connection() -> Connection {
        Connection {
            endpoint: "http://rgw.rook-ceph.svc:8080".into(),
            region: "us-east-1".into(),
            bucket_name: "photos-0123".into(),
            signature_version: "s3v4".into(),
        }
    }

    #[test]
    fn secrets_hold_obc_keys_and_belong_to_the_bucket() {
        let b = bucket(json!({"protocol": "s3", "secretName": "photos-creds"}));
        let connection = connection();
        let keys = Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() };
        let grant = Grant { credentials: keys, scoped: true };
        let secret = credentials_secret(&b, &connection, Some(&grant));
        let data = secret.data.as_ref().unwrap();
        let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("photos-creds"));
        assert_eq!(get("AWS_ACCESS_KEY_ID"), "AK");
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), "SK");
        assert_eq!((get("BUCKET_HOST"), get("BUCKET_PORT")), ("rgw.rook-ceph.svc".into(), "8080".into()));
        assert_eq!(get("BUCKET_NAME"), "photos-0123");
        assert_eq!(get("AWS_ENDPOINT_URL"), "http://rgw.rook-ceph.svc:8080");
        assert!(owned_by(&secret, &b));
        assert!(!left_by_earlier(&secret, &b), "its own");
        // The same name made again: another uid.
        let mut again = b.clone();
        again.metadata.uid = Some("another".into());
        assert!(!owned_by(&secret, &again) && left_by_earlier(&secret, &again));
        let taken = secret_taken(&secret, &again);
        assert_eq!(
            (taken.reason, taken.warning, taken.retry),
            (SECRET_OF_EARLIER_BUCKET, false, Duration::from_secs(10))
        );
        assert!(
            taken.message.starts_with("Secret photos-creds is that of an earlier Bucket photos, deleted"),
            "{taken:?}"
        );
        let mut other = again.clone();
        other.metadata.name = Some("other".into());
        assert!(!left_by_earlier(&secret, &other), "another Bucket's Secret of the name is a conflict");
        let taken = secret_taken(&secret, &other);
        assert_eq!((taken.reason, taken.warning), (SECRET_CONFLICT, true));
        assert!(!waits_on_someone(BucketPhase::Pending, SECRET_OF_EARLIER_BUCKET));
        assert!(waits_on_someone(BucketPhase::Pending, SECRET_CONFLICT));
        assert_eq!(Key::recorded(&secret), Some(Key::BucketUser));
        let unscoped = Grant { scoped: false, ..grant };
        assert_eq!(Key::recorded(&credentials_secret(&b, &connection, Some(&unscoped))), Some(Key::Provisioner));
        let keyless = credentials_secret(&b, &connection, None);
        assert_eq!(Key::recorded(&keyless), Some(Key::None));
        assert!(!keyless.data.as_ref().unwrap().contains_key("AWS_ACCESS_KEY_ID"));
        assert_eq!(host_and_port("https://s3.amazonaws.com"), ("s3.amazonaws.com".into(), 443));
        let unnamed = bucket(json!({"protocol": "s3"}));
        assert_eq!(secret_name(&unnamed), "photos");
    }

    #[test]
    fn a_missing_bucket_is_said_with_where_it_was_looked_for() {
        let target = bucket(json!({"protocol": "s3", "bucketClassName": "ceph"}));
        let mut content = greenfield_content(&target, &class(), "u").unwrap();
        let backend = backend_bucket_name(&target);
        let gone = missing_from_store(&content, "http://s3.example:8333");
        assert!(
            gone.starts_with(&format!("the store at http://s3.example:8333 has no bucket {backend} that")),
            "{gone}"
        );
        assert!(gone.contains("restore the bucket at the store"), "{gone}");
        // Recorded at another endpoint: the provisioner was moved, not the bucket deleted.
        content.spec.protocol.s3.as_mut().unwrap().endpoint = Some("http://old.example".into());
        let moved = missing_from_store(&content, "http://s3.example:8333");
        assert!(moved.contains("records it at http://old.example: point the provisioner back"), "{moved}");
        assert!(!moved.contains("restore"), "{moved}");
        content.spec.protocol.s3.as_mut().unwrap().endpoint = Some("http://S3.example:8333/".into());
        assert_eq!(missing_from_store(&content, "http://s3.example:8333"), gone);
    }

    #[test]
    fn a_bucket_not_tagged_is_told_what_to_do_only_where_something_can_be_done() {
        let denied = not_tagged("b", &DriverError::Permanent("AccessDenied".into()));
        assert!(denied.contains("(AccessDenied): the provisioner's key needs s3:PutBucketTagging"), "{denied}");
        let slow = not_tagged("b", &DriverError::Transient("timed out".into()));
        assert!(slow.contains("(timed out): they are put back at the Bucket's next timed look"), "{slow}");
        assert!(!slow.contains("PutBucketTagging"), "{slow}");
    }
}
