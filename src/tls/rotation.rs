//! The serving certificate made and renewed by bucketgate itself (`serve --manage-certs`),
//! for clusters without cert-manager, where a certificate from `bucketgate certs` would
//! otherwise end after a year with nothing to renew it, and every Bucket write with it.
//!
//! The CA, its key and the serving certificate live in one Secret, which the pods also
//! mount: the kubelet brings each new certificate into the files that [`super::CertStore`]
//! reloads. Every replica looks at the Secret and the two webhook configurations now and
//! then and takes the next [`Step`]; writes carry the resourceVersion read, so two
//! replicas that look at once never both write: the second is refused and looks again.
//!
//! A serving certificate is issued only by a CA that both webhook configurations' caBundle
//! already trusts, so that no replica ever serves a certificate the API server cannot
//! check. A new CA (a year before the old one ends) goes into the bundle beside the old
//! one, which stays there until it ends.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{GeneralName, X509Certificate};

use super::{CA_FILE, CERT_FILE, KEY_FILE, TlsError, parsed, pem_certificates};
use crate::metrics::Metrics;

/// The CA's key, beside its certificate in the Secret: it signs each new serving certificate.
pub const CA_KEY_FILE: &str = "ca.key";

/// The names manifests/ gives the Secret, the webhook configurations and the Service.
pub const SECRET: &str = "bucketgate-tls";
pub const WEBHOOK_CONFIGURATION: &str = "bucketgate";
pub const SERVICE: &str = "bucketgate";

const DAY: i64 = 86_400;
/// A CA lasts ten years, and a new one is made a year before its end.
pub const CA_DAYS: i64 = 3_650;
pub const CA_RENEW_DAYS: i64 = 365;
/// A serving certificate lasts 90 days and is renewed 30 days before its end, as
/// cert-manager does by default: a failing renewal has a month to be noticed (the log, the
/// alert `BucketgateCertificateExpiring` at 14 days).
pub const LEAF_DAYS: i64 = 90;
pub const LEAF_RENEW_DAYS: i64 = 30;

/// What the Secret holds, as text (a key missing or not UTF-8 reads as empty). Debug output
/// shows the certificates, never the keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The CA in force first, then older ones that have not ended: the webhooks' caBundle.
    pub ca_crt: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("ca_crt", &self.ca_crt).field("tls_crt", &self.tls_crt).finish_non_exhaustive()
    }
}

/// What a look at the Secret and the webhook configurations calls for next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write this into the Secret, for the reason given (for the log).
    Store(Stored, String),
    /// Set every webhook's caBundle to this (PEM).
    Trust(String),
    /// All is as it should be.
    Done,
}

/// The next step for `stored`, a serving certificate for `names`, where `trusted` says
/// whether both webhook configurations' caBundle is `stored.ca_crt`, at `now` (Unix
/// seconds). Pure: the caller reads and writes.
pub fn next(stored: &Stored, names: &[String], trusted: bool, now: i64) -> Result<Step, TlsError> {
    let bundle = certificates(&stored.ca_crt);
    let alive = |cert: &&CertificateDer| ends(cert).is_some_and(|end| end > now);
    let in_force = ca_in_force(&bundle, &stored.ca_key, now);
    let Some(ca) = in_force else {
        let why = match bundle.first() {
            None => "no CA yet".to_string(),
            Some(_) => "the CA ends within a year, has ended, or does not match its key".to_string(),
        };
        let (ca_pem, ca_key) = super::new_ca(CA_DAYS, now)?;
        // The old ones stay trusted until they end: a replica may serve what they signed.
        let kept = bundle.iter().filter(alive).map(pem);
        let ca_crt = std::iter::once(ca_pem).chain(kept).collect::<String>();
        return Ok(Step::Store(Stored { ca_crt, ca_key, ..stored.clone() }, why));
    };
    let current: Vec<&CertificateDer> = bundle.iter().filter(alive).collect();
    if current.len() < bundle.len() {
        let ca_crt = current.into_iter().map(pem).collect();
        return Ok(Step::Store(Stored { ca_crt, ..stored.clone() }, "an older CA has ended".into()));
    }
    if !trusted {
        return Ok(Step::Trust(stored.ca_crt.clone()));
    }
    if let Some(why) = leaf_due(stored, ca, names, now) {
        let issuer_key = KeyPair::from_pem(&stored.ca_key)?;
        let issuer = Issuer::from_ca_cert_der(ca, issuer_key)?;
        let (tls_crt, tls_key) = super::new_leaf(names, LEAF_DAYS, now, &issuer)?;
        return Ok(Step::Store(Stored { tls_crt, tls_key, ..stored.clone() }, why));
    }
    Ok(Step::Done)
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    pem_certificates(pem.as_bytes())
}

fn pem(der: &CertificateDer) -> String {
    let block = ::pem::Pem::new("CERTIFICATE", der.to_vec());
    ::pem::encode_config(&block, ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF))
}

fn ends(der: &CertificateDer) -> Option<i64> {
    parsed(der).map(|cert| cert.validity().not_after.timestamp())
}

/// The first certificate of the bundle, where it is a CA that `key` belongs to and that
/// has more than a year left.
fn ca_in_force<'a>(bundle: &'a [CertificateDer<'static>], key: &str, now: i64) -> Option<&'a CertificateDer<'static>> {
    let first = bundle.first()?;
    let cert = parsed(first)?;
    let lasts = cert.validity().not_after.timestamp() - now > CA_RENEW_DAYS * DAY;
    (cert.is_ca() && key_fits(&cert, key) && lasts).then_some(first)
}

/// Whether the private key `key` (PEM) is the one `cert` was issued for.
fn key_fits(cert: &X509Certificate, key: &str) -> bool {
    KeyPair::from_pem(key).is_ok_and(|key| cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Why the serving certificate must be issued again, if it must: missing, not matching
/// its key, not signed by the CA in force, not for every name, or within 30 days of its end.
fn leaf_due(stored: &Stored, ca: &CertificateDer, names: &[String], now: i64) -> Option<String> {
    let leaf = certificates(&stored.tls_crt);
    let Some(cert) = leaf.first().and_then(parsed) else {
        return Some("no serving certificate yet".into());
    };
    if !key_fits(&cert, &stored.tls_key) {
        return Some("the serving certificate does not match its key".into());
    }
    let ca = parsed(ca)?;
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Some("the serving certificate was not signed by the CA in force".into());
    }
    let held: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(name) => Some(*name),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if let Some(missing) = names.iter().find(|name| !held.contains(&name.as_str())) {
        return Some(format!("the serving certificate is not for {missing}"));
    }
    if cert.validity().not_after.timestamp() - now <= LEAF_RENEW_DAYS * DAY {
        return Some(format!("the serving certificate ends within {LEAF_RENEW_DAYS} days"));
    }
    None
}

/// Where bucketgate keeps its certificate, and what it is for.
#[derive(Clone, Debug)]
pub struct Managed {
    /// bucketgate's namespace, where the Secret and the Service are.
    pub namespace: String,
    pub secret: String,
    /// The name of both webhook configurations, mutating and validating.
    pub webhook_configuration: String,
    /// The DNS names the API server calls the webhooks by.
    pub names: Vec<String>,
    pub interval: Duration,
}

impl Managed {
    /// The names of `service` in `namespace`, as the API server calls a webhook's service
    /// (`<service>.<namespace>.svc`) and as clients in the cluster do.
    pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
        vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")]
    }
}

/// Looks every `managed.interval` until the process ends, and at once at the start. A
/// failure is logged when it starts or changes, and counted at every look.
pub async fn manage(client: Client, managed: Managed, metrics: Arc<Metrics>) {
    let secret = format!("{}/{}", managed.namespace, managed.secret);
    let mut failing: Option<String> = None;
    loop {
        match converge(&client, &managed).await {
            Ok(()) => {
                metrics.certificate_renewals.succeeded();
                if failing.take().is_some() {
                    tracing::info!(%secret, "the serving certificate can be renewed again");
                }
            }
            Err(error) => {
                metrics.certificate_renewals.failed();
                let error = error.to_string();
                if failing.as_ref() != Some(&error) {
                    tracing::warn!(%secret, %error, "cannot renew the serving certificate now; trying again");
                    failing = Some(error);
                }
            }
        }
        tokio::time::sleep(managed.interval).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("making the certificate: {0}")]
    Certificate(#[from] TlsError),
}

/// Steps until all is done (at most a few: a CA, its trust, a certificate). A write refused
/// because another replica wrote first ends the round; the next one reads afresh.
pub async fn converge(client: &Client, managed: &Managed) -> Result<(), RotationError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &managed.namespace);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for _ in 0..4 {
        let mut secret = secrets.get(&managed.secret).await?;
        let stored = stored(&secret);
        let mut mutating_config = mutating.get(&managed.webhook_configuration).await?;
        let mut validating_config = validating.get(&managed.webhook_configuration).await?;
        let mut bundles = mutating_config
            .webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config.ca_bundle)
            .chain(validating_config.webhooks.iter().flatten().map(|w| &w.client_config.ca_bundle));
        let wanted = stored.ca_crt.as_bytes();
        let trusted = bundles.all(|bundle| bundle.as_ref().is_some_and(|b| b.0 == wanted));
        let now = jiff::Timestamp::now().as_second();
        let step = next(&stored, &managed.names, trusted, now)?;
        let refused = match step {
            Step::Done => return Ok(()),
            Step::Store(new, why) => {
                // Written over what was read, its resourceVersion with it: the API server
                // refuses the write if another replica changed the Secret since.
                write_into(&mut secret, &new);
                let refused =
                    refused_as_stale(secrets.replace(&managed.secret, &PostParams::default(), &secret).await)?;
                if !refused {
                    tracing::info!(secret = %managed.secret, reason = %why, "serving certificate or CA made anew");
                }
                refused
            }
            Step::Trust(bundle) => {
                let bundle = ByteString(bundle.into_bytes());
                for webhook in mutating_config.webhooks.iter_mut().flatten() {
                    webhook.client_config.ca_bundle = Some(bundle.clone());
                }
                for webhook in validating_config.webhooks.iter_mut().flatten() {
                    webhook.client_config.ca_bundle = Some(bundle.clone());
                }
                let name = &managed.webhook_configuration;
                let params = PostParams::default();
                refused_as_stale(mutating.replace(name, &params, &mutating_config).await)?
                    || refused_as_stale(validating.replace(name, &params, &validating_config).await)?
            }
        };
        if refused {
            return Ok(());
        }
    }
    Ok(())
}

/// `Ok(true)` where the write was refused as based on an old version (409): another
/// replica wrote first.
fn refused_as_stale<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(false),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(true),
        Err(error) => Err(error),
    }
}

fn stored(secret: &Secret) -> Stored {
    let data = secret.data.as_ref();
    let text = |key: &str| {
        data.and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .unwrap_or_default()
    };
    Stored { ca_crt: text(CA_FILE), ca_key: text(CA_KEY_FILE), tls_crt: text(CERT_FILE), tls_key: text(KEY_FILE) }
}

fn write_into(secret: &mut Secret, stored: &Stored) {
    let data = secret.data.get_or_insert_with(Default::default);
    for (key, value) in [
        (CA_FILE, &stored.ca_crt),
        (CA_KEY_FILE, &stored.ca_key),
        (CERT_FILE, &stored.tls_crt),
        (KEY_FILE, &stored.tls_key),
    ] {
        data.insert(key.to_string(), ByteString(value.clone().into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        Managed::service_names("bucketgate", "bucketgate-system")
    }

    /// Runs `next` as the loop would, the webhooks trusting each bundle once told to.
    fn settle(mut stored: Stored, now: i64) -> (Stored, Vec<String>) {
        let mut trusted_bundle = String::new();
        let mut steps = Vec::new();
        for _ in 0..6 {
            match next(&stored, &names(), trusted_bundle == stored.ca_crt, now).unwrap() {
                Step::Done => return (stored, steps),
                Step::Store(new, why) => {
                    steps.push(why);
                    stored = new;
                }
                Step::Trust(bundle) => {
                    steps.push("trust".into());
                    trusted_bundle = bundle;
                }
            }
        }
        panic!("did not settle: {steps:?}");
    }

    fn ends_of(pem: &str) -> Vec<i64> {
        certificates(pem).iter().map(|c| ends(c).unwrap()).collect()
    }

    #[test]
    fn an_empty_secret_gets_a_ca_then_its_trust_then_a_certificate() {
        let (stored, steps) = settle(Stored::default(), NOW);
        assert_eq!(steps, ["no CA yet", "trust", "no serving certificate yet"]);
        assert_eq!(ends_of(&stored.ca_crt), [NOW + CA_DAYS * DAY]);
        assert_eq!(ends_of(&stored.tls_crt), [NOW + LEAF_DAYS * DAY]);
        assert_eq!(leaf_due(&stored, &certificates(&stored.ca_crt)[0], &names(), NOW), None);
        // And the pair loads as the server loads it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), &stored.tls_crt).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), &stored.tls_key).unwrap();
        assert!(super::super::CertStore::open(dir.path()).unwrap().is_loaded());
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let (stored, _) = settle(Stored::default(), NOW);
        let shown = format!("{stored:?} {:?}", Step::Store(stored.clone(), "why".into()));
        assert!(shown.contains("BEGIN CERTIFICATE") && !shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn nothing_is_issued_before_the_webhooks_trust_the_ca() {
        let Step::Store(with_ca, _) = next(&Stored::default(), &names(), false, NOW).unwrap() else { panic!() };
        assert!(matches!(next(&with_ca, &names(), false, NOW).unwrap(), Step::Trust(b) if b == with_ca.ca_crt));
    }

    #[test]
    fn a_certificate_near_its_end_is_issued_again_by_the_same_ca() {
        let (stored, _) = settle(Stored::default(), NOW);
        let later = NOW + (LEAF_DAYS - LEAF_RENEW_DAYS) * DAY - 60;
        assert_eq!(next(&stored, &names(), true, later).unwrap(), Step::Done, "more than 30 days left");
        let due = later + 120;
        let Step::Store(renewed, why) = next(&stored, &names(), true, due).unwrap() else { panic!() };
        assert!(why.contains("within 30 days"), "{why}");
        assert_eq!((&renewed.ca_crt, &renewed.ca_key), (&stored.ca_crt, &stored.ca_key), "the CA stays");
        assert_ne!(renewed.tls_key, stored.tls_key, "a new key");
        assert_eq!(ends_of(&renewed.tls_crt), [due + LEAF_DAYS * DAY]);
    }

    #[test]
    fn a_certificate_for_other_names_or_from_another_ca_or_key_is_issued_again() {
        let (stored, _) = settle(Stored::default(), NOW);
        let other = vec!["bucketgate.elsewhere.svc".to_string()];
        assert!(
            matches!(next(&stored, &other, true, NOW).unwrap(), Step::Store(_, why) if why.contains("not for bucketgate.elsewhere.svc"))
        );
        let (foreign, _) = settle(Stored::default(), NOW);
        let mixed = Stored { tls_crt: foreign.tls_crt.clone(), tls_key: foreign.tls_key.clone(), ..stored.clone() };
        assert!(
            matches!(next(&mixed, &names(), true, NOW).unwrap(), Step::Store(_, why) if why.contains("not signed by the CA"))
        );
        let wrong_key = Stored { tls_key: foreign.tls_key, ..stored.clone() };
        assert!(
            matches!(next(&wrong_key, &names(), true, NOW).unwrap(), Step::Store(_, why) if why.contains("does not match its key"))
        );
        let garbage = Stored { tls_crt: "not a certificate".into(), ..stored };
        assert!(
            matches!(next(&garbage, &names(), true, NOW).unwrap(), Step::Store(_, why) if why.contains("no serving certificate"))
        );
    }

    #[test]
    fn a_ca_near_its_end_is_replaced_and_the_old_one_trusted_until_it_ends() {
        let (stored, _) = settle(Stored::default(), NOW);
        let late = NOW + (CA_DAYS - CA_RENEW_DAYS) * DAY + 60;
        let (renewed, steps) = settle(stored.clone(), late);
        assert_eq!(steps[1], "trust", "{steps:?}");
        assert!(steps[0].contains("ends within a year"), "{steps:?}");
        assert_eq!(ends_of(&renewed.ca_crt), [late + CA_DAYS * DAY, NOW + CA_DAYS * DAY], "new first, old kept");
        assert_ne!(renewed.ca_key, stored.ca_key);
        // The certificate comes from the new CA once the bundle with it is trusted.
        let new_ca = &certificates(&renewed.ca_crt)[0];
        assert_eq!(leaf_due(&renewed, new_ca, &names(), late), None);
        // Once the old CA has ended it leaves the bundle.
        let after = NOW + CA_DAYS * DAY + 1;
        let (pruned, steps) = settle(renewed, after);
        assert_eq!(steps[0], "an older CA has ended", "{steps:?}");
        assert_eq!(ends_of(&pruned.ca_crt), [late + CA_DAYS * DAY]);
    }

    fn managed() -> Managed {
        Managed {
            namespace: "bucketgate-system".into(),
            secret: SECRET.into(),
            webhook_configuration: WEBHOOK_CONFIGURATION.into(),
            names: names(),
            interval: Duration::from_secs(60),
        }
    }

    /// One request of `converge` to the mock API server, answered with `status` and `body`;
    /// returns the request's body.
    async fn answer(
        api: &mut tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>,
        method: &str,
        path: &str,
        status: u16,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (request, send) = api.next_request().await.unwrap_or_else(|| panic!("expected {method} {path}"));
        assert_eq!((request.method().as_str(), request.uri().path()), (method, path));
        let sent = request.into_body().collect_bytes().await.unwrap();
        let response = http::Response::builder().status(status).body(serde_json::to_vec(&body).unwrap().into());
        send.send_response(response.unwrap());
        if sent.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&sent).unwrap() }
    }

    /// Two replicas that look at once: the second's write is refused (409) for the version it
    /// read, and it leaves the rest to its next look rather than writing over the first's.
    #[tokio::test]
    async fn a_write_refused_because_another_replica_wrote_first_ends_the_round() {
        use serde_json::json;
        let (service, mut api) = tower_test::mock::pair();
        let client = Client::new(service, "default");
        let round = tokio::spawn(async move { converge(&client, &managed()).await });
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET, "namespace": "bucketgate-system", "resourceVersion": "7"}});
        let hook = json!({"name": "validate.bucketgate.cosi.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": SERVICE, "namespace": "bucketgate-system"}}});
        let config = |kind: &str| {
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": WEBHOOK_CONFIGURATION, "resourceVersion": "3"}, "webhooks": [hook]})
        };
        let secret_path = format!("/api/v1/namespaces/bucketgate-system/secrets/{SECRET}");
        answer(&mut api, "GET", &secret_path, 200, secret).await;
        let hooks = "/apis/admissionregistration.k8s.io/v1";
        let mutating = format!("{hooks}/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}");
        answer(&mut api, "GET", &mutating, 200, config("MutatingWebhookConfiguration")).await;
        let validating = format!("{hooks}/validatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}");
        answer(&mut api, "GET", &validating, 200, config("ValidatingWebhookConfiguration")).await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "the object has been modified; please apply your changes to the latest version and try again"});
        let written = answer(&mut api, "PUT", &secret_path, 409, conflict).await;
        assert_eq!(written["metadata"]["resourceVersion"], "7", "written from the version read");
        assert!(written["data"]["ca.key"].is_string(), "a CA made");
        let result = tokio::time::timeout(Duration::from_secs(5), round).await.expect("a request after the refusal");
        assert!(result.unwrap().is_ok());

        // Any other refusal is an error, for the log.
        let (service, mut api) = tower_test::mock::pair();
        let client = Client::new(service, "default");
        let round = tokio::spawn(async move { converge(&client, &managed()).await });
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "secrets \"bucketgate-tls\" is forbidden"});
        answer(&mut api, "GET", &secret_path, 403, forbidden).await;
        let error = round.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("forbidden"), "{error}");
    }

    #[test]
    fn a_ca_whose_key_is_lost_or_garbled_is_made_anew() {
        let (stored, _) = settle(Stored::default(), NOW);
        let lost = Stored { ca_key: String::new(), ..stored.clone() };
        let Step::Store(new, why) = next(&lost, &names(), true, NOW).unwrap() else { panic!() };
        assert!(why.contains("does not match its key"), "{why}");
        assert_eq!(
            certificates(&new.ca_crt).len(),
            2,
            "the old CA stays trusted: replicas may still serve its certificate"
        );
        let garbled = Stored { ca_crt: "garbage".into(), ..Stored::default() };
        assert!(matches!(next(&garbled, &names(), true, NOW).unwrap(), Step::Store(_, why) if why == "no CA yet"));
    }
}
