//! Admin policies through the real server: each mode, evaluation errors, `GET /policies`,
//! and reloads (good, broken, fixed, ConfigMap-style) while requests are being served.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn policy(name: &str, mode: &str, body: &str) -> String {
    format!(
        "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: {name}\nspec:\n  mode: {mode}\n  match:\n    kinds: [Bucket]\n{body}"
    )
}

const TEAM_LABEL: &str = "  validate:\n    - path: $.object.metadata.labels.team\n      required: true\n      message: a team label is required\n";

/// The mutated photos Bucket from the fixtures, ready for the validating webhook.
fn photos(labels: Value) -> Value {
    let mut body = fixture("010");
    let object = &mut body["request"]["object"];
    object["spec"]["bucketClassName"] = json!("ceph-s3");
    object["spec"]["bucketPrefix"] = json!("photos-");
    object["metadata"]["labels"] = labels;
    body
}

#[tokio::test]
async fn modes_enforce_warn_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("enforce.yaml"), policy("team-enforced", "enforce", TEAM_LABEL)).unwrap();
    std::fs::write(dir.path().join("warn.yaml"), policy("team-warned", "warn", TEAM_LABEL)).unwrap();
    std::fs::write(dir.path().join("audit.yaml"), policy("team-audited", "audit", TEAM_LABEL)).unwrap();
    let server = TestServer::with_policies(dir.path()).await;

    let response = server.review("validate", &photos(json!({"app": "gallery"}))).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "Bucket \"team-a/photos\": policy team-enforced: a team label is required"
    );

    std::fs::remove_file(dir.path().join("enforce.yaml")).unwrap();
    server.state.policies.reload();
    let response = server.review("validate", &photos(json!({"app": "gallery"}))).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["warnings"], json!(["policy team-warned: a team label is required"]));
    assert_eq!(response["auditAnnotations"], json!({"team-audited": "a team label is required"}));

    let response = server.review("validate", &photos(json!({"team": "gallery"}))).await;
    assert!(response.get("warnings").is_none() && response.get("auditAnnotations").is_none(), "{response}");

    let metrics = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Every matching policy is evaluated, also when one of them denies.
    for line in [
        r#"bucketgate_policy_evaluations_total{policy="team-enforced",mode="enforce",result="violation"} 1"#,
        r#"bucketgate_policy_evaluations_total{policy="team-audited",mode="audit",result="violation"} 2"#,
        r#"bucketgate_policy_evaluations_total{policy="team-audited",mode="audit",result="pass"} 1"#,
        r#"bucketgate_policy_evaluations_total{policy="team-warned",mode="warn",result="violation"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn evaluation_errors_fail_closed_or_open_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    // generation is a number; a pattern applies to strings only.
    let typed_wrong = "  validate:\n    - path: $.object.metadata.generation\n      pattern: '^1$'\n";
    std::fs::write(dir.path().join("closed.yaml"), policy("closed", "enforce", typed_wrong)).unwrap();
    std::fs::write(
        dir.path().join("open.yaml"),
        policy("open", "enforce", typed_wrong).replace("  mode: enforce\n", "  mode: enforce\n  onError: ignore\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("other.yaml"), policy("other", "warn", TEAM_LABEL)).unwrap();
    let server = TestServer::with_policies(dir.path()).await;
    let response = server.review("validate", &photos(json!({"app": "gallery"}))).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("policy closed: could not be evaluated: $.object.metadata.generation is a number, and a pattern applies only to strings"),
        "{message}"
    );
    assert!(!message.contains("policy open"), "{message}");
    // The broken policies do not stop the others.
    assert_eq!(response["warnings"], json!(["policy other: a team label is required"]));

    let listing: Value = server.client().get(server.url("/policies")).send().await.unwrap().json().await.unwrap();
    let open = listing["policies"].as_array().unwrap().iter().find(|p| p["name"] == "open").unwrap();
    assert_eq!(open["onError"], "ignore");
    assert_eq!(open["evaluations"], json!({"pass": 0, "violation": 0, "error": 1}));
    server.stop().await;
}

#[tokio::test]
async fn mutations_merge_with_the_built_in_patch() {
    let dir = tempfile::tempdir().unwrap();
    let mutate = "  mutate:\n    - setDefault:\n        path: $.object.metadata.labels['cost-center']\n        value: shared\n    - set:\n        path: $.object.spec.secretName\n        value: photos-credentials\n";
    std::fs::write(dir.path().join("m.yaml"), policy("defaults", "enforce", mutate)).unwrap();
    let server = TestServer::with_policies(dir.path()).await;
    let body = fixture("009");
    let response = server.review("mutate", &body).await;
    let patched = apply_patch(&body, &response);
    let mut expected = body["request"]["object"].clone();
    expected["spec"]["bucketClassName"] = json!("ceph-s3");
    expected["spec"]["secretName"] = json!("photos-credentials");
    expected["metadata"]["labels"]["cosi.io/provisioner"] = json!("rook-ceph.ceph.rook.io-bucket");
    expected["metadata"]["labels"]["cost-center"] = json!("shared");
    expected["metadata"]["finalizers"] = json!(["cosi.io/finalizer"]);
    assert_eq!(patched, expected);
    server.stop().await;
}

/// A policy whose second mutation cannot be made leaves no trace of its first: with
/// `onError: ignore` the request passes with the other policies' changes only.
#[tokio::test]
async fn a_failed_mutation_takes_back_the_policy_s_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "  mutate:\n    - set:\n        path: $.object.metadata.labels['half-done']\n        value: 'yes'\n    - set:\n        path: $.object.metadata.name.suffix\n        value: x\n";
    let broken =
        policy("broken", "enforce", broken).replace("  mode: enforce\n", "  mode: enforce\n  onError: ignore\n");
    std::fs::write(dir.path().join("a.yaml"), broken).unwrap();
    let fine =
        "  mutate:\n    - setDefault:\n        path: $.object.metadata.labels['cost-center']\n        value: shared\n";
    std::fs::write(dir.path().join("b.yaml"), policy("fine", "enforce", fine)).unwrap();
    let server = TestServer::with_policies(dir.path()).await;
    let body = fixture("009");
    let response = server.review("mutate", &body).await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply_patch(&body, &response);
    let labels = patched["metadata"]["labels"].as_object().unwrap();
    assert_eq!(labels.get("cost-center"), Some(&json!("shared")));
    assert!(!labels.contains_key("half-done"), "{labels:?}");
    assert_eq!(patched["metadata"]["name"], body["request"]["object"]["metadata"]["name"]);
    server.stop().await;
}

/// Reloads while a client keeps sending requests: a good change takes effect, a broken
/// file keeps the last good set (and says so), a fix takes effect again, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_good_broken_fixed_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("team.yaml"), policy("team", "warn", TEAM_LABEL)).unwrap();
    let server = Arc::new(TestServer::with_policies(dir.path()).await);
    tokio::spawn(server.state.policies.clone().watch(Duration::from_millis(20), server.state.metrics.clone()));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (server, stop, sent) = (server.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let body = photos(json!({"app": "gallery"}));
            while !stop.load(Ordering::SeqCst) {
                let response = server.review("validate", &body).await;
                assert!(response["allowed"].is_boolean());
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let until = |want: &'static str| {
        let server = server.clone();
        async move {
            let started = Instant::now();
            loop {
                let response = server.review("validate", &photos(json!({"app": "gallery"}))).await;
                let text = response.to_string();
                if text.contains(want) {
                    return response;
                }
                assert!(started.elapsed() < Duration::from_secs(5), "never saw {want}: {text}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    until("policy team: a team label is required").await;
    std::fs::write(dir.path().join("team.yaml"), policy("team", "enforce", TEAM_LABEL)).unwrap();
    let response = until("\"allowed\":false").await;
    assert!(response["status"]["message"].as_str().unwrap().contains("policy team"));

    // Broken: the enforcing set stays in force, and /policies shows the error with its line.
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: x}\nspec:\n  validat: []\n",
    )
    .unwrap();
    let started = Instant::now();
    let listing = loop {
        let listing: Value = server.client().get(server.url("/policies")).send().await.unwrap().json().await.unwrap();
        if !listing["errors"].as_array().unwrap().is_empty() {
            break listing;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the broken file was never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(listing["errors"][0]["line"], 5);
    assert!(listing["errors"][0]["message"].as_str().unwrap().contains("unknown field `validat`"));
    assert_eq!(listing["policies"][0]["name"], "team");
    assert_eq!(listing["policies"][0]["mode"], "enforce");
    assert_eq!(server.review("validate", &photos(json!({"app": "gallery"}))).await["allowed"], false);
    let metrics = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bucketgate_policy_last_reload_successful 0\n"), "{metrics}");

    // Fixed: the new set loads.
    std::fs::write(dir.path().join("broken.yaml"), policy("second", "audit", TEAM_LABEL)).unwrap();
    until("\"second\"").await;

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    // Each request of the load asserted a well-formed answer; a failure would have panicked it.
    assert!(sent.load(Ordering::SeqCst) > 0, "the load ran alongside the reloads");
    let metrics = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"bucketgate_policy_reloads_total{result="error"} 1"#), "{metrics}");
    assert!(metrics.contains("bucketgate_policy_last_reload_successful 1\n"), "{metrics}");
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

/// A ConfigMap volume: files are links into `..data`, which the kubelet swaps.
#[tokio::test]
async fn configmap_symlink_swap_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("..2026_11_21_v1");
    let v2 = dir.path().join("..2026_11_21_v2");
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v1.join("team.yaml"), policy("team", "warn", TEAM_LABEL)).unwrap();
    std::fs::write(v2.join("team.yaml"), policy("team", "enforce", TEAM_LABEL)).unwrap();
    std::os::unix::fs::symlink("..2026_11_21_v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/team.yaml", dir.path().join("team.yaml")).unwrap();

    let server = TestServer::with_policies(dir.path()).await;
    assert_eq!(server.review("validate", &photos(json!({}))).await["allowed"], true);
    std::os::unix::fs::symlink("..2026_11_21_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    assert!(matches!(server.state.policies.reload(), bucketgate::policy::store::Reload::Loaded(1)));
    assert_eq!(server.review("validate", &photos(json!({}))).await["allowed"], false);
    server.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_a_policy_set_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
    let server = TestServer::with_policies(dir.path()).await;
    let response = server.client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("policies not loaded"));
    std::fs::write(dir.path().join("broken.yaml"), policy("fine", "warn", TEAM_LABEL)).unwrap();
    server.state.policies.reload();
    let response = server.client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn example_policies_pass_their_own_tests() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["policy", "test", "policies", "--junit"])
        .arg(std::env::temp_dir().join(format!("bucketgate-junit-{}.xml", std::process::id())))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(", 0 failed") && !stdout.contains("FAIL"), "{stdout}");
    for policy in [
        "require-team-label",
        "bucket-prefix-pattern",
        "classes-by-tier",
        "bucket-quota",
        "default-cost-center",
        "no-delete-in-production",
        "restricted-data-is-retained",
        "restricted-data-is-encrypted",
    ] {
        assert!(stdout.contains(&format!("PASS  {policy} / ")), "no passing test for {policy}: {stdout}");
    }
    let lint = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["policy", "lint", "policies"])
        .output()
        .await
        .unwrap();
    assert!(lint.status.success());
    assert_eq!(String::from_utf8_lossy(&lint.stdout), "8 policies OK\n");
}

/// A warning is said and does not fail the lint: the policy loads and runs as written.
#[tokio::test]
async fn lint_warns_of_a_policy_without_kinds_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let kindless = "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata: {name: team}\nspec:\n  validate:\n    - path: $.object.metadata.labels.team\n      required: true\n";
    std::fs::write(dir.path().join("team.yaml"), kindless).unwrap();
    let lint = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["policy", "lint"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&lint.stdout);
    assert!(lint.status.success(), "{stdout}");
    let file = dir.path().join("team.yaml");
    assert!(stdout.starts_with(&format!("{}:1: warning: policy team names no kinds", file.display())), "{stdout}");
    assert!(stdout.ends_with("1 policies OK\n"), "{stdout}");
}

/// A directory that is not there fails both of lint's readings (policies, test files): one
/// problem, said once.
#[tokio::test]
async fn lint_says_a_missing_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let lint = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["policy", "lint"])
        .arg(&missing)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(!lint.status.success());
    assert_eq!(stdout.matches("cannot read directory").count(), 1, "{stdout}");
    assert!(stderr.contains("1 problem(s) in the policy files"), "{stderr}");
}

/// `bucketgate policy audit DIR ARGS...`: success, stdout, stderr.
async fn audit(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["policy", "audit"])
        .args(args)
        // Never the machine's own cluster.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), stdout.into_owned(), stderr.into_owned())
}

/// The examples of manifests/ pass the example policies: what `serve --dev` serves admits
/// what the README applies.
#[tokio::test]
async fn the_example_policies_admit_the_example_objects() {
    let (ok, stdout, stderr) = audit(&["policies".as_ref(), "--catalog".as_ref(), "manifests/examples".as_ref()]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "judged 2 Buckets, 3 BucketClasses, 1 BucketContent against 8 policies: 0 refused by a policy, \
         0 by a built-in rule; 0 warned of, 0 recorded, 0 not evaluated\n"
    );
}

/// A policy added to a cluster whose Buckets already break it: the audit names them, and
/// fails, before the policy holds up their next change.
#[tokio::test]
async fn audit_names_the_objects_a_policy_would_refuse() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("team.yaml"), policy("team", "enforce", TEAM_LABEL)).unwrap();
    std::fs::write(
        policies.path().join("prefix.yaml"),
        policy(
            "prefix",
            "warn",
            "    operations: [CREATE]\n  validate:\n    - path: $.object.spec.bucketPrefix\n      required: true\n",
        ),
    )
    .unwrap();
    let catalog = tempfile::tempdir().unwrap();
    for file in ["bucketclass-ceph-rgw.yaml", "bucket-photos.yaml"] {
        std::fs::copy(format!("manifests/examples/{file}"), catalog.path().join(file)).unwrap();
    }
    std::fs::write(
        catalog.path().join("more.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b, uid: u-b}\n---\n\
         apiVersion: cosi.io/v1alpha1\nkind: Bucket\nmetadata: {name: scratch, namespace: team-b}\n\
         spec: {protocol: s3, bucketClassName: ceph-rgw}\n",
    )
    .unwrap();
    let args = [policies.path().as_os_str(), "--catalog".as_ref(), catalog.path().as_os_str()];
    let (ok, stdout, stderr) = audit(&args).await;
    assert!(!ok, "{stdout}");
    assert_eq!(
        stdout,
        "Bucket team-b/scratch: policy prefix warns of its CREATE: $.object.spec.bucketPrefix is required\n\
         Bucket team-b/scratch: policy team refuses its CREATE and UPDATE: a team label is required\n\
         judged 2 Buckets, 1 BucketClass against 2 policies: 1 refused by a policy, 0 by a built-in rule; \
         1 warned of, 0 recorded, 0 not evaluated\n"
    );
    assert!(stderr.contains("1 object(s) refused by policies in enforce mode"), "{stderr}");

    let (_, json, _) = audit(&[&args[..], &["--output".as_ref(), "json".as_ref()]].concat()).await;
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["findings"][1],
        json!({"kind": "Bucket", "namespace": "team-b", "name": "scratch", "policy": "team", "effect": "refused",
            "operations": ["CREATE", "UPDATE"], "message": "a team label is required"})
    );
    assert_eq!(report["judged"], json!({"Bucket": 2, "BucketClass": 1}));

    // Judged as a user the policy leaves out, the Bucket passes.
    std::fs::write(
        policies.path().join("team.yaml"),
        policy("team", "enforce", &format!("    excludeGroups: [platform]\n{TEAM_LABEL}")),
    )
    .unwrap();
    let (ok, stdout, _) = audit(&[&args[..], &["--group".as_ref(), "platform".as_ref()]].concat()).await;
    assert!(ok, "{stdout}");
}

/// What the audit cannot read is said, with where: it judges nothing on half the facts.
#[tokio::test]
async fn audit_says_what_it_cannot_read() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("broken.yaml"), "kind: [").unwrap();
    let (ok, stdout, stderr) =
        audit(&[policies.path().as_os_str(), "--catalog".as_ref(), "manifests/examples".as_ref()]).await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("the policies do not load") && stderr.contains("broken.yaml:1"), "{stderr}");

    let catalog = tempfile::tempdir().unwrap();
    std::fs::write(
        catalog.path().join("bad.yaml"),
        "apiVersion: cosi.io/v1alpha1\nkind: Bucket\nmetadata: {namespace: a}\n",
    )
    .unwrap();
    let (ok, _, stderr) = audit(&["policies".as_ref(), "--catalog".as_ref(), catalog.path().as_os_str()]).await;
    assert!(!ok);
    assert!(stderr.contains("bad.yaml") && stderr.contains("metadata.name is missing"), "{stderr}");

    let (ok, _, stderr) = audit(&["policies".as_ref()]).await;
    assert!(!ok);
    assert!(stderr.contains("no cluster to judge: set KUBECONFIG, or pass --catalog DIR"), "{stderr}");
}

/// A GitOps repository's Buckets often name no namespace (kustomize or `kubectl apply -n`
/// sets it): judged in none, a policy for a namespace passes them by, which the audit says,
/// and `--namespace` places them.
#[tokio::test]
async fn audit_places_buckets_that_name_no_namespace() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("team.yaml"),
        policy("team", "enforce", &format!("    namespaces: [team-b]\n{TEAM_LABEL}")),
    )
    .unwrap();
    let catalog = tempfile::tempdir().unwrap();
    std::fs::copy("manifests/examples/bucketclass-ceph-rgw.yaml", catalog.path().join("class.yaml")).unwrap();
    std::fs::write(
        catalog.path().join("bucket.yaml"),
        "apiVersion: cosi.io/v1alpha1\nkind: Bucket\nmetadata: {name: scratch}\nspec: {protocol: s3, bucketClassName: ceph-rgw}\n",
    )
    .unwrap();
    let args = [policies.path().as_os_str(), "--catalog".as_ref(), catalog.path().as_os_str()];
    let (ok, stdout, stderr) = audit(&args).await;
    assert!(ok, "{stdout}");
    assert!(stderr.contains("1 Bucket(s) name no namespace and are judged in none: pass --namespace NS"), "{stderr}");
    let (ok, stdout, _) = audit(&[&args[..], &["--namespace".as_ref(), "team-b".as_ref()]].concat()).await;
    assert!(!ok);
    assert!(stdout.starts_with("Bucket team-b/scratch: policy team refuses its CREATE and UPDATE"), "{stdout}");
}
