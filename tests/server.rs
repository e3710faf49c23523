//! The HTTPS server around the decisions: bad input, limits, health, metrics, TLS versions,
//! and certificate rotation by symlink swap while requests are in flight.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bucketgate::catalog::Catalog;
use bucketgate::server::ServeOptions;
use bucketgate::tls;
use common::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

async fn post_raw(server: &TestServer, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = server.client().post(server.url(path)).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn bad_requests_get_a_clear_400_and_the_server_keeps_serving() {
    let options = ServeOptions { max_body_bytes: 64 * 1024, ..ServeOptions::default() };
    let server = TestServer::start_with(fixture_catalog(), served(), options).await;

    let (status, text) = post_raw(&server, "/validate?timeout=5s", "{\"kind\": ").await;
    assert_eq!(status, 400);
    assert!(text.starts_with("request body is not a valid AdmissionReview: kind: EOF while parsing"), "{text}");

    let mut v1beta1 = fixture("010");
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, text) = post_raw(&server, "/validate", v1beta1.to_string()).await;
    assert_eq!(status, 400);
    assert!(text.contains("got apiVersion \"admission.k8s.io/v1beta1\""), "{text}");

    let mut pod_review = fixture("010");
    pod_review["kind"] = json!("Pod");
    let (status, text) = post_raw(&server, "/validate", pod_review.to_string()).await;
    assert_eq!(status, 400);
    assert!(text.contains("kind \"Pod\""), "{text}");

    let (status, text) =
        post_raw(&server, "/mutate", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await;
    assert_eq!((status, text.as_str()), (400, "AdmissionReview has no request\n"));

    let mut no_uid = fixture("009");
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let (status, text) = post_raw(&server, "/mutate", no_uid.to_string()).await;
    assert_eq!(status, 400);
    assert!(text.contains("request: missing field `uid`"), "{text}");

    let (status, text) = post_raw(&server, "/mutate", vec![b' '; 65 * 1024]).await;
    assert_eq!(status, 413);
    assert!(text.starts_with("request body refused"), "{text}");

    let response = server.client().get(server.url("/mutate")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let response = server.client().post(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Nothing above hurt the server.
    assert_eq!(server.review("mutate", &fixture("009")).await["allowed"], true);
    let metrics = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"bucketgate_admission_requests_total{webhook="mutate",kind="unknown",operation="unknown",result="error"} 3"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    let client = server.client();
    for path in ["/healthz", "/readyz"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    server.review("mutate", &fixture("009")).await;
    server.review("validate", &fixture("016")).await;
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let metrics = response.text().await.unwrap();
    for line in [
        r#"bucketgate_admission_requests_total{webhook="mutate",kind="Bucket",operation="CREATE",result="allowed"} 1"#,
        r#"bucketgate_admission_requests_total{webhook="validate",kind="BucketClass",operation="UPDATE",result="denied"} 1"#,
        r#"bucketgate_admission_duration_seconds_count{webhook="mutate",kind="Bucket",operation="CREATE",result="allowed"} 1"#,
        // No provisioning loop in this server: it does not run for the Lease, does not lead,
        // and has bound nothing.
        "bucketgate_provisioning_enabled 0",
        "bucketgate_provisioning_leader 0",
        "bucketgate_bucket_time_to_bound_seconds_count 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    server.stop().await;
}

/// A catalog that cannot reach its API server never syncs, and readiness says so.
#[tokio::test]
async fn readiness_waits_for_the_catalog() {
    let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (catalog, watches) = Catalog::watch(client);
    let watches = tokio::spawn(watches);
    let server = TestServer::start(catalog, served()).await;
    let response = server.client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "not ready: catalog not synced\n");
    let response = server.client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    watches.abort();
    server.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_and_plain_http_is_not() {
    let server = TestServer::start(fixture_catalog(), served()).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = client(&[&server.certs.ca_pem], &[version]);
        let response = client.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{version:?}");
    }
    // A client that does not trust the CA is refused.
    let other = tls::generate(&["localhost".into()], &[], 1).unwrap();
    let stranger = client(&[&other.ca_pem], &[&rustls::version::TLS13]);
    assert!(stranger.get(server.url("/healthz")).send().await.is_err());
    let plain = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client_config(&[], rustls::DEFAULT_VERSIONS))
        .build()
        .unwrap();
    let result = plain.get(format!("http://127.0.0.1:{}/healthz", server.addr.port())).send().await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    server.stop().await;
}

/// The kubelet updates a Secret volume by writing a new `..<timestamp>` directory and
/// swapping the `..data` symlink; `tls.crt` and `tls.key` are links through it. Requests
/// keep flowing across the swap, none fails, and new connections get the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swap_by_symlink_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let first = tls::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1).unwrap();
    let second = tls::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 2).unwrap();
    first.write(&dir.path().join("..2026_11_21_v1")).unwrap();
    second.write(&dir.path().join("..2026_11_21_v2")).unwrap();
    std::os::unix::fs::symlink("..2026_11_21_v1", dir.path().join("..data")).unwrap();
    for file in [tls::CERT_FILE, tls::KEY_FILE] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.path().join(file)).unwrap();
    }
    let ca_pems = [first.ca_pem.clone(), second.ca_pem.clone()];
    let expiry = |certs: &tls::GeneratedCerts| {
        format!("bucketgate_tls_certificate_expiration_timestamp_seconds {}\n", certs.expires)
    };
    let (first_expiry, second_expiry) = (expiry(&first), expiry(&second));
    let server = TestServer::start_in(dir, first, fixture_catalog(), served(), ServeOptions::default()).await;
    tokio::spawn(server.state.certs.clone().watch(Duration::from_millis(20), server.state.metrics.clone()));

    let server = Arc::new(server);
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (server, done, ca_pems) = (server.clone(), done.clone(), ca_pems.clone());
        workers.push(tokio::spawn(async move {
            let body = fixture("009");
            let keep_alive = client(&[&ca_pems[0], &ca_pems[1]], &[&rustls::version::TLS13]);
            for _ in 0..60 {
                // Half the workers reuse one connection, half open a new one per request.
                let client = if worker % 2 == 0 {
                    keep_alive.clone()
                } else {
                    client(&[&ca_pems[0], &ca_pems[1]], &[&rustls::version::TLS13, &rustls::version::TLS12])
                };
                let response = client.post(server.url("/mutate?timeout=5s")).json(&body).send().await;
                let response = response.expect("no request fails during the swap");
                assert_eq!(response.status(), 200);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = client(&[&ca_pems[0]], &[&rustls::version::TLS13]);
    let metrics = before.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&first_expiry), "{metrics}");
    // The swap, as the kubelet does it: a new link renamed over ..data.
    let cert_dir = server.cert_dir.path();
    std::os::unix::fs::symlink("..2026_11_21_v2", cert_dir.join("..data_tmp")).unwrap();
    std::fs::rename(cert_dir.join("..data_tmp"), cert_dir.join("..data")).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 240);

    let expected = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).unwrap();
    let started = Instant::now();
    loop {
        let fresh = client(&[&ca_pems[1]], &[&rustls::version::TLS13]);
        if let Ok(response) = fresh.get(server.url("/healthz")).send().await {
            let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
            assert_eq!(info.peer_certificate().unwrap(), expected.as_ref());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old CA no longer signs what is served: ask with a client that trusts both.
    let both = client(&[&ca_pems[0], &ca_pems[1]], &[&rustls::version::TLS13]);
    let metrics = both.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"bucketgate_tls_certificate_reloads_total{result="success"} 1"#), "{metrics}");
    assert!(metrics.contains(&second_expiry), "the new certificate's end: {metrics}");
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}
