//! End to end, following the envtest convention: `KUBEBUILDER_ASSETS` names a directory
//! with `etcd` and `kube-apiserver` (`scripts/envtest-assets.sh` builds them from Debian's
//! Kubernetes source, 1.20.2). Each test starts both on 127.0.0.1, installs the CRDs and the
//! Namespace and RBAC of manifests/base, runs `bucketgate serve` as that ServiceAccount,
//! registers the webhooks from manifests/base (pointed at the local server), and takes
//! Buckets through admission and, when bash scripts/test has started SeaweedFS, through
//! provisioning, sharing, release and a change of leader. Without the binaries every test
//! says it was skipped and passes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use bucketgate::api::{AccessMode, Bucket, BucketClass, BucketContent, BucketContentPhase, BucketPhase, ReleasePolicy};
use bucketgate::config::{EnvCredentials, IamSettings, S3Settings};
use bucketgate::driver::s3::S3Driver;
use bucketgate::driver::{Credentials, Driver};
use bucketgate::provision::LEASE;

fn assets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("etcd").is_file() && dir.join("kube-apiserver").is_file()).then_some(dir)
}

macro_rules! require_assets {
    () => {
        match assets() {
            Some(dir) => dir,
            None => {
                eprintln!("SKIPPED: set KUBEBUILDER_ASSETS to a directory with etcd and kube-apiserver to run the end-to-end suite");
                return;
            }
        }
    };
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct ControlPlane {
    _etcd: Child,
    _apiserver: Child,
    _dir: tempfile::TempDir,
    /// bucketgate's, as the ServiceAccount of manifests/base.
    bucketgate_kubeconfig: PathBuf,
    /// `dev`'s, for commands run as the tenant.
    tenant_kubeconfig: PathBuf,
    /// The suite's, as an admin.
    client: Client,
    /// As `dev`, a developer with no grant but those the tests give.
    tenant: Client,
}

async fn control_plane(assets: &Path) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd = Command::new(assets.join("etcd"))
        .args(["--data-dir", dir.path().join("etcd").to_str().unwrap()])
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("sa.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("sa.pub"), key.public_key_pem()).unwrap();
    // An admin for the suite, and bucketgate as the ServiceAccount of manifests/base, so that
    // it runs with the RBAC the manifests grant it and no more.
    std::fs::write(
        dir.path().join("tokens.csv"),
        format!(
            "envtest-token,admin,admin,system:masters\nbucketgate-token,system:serviceaccount:{NAMESPACE}:bucketgate,bucketgate,\"system:serviceaccounts,system:serviceaccounts:{NAMESPACE},system:authenticated\"\ndev-token,dev,dev,system:authenticated\n"
        ),
    )
    .unwrap();
    let apiserver = Command::new(assets.join("kube-apiserver"))
        .args(["--etcd-servers", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
        .args(["--secure-port", &api_port.to_string()])
        .args(["--cert-dir", dir.path().join("pki").to_str().unwrap()])
        .args(["--token-auth-file", dir.path().join("tokens.csv").to_str().unwrap()])
        .args(["--authorization-mode", "RBAC"])
        .args(["--service-account-key-file", dir.path().join("sa.pub").to_str().unwrap()])
        .args(["--service-account-signing-key-file", dir.path().join("sa.key").to_str().unwrap()])
        .args(["--service-account-issuer", &format!("https://127.0.0.1:{api_port}")])
        .args(["--service-cluster-ip-range", "10.0.0.0/24", "--disable-admission-plugins", "ServiceAccount"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let kubeconfig_for = |token: &str| {
        let path = dir.path().join(format!("{token}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: user}}\ncurrent-context: envtest\n"
            ),
        )
        .unwrap();
        path
    };
    let (kubeconfig, bucketgate_kubeconfig) = (kubeconfig_for("envtest-token"), kubeconfig_for("bucketgate-token"));
    let client_of = |path: PathBuf| async move {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
        Client::try_from(config).unwrap()
    };
    let tenant_kubeconfig = kubeconfig_for("dev-token");
    let (client, tenant) = (client_of(kubeconfig).await, client_of(tenant_kubeconfig.clone()).await);
    let started = Instant::now();
    while client.apiserver_version().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "kube-apiserver did not start");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ControlPlane {
        _etcd: etcd,
        _apiserver: apiserver,
        _dir: dir,
        bucketgate_kubeconfig,
        tenant_kubeconfig,
        client,
        tenant,
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let old = minor_version(client).await <= 20;
    for crd in bucketgate::crds::all() {
        let crd = if old { for_1_20(crd) } else { crd };
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The API server's minor version (`31` for 1.31).
async fn minor_version(client: &Client) -> u32 {
    let minor = client.apiserver_version().await.unwrap().minor;
    minor.trim_end_matches('+').parse().unwrap()
}

/// A CRD as kube-apiserver 1.20 takes it (the API server `scripts/envtest-assets` builds).
///
/// Its CRD conversion mishandles two things of kube's schemas, a `null` among an enum's
/// values (kube lists it for an optional enum, so that an explicit null passes the enum
/// check) and an empty string as a default, and then refuses the CRD with a misleading
/// "per-version schemas may not all be set to identical values" or "must be of type
/// string". Both are taken out here, nothing else: the rest of the schemas is under test.
/// 1.20 also ignores what came later (CEL rules, selectable fields), as any server of
/// its age does.
fn for_1_20(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(members) => {
                if let Some(Value::Array(values)) = members.get_mut("enum") {
                    values.retain(|v| !v.is_null());
                }
                if members.get("default") == Some(&json!("")) {
                    members.remove("default");
                }
                members.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).unwrap();
    strip(&mut value);
    serde_json::from_value(value).unwrap()
}

/// bucketgate's namespace, as manifests/base sets it.
const NAMESPACE: &str = "bucketgate-system";

/// The Namespace and RBAC of manifests/base, created as `kubectl apply -k` would create
/// them (their namespace set as kustomize sets it), so that bucketgate runs with them.
async fn install_rbac(client: &Client) {
    install(client, "manifests/base", &["namespace.yaml", "rbac.yaml", "user-roles.yaml"]).await
}

/// Creates every object of `files` in `dir` (from the repository's root), as
/// [`install_rbac`] does.
async fn install(client: &Client, dir: &str, files: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for document in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            create(client, document, false).await.unwrap();
        }
    }
}

/// Creates any object, in bucketgate's namespace where its kind is namespaced; with
/// `dry_run`, only asks whether the API server would.
async fn create(client: &Client, object: Value, dry_run: bool) -> Result<DynamicObject, kube::Error> {
    let mut object: DynamicObject = serde_json::from_value(object).unwrap();
    let types = object.types.clone().unwrap();
    let gvk = GroupVersionKind::try_from(&types).unwrap();
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            object.metadata.namespace = Some(NAMESPACE.into());
            Api::namespaced_with(client.clone(), NAMESPACE, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams { dry_run, ..PostParams::default() }, &object).await
}

/// Where [`bucketgate`] keeps the log of the server it started, in its `certs_dir`.
const LOG: &str = "log.jsonl";

/// Starts `bucketgate serve`, with `args` added, against the control plane; returns it, its
/// port and its CA.
async fn bucketgate(
    plane: &ControlPlane,
    config: &str,
    certs_dir: &Path,
    identity: &str,
    args: &[&str],
) -> (Child, u16, String) {
    // With --manage-certs it makes its own, and waits for them.
    let ca_pem = if args.contains(&"--manage-certs") {
        String::new()
    } else {
        let certs = bucketgate::tls::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
        certs.write(certs_dir).unwrap();
        certs.ca_pem
    };
    std::fs::write(certs_dir.join("config.yaml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--cert-dir"])
        .arg(certs_dir)
        .arg("--config")
        .arg(certs_dir.join("config.yaml"))
        .args(["--lease-namespace", NAMESPACE, "--identity", identity])
        .args(args)
        .env("KUBECONFIG", &plane.bucketgate_kubeconfig)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        let log: Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(address) = log["fields"]["address"].as_str() {
            port = address.rsplit(':').next().unwrap().parse().unwrap();
            break;
        }
    }
    assert_ne!(port, 0, "bucketgate did not start");
    // Its warnings and errors join the test's own output, which a failed test shows; every
    // line from here on is kept in `certs_dir`'s log.jsonl, for tests that read the log.
    let mut log = std::fs::File::create(certs_dir.join(LOG)).unwrap();
    tokio::spawn(async move {
        use std::io::Write;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                eprintln!("bucketgate {line}");
            }
            let _ = writeln!(log, "{line}");
        }
    });
    (child, port, ca_pem)
}

/// The webhook configurations from manifests/base, pointed at the local server.
async fn register_webhooks(client: &Client, port: u16, ca_pem: &str) {
    register_webhooks_at(client, &format!("https://127.0.0.1:{port}"), ca_pem).await
}

/// [`register_webhooks`], the server called at `base` (a URL).
async fn register_webhooks_at(client: &Client, base: &str, ca_pem: &str) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/webhooks.yaml")).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    for mut document in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        for hook in document["webhooks"].as_array_mut().unwrap() {
            let path = hook["clientConfig"]["service"]["path"].as_str().unwrap().to_string();
            hook["clientConfig"] = json!({"url": format!("{base}{path}"), "caBundle": bundle});
        }
        match document["kind"].as_str().unwrap() {
            "MutatingWebhookConfiguration" => {
                let hook: MutatingWebhookConfiguration = serde_json::from_value(document).unwrap();
                Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .create(&PostParams::default(), &hook)
                    .await
                    .unwrap();
            }
            _ => {
                let hook: ValidatingWebhookConfiguration = serde_json::from_value(document).unwrap();
                Api::<ValidatingWebhookConfiguration>::all(client.clone())
                    .create(&PostParams::default(), &hook)
                    .await
                    .unwrap();
            }
        }
    }
}

/// The class `seaweedfs` and a Bucket `name` of it in team-a, once it is Bound.
async fn bound_in_team_a(client: &Client, name: &str) -> (Api<Bucket>, Bucket) {
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &class("seaweedfs")).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket(name, &format!("{name}-"))).await;
    let bound = wait_phase(&buckets, name, BucketPhase::Bound, Duration::from_secs(30)).await;
    (buckets, bound)
}

/// Takes the webhook configurations [`register_webhooks`] made away.
async fn unregister_webhooks(client: &Client) {
    let delete = DeleteParams::default();
    Api::<MutatingWebhookConfiguration>::all(client.clone()).delete("bucketgate", &delete).await.unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone()).delete("bucketgate", &delete).await.unwrap();
}

async fn setup(config: &str) -> Option<(ControlPlane, Child, tempfile::TempDir)> {
    setup_with(config, &[]).await.map(|(plane, server, certs, _)| (plane, server, certs))
}

/// [`setup`], bucketgate started with `args` added; also returns a client of its HTTPS
/// server and the server's base URL.
async fn setup_with(config: &str, args: &[&str]) -> Option<(ControlPlane, Child, tempfile::TempDir, Https)> {
    let assets = assets()?;
    let plane = control_plane(&assets).await;
    install_crds(&plane.client).await;
    install_rbac(&plane.client).await;
    let certs = tempfile::tempdir().unwrap();
    let (server, port, ca) = bucketgate(&plane, config, certs.path(), "envtest", args).await;
    register_webhooks(&plane.client, port, &ca).await;
    create_namespace(&plane.client, "team-a").await;
    Some((plane, server, certs, Https::at(port, &ca)))
}

/// bucketgate's HTTPS server, as Prometheus reaches it.
struct Https {
    client: reqwest::Client,
    base: String,
}

impl Https {
    /// The server on `port` of [`bucketgate`], trusting `ca`.
    fn at(port: u16, ca: &str) -> Https {
        Https { client: common::client(&[ca], &[&rustls::version::TLS13]), base: format!("https://localhost:{port}") }
    }

    /// The value of the sample `name` (with its labels) in `GET /metrics`, if there is one.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// [`Https::metric`] once it is `expected`, or after 10 s: counts taken from a watch
    /// cache at each scrape follow what the API server said a moment later.
    async fn metric_once(&self, name: &str, expected: Option<f64>) -> Option<f64> {
        let started = Instant::now();
        loop {
            let value = self.metric(name).await;
            if value == expected || started.elapsed() > Duration::from_secs(10) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Creates the namespace `name`; returns its uid.
async fn create_namespace(client: &Client, name: &str) -> String {
    let namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let created = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    created.metadata.uid.unwrap()
}

/// bucketgate's configuration for the SeaweedFS that bash scripts/test started, if any.
fn seaweedfs_config(iam: bool) -> Option<String> {
    let Ok(endpoint) = std::env::var("BUCKETGATE_S3_ENDPOINT") else {
        eprintln!("SKIPPED: no S3 server; bash scripts/test starts SeaweedFS");
        return None;
    };
    let iam = if iam { "      iam: {}\n" } else { "" };
    Some(format!(
        "provisioners:\n  - name: seaweedfs\n    s3:\n      endpoint: {endpoint}\n      pathStyle: true\n{iam}      credentialsFromEnv: {{accessKeyId: BUCKETGATE_S3_ACCESS_KEY, secretAccessKey: BUCKETGATE_S3_SECRET_KEY}}\n"
    ))
}

fn class(provisioner: &str) -> BucketClass {
    serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": {"name": "standard"},
        "provisioner": provisioner, "isDefaultBucketClass": true, "supportedProtocols": ["s3"], "releasePolicy": "Delete", "accessMode": "rw"}))
    .unwrap()
}

/// The default class of SeaweedFS with `parameters`, and the Bucket `name` of it in team-a,
/// once Bound: its bucket at the store, and the key its Secret holds.
async fn bound_of_class(client: &Client, parameters: &[(&str, &str)], name: &str) -> (String, Credentials) {
    let mut asking = class("seaweedfs");
    asking.spec.parameters.extend(parameters.iter().map(|(key, value)| (key.to_string(), value.to_string())));
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &asking).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket(name, &format!("{name}-"))).await;
    wait_phase(&buckets, name, BucketPhase::Bound, Duration::from_secs(30)).await;
    secret_key(client, "team-a", name).await
}

fn new_bucket(name: &str, prefix: &str) -> Bucket {
    serde_json::from_value(
        json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"protocol": "s3", "bucketPrefix": prefix}}),
    )
    .unwrap()
}

#[tokio::test]
async fn admission_through_a_real_api_server() {
    let _ = require_assets!();
    let (plane, _server, _certs) = setup("provisioners:\n  - name: admission.example/only\n").await.unwrap();
    Api::<BucketClass>::all(plane.client.clone())
        .create(&PostParams::default(), &class("admission.example/only"))
        .await
        .unwrap();
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    let created = create_once_class_seen(&buckets, &new_bucket("photos", "photos-")).await;
    assert_eq!(created.spec.bucket_class_name.as_deref(), Some("standard"));
    assert!(created.finalizers().iter().any(|f| f == "cosi.io/finalizer"));
    assert_eq!(created.labels().get("cosi.io/provisioner").map(String::as_str), Some("admission.example-only"));
    // No loop drives this provisioner, so nothing has written a status: what the API server
    // shows is the CRD's default, written for generation 0, behind the Bucket's, which
    // kstatus (Flux's health checks) reads as in progress, not as done.
    let stored = buckets.get("photos").await.unwrap();
    assert_eq!(stored.metadata.generation, Some(1));
    assert_eq!(stored.status.as_ref().and_then(|s| s.observed_generation), Some(0), "{:?}", stored.status);
    let listed = buckets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].status.as_ref().and_then(|s| s.observed_generation), Some(0));

    let refused = buckets.create(&PostParams::default(), &new_bucket("kep", "YosemitePhotos-")).await.unwrap_err();
    assert!(refused.to_string().contains("use \"yosemitephotos-\""), "{refused}");
}

/// A control plane with the CRDs and the RBAC of manifests/base, and a namespace, a class
/// and two Buckets stored with no webhook to judge them, as before the policies: `photos`
/// keeps policies/ and `scratch` breaks two (its prefix, no team label).
async fn plane_before_the_policies(assets: &Path) -> ControlPlane {
    let plane = control_plane(assets).await;
    install_crds(&plane.client).await;
    install_rbac(&plane.client).await;
    let client = &plane.client;
    create_namespace(client, "team-a").await;
    // The class policies/classes-by-tier.yaml allows namespaces without a tier.
    let mut ceph = class("admission.example/only");
    ceph.metadata.name = Some("ceph-rgw".into());
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &ceph).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    let mut labelled = new_bucket("photos", "photos-");
    labelled.metadata.labels = Some([("team".to_string(), "team-a".to_string())].into());
    for bucket in [labelled, new_bucket("scratch", "scratch-data-")] {
        // The CRD was just made: the API server may not serve it for a moment.
        let started = Instant::now();
        while let Err(error) = buckets.create(&PostParams::default(), &bucket).await {
            assert!(started.elapsed() < Duration::from_secs(30), "{error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    plane
}

/// `policy audit` lists what the API server holds and judges it: Buckets stored before the
/// policies (no webhook here) are named with the policy each breaks. It runs as a tenant
/// bound to the ClusterRole manifests/base makes for it, which is enough.
#[tokio::test]
async fn policy_audit_judges_what_the_api_server_holds() {
    let assets = require_assets!();
    let plane = plane_before_the_policies(&assets).await;
    let audit = || async {
        let output = Command::new(env!("CARGO_BIN_EXE_bucketgate"))
            .args(["policy", "audit", "policies"])
            .env("KUBECONFIG", &plane.tenant_kubeconfig)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), stdout.into_owned(), stderr.into_owned())
    };
    // Someone who may not list them is told so, and nothing is judged on half the facts.
    let (ok, stdout, stderr) = audit().await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("listing the cluster's objects") && stderr.contains("forbidden"), "{stderr}");

    // The role manifests/base makes for it is all it needs.
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "dev-policy-audit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bucketgate-policy-audit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}]});
    create(&plane.client, binding, false).await.unwrap();
    // The authorizer learns of the binding from its own watch, a moment later.
    let started = Instant::now();
    let (ok, stdout, stderr) = loop {
        let (ok, stdout, stderr) = audit().await;
        if !stderr.contains("forbidden") || started.elapsed() > Duration::from_secs(10) {
            break (ok, stdout, stderr);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!ok, "{stdout}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "Bucket team-a/scratch: policy bucket-prefix-pattern refuses its CREATE: spec.bucketPrefix \"scratch-data-\" \
             should be a lower-case word of 3 to 20 letters and digits followed by '-', such as \"photos-\"",
            "Bucket team-a/scratch: policy require-team-label refuses its CREATE and UPDATE: Buckets need a team label \
             with a lower-case team name (metadata.labels.team is absent)",
            "judged 2 Buckets, 1 BucketClass against 8 policies: 1 refused by a policy, 0 by a built-in rule; \
             0 warned of, 0 recorded, 0 not evaluated",
        ],
        "{stderr}"
    );
    assert!(stderr.contains("1 object(s) refused by policies in enforce mode"), "{stderr}");

    // `review` decides one request against the same listing: a new Bucket the audit's
    // policies refuse, which the API server, with no webhook here, would have stored.
    let object = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "next", "namespace": "team-a", "labels": {"team": "team-a"}},
        "spec": {"protocol": "s3", "bucketClassName": "ceph-rgw", "bucketPrefix": "next-data-"}});
    let user = json!({"username": "dev"});
    let review = bucketgate::admission::synthetic_review(
        bucketgate::admission::Kind::Bucket,
        "CREATE",
        Some("team-a"),
        user,
        object,
        Value::Null,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("review.json"), review.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bucketgate"))
        .arg("review")
        .arg(dir.path().join("review.json"))
        .args(["--webhook", "validate", "--policies", "policies", "--provisioner", "admission.example/only"])
        .env("KUBECONFIG", &plane.tenant_kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("policy bucket-prefix-pattern: spec.bucketPrefix \"next-data-\""), "{message}");
}

/// `serve` audits the cluster as it runs: what it found is in `GET /policies` and the
/// metrics, and follows the objects as they change.
#[tokio::test]
async fn serve_audits_the_cluster_and_says_what_it_found() {
    let assets = require_assets!();
    let plane = plane_before_the_policies(&assets).await;
    let certs = tempfile::tempdir().unwrap();
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let args = ["--policies", policies, "--policy-audit-interval", "1s"];
    let config = "provisioners:\n  - name: admission.example/only\n";
    let (_server, port, ca) = bucketgate(&plane, config, certs.path(), "envtest", &args).await;
    let https =
        Https { client: common::client(&[&ca], &[&rustls::version::TLS13]), base: format!("https://localhost:{port}") };
    // What `GET /policies` says once an audit has found `refused` objects the team label
    // policy refuses.
    let audited = |refused: u64| {
        let https = &https;
        async move {
            let started = Instant::now();
            loop {
                let url = format!("{}/policies", https.base);
                let body: Value = https.client.get(url).send().await.unwrap().json().await.unwrap();
                let team =
                    body["policies"].as_array().unwrap().iter().find(|p| p["name"] == "require-team-label").cloned();
                if team.as_ref().is_some_and(|t| t["audit"]["refused"] == refused) {
                    return (body, team.unwrap());
                }
                assert!(started.elapsed() < Duration::from_secs(30), "no audit found {refused}: {body}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let (body, _) = audited(1).await;
    assert_eq!(body["audit"]["judged"], json!({"Bucket": 2, "BucketClass": 1}), "{body}");
    assert!(body["audit"]["error"].is_null() && body["audit"]["finished"].is_string(), "{body}");
    // Which objects is for the log, which RBAC guards, not for whoever reaches the pod.
    assert!(!body.to_string().contains("scratch"), "{body}");
    // The log is written a moment later, by its own thread.
    let started = Instant::now();
    let found = loop {
        let log = std::fs::read_to_string(certs.path().join(LOG)).unwrap();
        let lines = log.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok());
        if let Some(found) = lines.into_iter().find(|line| line["fields"]["policy"] == "require-team-label") {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no audit finding logged: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found["fields"]["message"], "policy audit found objects");
    assert_eq!(found["fields"]["refused"], 1);
    assert!(
        found["fields"]["first"].as_str().unwrap().contains(
            "Bucket team-a/scratch: policy require-team-label refuses its CREATE and UPDATE: Buckets need a team \
             label with a lower-case team name (metadata.labels.team is absent)"
        ),
        "{found}"
    );
    let prefix = body["policies"].as_array().unwrap().iter().find(|p| p["name"] == "bucket-prefix-pattern").unwrap();
    assert_eq!(prefix["audit"]["refused"], 1);
    let objects = |policy: &str| format!("bucketgate_policy_audit_objects{{policy=\"{policy}\",effect=\"refused\"}}");
    assert_eq!(https.metric(&objects("require-team-label")).await, Some(1.0));
    assert_eq!(https.metric(&objects("bucket-quota")).await, Some(0.0), "a policy that finds nothing says 0");
    assert!(https.metric("bucketgate_policy_audits_total{result=\"success\"}").await.unwrap() >= 1.0);

    // The Bucket mended, the next audit finds nothing wrong with it.
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    let label = json!({"metadata": {"labels": {"team": "team-a"}}});
    buckets.patch("scratch", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    audited(0).await;
    assert_eq!(https.metric(&objects("require-team-label")).await, Some(0.0));
}

/// What the seed report's cluster let through to fail silently later, and the tenancy
/// boundary, refused through a real API server with a message that says what to fix; a
/// dry run is answered and leaves nothing behind. Admission only: no store needed.
#[tokio::test]
async fn what_would_fail_later_and_other_tenants_are_refused_through_a_real_api_server() {
    let _ = require_assets!();
    let (plane, _server, _certs) = setup("provisioners:\n  - name: admission.example/only\n").await.unwrap();
    let client = plane.client.clone();
    create_namespace(&client, "team-b").await;
    let team_a_uid = Api::<Namespace>::all(client.clone()).get("team-a").await.unwrap().metadata.uid.unwrap();
    let classes: Api<BucketClass> = Api::all(client.clone());
    classes.create(&PostParams::default(), &class("admission.example/only")).await.unwrap();
    let mut rook = class("rook-ceph.ceph.rook.io/bucket");
    rook.metadata.name = Some("rook".into());
    rook.spec.is_default_bucket_class = false;
    classes.create(&PostParams::default(), &rook).await.unwrap();
    // team-a may bind the brownfield content by its real uid; team-b is listed with a uid
    // it does not have, as after the namespace was deleted and recreated.
    let content: BucketContent = serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent",
        "metadata": {"name": "legacy-logs"},
        "spec": {"provisioner": "", "releasePolicy": "Retain", "accessMode": "ro",
            "bindableNamespaces": [{"name": "team-a", "uid": team_a_uid}, {"name": "team-b", "uid": "4d2f9c1e-0000-4000-8000-000000000000"}],
            "protocol": {"type": "s3", "s3": {"bucketName": "legacy-logs", "endpoint": "https://s3.example.internal", "region": "us-east-1"}}}}))
    .unwrap();
    let contents: Api<BucketContent> = Api::all(client.clone());
    contents.create(&PostParams::default(), &content).await.unwrap();

    // A content and a Bucket naming it applied together, as one `kubectl apply` does: the
    // Bucket reaches the webhooks before the content's watch event reaches their catalog,
    // the more often the busier the API server. Twenty pairs at once, five times: before
    // the webhook read what its catalog lacked from the API server, 18 to 31 Buckets in 200
    // were refused (the mutating webhook, not knowing the content, left out its protocol).
    let team_a: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    let mut refused = Vec::new();
    for batch in 0..5 {
        let pairs = (0..20).map(|i| {
            let name = format!("fresh-{batch}-{i}");
            let mut fresh = content.clone();
            fresh.metadata.name = Some(name.clone());
            let (contents, team_a) = (contents.clone(), team_a.clone());
            async move {
                contents.create(&PostParams::default(), &fresh).await.unwrap();
                let bucket: Bucket = serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
                    "metadata": {"name": name}, "spec": {"bucketContentName": name}}))
                .unwrap();
                let dry_run = PostParams { dry_run: true, ..PostParams::default() };
                (name, team_a.create(&dry_run, &bucket).await)
            }
        });
        for (name, answered) in futures::future::join_all(pairs).await {
            match answered {
                Ok(bucket) => assert_eq!(bucket.spec.protocol.map(|p| p.as_str()), Some("s3"), "{name}"),
                Err(error) => refused.push(format!("{name}: {error}")),
            }
        }
    }
    assert_eq!(refused, Vec::<String>::new(), "Buckets applied with their content refused");

    let refusal = |namespace: &'static str, bucket: Value, says: &'static str| {
        let buckets: Api<Bucket> = Api::namespaced(client.clone(), namespace);
        async move { refused_saying(&buckets, &serde_json::from_value(bucket).unwrap(), says).await }
    };
    let bucket = |name: &str, spec: Value| json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": spec});
    // The "unsupported provisioner" that left ObjectBucketClaims pending, now refused at once.
    refusal("team-a", bucket("stuck", json!({"protocol": "s3", "bucketClassName": "rook"})), "admission.example/only")
        .await;
    refusal(
        "team-b",
        bucket("logs", json!({"protocol": "s3", "bucketContentName": "legacy-logs"})),
        "was deleted and recreated",
    )
    .await;
    refusal("team-b", bucket("other", json!({"protocol": "s3", "bucketContentName": "nowhere"})), "nowhere").await;
    // A name no object can have is the API server's to refuse, by the CRD's schema, even
    // with the webhook away: the provisioning loop puts these names into request paths.
    let injected = bucket("injected", json!({"protocol": "s3", "bucketContentName": "legacy-logs?watch=true"}));
    refusal("team-a", injected, "spec.bucketContentName in body should match").await;

    // A dry run is answered (the webhooks are NoneOnDryRun) and nothing is stored.
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    let dry =
        serde_json::from_value(bucket("logs", json!({"protocol": "s3", "bucketContentName": "legacy-logs"}))).unwrap();
    let answered = buckets.create(&PostParams { dry_run: true, ..PostParams::default() }, &dry).await.unwrap();
    assert!(answered.finalizers().iter().any(|f| f == "cosi.io/finalizer"));
    assert!(buckets.get_opt("logs").await.unwrap().is_none());

    // A class's parameters stay what its Buckets were provisioned with.
    let mut changed = classes.get("standard").await.unwrap();
    changed.spec.parameters.insert("objectStoreName".into(), "other".into());
    let error = classes.replace("standard", &PostParams::default(), &changed).await.unwrap_err().to_string();
    assert!(error.contains("parameters are immutable"), "{error}");
}

#[tokio::test]
async fn buckets_go_from_creation_to_bound_to_deletion() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let classes = Api::<BucketClass>::all(plane.client.clone());
    // A class asking what no store can do is refused when it is made, not at each Bucket.
    let mut versioned = class("seaweedfs");
    versioned.spec.parameters.insert("versioning".into(), "true".into());
    let error = classes.create(&PostParams::default(), &versioned).await.unwrap_err().to_string();
    assert!(error.contains("versioning is") && error.contains("write Enabled or Disabled"), "{error}");
    versioned.spec.parameters.insert("versioning".into(), "Enabled".into());
    versioned.spec.parameters.insert("serverSideEncryption".into(), "AES256".into());
    classes.create(&PostParams::default(), &versioned).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    let started = Instant::now();
    create_once_class_seen(&buckets, &new_bucket("photos", "photos-")).await;
    let bound = wait_phase(&buckets, "photos", BucketPhase::Bound, Duration::from_secs(30)).await;
    eprintln!("creation to Bound: {:?}", started.elapsed());
    let secret = Api::<Secret>::namespaced(plane.client.clone(), "team-a").get("photos").await.unwrap();
    let data = secret.data.unwrap();
    assert!(data.contains_key("AWS_ACCESS_KEY_ID") && data.contains_key("BUCKET_NAME"));
    let (bucket_name, _) = secret_key(&plane.client, "team-a", "photos").await;
    let admin = admin_key();
    let versioning = store(&admin).client().get_bucket_versioning().bucket(&bucket_name).send().await.unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"), "as its class asks");
    let encryption = store(&admin).client().get_bucket_encryption().bucket(&bucket_name).send().await.unwrap();
    let rules = encryption.server_side_encryption_configuration.map(|c| c.rules).unwrap_or_default();
    let algorithm = rules.first().and_then(|r| r.apply_server_side_encryption_by_default()).map(|d| d.sse_algorithm());
    assert_eq!(algorithm.map(|a| a.as_str()), Some("AES256"), "encrypted at rest, as its class asks");
    // kstatus (Flux) reads a status of this generation as done: the schema keeps the field.
    let observed = bound.status.as_ref().and_then(|s| s.observed_generation);
    assert_eq!((observed, bound.condition("Reconciling")), (bound.metadata.generation, None));
    let content = bound.status.unwrap().bucket_content_name.unwrap();
    let said = Api::<BucketContent>::all(plane.client.clone()).get(&content).await.unwrap().status.unwrap();
    let asked = "versioning and objects encrypted at rest (AES256)";
    assert_eq!(said.message, Some(format!("bucket {bucket_name} created with {asked}")));
    // What `kubectl wait --for=condition=Ready bucketcontent/...` reads.
    let conditions: Vec<_> = said.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    assert_eq!(conditions, [("Ready", "True")]);
    // The CRD's selectable fields, which a content's deletion lists Buckets by. An API
    // server before 1.31 refuses them, and the deletion below lists all Buckets instead.
    let all = Api::<Bucket>::all(plane.client.clone());
    let holding = all.list(&ListParams::default().fields(&format!("status.bucketContentName={content}"))).await;
    if minor_version(&plane.client).await >= 31 {
        let holding = holding.unwrap().items;
        assert_eq!(holding.iter().map(|b| b.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["photos"]);
        let none = all.list(&ListParams::default().fields("spec.bucketContentName=elsewhere")).await.unwrap();
        assert!(none.items.is_empty());
    } else {
        assert!(matches!(holding, Err(kube::Error::Api(status)) if status.code == 400));
    }

    buckets.delete("photos", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    while buckets.get_opt("photos").await.unwrap().is_some()
        || Api::<bucketgate::api::BucketContent>::all(plane.client.clone()).get_opt(&content).await.unwrap().is_some()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the Bucket and its content were not released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Many Buckets at once, as a team's Helm release makes them: each ends with one status
/// write's worth of truth, whatever order the watches bring their events in. A reconcile
/// woken by the Bucket's own Secret can run before the watch cache has the Bound status
/// written a moment before; what it writes then must still say what the Secret holds.
///
/// Without IAM: the race is the watches', not the store's, and SeaweedFS's IAM API slows
/// with every user it holds (a hundred keys at once took it two minutes on two cores, and
/// timed out in CI: a measure of SeaweedFS, not of this race). The IAM case of the race is
/// `a_bucket_seen_before_its_bound_status_is_not_written_again` (src/provision/tests.rs).
#[tokio::test]
async fn many_buckets_at_once_each_say_what_their_secret_holds() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    Api::<BucketClass>::all(plane.client.clone()).create(&PostParams::default(), &class("seaweedfs")).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket("first", "")).await;
    let names: Vec<String> = (0..200).map(|i| format!("many-{i}")).collect();
    let creates = names.iter().map(|name| {
        let buckets = buckets.clone();
        async move { buckets.create(&PostParams::default(), &new_bucket(name, "")).await.unwrap() }
    });
    futures::future::join_all(creates).await;
    for name in &names {
        wait_phase(&buckets, name, BucketPhase::Bound, Duration::from_secs(120)).await;
    }
    // Long enough for a reconcile woken late to have written what it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = Api::<Event>::namespaced(plane.client.clone(), "team-a").list(&ListParams::default()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(plane.client.clone(), "team-a");
    for name in &names {
        let bucket = buckets.get(name).await.unwrap();
        let scoped = bucket.condition("CredentialsScoped").cloned();
        assert_eq!(
            scoped.as_ref().map(|c| (c.status.as_str(), c.reason.as_str())),
            Some(("False", "ProvisionerCredentials")),
            "{name}: {scoped:?}"
        );
        let secret = secrets.get(name).await.unwrap();
        assert_eq!(secret.annotations().get("cosi.io/key").map(String::as_str), Some("provisioner"));
        let bound: Vec<&Event> = events
            .items
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Bound") && e.regarding.as_ref().and_then(|r| r.name.as_ref()) == Some(name)
            })
            .collect();
        assert!(bound.len() == 1 && bound[0].series.is_none(), "{name} told Bound more than once: {bound:?}");
    }
}

/// What `kubectl apply -k manifests/` sends, asked of the API server object by object (a
/// server-side dry run: its own validation, defaulting and admission judge each), after
/// the Namespace and RBAC that setup created for real and the CRDs, which are installed
/// from the same source (tests/manifests.rs checks manifests/crds against it). A kind the
/// server is too old to serve is named and passed over; any other refusal fails.
#[tokio::test]
async fn the_api_server_takes_every_object_of_the_manifests() {
    let _ = require_assets!();
    let (plane, _server, _certs) = setup("provisioners:\n  - name: admission.example/only\n").await.unwrap();
    let minor = minor_version(&plane.client).await;
    let mut asked = 0;
    // And the objects manifests/overlays/self-managed-certs changes or adds (its RBAC is
    // created for real by the test of --manage-certs).
    let overlay = if common::manifests::kubectl() {
        common::manifests::render(&common::manifests::root().join("overlays/self-managed-certs"))
    } else {
        Vec::new()
    };
    let changed = overlay.into_iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "Secret");
    for object in common::manifests::rendered().into_iter().chain(changed) {
        let (kind, name) = (object["kind"].as_str().unwrap().to_string(), object["metadata"]["name"].clone());
        let api_version = object["apiVersion"].as_str().unwrap().to_string();
        let created_by_setup =
            ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
        if kind == "CustomResourceDefinition" || created_by_setup.contains(&kind.as_str()) {
            continue;
        }
        let mut object =
            if kind == "Deployment" && minor < SLEEP_ACTION_SINCE { with_exec_pause(object) } else { object };
        if kind.ends_with("WebhookConfiguration") {
            // Setup registered these under their names, pointed at the local server.
            object["metadata"]["name"] = json!(format!("{}-as-shipped", name.as_str().unwrap()));
        }
        let served_since =
            NEWER_APIS.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(.., since)| *since);
        match create(&plane.client, object, true).await {
            Ok(_) => asked += 1,
            Err(error) if not_served(&error) && served_since.is_some_and(|since| minor < since) => {
                eprintln!(
                    "SKIPPED {api_version} {kind} {name}: served from Kubernetes 1.{} on, this is 1.{minor}",
                    served_since.unwrap()
                );
            }
            Err(error) => panic!("the API server refuses {api_version} {kind} {name}: {error}"),
        }
    }
    // The Deployment, Service, ConfigMaps, Secret and both webhook configurations at least.
    assert!(asked >= 7, "only {asked} objects asked about");
}

/// Whether discovery found no such API: a 404 for the group version, or no such kind in it.
fn not_served(error: &kube::Error) -> bool {
    match error {
        kube::Error::Discovery(_) => true,
        kube::Error::Api(status) => status.code == 404,
        _ => false,
    }
}

/// The minor version whose API server takes a `sleep` lifecycle action (on by default).
const SLEEP_ACTION_SINCE: u32 = 30;

/// The Deployment with its preStop `sleep` given as an `exec` instead, for a server that
/// does not know the action (it refuses the Deployment: "must specify a handler type"), so
/// that it judges the rest of the Deployment.
fn with_exec_pause(mut deployment: Value) -> Value {
    for container in deployment.pointer_mut("/spec/template/spec/containers").unwrap().as_array_mut().unwrap() {
        if let Some(pre_stop) = container.pointer_mut("/lifecycle/preStop").filter(|p| p.get("sleep").is_some()) {
            *pre_stop = json!({"exec": {"command": ["/bucketgate", "--version"]}});
        }
    }
    deployment
}

/// The API versions of manifests/ that came after 1.20, and the minor version that
/// serves each first.
const NEWER_APIS: [(&str, &str, u32); 1] = [("policy/v1", "PodDisruptionBudget", 21)];

/// A bucket shared with a second namespace: its Bucket there gets a key of its own, which
/// reads the bucket; taking the namespace off `bindableNamespaces` revokes that key at the
/// store and fails the Bucket with `AccessRevoked`, while the first Bucket's key still works.
#[tokio::test]
async fn a_shared_bucket_gives_each_namespace_its_own_key_and_takes_it_back() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let team_b_uid = create_namespace(&client, "team-b").await;
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &class("seaweedfs")).await.unwrap();
    let team_a: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&team_a, &new_bucket("photos", "photos-")).await;
    let content_name = wait_phase(&team_a, "photos", BucketPhase::Bound, Duration::from_secs(30))
        .await
        .status
        .unwrap()
        .bucket_content_name
        .unwrap();

    let contents: Api<BucketContent> = Api::all(client.clone());
    let content = contents.get(&content_name).await.unwrap();
    let only_team_a = serde_json::to_value(&content.spec.bindable_namespaces).unwrap();
    let mut with_team_b = only_team_a.clone();
    with_team_b.as_array_mut().unwrap().push(json!({"name": "team-b", "uid": team_b_uid}));
    let bindable = |list: &Value| Patch::Merge(json!({"spec": {"bindableNamespaces": list}}));
    contents.patch(&content_name, &PatchParams::default(), &bindable(&with_team_b)).await.unwrap();
    let team_b: Api<Bucket> = Api::namespaced(client.clone(), "team-b");
    let shared = json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": {"name": "photos"},
        "spec": {"protocol": "s3", "bucketContentName": content_name}});
    // Until the catalog's watch has seen team-b listed, admission refuses it.
    let started = Instant::now();
    while let Err(error) = team_b.create(&PostParams::default(), &serde_json::from_value(shared.clone()).unwrap()).await
    {
        assert!(started.elapsed() < Duration::from_secs(10), "{error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_phase(&team_b, "photos", BucketPhase::Bound, Duration::from_secs(30)).await;

    let (bucket, a_key) = secret_key(&client, "team-a", "photos").await;
    let (b_bucket, b_key) = secret_key(&client, "team-b", "photos").await;
    assert_eq!(bucket, b_bucket);
    assert_ne!(a_key.access_key_id, b_key.access_key_id, "each namespace has a key of its own");
    objects(&b_key, &bucket).await.unwrap();

    contents.patch(&content_name, &PatchParams::default(), &bindable(&only_team_a)).await.unwrap();
    let revoked = wait_phase(&team_b, "photos", BucketPhase::Failed, Duration::from_secs(30)).await;
    assert!(revoked.status.unwrap().conditions.iter().any(|c| c.type_ == "AccessRevoked"));
    until_key_reads(&b_key, &bucket, false, "team-b's key still reads the bucket").await;
    objects(&a_key, &bucket).await.expect("team-a's key is untouched");
}

/// Two buckets made at the store by hand, each holding `index/0001`, the first of them in an
/// admin's BucketContent `loki-chunks` with the provisioner (Retain, bindable from team-a):
/// their names.
async fn made_by_hand(client: &Client) -> (String, String) {
    let team_a = Api::<Namespace>::all(client.clone()).get("team-a").await.unwrap().metadata.uid.unwrap();
    let admin = store(&admin_key());
    let suffix =
        format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let (name, other) = (format!("loki-chunks-{suffix}"), format!("iceberg-{suffix}"));
    for bucket in [&name, &other] {
        admin.client().create_bucket().bucket(bucket).send().await.unwrap();
        let put = admin.client().put_object().bucket(bucket).key("index/0001").body(b"chunk".to_vec().into());
        put.send().await.unwrap();
    }
    let content: BucketContent = serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent",
        "metadata": {"name": "loki-chunks"},
        "spec": {"provisioner": "seaweedfs", "releasePolicy": "Retain", "accessMode": "rw",
            "bindableNamespaces": [{"name": "team-a", "uid": team_a}],
            "protocol": {"type": "s3", "s3": {"bucketName": name, "endpoint": std::env::var("BUCKETGATE_S3_ENDPOINT").unwrap(),
                "region": "us-east-1"}}}}))
    .unwrap();
    Api::<BucketContent>::all(client.clone()).create(&PostParams::default(), &content).await.unwrap();
    (name, other)
}

/// The Bucket `team-a/loki`, binding [`made_by_hand`]'s content.
fn loki() -> Bucket {
    serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "loki", "namespace": "team-a"}, "spec": {"protocol": "s3", "bucketContentName": "loki-chunks"}}))
    .unwrap()
}

/// The Bucket `name` in team-a made to go without being released: bucketgate stopped, its
/// webhooks taken off by an admin, the finalizer taken off and the Bucket deleted.
async fn gone_unreleased(client: &Client, server: &mut Child, name: &str) {
    assert!(stop(server).await.success());
    unregister_webhooks(client).await;
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    buckets.delete(name, &DeleteParams::default()).await.unwrap();
    let unheld = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    buckets.patch(name, &PatchParams::default(), &unheld).await.unwrap();
    assert!(buckets.get_opt(name).await.unwrap().is_none());
}

/// A bucket made at the store by hand before bucketgate (the seed report's Loki and Iceberg
/// buckets) brought under it: an admin's BucketContent names it with the provisioner, a
/// Bucket binds it and gets a key of its own that reads what was there and reaches no other
/// bucket, and deleting the Bucket revokes that key and keeps the bucket and its data.
#[tokio::test]
async fn a_bucket_made_by_hand_is_brought_under_bucketgate_with_a_key_of_its_own() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let (name, other) = made_by_hand(&client).await;
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    let loki = loki();
    buckets.create(&PostParams::default(), &loki).await.unwrap();
    wait_phase(&buckets, "loki", BucketPhase::Bound, Duration::from_secs(30)).await;
    let (bucket, key) = secret_key(&client, "team-a", "loki").await;
    assert_eq!(bucket, name);
    until_key_reads(&key, &name, true, "the Bucket's key does not read the bucket made by hand").await;
    assert_eq!(objects(&key, &name).await.unwrap(), ["index/0001"]);
    assert!(objects(&key, &other).await.is_err(), "the Bucket's key reaches another bucket");

    buckets.delete("loki", &DeleteParams::default()).await.unwrap();
    until_gone(&buckets, "loki", "the Bucket was not released").await;
    until_key_reads(&key, &name, false, "the deleted Bucket's key still reads the bucket").await;
    let content = Api::<BucketContent>::all(client.clone()).get("loki-chunks").await.unwrap();
    assert!(content.status.unwrap_or_default().key_holders.is_empty(), "the revoked key's record is taken off");
    assert_eq!(objects(&admin_key(), &name).await.unwrap(), ["index/0001"], "the bucket and its data are kept");

    // The content is the admin's: not Released by a Bucket leaving, a Bucket binds it again
    // (the workload deployed anew) with a new key, once the Secret of the earlier one is
    // gone. The garbage collector would delete it; envtest runs none.
    buckets.create(&PostParams::default(), &loki).await.unwrap();
    let started = Instant::now();
    let waiting = loop {
        let bucket = buckets.get("loki").await.unwrap();
        if let Some(ready) = bucket.condition("Ready").filter(|c| c.reason == "SecretOfEarlierBucket") {
            break (ready.clone(), bucket.condition("Reconciling").is_some(), bucket.condition("Stalled").is_some());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", bucket.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(waiting.0.message.contains("garbage collector deletes it in a moment"), "{:?}", waiting.0);
    assert_eq!((waiting.1, waiting.2), (true, false), "it goes on by itself: reconciling, not stalled");
    Api::<Secret>::namespaced(client.clone(), "team-a").delete("loki", &DeleteParams::default()).await.unwrap();
    wait_phase(&buckets, "loki", BucketPhase::Bound, Duration::from_secs(30)).await;
    let (_, again) = secret_key(&client, "team-a", "loki").await;
    assert_ne!(again.access_key_id, key.access_key_id);
    until_key_reads(&again, &name, true, "the new Bucket's key does not read the bucket").await;

    // The content deleted once no Bucket binds it (Retain): the bucket and its data stay.
    buckets.delete("loki", &DeleteParams::default()).await.unwrap();
    let contents: Api<BucketContent> = Api::all(client.clone());
    contents.delete("loki-chunks", &DeleteParams::default()).await.unwrap();
    until_gone(&contents, "loki-chunks", "the content was not released").await;
    until_key_reads(&again, &name, false, "the second Bucket's key still reads the bucket").await;
    assert_eq!(objects(&admin_key(), &name).await.unwrap(), ["index/0001"], "the bucket and its data are kept");
}

/// A Bucket that goes without being released (here: bucketgate away, its webhooks taken
/// off by an admin, the finalizer taken off and the Bucket deleted) left its key working
/// and its content Bound to nothing. bucketgate, back, finds it at its first sweep: the key
/// is revoked, the content `Released` saying why, and the bucket and its data kept.
#[tokio::test]
async fn a_bucket_gone_unreleased_has_its_key_revoked_and_its_data_kept() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, mut server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let (_, bound) = bound_in_team_a(&client, "photos").await;
    let content_name = bound.status.unwrap().bucket_content_name.unwrap();
    let (bucket, key) = secret_key(&client, "team-a", "photos").await;
    until_key_reads(&key, &bucket, true, "the Bucket's key never worked").await;

    gone_unreleased(&client, &mut server, "photos").await;
    objects(&key, &bucket).await.expect("the key of a Bucket gone unreleased still works");

    let certs = tempfile::tempdir().unwrap();
    let (_back, ..) = bucketgate(&plane, &config, certs.path(), "envtest", &[]).await;
    let contents: Api<BucketContent> = Api::all(client.clone());
    let started = Instant::now();
    let content = loop {
        let content = contents.get(&content_name).await.unwrap();
        if content.phase() == Some(BucketContentPhase::Released) {
            break content;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not released: {:?}", content.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = content.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.starts_with("Bucket team-a/photos went without being released"), "{message}");
    until_key_reads(&key, &bucket, false, "the key still reads the bucket").await;
    objects(&admin_key(), &bucket).await.expect("the bucket and its data are kept");
    assert!(content.metadata.deletion_timestamp.is_none(), "the content stays for an admin to delete");
}

/// The same of a Bucket bound to a content it was not made for (an admin's, here one of a
/// bucket made by hand; or shared): the content records the key made for the Bucket, so
/// bucketgate, back, finds it though the content names no Bucket of its own, and revokes
/// it, saying so on the content, which stays Bound with its bucket and data.
#[tokio::test]
async fn a_key_on_an_admins_content_whose_bucket_went_unreleased_is_revoked() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, mut server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let (name, _) = made_by_hand(&client).await;
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    buckets.create(&PostParams::default(), &loki()).await.unwrap();
    let uid = wait_phase(&buckets, "loki", BucketPhase::Bound, Duration::from_secs(30)).await.metadata.uid.unwrap();
    let contents: Api<BucketContent> = Api::all(client.clone());
    let holders = |content: BucketContent| content.status.unwrap_or_default().key_holders;
    let recorded = holders(contents.get("loki-chunks").await.unwrap());
    assert_eq!(recorded, BTreeMap::from([(uid, "team-a/loki".to_string())]), "the key is recorded on the content");
    let (_, key) = secret_key(&client, "team-a", "loki").await;
    until_key_reads(&key, &name, true, "the Bucket's key never worked").await;

    gone_unreleased(&client, &mut server, "loki").await;
    objects(&key, &name).await.expect("the key of a Bucket gone unreleased still works");

    let certs = tempfile::tempdir().unwrap();
    let (_back, port, ca) = bucketgate(&plane, &config, certs.path(), "envtest", &[]).await;
    let https = Https::at(port, &ca);
    let started = Instant::now();
    while !holders(contents.get("loki-chunks").await.unwrap()).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the key is still recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until_key_reads(&key, &name, false, "the key still reads the bucket").await;
    let unrevoked = r#"bucketgate_unrevoked_keys{provisioner="seaweedfs"}"#;
    assert_eq!(https.metric_once(unrevoked, Some(0.0)).await, Some(0.0), "none left that could not be revoked");
    // events.k8s.io Events about cluster-scoped objects go to `default`, which API servers
    // before 1.21 refuse (kubernetes#100125); bucketgate asks for 1.30 or later.
    if minor_version(&client).await >= 21 {
        let said = said_of(&client, "default", "loki-chunks", "KeyRevoked").await;
        let note = said.first().and_then(|event| event.note.clone()).unwrap_or_default();
        assert!(note.starts_with("Bucket team-a/loki went without being released"), "{said:?}");
    }
    let content = contents.get("loki-chunks").await.unwrap();
    assert_eq!(content.phase(), None, "the admin's content is not Released: it was not made for that Bucket");
    assert!(content.metadata.deletion_timestamp.is_none());
    assert_eq!(objects(&admin_key(), &name).await.unwrap(), ["index/0001"], "the bucket and its data are kept");
}

/// A class that rotates keys (`keyMaxAgeDays`): once a Bucket's key is past its age (here
/// its Secret is marked as issued two days ago, time passing by hand), the next look, every
/// 2 s here, writes a new key into its Secret and says so; the old key works beside it for
/// the grace (an hour: its end, too, is moved by hand), then stops, and the new one goes on.
#[tokio::test]
async fn a_key_past_its_age_is_rotated_and_the_old_one_stops_after_the_grace() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs, _) = setup_with(&config, &["--recheck-interval", "2s"]).await.unwrap();
    let client = plane.client.clone();
    let rotating = [("keyMaxAgeDays", "1"), ("keyRotationGraceHours", "1")];
    let (bucket, first) = bound_of_class(&client, &rotating, "rotated").await;
    until_key_reads(&first, &bucket, true, "the first key never worked").await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    let annotate =
        |key: &str, at: jiff::Timestamp| Patch::Merge(json!({"metadata": {"annotations": {key: at.to_string()}}}));
    let two_days_ago = jiff::Timestamp::now().checked_sub(Duration::from_secs(2 * 86_400)).unwrap();
    secrets.patch("rotated", &PatchParams::default(), &annotate("cosi.io/key-issued", two_days_ago)).await.unwrap();
    let started = Instant::now();
    let second = loop {
        let (_, key) = secret_key(&client, "team-a", "rotated").await;
        if key != first {
            break key;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the key was not rotated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let note = said(&client, "rotated", "KeyRotated").await.first().and_then(|e| e.note.clone()).unwrap_or_default();
    assert!(note.contains("its class rotating keys every day;"), "{note}");
    until_key_reads(&second, &bucket, true, "the new key does not read the bucket").await;
    objects(&first, &bucket).await.expect("the old key works through the grace");
    let annotations = secrets.get("rotated").await.unwrap().metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("cosi.io/retiring-key"), Some(&first.access_key_id));

    let an_hour_ago = jiff::Timestamp::now().checked_sub(Duration::from_secs(3600)).unwrap();
    secrets.patch("rotated", &PatchParams::default(), &annotate("cosi.io/retire-after", an_hour_ago)).await.unwrap();
    until_key_reads(&first, &bucket, false, "the old key still works after its grace").await;
    objects(&second, &bucket).await.expect("the new key goes on");
    let started = Instant::now();
    while secrets.get("rotated").await.unwrap().annotations().contains_key("cosi.io/retiring-key") {
        assert!(started.elapsed() < Duration::from_secs(30), "the Secret still names the retired key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(said(&client, "rotated", "KeyRetired").await.len(), 1);
}

/// The seed report's setup: the store's key in a Secret that External Secrets writes (from
/// 1Password), applied by Flux beside the class and the Buckets. A Bucket made before its
/// provisioner Secret (the class's, named for the Bucket's namespace) is Pending, says
/// which Secret it waits on, is read by kstatus as in progress rather than stalled, and is
/// bound once the Secret comes: not Failed until a retry five minutes away.
#[tokio::test]
async fn a_bucket_made_before_its_provisioner_secret_waits_for_it_and_goes_on() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &class_keyed_by_secret()).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket("early", "early-")).await;
    let started = Instant::now();
    let waiting = loop {
        let bucket = buckets.get("early").await.unwrap();
        if bucket.condition("Ready").is_some_and(|ready| ready.reason == "ProvisionerSecretMissing") {
            break bucket;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not said to wait for its Secret: {:?}", bucket.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(waiting.phase(), Some(BucketPhase::Pending));
    let message = &waiting.condition("Ready").unwrap().message;
    assert!(message.contains("the provisioner Secret bucketgate-system/team-a-store does not exist"), "{message}");
    assert_eq!(waiting.condition("Reconciling").map(|c| c.status.as_str()), Some("True"));
    assert!(waiting.condition("Stalled").is_none(), "{:?}", waiting.status);
    assert!(!said(&client, "early", "ProvisionerSecretMissing").await.is_empty());

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    // Not labelled: found by looking again, at growing intervals.
    secrets.create(&PostParams::default(), &provisioner_secret(&admin_key(), false)).await.unwrap();
    let came = Instant::now();
    // Well within the five minutes a failure that waits on someone is retried after.
    wait_phase(&buckets, "early", BucketPhase::Bound, Duration::from_secs(60)).await;
    eprintln!("provisioner Secret to Bound: {:?}", came.elapsed());
    let (bucket, key) = secret_key(&client, "team-a", "early").await;
    until_key_reads(&key, &bucket, true, "the Bucket's key does not read its bucket").await;

    // The KEP's per-Bucket provisioner Secret, named after the Bucket in its namespace, is
    // where the Bucket's own credentials go unless it names another Secret: refused at once,
    // rather than a Bucket waiting for ever on a Secret bucketgate does not write over.
    let mut per_bucket = class_keyed_by_secret();
    per_bucket.metadata.name = Some("per-bucket".into());
    per_bucket.spec.is_default_bucket_class = false;
    per_bucket.spec.parameters.insert("cosi.io/provisioner-secret-name".into(), "${bucket.name}".into());
    per_bucket.spec.parameters.insert("cosi.io/provisioner-secret-namespace".into(), "${bucket.namespace}".into());
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &per_bucket).await.unwrap();
    let mut own = new_bucket("own-key", "own-key-");
    own.spec.bucket_class_name = Some("per-bucket".into());
    refused_saying(&buckets, &own, "set spec.secretName to another name, such as \"own-key-credentials\"").await;
}

/// The default class of SeaweedFS, its provisioner's key in a Secret of bucketgate's
/// namespace named for the Bucket's namespace ([`provisioner_secret`] for team-a).
fn class_keyed_by_secret() -> BucketClass {
    let mut keyed = class("seaweedfs");
    keyed.spec.parameters.insert("cosi.io/provisioner-secret-name".into(), "${bucket.namespace}-store".into());
    keyed.spec.parameters.insert("cosi.io/provisioner-secret-namespace".into(), NAMESPACE.into());
    keyed
}

/// The provisioner Secret of [`class_keyed_by_secret`] for team-a, holding `key`; `watched`,
/// labelled for bucketgate to watch.
fn provisioner_secret(key: &Credentials, watched: bool) -> Secret {
    let labels = if watched { json!({"cosi.io/provisioner-secret": "true"}) } else { json!({}) };
    serde_json::from_value(json!({"metadata": {"name": "team-a-store", "namespace": NAMESPACE, "labels": labels},
        "stringData": {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key}}))
    .unwrap()
}

/// A store without IAM: each Bucket's Secret holds the provisioner's key, here from the
/// Secret its class names. The key changed there (made anew at the store and synced into
/// that Secret, as External Secrets does from a vault) is written into the Bucket's Secret,
/// which its workloads read: nothing synced by hand. The provisioner Secret is labelled for
/// bucketgate to watch, so at once, an hour before the Bucket's next timed look.
#[tokio::test]
async fn a_secret_holding_the_provisioners_key_follows_it_when_it_changes() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    secrets.create(&PostParams::default(), &provisioner_secret(&admin_key(), true)).await.unwrap();
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &class_keyed_by_secret()).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket("keyed", "keyed-")).await;
    wait_phase(&buckets, "keyed", BucketPhase::Bound, Duration::from_secs(30)).await;
    let (bucket, held) = secret_key(&client, "team-a", "keyed").await;
    assert_eq!(held, admin_key(), "the provisioner's key");

    // Another key that reaches the bucket, made through the store's IAM API.
    let iam = S3Driver::new(&S3Settings { iam: Some(IamSettings::default()), ..store_settings() }, admin_key());
    let new = iam.grant(&bucket, "new-provisioner-key", AccessMode::ReadWrite).await.unwrap().credentials;
    until_key_reads(&new, &bucket, true, "the new key does not read the bucket").await;
    let changed = Patch::Merge(json!({"stringData": {"AWS_ACCESS_KEY_ID": new.access_key_id,
        "AWS_SECRET_ACCESS_KEY": new.secret_access_key}}));
    secrets.patch("team-a-store", &PatchParams::default(), &changed).await.unwrap();
    let started = Instant::now();
    while secret_key(&client, "team-a", "keyed").await.1 != new {
        assert!(started.elapsed() < Duration::from_secs(30), "the Bucket's Secret kept the old key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let note = said(&client, "keyed", "KeyUpdated").await.first().and_then(|e| e.note.clone()).unwrap_or_default();
    assert!(note.starts_with("Secret keyed now holds the provisioner's current key"), "{note}");
    assert_eq!(buckets.get("keyed").await.unwrap().phase(), Some(BucketPhase::Bound));
    iam.revoke("new-provisioner-key").await.unwrap();
}

/// `releasePolicy: Retain` (the KEP: the bucket and its data outlive the Bucket): deleting
/// the Bucket keeps the bucket and what it holds, marks its BucketContent Released, and the
/// content is not bound again.
#[tokio::test]
async fn a_retained_bucket_keeps_its_data_and_is_not_bound_again() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(true) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let mut retained = class("seaweedfs");
    retained.spec.release_policy = Some(ReleasePolicy::Retain);
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &retained).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket("archive", "archive-")).await;
    let bound = wait_phase(&buckets, "archive", BucketPhase::Bound, Duration::from_secs(30)).await;
    let content_name = bound.status.unwrap().bucket_content_name.unwrap();
    let (bucket, key) = secret_key(&client, "team-a", "archive").await;
    store(&key)
        .client()
        .put_object()
        .bucket(&bucket)
        .key("kept.txt")
        .body(b"kept".to_vec().into())
        .send()
        .await
        .unwrap();

    buckets.delete("archive", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    let contents: Api<BucketContent> = Api::all(client.clone());
    loop {
        let content = contents.get(&content_name).await.unwrap();
        if buckets.get_opt("archive").await.unwrap().is_none() && content.phase() == Some(BucketContentPhase::Released)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not released: {:?}", content.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = admin_key();
    assert_eq!(objects(&admin, &bucket).await.unwrap(), ["kept.txt"]);

    let again: Bucket = serde_json::from_value(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "again"}, "spec": {"protocol": "s3", "bucketContentName": content_name}}))
    .unwrap();
    // Seen once in CI, before admission read what its catalog lacked, refused as "names no
    // BucketContent": the content was created while the catalog's watch was away.
    refused_saying(&buckets, &again, "was released").await;
}

/// The seed report's claims waited with no word. A store that does not answer: the Bucket
/// says so in its Ready condition (reason `Retrying`, the store's address in the message)
/// and its content is `Retrying`; deleting it waits on the store (its key, with IAM, is
/// revoked there, and a key may have been made by a request whose answer was lost), until
/// an admin force-releases it, and then it goes.
#[tokio::test]
async fn an_unreachable_store_is_said_and_force_release_lets_the_bucket_go() {
    let _ = require_assets!();
    // The suite's store credentials, for a store that is not there.
    if seaweedfs_config(false).is_none() {
        return;
    }
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        "provisioners:\n  - name: gone\n    s3:\n      endpoint: {nowhere}\n      pathStyle: true\n      iam: {{}}\n      credentialsFromEnv: {{accessKeyId: BUCKETGATE_S3_ACCESS_KEY, secretAccessKey: BUCKETGATE_S3_SECRET_KEY}}\n"
    );
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    Api::<BucketClass>::all(client.clone()).create(&PostParams::default(), &class("gone")).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    create_once_class_seen(&buckets, &new_bucket("waiting", "waiting-")).await;
    let started = Instant::now();
    loop {
        let bucket = buckets.get("waiting").await.unwrap();
        let ready = bucket.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        if let Some(ready) = ready.filter(|ready| ready.reason == "Retrying") {
            assert!(ready.message.contains(&format!("the store at {nowhere} did not answer")), "{}", ready.message);
            // kstatus reads it as in progress: the loop tries again by itself.
            let reconciling = bucket.condition("Reconciling").map(|c| (c.status.as_str(), c.reason.as_str()));
            assert_eq!(reconciling, Some(("True", "Retrying")), "{:?}", bucket.status);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no word of the store: {:?}", bucket.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its content, the one the loop made for it, says the same.
    let contents = Api::<BucketContent>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    let [content] = contents.as_slice() else { panic!("one content, not {}", contents.len()) };
    assert_eq!(content.phase(), Some(BucketContentPhase::Retrying), "{:?}", content.status);
    assert!(content.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains(&nowhere)));
    let conditions = content.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let reconciling =
        conditions.iter().find(|c| c.type_ == "Reconciling").map(|c| (c.status.as_str(), c.reason.as_str()));
    assert_eq!(reconciling, Some(("True", "Retrying")), "kstatus reads it as in progress: {:?}", content.status);

    buckets.delete("waiting", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(buckets.get_opt("waiting").await.unwrap().is_some(), "its deletion waits on the store");

    // A developer of team-a, an editor of its Buckets through the role that Kubernetes'
    // `edit` takes in, may not let it go past the store: its key would stay working.
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dev-edits-buckets", "namespace": "team-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bucketgate-buckets-edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}]});
    let binding = serde_json::from_value(binding).unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), "team-a")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let as_dev: Api<Bucket> = Api::namespaced(plane.tenant.clone(), "team-a");
    let force = Patch::Merge(json!({"metadata": {"annotations": {"cosi.io/force-release": "true"}}}));
    let unheld = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for (patch, says) in [
        (&unheld, "only the provisioning loop takes cosi.io/finalizer off a Bucket"),
        (&force, "cosi.io/force-release=true has the Bucket released without its store"),
    ] {
        let started = Instant::now();
        let refusal = loop {
            // RBAC's cache may take a moment to see the binding: until then, RBAC refuses.
            match as_dev.patch("waiting", &PatchParams::default(), patch).await {
                Err(kube::Error::Api(status)) if status.message.contains(says) => break status,
                Err(kube::Error::Api(status)) if started.elapsed() < Duration::from_secs(10) && status.code == 403 => {}
                other => panic!("not refused as it should be: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(refusal.code, 403, "{refusal:?}");
        assert!(
            refusal.message.contains(r#"dev may not: that takes the verb "release" on buckets.cosi.io"#),
            "{refusal:?}"
        );
    }
    assert!(bucketgate::api::held(&buckets.get("waiting").await.unwrap()), "the finalizer is still there");
    // A cluster admin may, and the loop then takes the finalizer off, itself asked about.
    buckets.patch("waiting", &PatchParams::default(), &force).await.unwrap();
    until_gone(&buckets, "waiting", "not released by force").await;
}

/// A bucket is tagged at its store with whom it is for. A bound Bucket's store is asked
/// again at its timed looks (every 2 s here, through
/// `--recheck-interval`, in place of the hour). Versioning its class asked for, suspended at
/// the store, is turned on again with a Warning Event, and its tags replaced there are put
/// back beside the admin's; the bucket deleted at the store turns
/// the Bucket `Ready` `False` (`BucketMissing`, phase still `Bound`), counted in
/// `bucketgate_buckets_missing` and as stalled in `bucketgate_buckets`, and no empty bucket
/// is made in its place; put back, the Bucket is `Ready` again and counted so, and the count
/// of missing ones goes to nothing.
#[tokio::test]
async fn a_bucket_is_tagged_and_changed_or_deleted_at_its_store_is_set_again_or_said() {
    use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, VersioningConfiguration};

    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, _server, _certs, https) = setup_with(&config, &["--recheck-interval", "2s"]).await.unwrap();
    let client = plane.client.clone();
    let (backend, _) = bound_of_class(&client, &[("versioning", "Enabled")], "kept").await;
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), "team-a");
    // The leader counts its Buckets where they stand, at each scrape.
    let counted_ready = r#"bucketgate_buckets{provisioner="seaweedfs",state="ready",reason="Bound"}"#;
    let counted_stalled = r#"bucketgate_buckets{provisioner="seaweedfs",state="stalled",reason="BucketMissing"}"#;
    let counted = async |ready, stalled| {
        (https.metric_once(counted_ready, ready).await, https.metric_once(counted_stalled, stalled).await)
    };
    assert_eq!(counted(Some(1.0), None).await, (Some(1.0), None));
    let admin = store(&admin_key());
    let s3 = admin.client();
    let versioning = |status: BucketVersioningStatus| VersioningConfiguration::builder().status(status).build();
    let versioning_of = async |s3: &aws_sdk_s3::Client| {
        s3.get_bucket_versioning().bucket(&backend).send().await.unwrap().status().cloned()
    };
    assert_eq!(versioning_of(s3).await, Some(BucketVersioningStatus::Enabled));
    // Whom it is for, at the store.
    let tagging = s3.get_bucket_tagging().bucket(&backend).send().await.unwrap();
    let tags: Vec<(&str, &str)> = tagging.tag_set().iter().map(|t| (t.key(), t.value())).collect();
    for tag in [("cosi.io/namespace", "team-a"), ("cosi.io/bucket", "kept"), ("cosi.io/bucketclass", "standard")] {
        assert!(tags.contains(&tag), "{tag:?} in {tags:?}");
    }

    s3.put_bucket_versioning()
        .bucket(&backend)
        .versioning_configuration(versioning(BucketVersioningStatus::Suspended))
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    while versioning_of(s3).await != Some(BucketVersioningStatus::Enabled) {
        assert!(started.elapsed() < Duration::from_secs(30), "versioning not turned on again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(said(&client, "kept", "OptionsRestored").await.len(), 1);

    // Its tags replaced at the store by the admin's own: ours go back beside it.
    let theirs = Tag::builder().key("cost-center").value("42").build().unwrap();
    let tagging = Tagging::builder().tag_set(theirs).build().unwrap();
    s3.put_bucket_tagging().bucket(&backend).tagging(tagging).send().await.unwrap();
    let started = Instant::now();
    loop {
        let tagging = s3.get_bucket_tagging().bucket(&backend).send().await.unwrap();
        let keys: Vec<&str> = tagging.tag_set().iter().map(|t| t.key()).collect();
        if keys.contains(&"cosi.io/bucket") {
            assert!(keys.contains(&"cost-center"), "the admin's tag kept: {keys:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "tags not put back: {keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let missing = r#"bucketgate_buckets_missing{provisioner="seaweedfs"}"#;
    s3.delete_bucket().bucket(&backend).send().await.unwrap();
    let started = Instant::now();
    let ready = loop {
        let bucket = buckets.get("kept").await.unwrap();
        if let Some(ready) = bucket.condition("Ready").filter(|c| c.status == "False") {
            assert_eq!(bucket.phase(), Some(BucketPhase::Bound));
            break ready.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not said missing: {:?}", bucket.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready.reason, "BucketMissing");
    assert!(ready.message.contains(&backend), "{}", ready.message);
    // kstatus reads it as failed: someone has to put the bucket back.
    let stalled = buckets.get("kept").await.unwrap().condition("Stalled").cloned();
    assert_eq!(stalled.map(|c| (c.status, c.reason)), Some(("True".into(), "BucketMissing".into())));
    assert_eq!(https.metric_once(missing, Some(1.0)).await, Some(1.0));
    assert_eq!(counted(None, Some(1.0)).await, (None, Some(1.0)));
    // Looked at every 2 s while missing: said once, and nothing made in its place.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(said(&client, "kept", "BucketMissing").await.len(), 1);
    assert!(s3.head_bucket().bucket(&backend).send().await.is_err(), "an empty bucket made in its place");

    s3.create_bucket().bucket(&backend).send().await.unwrap();
    let started = Instant::now();
    while buckets.get("kept").await.unwrap().condition("Ready").is_none_or(|c| c.status != "True") {
        assert!(started.elapsed() < Duration::from_secs(30), "not Ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(said(&client, "kept", "BucketFound").await.len(), 1);
    assert!(buckets.get("kept").await.unwrap().condition("Stalled").is_none(), "no longer stalled");
    assert_eq!(https.metric_once(missing, Some(0.0)).await, Some(0.0));
    assert_eq!(counted(Some(1.0), None).await, (Some(1.0), None));
    // The bucket put back plain has what its class asked again.
    assert_eq!(versioning_of(s3).await, Some(BucketVersioningStatus::Enabled));
}

/// The Events of reason `reason` about the Bucket `name` in team-a, once there is one: the
/// loop posts an Event after the change it tells of (the store's, the Bucket's status),
/// which is what the tests wait for first.
/// With `--manage-certs` (manifests/overlays/self-managed-certs), bucketgate makes its CA
/// and serving certificate in the Secret, puts the CA into both webhooks' caBundle, and the
/// API server then calls it with the certificate it serves; a certificate it did not issue
/// (or near its end) is issued again by the same CA, which the webhooks go on trusting.
/// The test does the kubelet's part: it copies the Secret into the server's files.
#[tokio::test]
async fn bucketgate_makes_and_renews_its_own_certificate_and_the_webhooks_trust_it() {
    use bucketgate::tls::rotation::SECRET;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::GeneralName;
    let assets = require_assets!();
    let plane = control_plane(&assets).await;
    install_crds(&plane.client).await;
    install_rbac(&plane.client).await;
    install(&plane.client, "manifests/overlays/self-managed-certs", &["secret.yaml", "rbac.yaml"]).await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--manage-certs",
        "--manage-certs-interval",
        "1s",
        "--cert-dns-name",
        "localhost",
        "--cert-reload-interval",
        "1s",
    ];
    let config = "provisioners:\n  - name: admission.example/only\n";
    let (_server, port, _) = bucketgate(&plane, config, dir.path(), "envtest", &args).await;
    register_webhooks_at(&plane.client, &format!("https://localhost:{port}"), "").await;
    create_namespace(&plane.client, "team-a").await;

    let secrets: Api<Secret> = Api::namespaced(plane.client.clone(), NAMESPACE);
    let data = |secret: &Secret, key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8(v.0.clone()).unwrap())
            .unwrap_or_default()
    };
    let issued = |previous: String| {
        let secrets = secrets.clone();
        async move {
            let started = Instant::now();
            loop {
                let secret = secrets.get(SECRET).await.unwrap();
                if !data(&secret, "tls.crt").is_empty() && data(&secret, "tls.crt") != previous {
                    return secret;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "no certificate in the Secret");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let kubelet = |secret: &Secret| {
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            std::fs::write(dir.path().join(key), data(secret, key)).unwrap();
        }
    };
    // Before the kubelet brings it, the kubelet's probes (HTTPS, nothing verified) are
    // answered over a throwaway certificate: alive, not ready, so never restarted for it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let probe = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let healthz = probe.get(format!("https://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = probe.get(format!("https://127.0.0.1:{port}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("no serving certificate"));

    let first = issued(String::new()).await;
    let ca = data(&first, "ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----") && !data(&first, "ca.key").is_empty());
    let mutating = Api::<MutatingWebhookConfiguration>::all(plane.client.clone()).get("bucketgate").await.unwrap();
    let validating = Api::<ValidatingWebhookConfiguration>::all(plane.client.clone()).get("bucketgate").await.unwrap();
    let bundles = mutating.webhooks.unwrap().into_iter().map(|w| w.client_config.ca_bundle);
    let bundles = bundles.chain(validating.webhooks.unwrap().into_iter().map(|w| w.client_config.ca_bundle));
    for bundle in bundles {
        assert_eq!(bundle.map(|b| String::from_utf8(b.0).unwrap()), Some(ca.clone()), "the CA trusted");
    }
    let der = |pem: &str| rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let leaf = der(&data(&first, "tls.crt"));
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
    let names: Vec<&str> =
        san.iter().filter_map(|n| if let GeneralName::DNSName(n) = n { Some(*n) } else { None }).collect();
    assert_eq!(
        names,
        ["bucketgate.bucketgate-system.svc", "bucketgate.bucketgate-system.svc.cluster.local", "localhost"]
    );

    // The API server calls the webhooks with the certificate served from the files.
    kubelet(&first);
    let classes: Api<BucketClass> = Api::all(plane.client.clone());
    let started = Instant::now();
    while let Err(error) =
        classes.create(&PostParams { dry_run: true, ..Default::default() }, &class("admission.example/only")).await
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the webhooks are not called with the certificate: {error}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    classes.create(&PostParams::default(), &class("admission.example/only")).await.unwrap();
    let created = create_once_class_seen(&buckets, &new_bucket("photos", "photos-")).await;
    assert_eq!(created.spec.bucket_class_name.as_deref(), Some("standard"), "mutated through the webhook");

    // A certificate from another CA, for the same names, put into the Secret is issued again
    // by bucketgate's CA.
    let same_names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let foreign = bucketgate::tls::generate(&same_names, &[], 60).unwrap();
    let mut replaced = first.clone();
    for (key, value) in [("tls.crt", &foreign.cert_pem), ("tls.key", &foreign.key_pem)] {
        replaced.data.as_mut().unwrap().insert(key.into(), k8s_openapi::ByteString(value.clone().into_bytes()));
    }
    secrets.replace(SECRET, &PostParams::default(), &replaced).await.unwrap();
    let renewed = issued(foreign.cert_pem.clone()).await;
    assert_eq!(data(&renewed, "ca.crt"), ca, "the same CA, still trusted");
    assert_ne!(data(&renewed, "tls.crt"), data(&first, "tls.crt"), "a new certificate");
    kubelet(&renewed);
    // A new connection gets the new certificate, trusted through the same CA.
    let wanted = der(&data(&renewed, "tls.crt"));
    let started = Instant::now();
    loop {
        let https = common::client(&[&ca], &[&rustls::version::TLS13]);
        let response = https.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
        let served =
            response.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate().map(<[u8]>::to_vec));
        if served.as_deref() == Some(wanted.as_ref()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the renewed certificate is not served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let again = create_once_class_seen(&buckets, &new_bucket("photos-2", "photos-")).await;
    assert_eq!(again.spec.bucket_class_name.as_deref(), Some("standard"));
    let https =
        Https { client: common::client(&[&ca], &[&rustls::version::TLS13]), base: format!("https://localhost:{port}") };
    assert!(https.metric("bucketgate_tls_certificate_renewals_total{result=\"success\"}").await >= Some(2.0));
    assert_eq!(https.metric("bucketgate_tls_certificate_last_renewal_successful").await, Some(1.0));
}

async fn said(client: &Client, name: &str, reason: &str) -> Vec<Event> {
    said_of(client, "team-a", name, reason).await
}

/// The Events of `reason` about the object `name` in `namespace` (cluster-scoped objects'
/// are in `default`), waited for up to 10 s.
async fn said_of(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<Event> {
    let about = |e: &Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
    let started = Instant::now();
    loop {
        let events = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap();
        let said: Vec<Event> =
            events.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason) && about(e)).collect();
        if !said.is_empty() || started.elapsed() > Duration::from_secs(10) {
            return said;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two replicas, as the Deployment runs them: one leads the provisioning loop and the Lease
/// names it. Stopped as on a rollout (SIGTERM), it releases the Lease, the other takes
/// over without waiting for it to expire, and Buckets go on being bound. Only the leader
/// counts them in `bucketgate_buckets`.
#[tokio::test]
async fn the_other_replica_takes_over_when_the_leader_stops() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, mut first, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let (buckets, _) = bound_in_team_a(&client, "first").await;
    assert_eq!(lease_holder(&client).await.as_deref(), Some("envtest"));

    let second_certs = tempfile::tempdir().unwrap();
    let (_second, port, ca) = bucketgate(&plane, &config, second_certs.path(), "replica-b", &[]).await;
    let second =
        Https { client: common::client(&[&ca], &[&rustls::version::TLS13]), base: format!("https://localhost:{port}") };
    // Only the leader counts the Buckets: a replica that waits for the Lease shows no
    // figures, rather than zeros that a sum over the replicas would read as none.
    let counted = r#"bucketgate_buckets{provisioner="seaweedfs",state="ready",reason="Bound"}"#;
    assert_eq!(second.metric(counted).await, None);
    // The Service would send reviews to the replica that stays; here the webhooks say so.
    unregister_webhooks(&client).await;
    register_webhooks(&client, port, &ca).await;
    assert!(stop(&mut first).await.success());

    let started = Instant::now();
    while lease_holder(&client).await.as_deref() != Some("replica-b") {
        // The Lease lasts 15 s and is renewed 5 s before it ends, so left to expire it would
        // still be held 5 s after the leader stopped: taken sooner, it was released.
        assert!(started.elapsed() < Duration::from_secs(4), "not taken over: {:?}", lease_holder(&client).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the Lease taken over {:?} after the leader stopped", started.elapsed());
    buckets.create(&PostParams::default(), &new_bucket("second", "second-")).await.unwrap();
    wait_phase(&buckets, "second", BucketPhase::Bound, Duration::from_secs(30)).await;
    // The new leader counts both, once its watch has the second one Bound.
    let started = Instant::now();
    while second.metric(counted).await != Some(2.0) {
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", second.metric(counted).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The suite's SeaweedFS, reached with `key`.
fn store(key: &Credentials) -> S3Driver {
    S3Driver::new(&store_settings(), key.clone())
}

/// The test script's SeaweedFS, without IAM.
fn store_settings() -> S3Settings {
    S3Settings {
        endpoint: std::env::var("BUCKETGATE_S3_ENDPOINT").unwrap(),
        region: "us-east-1".into(),
        path_style: true,
        iam: None,
        credentials_from_env: EnvCredentials::default(),
    }
}

/// The store's admin key, which the test script's SeaweedFS was started with.
fn admin_key() -> Credentials {
    Credentials {
        access_key_id: std::env::var("BUCKETGATE_S3_ACCESS_KEY").unwrap(),
        secret_access_key: std::env::var("BUCKETGATE_S3_SECRET_KEY").unwrap(),
    }
}

/// The keys of the objects in `bucket`, listed with `key`, or the store's error code.
async fn objects(key: &Credentials, bucket: &str) -> Result<Vec<String>, String> {
    match store(key).client().list_objects_v2().bucket(bucket).send().await {
        Ok(listed) => Ok(listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()),
        Err(error) => Err(aws_sdk_s3::error::ProvideErrorMetadata::code(&error).unwrap_or("no code").to_string()),
    }
}

/// Waits up to 10 s for `key` to read `bucket`, or to be refused (`reads` false), as the
/// store's IAM takes a moment to make a key work or stop working; fails saying `otherwise`.
async fn until_key_reads(key: &Credentials, bucket: &str, reads: bool, otherwise: &str) {
    let started = Instant::now();
    while objects(key, bucket).await.is_ok() != reads {
        assert!(started.elapsed() < Duration::from_secs(10), "{otherwise}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The key of the Secret `name` in `namespace`, and the bucket it names.
async fn secret_key(client: &Client, namespace: &str, name: &str) -> (String, Credentials) {
    let data = Api::<Secret>::namespaced(client.clone(), namespace).get(name).await.unwrap().data.unwrap();
    let text = |name: &str| String::from_utf8(data[name].0.clone()).unwrap();
    let key =
        Credentials { access_key_id: text("AWS_ACCESS_KEY_ID"), secret_access_key: text("AWS_SECRET_ACCESS_KEY") };
    (text("BUCKET_NAME"), key)
}

/// Creates `bucket` once admission takes it. Right after a BucketClass is created,
/// bucketgate's catalog may not have it yet (its watch is a moment behind), and the webhook
/// refuses a Bucket for want of its class; a user would try again, as this does.
async fn create_once_class_seen(buckets: &Api<Bucket>, bucket: &Bucket) -> Bucket {
    let started = Instant::now();
    loop {
        match buckets.create(&PostParams::default(), bucket).await {
            Ok(created) => return created,
            Err(kube::Error::Api(status))
                if status.message.contains("BucketClass") && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// Creating `bucket` is refused, the first time, with a message that says `says`. The
/// webhook's catalog may not hold objects created a moment before (or, while it relists
/// after "too old resource version", logged as "catalog watch failed", ones created while
/// its watch was away); it reads those from the API server rather than refuse for want of
/// them, so no retry is needed here.
async fn refused_saying(buckets: &Api<Bucket>, bucket: &Bucket, says: &str) {
    let error = buckets.create(&PostParams::default(), bucket).await.unwrap_err().to_string();
    assert!(error.contains(says), "refused, but not with {says:?}: {error}");
}

/// Stops a replica as a rollout does (SIGTERM), and waits for it to exit; returns how.
async fn stop(replica: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child this test started and has not yet waited for.
    assert_eq!(unsafe { libc::kill(replica.id().unwrap() as i32, libc::SIGTERM) }, 0);
    tokio::time::timeout(Duration::from_secs(30), replica.wait()).await.expect("the replica did not stop").unwrap()
}

/// The replica holding the provisioning Lease, if any.
async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases.get(LEASE).await.unwrap().spec.and_then(|spec| spec.holder_identity)
}

/// Waits up to 30 s for `name` to be gone from `api` (its finalizers done); fails saying
/// `otherwise`.
async fn until_gone<K>(api: &Api<K>, name: &str, otherwise: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(30), "{otherwise}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_phase(buckets: &Api<Bucket>, name: &str, phase: BucketPhase, limit: Duration) -> Bucket {
    let started = Instant::now();
    loop {
        let bucket = buckets.get(name).await.unwrap();
        if bucket.status.as_ref().and_then(|s| s.phase) == Some(phase) {
            return bucket;
        }
        assert!(started.elapsed() < limit, "{name} not {phase:?}: {:?}", bucket.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The benchmark: time from creation to Bound, for one Bucket and for 1,000 at once.
/// `cargo test --test envtest -- --ignored --nocapture` with KUBEBUILDER_ASSETS and SeaweedFS.
#[tokio::test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn benchmark_creation_to_bound() {
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, _server, _certs) = setup(&config).await.unwrap();
    Api::<BucketClass>::all(plane.client.clone()).create(&PostParams::default(), &class("seaweedfs")).await.unwrap();
    let buckets: Api<Bucket> = Api::namespaced(plane.client.clone(), "team-a");
    // The clock times the Bucket, not the catalog's start: asked first as a dry run until
    // admission has the class (a watch of the catalog may be relisting after its start).
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let waiting = Instant::now();
    while let Err(error) = buckets.create(&dry_run, &new_bucket("one", "one-")).await {
        assert!(waiting.elapsed() < Duration::from_secs(10), "admission refuses the Bucket: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    buckets.create(&PostParams::default(), &new_bucket("one", "one-")).await.unwrap();
    wait_phase(&buckets, "one", BucketPhase::Bound, Duration::from_secs(30)).await;
    println!("creation to Bound, one Bucket: {:?}", started.elapsed());

    let before = api_counts(&plane.client).await;
    let started = Instant::now();
    let creates = (0..1000).map(|i| {
        let buckets = buckets.clone();
        async move { buckets.create(&PostParams::default(), &new_bucket(&format!("b{i}"), "")).await.unwrap() }
    });
    futures::future::join_all(creates).await;
    for i in 0..1000 {
        wait_phase(&buckets, &format!("b{i}"), BucketPhase::Bound, Duration::from_secs(600)).await;
    }
    println!("creation to Bound, 1,000 Buckets at once: {:?} for all", started.elapsed());
    // What the API server did for them: its writes (the loop's and the 1,000 creates; not
    // the reads this test polls with) and the reviews it sent bucketgate's webhooks.
    let after = api_counts(&plane.client).await;
    let per_bucket: Vec<String> = after
        .iter()
        .map(|(what, n)| (what, (n - before.get(what).copied().unwrap_or(0.0)) / 1000.0))
        .filter(|(_, n)| *n >= 0.005)
        .map(|(what, n)| format!("{what} {n:.2}"))
        .collect();
    println!("per Bucket: {}", per_bucket.join(", "));
}

/// The benchmark: memory of `serve` with 10,000 BucketContents and 1,000 BucketClasses in
/// the cluster (#6's catalog), as a deployment has them: applied with kubectl, and read
/// through watches from the API server, not from a directory as the load generator's. Printed for the replica that took
/// them all through admission, then for a leader (the admission catalog and the
/// provisioning loop's caches) and a follower (the catalog only) started afresh.
#[tokio::test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn benchmark_memory_with_a_large_catalog() {
    use futures::StreamExt;
    let _ = require_assets!();
    let Some(config) = seaweedfs_config(false) else { return };
    let (plane, mut first, _certs) = setup(&config).await.unwrap();
    let client = plane.client.clone();
    let team = Api::<Namespace>::all(client.clone()).get("team-a").await.unwrap().metadata.uid.unwrap();
    let endpoint = std::env::var("BUCKETGATE_S3_ENDPOINT").unwrap();
    let started = Instant::now();
    let classes = (0..1_000).map(|i| {
        let api: Api<BucketClass> = Api::all(client.clone());
        async move {
            let class: BucketClass =
                serde_json::from_value(applied(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass",
                "metadata": {"name": format!("class-{i}")}, "provisioner": "seaweedfs", "supportedProtocols": ["s3"],
                "releasePolicy": "Delete", "parameters": {"objectStoreName": format!("store-{i}")}})))
                .unwrap();
            api.create(&PostParams::default(), &class).await.unwrap();
        }
    });
    futures::stream::iter(classes).buffer_unordered(32).collect::<Vec<()>>().await;
    let contents = (0..10_000).map(|i| {
        let (api, team, endpoint) = (Api::<BucketContent>::all(client.clone()), team.clone(), endpoint.clone());
        async move {
            let content: BucketContent = serde_json::from_value(applied(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent",
                "metadata": {"name": format!("content-{i}")},
                "spec": {"provisioner": "seaweedfs", "releasePolicy": "Retain", "bucketClassName": format!("class-{}", i % 1_000),
                    "bindableNamespaces": [{"name": "team-a", "uid": team}],
                    "protocol": {"type": "s3", "s3": {"bucketName": format!("bucket-{i}"), "endpoint": endpoint, "region": "us-east-1"}},
                    "parameters": {"objectStoreName": format!("store-{}", i % 1_000)}}})))
            .unwrap();
            // The catalog may not have the content's class yet: as a user would, again.
            let mut tries = 0;
            while let Err(error) = api.create(&PostParams::default(), &content).await {
                tries += 1;
                assert!(tries < 50, "content-{i}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    futures::stream::iter(contents).buffer_unordered(32).collect::<Vec<()>>().await;
    println!("1,000 BucketClasses and 10,000 BucketContents created through admission in {:?}", started.elapsed());
    println!("memory of the replica that admitted them (leader): {}", memory(first.id().unwrap()));

    stop(&mut first).await;
    let (leader_certs, follower_certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, _, _) = bucketgate(&plane, &config, leader_certs.path(), "leader", &[]).await;
    let started = Instant::now();
    while lease_holder(&client).await.as_deref() != Some("leader") {
        assert!(started.elapsed() < Duration::from_secs(30), "the new replica did not lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (follower, _, _) = bucketgate(&plane, &config, follower_certs.path(), "follower", &[]).await;
    // Long enough for both to have listed everything and the leader's loop to have looked
    // at each content once.
    tokio::time::sleep(Duration::from_secs(20)).await;
    println!("memory of a leader started afresh: {}", memory(leader.id().unwrap()));
    println!("memory of a follower started afresh: {}", memory(follower.id().unwrap()));

    // With policies, each replica audits the cluster at start: 11,000 objects judged, a
    // page at a time.
    let audited_certs = tempfile::tempdir().unwrap();
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let (audited, port, ca) =
        bucketgate(&plane, &config, audited_certs.path(), "audited", &["--policies", policies]).await;
    let https = common::client(&[&ca], &[&rustls::version::TLS13]);
    let started = Instant::now();
    let finished = loop {
        let url = format!("https://localhost:{port}/policies");
        let body: Value = https.get(url).send().await.unwrap().json().await.unwrap();
        if body["audit"]["finished"].is_string() {
            break body["audit"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no audit ended: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "a follower with the example policies audited {} within {:?} of starting; memory then: {}",
        finished["judged"],
        started.elapsed(),
        memory(audited.id().unwrap())
    );
}

/// `object` as `kubectl apply` creates it: with its own JSON in an annotation.
fn applied(mut object: Value) -> Value {
    let text = object.to_string();
    object["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": text});
    object
}

/// Peak and current resident memory of the process `pid`, as /proc says them.
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    format!("peak {}, now {}", field("VmHWM:"), field("VmRSS:"))
}

/// The API server's counts, from its metrics, of write requests by verb and resource and of
/// the reviews it sent each webhook.
async fn api_counts(client: &Client) -> std::collections::BTreeMap<String, f64> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new()).unwrap()).await.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default()
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let what = if line.starts_with("apiserver_request_total{")
            && matches!(label("verb"), "POST" | "PATCH" | "PUT" | "DELETE")
        {
            let subresource = label("subresource");
            let resource = if subresource.is_empty() {
                label("resource").to_string()
            } else {
                format!("{}/{subresource}", label("resource"))
            };
            format!("{} {resource}", label("verb"))
        } else if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_count{") {
            format!("review by {} ({})", label("name"), label("operation"))
        } else {
            continue;
        };
        *counts.entry(what).or_default() += value;
    }
    counts
}
