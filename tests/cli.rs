//! The `bucketgate` binary as users run it: `serve` (with SIGTERM while a request is in
//! flight, and `--dev` as the README runs it), `review`, `config check` and `certs`.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bucketgate::tls;
use common::*;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_bucketgate");

/// Starts `bucketgate serve` on a free loopback port and returns it with that port, read
/// from its JSON log, and the task that reads the rest of the log: it ends with the
/// process, with the lines after the one that named the port.
async fn spawn_serve(args: &[&str]) -> (Child, u16, tokio::task::JoinHandle<Vec<Value>>) {
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
            if let Some(address) = log["fields"]["address"].as_str() {
                return address.rsplit(':').next().unwrap().parse::<u16>().unwrap();
            }
        }
        panic!("bucketgate exited before listening");
    })
    .await
    .expect("bucketgate listens within 20s");
    // Keep draining the log so the child never blocks on a full pipe.
    let log = tokio::spawn(async move {
        let mut logged = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            logged.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        logged
    });
    (child, port, log)
}

/// A `bucketgate serve` started by [`serve_fixtures`].
struct Served {
    child: Child,
    port: u16,
    /// The log lines after the one that named the port; ends with the process.
    log: tokio::task::JoinHandle<Vec<Value>>,
    /// The CA that signed the serving certificate.
    ca_pem: String,
    /// Holds the certificates; bind it (not `..`) so that it lives as long as the server.
    _certs_dir: tempfile::TempDir,
}

/// `serve` with new certificates, the fixture catalog, the served provisioner and `extra`
/// arguments.
async fn serve_fixtures(extra: &[&str]) -> Served {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = tls::generate(&["localhost".into()], &[], 1).unwrap();
    certs.write(certs_dir.path()).unwrap();
    let catalog = fixtures_dir().join("catalog");
    let args = [
        "--cert-dir",
        certs_dir.path().to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
        "--provisioner",
        SERVED,
    ];
    let (child, port, log) = spawn_serve(&[&args[..], extra].concat()).await;
    Served { child, port, log, ca_pem: certs.ca_pem, _certs_dir: certs_dir }
}

/// Sends SIGTERM, as the kubelet does to stop a pod.
fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

async fn tls_stream(ca_pem: &str, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = tls_client_config(&[ca_pem], rustls::DEFAULT_VERSIONS);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// SIGTERM stops new connections at once but lets a request that is half-sent finish.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let Served { mut child, port, ca_pem, _certs_dir, .. } = serve_fixtures(&["--shutdown-grace", "10s"]).await;

    let body = fixture("014").to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = tls_stream(&ca_pem, port).await;
    let headers = format!(
        "POST /validate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(headers.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    sigterm(&child);
    // Once shutdown has begun, the listener is gone.
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "new connections are refused after SIGTERM");

    stream.write_all(tail).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("\"uid\"") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed before the response: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"allowed\":true"), "{reply}");
    drop(stream);

    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// At the default level a refused review is logged with its reason and an admitted one is
/// not; every line is out by the time the process has exited.
#[tokio::test]
async fn refusals_are_logged_and_the_log_is_whole_at_exit() {
    let Served { mut child, port, log, ca_pem, _certs_dir } = serve_fixtures(&[]).await;
    let client = client(&[&ca_pem], &[&rustls::version::TLS13]);
    let validate = |body: &Value| {
        let request = client.post(format!("https://localhost:{port}/validate?timeout=5s")).json(body).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap()["response"]["allowed"].clone() }
    };
    let denied = fixture("016");
    assert_eq!(validate(&denied).await, false);
    assert_eq!(validate(&fixture("014")).await, true);
    sigterm(&child);
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    // The log's reader ends when the pipe closes, with every line the process wrote.
    let logged = tokio::time::timeout(Duration::from_secs(5), log).await.unwrap().unwrap();
    let answered: Vec<&Value> =
        logged.iter().filter(|l| l["fields"]["message"] == "admission review answered").collect();
    assert_eq!(answered.len(), 1, "{logged:#?}");
    assert_eq!(answered[0]["level"], "INFO");
    assert_eq!(answered[0]["fields"]["result"], "denied");
    assert_eq!(answered[0]["fields"]["uid"], denied["request"]["uid"]);
    let why = answered[0]["fields"]["response_message"].as_str().unwrap();
    assert!(why.contains("parameters are immutable"), "{why}");
    assert_eq!(logged.last().unwrap()["fields"]["message"], "server stopped", "{logged:#?}");
}

/// The README's run command: development certificates are created, and with no cluster the
/// example catalog and provisioners are served.
#[tokio::test]
async fn serve_dev_runs_without_a_cluster() {
    let certs_dir = tempfile::tempdir().unwrap();
    let dir = certs_dir.path().join("certs");
    let (child, port, _log) = spawn_serve(&["--dev", "--cert-dir", dir.to_str().unwrap()]).await;
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let client = client(&[&ca], &[&rustls::version::TLS13]);
    let url = |path: &str| format!("https://localhost:{port}{path}");
    assert_eq!(client.get(url("/readyz")).send().await.unwrap().status(), 200);

    let body = fixture("009");
    let response: Value =
        client.post(url("/mutate?timeout=5s")).json(&body).send().await.unwrap().json().await.unwrap();
    let patched = apply_patch(&body, &response["response"]);
    assert_eq!(patched["spec"]["bucketClassName"], "ceph-rgw", "the example catalog's default class");
    drop(child);
}

/// `bucketgate review FILE [ARGS] --catalog <the fixture catalog>`.
async fn run_review(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    let catalog = fixtures_dir().join("catalog");
    Command::new(BIN).arg("review").arg(file).args(args).arg("--catalog").arg(catalog).output().await.unwrap()
}

#[tokio::test]
async fn review_answers_a_file_offline() {
    let file = fixtures_dir().join("admission-reviews/016-validate-BucketClass-UPDATE.json");
    let output = run_review(&file, &[]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let review: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    assert!(review["response"]["status"]["message"].as_str().unwrap().contains("parameters are immutable"));

    let mutate = fixtures_dir().join("admission-reviews/009-mutate-Bucket-CREATE.json");
    let output = run_review(&mutate, &[]).await;
    let review: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(review["response"]["patch"].is_string(), "the patch is base64, as the API server reads it");

    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("request.json");
    std::fs::copy(&file, &copy).unwrap();
    let output = run_review(&copy, &[]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --webhook mutate or --webhook validate"));

    std::fs::write(&copy, "not json").unwrap();
    let output = run_review(&copy, &["--webhook", "validate"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a valid AdmissionReview"));

    // Without --catalog it reads the cluster's objects, and says so where there is none.
    let output =
        Command::new(BIN).arg("review").arg(&file).env("KUBECONFIG", "/nonexistent/kubeconfig").output().await.unwrap();
    assert!(!output.status.success() && output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no cluster to decide against: set KUBECONFIG, or pass --catalog DIR"), "{stderr}");
}

async fn config_check(files: &[&std::path::Path]) -> (bool, String) {
    let output = Command::new(BIN).args(["config", "check"]).args(files).output().await.unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn config_check_says_what_a_configuration_serves_and_what_is_wrong() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml");
    let (ok, out) = config_check(&[&base]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("(ConfigMap bucketgate-config, config.yaml): OK, serves rook-ceph.ceph.rook.io/bucket (S3 driver at http://rook-ceph-rgw-my-store.rook-ceph.svc, region us-east-1, a user and key per Bucket)"),
        "{out}"
    );

    let scratch = tempfile::tempdir().unwrap();
    let plain = scratch.path().join("config.yaml");
    std::fs::write(&plain, "provisioners:\n  - nme: minio.example.com\n").unwrap();
    let (ok, out) = config_check(&[&base, &plain]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("OK, serves rook-ceph"), "every file is checked: {out}");
    assert!(out.contains("is not valid: error: line 2 column 5: unknown field `nme`"), "{out}");

    let manifest = scratch.path().join("configmap.yaml");
    let broken = std::fs::read_to_string(&base).unwrap().replace("endpoint: http://", "endpoint: ");
    std::fs::write(&manifest, broken).unwrap();
    let (ok, out) = config_check(&[&manifest]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "(ConfigMap bucketgate-config, config.yaml): provisioner \"rook-ceph.ceph.rook.io/bucket\": s3.endpoint"
        ),
        "{out}"
    );

    // The policies' ConfigMap alone, and a file that is not there.
    let policies_only = scratch.path().join("policies.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&policies_only, &text[text.find("---").unwrap()..]).unwrap();
    let missing = scratch.path().join("missing.yaml");
    let (ok, out) = config_check(&[&policies_only, &missing, &base]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("holds Kubernetes objects but no ConfigMap with a config.yaml"), "{out}");
    assert!(out.contains("missing.yaml: No such file"), "{out}");
    assert!(out.contains("OK, serves rook-ceph"), "the files after them are checked too: {out}");
}

#[tokio::test]
async fn certs_writes_a_pair_and_prints_the_ca_bundle() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "bucketgate.bucketgate-system.svc", "--ip", "127.0.0.1"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bundle = String::from_utf8(output.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(bundle.trim()).unwrap();
    assert_eq!(decoded, std::fs::read(dir.path().join("ca.crt")).unwrap());
    assert!(tls::CertStore::open(dir.path()).unwrap().is_loaded());
}

/// What no client would accept, or cannot be written, is refused with a word on it, once.
#[tokio::test]
async fn certs_refuses_what_no_client_would_accept() {
    let dir = tempfile::tempdir().unwrap();
    let refusals = [
        (vec!["--dns", "bad name!"], "\"bad name!\" is not a DNS name a certificate can hold"),
        (vec!["--dns", ""], "\"\" is not a DNS name"),
        (vec!["--days", "0"], "a certificate valid for 0 days: give 1 to 36500"),
        // It was a panic: past the last date a certificate can hold.
        (vec!["--days", "999999999"], "valid for 999999999 days"),
    ];
    for (args, said) in refusals {
        let output = Command::new(BIN).args(["certs", "--out"]).arg(dir.path()).args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(said) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");

    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let output = Command::new(BIN).args(["certs", "--out"]).arg(blocked.join("certs")).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot write "), "{stderr}");
    assert_eq!(stderr.matches("Not a directory").count(), 1, "the cause said once: {stderr}");
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--catalog", "manifests/examples", "--cert-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loading the serving certificate") && stderr.contains("tls.crt"), "{stderr}");
}

/// `--manage-certs` keeps the certificate in the cluster: without one (a catalog from files)
/// it refuses to start rather than wait for ever, and a name no certificate can hold is
/// refused before anything else.
#[tokio::test]
async fn serve_refuses_to_manage_certificates_it_cannot_keep() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &'static [&'static str]| {
        let mut command = Command::new(BIN);
        command.args(["serve", "--listen", "127.0.0.1:0", "--catalog", "manifests/examples", "--manage-certs"]);
        command.args(extra).arg("--cert-dir").arg(dir.path());
        command
    };
    let output = serve(&[]).output().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--manage-certs keeps the certificate in a Secret of the cluster"), "{stderr}");
    let output = serve(&["--manage-certs-interval", "0s"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("0s is under a second"));
    let output = serve(&["--cert-dns-name", "not a name"]).output().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"not a name\" is not a DNS name"), "{stderr}");
}

/// A recheck interval that would turn the loop's timed looks into a busy loop, or that is no
/// duration, is refused before anything starts.
#[tokio::test]
async fn serve_refuses_a_recheck_interval_under_a_second() {
    for (interval, said) in [("500ms", "500ms is under a second"), ("hourly", "invalid value 'hourly'")] {
        let output = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--catalog",
                "manifests/examples",
                "--recheck-interval",
                interval,
            ])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{interval}: {stderr}");
        assert!(stderr.contains(said) && stderr.contains("--recheck-interval"), "{interval}: {stderr}");
    }
}
