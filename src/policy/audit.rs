//! `bucketgate policy audit`: what the policies say of the objects a cluster holds now.
//!
//! Admission judges writes only: a policy added, or made stricter, says nothing of the
//! Buckets already there until one of them is changed and refused. Gatekeeper's audit and
//! Kyverno's background scan answer this for their policies; here each object is sent
//! through both webhooks twice, as its next update (changing nothing) and as its creation
//! today, with the built-in rules and the policies, against a catalog of everything listed.
//!
//! [`audit`] judges objects in hand (the CLI's, listed once); [`keep`] is `serve`'s audit
//! of the cluster now and then, tallied per policy ([`Tally`]) for `GET /policies` and the
//! metrics rather than kept whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use kube::Client;
use kube::api::ApiResource;
use serde::Serialize;
use serde_json::Value;

use super::spec::{Mode, OnError};
use super::store::PolicyStore;
use super::{PolicyResult, PolicySet};
use crate::admission::{self, Context, Kind};
use crate::api::Bucket;
use crate::catalog::{Catalog, Pages};
use crate::config::{Config, ConfigStore};
use crate::metrics::Metrics;

/// Each object is judged as these writes.
const OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// Who the writes are judged as where no one is named (`serve`'s audit, the CLI's default).
pub const AUDITOR: &str = "bucketgate-audit";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
        let (does, after) = match self.effect {
            Effect::Refused => ("refuses", ""),
            Effect::Warned => ("warns of", ""),
            Effect::Recorded => ("records", ""),
            Effect::Ignored => ("cannot evaluate", " (onError: ignore lets it pass)"),
        };
        let writes = self.operations.join(" and ");
        write!(f, "{}: {who} {does} its {writes}{after}: {}", self.object(), self.message)
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
            PolicyResult::Error(error) => match record.on_error {
                OnError::Fail => (format!("could not be evaluated: {error}"), true),
                OnError::Ignore => (error, false),
            },
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

/// Findings the server keeps of each policy, the first it met, for `GET /policies`.
pub const EXAMPLES: usize = 20;

/// What an audit found, counted: a cluster's every finding would be as large as its
/// Buckets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub judged: BTreeMap<&'static str, usize>,
    pub being_deleted: usize,
    /// By policy name: the objects each refuses, warns of, records or cannot evaluate.
    pub policies: BTreeMap<String, Counts>,
    /// The objects the built-in rules refuse.
    pub built_in: Counts,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Counts {
    pub refused: usize,
    pub warned: usize,
    pub recorded: usize,
    pub ignored: usize,
    /// The first findings, as `bucketgate policy audit` prints them: for the log, which
    /// RBAC guards (`pods/log`), not for `GET /policies`, which anyone who reaches the pod
    /// may read, and which should not name one tenant's Buckets to another.
    #[serde(skip)]
    pub examples: Vec<String>,
}

impl Counts {
    fn count(&mut self, effect: Effect) {
        *match effect {
            Effect::Refused => &mut self.refused,
            Effect::Warned => &mut self.warned,
            Effect::Recorded => &mut self.recorded,
            Effect::Ignored => &mut self.ignored,
        } += 1;
    }

    /// Each effect's name and count, for the metrics.
    pub fn by_effect(&self) -> [(&'static str, usize); 4] {
        [("refused", self.refused), ("warned", self.warned), ("recorded", self.recorded), ("ignored", self.ignored)]
    }
}

impl Tally {
    /// A tally with a line, at zero, for every policy of `set`: a policy that finds nothing
    /// says so.
    pub fn of(set: &PolicySet) -> Tally {
        let policies = set.policies.iter().map(|p| (p.name.clone(), Counts::default())).collect();
        Tally { policies, ..Tally::default() }
    }

    /// Counts `report` in: each object once for each policy and effect, however many of its
    /// writes were found wanting.
    pub fn add(&mut self, report: Report) {
        for (kind, n) in report.judged {
            *self.judged.entry(kind).or_default() += n;
        }
        self.being_deleted += report.being_deleted;
        let mut counted = HashSet::new();
        for finding in report.findings {
            let counts = match &finding.policy {
                Some(policy) => self.policies.entry(policy.clone()).or_default(),
                None => &mut self.built_in,
            };
            if counted.insert((finding.object(), finding.policy.clone(), finding.effect)) {
                counts.count(finding.effect);
            }
            if counts.examples.len() < EXAMPLES {
                counts.examples.push(finding.to_string());
            }
        }
    }
}

/// The last audit of the cluster by this replica, for `GET /policies`.
#[derive(Default)]
pub struct LastAudit(RwLock<Option<Audited>>);

#[derive(Debug, Clone, Default)]
pub struct Audited {
    /// When the last audit that ended well ended, and what it found.
    pub found: Option<(SystemTime, Tally)>,
    /// Why the last audit did not end, where it did not; what was found before stays.
    pub error: Option<String>,
}

impl LastAudit {
    pub fn get(&self) -> Option<Audited> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, outcome: Result<Tally, String>) {
        let mut last = self.0.write().unwrap_or_else(|e| e.into_inner());
        let audited = last.get_or_insert_default();
        match outcome {
            Ok(tally) => *audited = Audited { found: Some((SystemTime::now(), tally)), error: None },
            Err(error) => audited.error = Some(error),
        }
    }
}

/// Objects judged at a time (and Buckets asked of the API server at a time): the server's
/// audit holds one page of them as JSON, not the cluster's every object beside the catalog
/// (BENCHMARKS.md: what an audit adds to a replica's peak).
const PAGE: u32 = 100;

/// How often `keep` looks whether an audit is due (or the interval, where shorter).
const LOOK: Duration = Duration::from_secs(10);

/// When an audit that failed is tried again, at the latest.
const RETRY: Duration = Duration::from_secs(60);

/// `serve`'s audit: every `interval`, and within seconds of a new policy set coming into
/// force, judges the cluster's objects against the policies (when there are any), and
/// keeps the tally in `last` and the metrics. BucketClasses and BucketContents come from
/// the catalog, which holds them whole; Buckets, which it holds by name only, are listed a
/// page at a time.
pub async fn keep(
    client: Client,
    catalog: Catalog,
    policies: Arc<PolicyStore>,
    config: Arc<ConfigStore>,
    interval: Duration,
    metrics: Arc<Metrics>,
    last: Arc<LastAudit>,
) {
    // The set audited last, and when the next audit is due.
    let mut audited: Option<(SystemTime, Instant)> = None;
    let mut failure: Option<String> = None;
    loop {
        let set = policies.current();
        let due = match audited {
            None => true,
            Some((loaded_at, next)) => loaded_at != set.loaded_at || Instant::now() >= next,
        };
        if due && catalog.is_synced() && !set.policies.is_empty() {
            let began = Instant::now();
            match audit_cluster(&client, &catalog, set.clone(), config.current()).await {
                Ok(tally) => {
                    tracing::info!(judged = ?tally.judged, took = ?began.elapsed(), "policy audit ended");
                    let found = tally.policies.iter().map(|(policy, counts)| (policy.as_str(), counts));
                    for (policy, counts) in found.chain([("(built-in rules)", &tally.built_in)]) {
                        if counts.by_effect().iter().any(|(_, n)| *n > 0) {
                            tracing::info!(
                                policy,
                                refused = counts.refused,
                                warned = counts.warned,
                                recorded = counts.recorded,
                                ignored = counts.ignored,
                                first = ?counts.examples,
                                "policy audit found objects"
                            );
                        }
                    }
                    metrics.audited(&tally);
                    last.set(Ok(tally));
                    failure = None;
                    audited = Some((set.loaded_at, began + interval));
                }
                Err(error) => {
                    if failure.as_ref() != Some(&error) {
                        tracing::warn!(%error, "policy audit did not end; tried again at the next one");
                    }
                    metrics.policy_audits.failed();
                    last.set(Err(error.clone()));
                    failure = Some(error);
                    audited = Some((set.loaded_at, Instant::now() + interval.min(RETRY)));
                }
            }
        }
        // A catalog still listing is looked at again soon: the first audit waits on it.
        let look = if catalog.is_synced() { LOOK } else { Duration::from_secs(1) };
        tokio::time::sleep(look.min(interval)).await;
    }
}

async fn audit_cluster(
    client: &Client,
    catalog: &Catalog,
    set: Arc<PolicySet>,
    config: Arc<Config>,
) -> Result<Tally, String> {
    let mut tally = Tally::of(&set);
    // A page at a time too: ten thousand contents as JSON at once would double the memory
    // the catalog takes.
    for classes in catalog.classes().chunks(PAGE as usize) {
        let page = classes.iter().filter_map(|class| serde_json::to_value(&**class).ok()).collect();
        tally.add(judge_apart(catalog, &set, &config, page).await?);
    }
    for contents in catalog.contents_store().state().chunks(PAGE as usize) {
        let page = contents.iter().filter_map(|content| serde_json::to_value(&**content).ok()).collect();
        tally.add(judge_apart(catalog, &set, &config, page).await?);
    }
    let mut buckets = Pages::new(client, ApiResource::erase::<Bucket>(&()), PAGE);
    let listing = |error| format!("listing the cluster's Buckets: {error}");
    while let Some(page) = buckets.next().await.map_err(listing)? {
        tally.add(judge_apart(catalog, &set, &config, page).await?);
    }
    Ok(tally)
}

/// [`audit`] on the blocking pool: a page takes tens of milliseconds of one core, which
/// the reviews being answered meanwhile should not wait behind.
async fn judge_apart(
    catalog: &Catalog,
    set: &Arc<PolicySet>,
    config: &Arc<Config>,
    objects: Vec<Value>,
) -> Result<Report, String> {
    let (catalog, set, config) = (catalog.clone(), set.clone(), config.clone());
    let judged = tokio::task::spawn_blocking(move || {
        let ctx = Context { catalog: &catalog, config: &config, policies: &set };
        audit(&ctx, &objects, &Writer { username: AUDITOR.into(), groups: Vec::new() })
    });
    judged.await.map_err(|error| format!("judging the objects failed: {error}"))
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
        let ignored = report.findings[1].to_string();
        assert!(
            ignored.starts_with("Bucket team-a/good: policy typed cannot evaluate its CREATE and UPDATE (onError: ignore lets it pass): "),
            "{ignored}"
        );
        assert!(!ignored.contains("could not be evaluated"), "{ignored}");
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

    fn team_policy() -> PolicySet {
        policies(
            "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: team}\n\
             spec:\n  match: {kinds: [Bucket]}\n  validate:\n  - {path: $.object.metadata.labels.team, required: true}\n\
             ---\napiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: quiet}\n\
             spec:\n  match: {kinds: [Bucket]}\n  validate:\n  - {path: $.object.spec.protocol, required: true}\n",
        )
    }

    /// The server keeps counts, not findings: an object once for each policy and effect,
    /// a policy that finds nothing at zero, and the first findings as examples.
    #[test]
    fn a_tally_counts_each_object_once_and_keeps_a_few_examples() {
        let set = team_policy();
        let buckets = (0..EXAMPLES + 5).map(|i| bucket("team-a", &format!("b{i}"), labelled(None), SPEC())).collect();
        let mut tally = Tally::of(&set);
        tally.add(run(&cluster(buckets), &set));
        // A second page.
        tally.add(run(&cluster(vec![bucket("team-a", "last", labelled(None), SPEC())]), &set));
        let team = &tally.policies["team"];
        assert_eq!((team.refused, team.warned, team.recorded, team.ignored), (EXAMPLES + 6, 0, 0, 0));
        assert_eq!(team.examples.len(), EXAMPLES);
        assert_eq!(
            team.examples[0],
            "Bucket team-a/b0: policy team refuses its CREATE and UPDATE: $.object.metadata.labels.team is required"
        );
        assert_eq!(tally.policies["quiet"], Counts::default());
        assert_eq!(tally.judged, BTreeMap::from([("Bucket", EXAMPLES + 6), ("BucketClass", 2)]));
        assert_eq!(tally.built_in, Counts::default());

        let metrics = Metrics::default();
        metrics.audited(&tally);
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "bucketgate_policy_audit_objects{{policy=\"team\",effect=\"refused\"}} {}",
                EXAMPLES + 6
            )),
            "{text}"
        );
        assert!(text.contains("bucketgate_policy_audit_objects{policy=\"quiet\",effect=\"refused\"} 0"), "{text}");
        // A policy gone since has no figures left.
        metrics.audited(&Tally::of(&policies(
            "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: quiet}\n\
             spec:\n  validate:\n  - {path: $.object.spec.protocol, required: true}\n",
        )));
        assert!(!metrics.encode().contains("policy=\"team\""));
    }

    /// `serve`'s audit reads classes and contents from the catalog and Buckets from the API
    /// server, a page at a time, following the continue token to the end.
    #[tokio::test]
    async fn the_server_audit_pages_through_the_buckets() {
        let (service, mut api) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(service, "default");
        let objects = cluster(Vec::new());
        let catalog = Catalog::from_documents(objects.iter().map(|o| (PathBuf::from("c.yaml"), o.clone()))).unwrap();
        let set = Arc::new(team_policy());
        let config = Arc::new(Config::default().with_provisioners([PROVISIONER.to_string()]));
        let audit = tokio::spawn(async move { audit_cluster(&client, &catalog, set, config).await });
        let page = |names: &[&str], next: &str| {
            // As the API server lists them: items without their kind.
            let items: Vec<Value> = names
                .iter()
                .map(|name| json!({"metadata": {"name": name, "namespace": "team-a"}, "spec": SPEC()}))
                .collect();
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketList", "metadata": {"continue": next}, "items": items})
        };
        for (query, body) in
            [("limit=100", page(&["a", "b"], "next-page")), ("limit=100&continue=next-page", page(&["c"], ""))]
        {
            let (request, send) = api.next_request().await.expect("a list of Buckets");
            assert_eq!(request.uri().path(), "/apis/cosi.io/v1alpha1/buckets");
            assert_eq!(request.uri().query().map(|q| q.trim_start_matches('&')), Some(query));
            send.send_response(http::Response::builder().body(serde_json::to_vec(&body).unwrap().into()).unwrap());
        }
        let tally = audit.await.unwrap().unwrap();
        assert_eq!(tally.judged, BTreeMap::from([("Bucket", 3), ("BucketClass", 1)]));
        assert_eq!(tally.policies["team"].refused, 3);

        // A list refused is the audit's error, not an empty tally.
        let (service, mut api) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(service, "default");
        let catalog = Catalog::from_documents(objects.iter().map(|o| (PathBuf::from("c.yaml"), o.clone()))).unwrap();
        let (set, config) = (Arc::new(team_policy()), Arc::new(Config::default()));
        let audit = tokio::spawn(async move { audit_cluster(&client, &catalog, set, config).await });
        let (_, send) = api.next_request().await.unwrap();
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
            "code": 403, "message": "buckets.cosi.io is forbidden"});
        send.send_response(
            http::Response::builder().status(403).body(serde_json::to_vec(&forbidden).unwrap().into()).unwrap(),
        );
        let error = audit.await.unwrap().unwrap_err();
        assert!(error.starts_with("listing the cluster's Buckets: ") && error.contains("forbidden"), "{error}");
    }
}
