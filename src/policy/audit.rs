//! `bucketgate policy audit`: what the policies say of the objects a cluster holds now.
//!
//! Admission judges writes only: a policy added, or made stricter, says nothing of the
//! Buckets already there until one of them is changed and refused. Gatekeeper's audit and
//! Kyverno's background scan answer this for their policies; here each object is sent
//! through both webhooks twice, as its next update (changing nothing) and as its creation
//! today, with the built-in rules and the policies, against a catalog of everything listed.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::spec::{Mode, OnError};
use super::{PolicyResult, PolicySet};
use crate::admission::{self, Context, Kind};

/// Each object is judged as these writes.
const OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// The user the writes are judged as: policies select by user, and objects already there
/// have no writer to name.
#[derive(Debug, Clone)]
pub struct Writer {
    pub username: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Objects judged, by kind.
    pub judged: BTreeMap<&'static str, usize>,
    /// Objects being deleted, not judged: policies never judge their writes, which are their
    /// finalizers going.
    pub being_deleted: usize,
    pub findings: Vec<Finding>,
}

/// One thing a policy, or a built-in rule, says of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The policy's name; `None` for a built-in rule.
    pub policy: Option<String>,
    pub effect: Effect,
    /// The writes it is said of: CREATE, UPDATE or both.
    pub operations: Vec<&'static str>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// The write would be denied.
    Refused,
    /// Admitted with a warning (mode warn).
    Warned,
    /// Admitted, recorded in an audit annotation (mode audit).
    Recorded,
    /// The policy could not be evaluated, and `onError: ignore` lets the write pass.
    Ignored,
}

impl Finding {
    /// Whether a policy in enforce mode denies the write.
    pub fn refused_by_policy(&self) -> bool {
        self.policy.is_some() && self.effect == Effect::Refused
    }

    fn object(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match &self.policy {
            Some(policy) => format!("policy {policy}"),
            None => "a built-in rule".to_string(),
        };
        let does = match self.effect {
            Effect::Refused => "refuses",
            Effect::Warned => "warns of",
            Effect::Recorded => "records",
            Effect::Ignored => "cannot evaluate (onError: ignore lets it pass)",
        };
        write!(f, "{}: {who} {does} its {}: {}", self.object(), self.operations.join(" and "), self.message)
    }
}

impl Report {
    /// Objects a policy in enforce mode refuses, at their creation or their next update.
    pub fn refused_by_policies(&self) -> usize {
        self.objects_with(Finding::refused_by_policy)
    }

    /// Objects with a finding that `which` picks (findings come object by object).
    fn objects_with(&self, which: impl Fn(&Finding) -> bool) -> usize {
        let mut objects: Vec<String> = self.findings.iter().filter(|f| which(f)).map(Finding::object).collect();
        objects.dedup();
        objects.len()
    }

    pub fn summary(&self, policies: usize) -> String {
        let judged: Vec<String> = self
            .judged
            .iter()
            .map(|(kind, n)| match (n, kind.ends_with('s')) {
                (1, _) => format!("1 {kind}"),
                (_, true) => format!("{n} {kind}es"),
                (_, false) => format!("{n} {kind}s"),
            })
            .collect();
        let judged = if judged.is_empty() { "no objects".to_string() } else { judged.join(", ") };
        let deleting = match self.being_deleted {
            0 => String::new(),
            n => format!(" ({n} being deleted, not judged)"),
        };
        let policies = match policies {
            1 => "1 policy".to_string(),
            n => format!("{n} policies"),
        };
        format!(
            "judged {judged}{deleting} against {policies}: {} refused by a policy, {} by a built-in rule; \
             {} warned of, {} recorded, {} not evaluated",
            self.objects_with(Finding::refused_by_policy),
            self.objects_with(|f| f.policy.is_none()),
            self.objects_with(|f| f.effect == Effect::Warned),
            self.objects_with(|f| f.effect == Effect::Recorded),
            self.objects_with(|f| f.effect == Effect::Ignored),
        )
    }
}

/// Judges every Bucket, BucketClass and BucketContent of `objects` (documents of any kind;
/// others are skipped) with `ctx`, whose catalog should hold the same objects. Findings
/// come in the order of `objects`.
pub fn audit(ctx: &Context, objects: &[Value], writer: &Writer) -> Report {
    let user = serde_json::json!({"username": writer.username, "groups": writer.groups});
    let mut report = Report::default();
    for object in objects {
        let Some(kind) = object.get("kind").and_then(Value::as_str).and_then(Kind::named) else { continue };
        if object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            report.being_deleted += 1;
            continue;
        }
        *report.judged.entry(kind.name()).or_default() += 1;
        let mut found: Vec<Finding> = Vec::new();
        for operation in OPERATIONS {
            for finding in judge(ctx, kind, object, operation, &user) {
                // The same said of both writes is one finding.
                match found.iter_mut().find(|f| f.policy == finding.policy && f.message == finding.message) {
                    Some(same) if same.effect == finding.effect => same.operations.push(operation),
                    _ => found.push(finding),
                }
            }
        }
        report.findings.extend(found);
    }
    report
}

/// What the chain says of one write of `object`.
fn judge(ctx: &Context, kind: Kind, object: &Value, operation: &'static str, user: &Value) -> Vec<Finding> {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
    let finding = |policy: Option<String>, effect: Effect, message: String| Finding {
        kind: kind.name(),
        namespace: namespace.map(String::from),
        name: object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        policy,
        effect,
        operations: vec![operation],
        message,
    };
    let old = (operation == "UPDATE").then(|| object.clone());
    let chained = match admission::chain(ctx, kind, operation, namespace, user.clone(), Some(object.clone()), old) {
        Ok(chained) => chained,
        Err(error) => return vec![finding(None, Effect::Refused, format!("cannot be judged: {error}"))],
    };
    let mut found = Vec::new();
    for record in chained.records {
        let (message, counted) = match record.result {
            PolicyResult::Pass => continue,
            PolicyResult::Violation(message) => (message, true),
            PolicyResult::Error(error) => {
                (format!("could not be evaluated: {error}"), on_error(ctx.policies, &record.policy) == OnError::Fail)
            }
        };
        let effect = match (counted, record.mode) {
            (false, _) => Effect::Ignored,
            (true, Mode::Enforce) => Effect::Refused,
            (true, Mode::Warn) => Effect::Warned,
            (true, Mode::Audit) => Effect::Recorded,
        };
        found.push(finding(Some(record.policy), effect, message));
    }
    // Policies judge only what the built-in rules admit: a refusal no policy made is theirs.
    if !chained.allowed && !found.iter().any(|f| f.effect == Effect::Refused) {
        found.push(finding(None, Effect::Refused, chained.message));
    }
    found
}

fn on_error(set: &PolicySet, policy: &str) -> OnError {
    set.policies.iter().find(|p| p.name == policy).map_or(OnError::Fail, |p| p.on_error)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::catalog::Catalog;
    use crate::config::Config;

    const PROVISIONER: &str = "rook-ceph.ceph.rook.io/bucket";

    fn policies(yaml: &str) -> PolicySet {
        super::super::load::compile(&[(PathBuf::from("p.yaml"), yaml.to_string())]).unwrap()
    }

    fn bucket(namespace: &str, name: &str, metadata: Value, spec: Value) -> Value {
        let mut object = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")}, "spec": spec});
        object["metadata"].as_object_mut().unwrap().extend(metadata.as_object().unwrap().clone());
        object
    }

    fn cluster(buckets: Vec<Value>) -> Vec<Value> {
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "uid": "ns-a"}}),
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "ceph"},
                "provisioner": PROVISIONER, "isDefaultBucketClass": true, "supportedProtocols": ["s3"],
                "releasePolicy": "Delete"}),
        ];
        objects.extend(buckets);
        objects
    }

    fn run(objects: &[Value], set: &PolicySet) -> Report {
        let catalog = Catalog::from_documents(objects.iter().map(|o| (PathBuf::from("c.yaml"), o.clone()))).unwrap();
        let config = Config::default().with_provisioners([PROVISIONER.to_string()]);
        let ctx = Context { catalog: &catalog, config: &config, policies: set };
        audit(&ctx, objects, &Writer { username: "alice".into(), groups: vec!["developers".into()] })
    }

    fn labelled(team: Option<&str>) -> Value {
        match team {
            Some(team) => json!({"labels": {"team": team}, "finalizers": ["cosi.io/finalizer"]}),
            None => json!({"finalizers": ["cosi.io/finalizer"]}),
        }
    }

    const SPEC: fn() -> Value = || json!({"protocol": "s3", "bucketClassName": "ceph"});

    #[test]
    fn each_policy_says_what_it_would_do_to_each_write_of_each_object() {
        let set = policies(
            "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: team}\n\
             spec:\n  match: {kinds: [Bucket], operations: [CREATE, UPDATE]}\n  validate:\n  - {path: $.object.metadata.labels.team, required: true}\n\
             ---\napiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: prefix}\n\
             spec:\n  mode: warn\n  match: {kinds: [Bucket], operations: [CREATE]}\n  validate:\n  - {path: $.object.spec.bucketPrefix, required: true}\n\
             ---\napiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: cost}\n\
             spec:\n  mode: audit\n  match: {kinds: [Bucket]}\n  validate:\n  - {path: \"$.object.metadata.labels['cost-center']\", required: true}\n\
             ---\napiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: typed}\n\
             spec:\n  onError: ignore\n  match: {kinds: [Bucket], users: [alice]}\n  validate:\n  - {path: $.object.spec.protocol, minimum: 1}\n",
        );
        let objects = cluster(vec![
            bucket(
                "team-a",
                "good",
                labelled(Some("a")),
                json!({"protocol": "s3", "bucketClassName": "ceph", "bucketPrefix": "p-"}),
            ),
            bucket("team-a", "bare", labelled(None), SPEC()),
        ]);
        let report = run(&objects, &set);
        assert_eq!(report.judged, BTreeMap::from([("Bucket", 2), ("BucketClass", 1)]), "namespaces are not judged");
        let said: Vec<(String, Option<&str>, Effect, Vec<&str>)> = report
            .findings
            .iter()
            .map(|f| (f.name.clone(), f.policy.as_deref(), f.effect, f.operations.clone()))
            .collect();
        assert_eq!(
            said,
            [
                ("good".into(), Some("cost"), Effect::Recorded, vec!["CREATE", "UPDATE"]),
                ("good".into(), Some("typed"), Effect::Ignored, vec!["CREATE", "UPDATE"]),
                ("bare".into(), Some("cost"), Effect::Recorded, vec!["CREATE", "UPDATE"]),
                ("bare".into(), Some("prefix"), Effect::Warned, vec!["CREATE"]),
                ("bare".into(), Some("team"), Effect::Refused, vec!["CREATE", "UPDATE"]),
                ("bare".into(), Some("typed"), Effect::Ignored, vec!["CREATE", "UPDATE"]),
            ]
        );
        assert_eq!(report.refused_by_policies(), 1);
        assert_eq!(
            report.findings[4].to_string(),
            "Bucket team-a/bare: policy team refuses its CREATE and UPDATE: \
             $.object.metadata.labels.team is required"
        );
        assert_eq!(
            report.summary(4),
            "judged 2 Buckets, 1 BucketClass against 4 policies: 1 refused by a policy, 0 by a built-in rule; \
             1 warned of, 2 recorded, 2 not evaluated"
        );
        // Judged as someone else, the policy that selects alice does not run.
        let catalog = Catalog::from_documents(objects.iter().map(|o| (PathBuf::from("c.yaml"), o.clone()))).unwrap();
        let config = Config::default().with_provisioners([PROVISIONER.to_string()]);
        let ctx = Context { catalog: &catalog, config: &config, policies: &set };
        let bob = audit(&ctx, &objects, &Writer { username: "bob".into(), groups: vec![] });
        assert!(bob.findings.iter().all(|f| f.policy.as_deref() != Some("typed")), "{:?}", bob.findings);
    }

    #[test]
    fn a_built_in_refusal_is_said_and_does_not_count_against_the_policies() {
        let objects = cluster(vec![
            // Its class was deleted since: it could not be made today, yet its updates pass.
            bucket("team-a", "orphan", labelled(Some("a")), json!({"protocol": "s3", "bucketClassName": "gone"})),
        ]);
        let report = run(&objects, &PolicySet::default());
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let finding = &report.findings[0];
        assert_eq!(
            (finding.policy.as_deref(), finding.effect, &finding.operations[..]),
            (None, Effect::Refused, &["CREATE"][..])
        );
        assert!(finding.message.contains("gone"), "{}", finding.message);
        assert_eq!(report.refused_by_policies(), 0);
        assert!(
            finding.to_string().starts_with("Bucket team-a/orphan: a built-in rule refuses its CREATE: "),
            "{finding}"
        );
    }

    #[test]
    fn objects_being_deleted_are_not_judged() {
        let set = policies(
            "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: team}\n\
             spec:\n  match: {kinds: [Bucket]}\n  validate:\n  - {path: $.object.metadata.labels.team, required: true}\n",
        );
        let mut going = labelled(None);
        going["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
        let report = run(&cluster(vec![bucket("team-a", "going", going, SPEC())]), &set);
        assert_eq!(report.being_deleted, 1);
        assert_eq!(report.judged, BTreeMap::from([("BucketClass", 1)]));
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.summary(1).starts_with("judged 1 BucketClass (1 being deleted, not judged) against 1 policy:"));
    }

    /// A Bucket judged as its own creation is not counted against itself: a namespace at its
    /// quota is not over it.
    #[test]
    fn a_quota_finds_the_namespaces_over_it_not_those_at_it() {
        let set = policies(
            "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: quota}\n\
             spec:\n  match: {kinds: [Bucket]}\n  limits: {maxBuckets: 2}\n",
        );
        let buckets = |n: usize| (0..n).map(|i| bucket("team-a", &format!("b{i}"), labelled(None), SPEC())).collect();
        assert!(run(&cluster(buckets(2)), &set).findings.is_empty());
        let over = run(&cluster(buckets(3)), &set);
        assert_eq!(over.refused_by_policies(), 3, "{:?}", over.findings);
        assert!(
            over.findings.iter().all(|f| f.operations == ["CREATE"] && f.message.contains("already has 2 Buckets"))
        );
    }
}
