//! The deployment in manifests/: rendered with `kubectl kustomize` (on the machine image; the
//! base files are read directly where it is missing), every object checked against its API
//! type, the webhooks against the server's routes and rules, RBAC against the calls the
//! code makes, the Deployment against the hardening the README promises, and the alerts
//! against the metrics the server exports.

mod common;

use std::collections::BTreeSet;

use bucketgate::server::{HEALTH_PATH, METRICS_PATH, MUTATE_PATH, READY_PATH, VALIDATE_PATH};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde_json::Value;

use common::manifests::{kubectl, parse_stream, render, rendered, root};

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Reads `object` as `K` and writes it back: a field the API type does not have (a typo,
/// a wrong level) is lost on the way and fails the comparison.
fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) -> K {
    let typed: K = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{}: {e}", object["kind"]));
    assert_eq!(
        &strip_nulls(serde_json::to_value(&typed).unwrap()),
        &strip_nulls(object.clone()),
        "{} has fields its type does not",
        object["kind"]
    );
    typed
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[test]
fn every_object_matches_its_api_type() {
    let objects = rendered();
    for object in &objects {
        match object["kind"].as_str().unwrap() {
            "Namespace" => drop(typed::<k8s_openapi::api::core::v1::Namespace>(object)),
            "ServiceAccount" => drop(typed::<k8s_openapi::api::core::v1::ServiceAccount>(object)),
            "ConfigMap" => drop(typed::<k8s_openapi::api::core::v1::ConfigMap>(object)),
            "Secret" => drop(typed::<k8s_openapi::api::core::v1::Secret>(object)),
            "Service" => drop(typed::<k8s_openapi::api::core::v1::Service>(object)),
            "Deployment" => drop(typed::<Deployment>(object)),
            "PodDisruptionBudget" => drop(typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(object)),
            "ClusterRole" => drop(typed::<ClusterRole>(object)),
            "ClusterRoleBinding" => drop(typed::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(object)),
            "Role" => drop(typed::<Role>(object)),
            "RoleBinding" => drop(typed::<k8s_openapi::api::rbac::v1::RoleBinding>(object)),
            "MutatingWebhookConfiguration" => drop(typed::<MutatingWebhookConfiguration>(object)),
            "ValidatingWebhookConfiguration" => drop(typed::<ValidatingWebhookConfiguration>(object)),
            "CustomResourceDefinition" => {
                // The committed CRDs are the ones the Rust types render (src/crds.rs checks
                // the files); here, that the kustomization includes all three.
                let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
                    typed(object);
                let expected: Vec<String> =
                    bucketgate::crds::all().iter().map(|c| c.metadata.name.clone().unwrap()).collect();
                assert!(expected.contains(crd.metadata.name.as_ref().unwrap()));
            }
            other => panic!("unexpected kind {other} in manifests/"),
        }
    }
    assert_eq!(objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").count(), 3);
    for object in objects.iter().filter(|o| {
        ![
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
        .contains(&o["kind"].as_str().unwrap())
    }) {
        assert_eq!(
            object["metadata"]["namespace"], "bucketgate-system",
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }
}

#[test]
fn webhooks_point_at_the_server_and_cannot_lock_bucketgate_out() {
    let objects = rendered();
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(find(&objects, "MutatingWebhookConfiguration", "bucketgate").clone()).unwrap();
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(find(&objects, "ValidatingWebhookConfiguration", "bucketgate").clone()).unwrap();
    let service = find(&objects, "Service", "bucketgate");
    // A validating webhook has every field of a mutating one but reinvocationPolicy, so
    // both are read as MutatingWebhook and checked alike.
    let as_common = |hook: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
        serde_json::from_value::<k8s_openapi::api::admissionregistration::v1::MutatingWebhook>(
            serde_json::to_value(hook).unwrap(),
        )
        .unwrap()
    };
    let mut hooks: Vec<_> = mutating.webhooks.unwrap_or_default().into_iter().map(|h| (MUTATE_PATH, h)).collect();
    hooks.extend(validating.webhooks.unwrap_or_default().iter().map(|h| (VALIDATE_PATH, as_common(h))));
    assert_eq!(hooks.len(), 2);
    for (path, hook) in hooks {
        let (client, versions, side_effects, timeout, failure, selector, rules) = (
            hook.client_config,
            hook.admission_review_versions,
            hook.side_effects,
            hook.timeout_seconds,
            hook.failure_policy,
            hook.namespace_selector,
            hook.rules.unwrap_or_default(),
        );
        let target = client.service.as_ref().unwrap();
        assert_eq!(target.path.as_deref(), Some(path));
        assert_eq!((target.name.as_str(), target.namespace.as_str()), ("bucketgate", "bucketgate-system"));
        assert_eq!(target.port, service["spec"]["ports"][0]["port"].as_i64().map(|p| p as i32));
        if kubectl() {
            assert!(client.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()), "{path}: caBundle filled in");
        }
        assert_eq!(versions, ["v1"]);
        assert_eq!(side_effects, "NoneOnDryRun");
        assert!(timeout.is_some_and(|t| t <= 10), "{path}: an explicit, short timeout");
        assert!(failure.is_some(), "{path}: an explicit failurePolicy");
        let excluded = selector.unwrap().match_expressions.unwrap();
        let names: BTreeSet<String> = excluded
            .iter()
            .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .flat_map(|e| e.values.clone().unwrap_or_default())
            .collect();
        assert!(names.contains("bucketgate-system") && names.contains("kube-system"), "{path}: {names:?}");
        for rule in &rules {
            assert_eq!(rule.api_groups.as_deref(), Some(&["cosi.io".to_string()][..]));
            assert_eq!(rule.api_versions.as_deref(), Some(&["v1alpha1".to_string()][..]));
            for resource in rule.resources.iter().flatten() {
                assert!(
                    ["buckets", "bucketclasses", "bucketcontents"].contains(&resource.as_str()),
                    "{path}: {resource}"
                );
            }
        }
        let covers = |resource: &str, operation: &str| {
            rules.iter().any(|r| {
                r.resources.iter().flatten().any(|x| x == resource)
                    && r.operations.iter().flatten().any(|o| o == operation)
            })
        };
        // What each webhook acts on must reach it.
        let needed: &[(&str, &str)] = if path == MUTATE_PATH {
            &[("buckets", "CREATE"), ("buckets", "UPDATE"), ("bucketcontents", "CREATE"), ("bucketcontents", "UPDATE")]
        } else {
            &[
                ("buckets", "CREATE"),
                ("buckets", "UPDATE"),
                ("buckets", "DELETE"),
                ("bucketclasses", "CREATE"),
                ("bucketclasses", "UPDATE"),
                ("bucketclasses", "DELETE"),
                ("bucketcontents", "CREATE"),
                ("bucketcontents", "UPDATE"),
            ]
        };
        for (resource, operation) in needed {
            assert!(covers(resource, operation), "{path} must receive {operation} {resource}");
        }
    }
}

/// Every API call bucketgate makes, by the code that makes it. The provisioning loop's
/// requests are also checked one by one in its mock-client tests (src/provision/tests.rs).
const CALLS: &[(&str, &str, &str)] = &[
    // src/catalog.rs: the admission catalog's watches.
    ("cosi.io", "bucketclasses", "list"),
    ("cosi.io", "bucketclasses", "watch"),
    ("cosi.io", "bucketcontents", "list"),
    ("cosi.io", "bucketcontents", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("cosi.io", "buckets", "list"),
    ("cosi.io", "buckets", "watch"),
    // src/catalog/fetch.rs: admission reads what its catalog does not hold yet.
    ("cosi.io", "bucketclasses", "get"),
    ("cosi.io", "bucketclasses", "list"),
    ("cosi.io", "bucketcontents", "get"),
    ("", "namespaces", "get"),
    // src/catalog/fetch.rs: whether a Bucket's requester may release it by hand...
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
    // ... which the loop's own finalizer removal is asked too: not a call, RBAC's answer.
    ("cosi.io", "buckets", "release"),
    // src/provision/mod.rs: the controllers' watches (Secrets by label).
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    // src/provision/reconcile.rs.
    ("cosi.io", "bucketclasses", "get"),
    ("cosi.io", "bucketcontents", "get"),
    ("cosi.io", "bucketcontents", "create"),
    ("cosi.io", "bucketcontents", "patch"),
    ("cosi.io", "bucketcontents", "delete"),
    ("cosi.io", "bucketcontents/status", "patch"),
    ("cosi.io", "buckets", "get"),
    ("cosi.io", "buckets", "patch"),
    ("cosi.io", "buckets/status", "patch"),
    ("", "namespaces", "get"),
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    // ... a Bucket's rotated key, written into its Secret.
    ("", "secrets", "patch"),
    // kube-runtime's event Recorder.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

#[test]
fn rbac_grants_exactly_the_calls_the_code_makes() {
    let objects = rendered();
    let role: ClusterRole = serde_json::from_value(find(&objects, "ClusterRole", "bucketgate").clone()).unwrap();
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> =
        CALLS.iter().map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect();
    assert_eq!(
        granted.difference(&needed).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "granted but never used"
    );
    assert_eq!(
        needed.difference(&granted).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "used but not granted"
    );

    // Leader election is confined to bucketgate's own namespace (kube-lease-manager).
    let lease: Role = serde_json::from_value(find(&objects, "Role", "bucketgate-leader-election").clone()).unwrap();
    let rule = &lease.rules.unwrap()[0];
    assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
    assert_eq!(rule.verbs, ["get", "create", "patch", "list", "watch"]);
}

/// The roles for people: Kubernetes' `edit` and `admin` take in the Buckets' editing and
/// `view` their reading, and none of them lets a tenant release a Bucket by hand.
#[test]
fn developers_get_buckets_through_the_built_in_roles_and_no_release() {
    let objects = rendered();
    let role =
        |name: &str| -> ClusterRole { serde_json::from_value(find(&objects, "ClusterRole", name).clone()).unwrap() };
    let aggregated = |role: &ClusterRole| -> Vec<String> {
        let labels = role.metadata.labels.clone().unwrap_or_default();
        let to = labels.iter().filter(|(_, v)| *v == "true");
        to.filter_map(|(k, _)| k.strip_prefix("rbac.authorization.k8s.io/aggregate-to-").map(str::to_string)).collect()
    };
    let verbs = |role: &ClusterRole| -> BTreeSet<(String, String)> {
        let rules = role.rules.clone().unwrap_or_default();
        rules
            .iter()
            .flat_map(|r| {
                let resources = r.resources.clone().unwrap_or_default();
                resources.into_iter().flat_map(move |res| r.verbs.iter().map(move |v| (res.clone(), v.clone())))
            })
            .collect()
    };
    let edit = role("bucketgate-buckets-edit");
    assert_eq!(aggregated(&edit), ["admin", "edit"]);
    let create = ("buckets".to_string(), "create".to_string());
    assert!(verbs(&edit).contains(&create));
    let view = role("bucketgate-buckets-view");
    assert_eq!(aggregated(&view), ["view"]);
    assert!(verbs(&view).iter().all(|(_, verb)| ["get", "list", "watch"].contains(&verb.as_str())));
    let classes = role("bucketgate-bucketclasses-view");
    assert!(aggregated(&classes).is_empty(), "cluster-scoped: bound cluster-wide by choice, not folded into view");
    // `policy audit` lists what the webhooks judge, and nothing else.
    let audit = role("bucketgate-policy-audit");
    assert!(aggregated(&audit).is_empty());
    let listed = ["buckets", "bucketclasses", "bucketcontents", "namespaces"];
    assert_eq!(verbs(&audit), listed.iter().map(|r| (r.to_string(), "list".to_string())).collect());
    for role in [&edit, &view, &classes, &audit] {
        let granted = verbs(role);
        assert!(
            granted.iter().all(|(_, verb)| verb != "release" && verb != "*"),
            "{:?} lets a tenant release by hand: {granted:?}",
            role.metadata.name
        );
    }
}

#[test]
fn deployment_is_hardened_and_probed() {
    let objects = rendered();
    let deployment: Deployment = serde_json::from_value(find(&objects, "Deployment", "bucketgate").clone()).unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("bucketgate"));
    assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
    assert!(pod.topology_spread_constraints.is_some() || pod.affinity.is_some(), "replicas spread across nodes");
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).map(|h| (h.path.clone().unwrap_or_default(), h.scheme.clone()))
    };
    assert_eq!(probe(&container.readiness_probe), Some((READY_PATH.to_string(), Some("HTTPS".to_string()))));
    assert_eq!(probe(&container.liveness_probe), Some((HEALTH_PATH.to_string(), Some("HTTPS".to_string()))));
    assert!(container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_some(), "a preStop pause");
    // Prometheus's pod discovery by annotation finds the metrics where they are served.
    let annotations = spec.template.metadata.and_then(|m| m.annotations).unwrap_or_default();
    let port = container.ports.as_ref().unwrap()[0].container_port.to_string();
    let scrape = |key: &str| annotations.get(&format!("prometheus.io/{key}")).map(String::as_str);
    assert_eq!(
        [scrape("scrape"), scrape("scheme"), scrape("port"), scrape("path")],
        [Some("true"), Some("https"), Some(port.as_str()), Some(METRICS_PATH)]
    );

    // The arguments parse, and point at what is mounted.
    let args = container.args.clone().unwrap();
    let cli = <bucketgate::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("bucketgate".to_string()).chain(args.clone()),
    );
    assert!(cli.is_ok(), "{args:?}: {}", cli.err().unwrap());
    let mounts: Vec<(String, String)> =
        container.volume_mounts.clone().unwrap().into_iter().map(|m| (m.name, m.mount_path)).collect();
    let mounted = |path: &str| mounts.iter().any(|(_, m)| path.starts_with(m.as_str()));
    for arg in &args {
        if let Some(path) =
            arg.strip_prefix("--cert-dir=").or(arg.strip_prefix("--config=")).or(arg.strip_prefix("--policies="))
        {
            assert!(mounted(path), "{arg} is not mounted: {mounts:?}");
        }
    }
    let volumes = pod.volumes.unwrap();
    let tls = volumes.iter().find(|v| v.name == "tls").and_then(|v| v.secret.as_ref()).unwrap();
    assert_eq!(tls.secret_name.as_deref(), Some("bucketgate-tls"));
    assert!(pod.termination_grace_period_seconds.unwrap() >= 25, "longer than preStop plus --shutdown-grace");
    // The shipped configuration loads as serve would load it.
    let config = find(&objects, "ConfigMap", "bucketgate-config")["data"]["config.yaml"].as_str().unwrap().to_string();
    let config = bucketgate::config::Config::parse(&config, "bucketgate-config").unwrap();
    assert!(config.provisioners.iter().all(|p| p.s3.is_some()), "the example provisioner has a driver");
    let pdb = find(&objects, "PodDisruptionBudget", "bucketgate");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn both_certificate_routes_produce_the_same_secret() {
    if !kubectl() {
        eprintln!("skipped: kubectl not found, so the kustomize overlays cannot be rendered");
        return;
    }
    let with_certs = rendered();
    let secret = find(&with_certs, "Secret", "bucketgate-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let keys: BTreeSet<&str> = secret["data"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["ca.crt", "tls.crt", "tls.key"]));

    let cert_manager = render(&root().join("overlays/cert-manager"));
    let certificate = find(&cert_manager, "Certificate", "bucketgate");
    assert_eq!(certificate["spec"]["secretName"], "bucketgate-tls");
    assert!(
        certificate["spec"]["dnsNames"].as_array().unwrap().contains(&Value::from("bucketgate.bucketgate-system.svc"))
    );
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        assert_eq!(
            find(&cert_manager, kind, "bucketgate")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "bucketgate-system/bucketgate"
        );
    }
}

/// The overlay where bucketgate makes its own certificates: it runs with `--manage-certs`
/// and the names the flags default to, may change only the Secret and the two webhook
/// configurations it keeps (no create, nothing else), and its pods never see the CA's key.
#[test]
fn self_managed_certificates_touch_their_secret_and_webhooks_alone() {
    use bucketgate::tls::rotation::{SECRET, SERVICE, WEBHOOK_CONFIGURATION};
    if !kubectl() {
        eprintln!("skipped: kubectl not found, so the kustomize overlays cannot be rendered");
        return;
    }
    let objects = render(&root().join("overlays/self-managed-certs"));
    let secret = find(&objects, "Secret", SECRET);
    assert!(secret["data"].is_null(), "shipped empty, so that applying again keeps what bucketgate wrote");
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        for hook in find(&objects, kind, WEBHOOK_CONFIGURATION)["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["service"]["name"], SERVICE);
            assert_eq!(hook["clientConfig"]["service"]["namespace"], "bucketgate-system");
            assert!(hook["clientConfig"]["caBundle"].is_null(), "bucketgate fills it");
        }
    }
    let deployment: Deployment = typed(find(&objects, "Deployment", "bucketgate"));
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert!(pod.containers[0].args.as_ref().unwrap().contains(&"--manage-certs".to_string()));
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "tls").unwrap().secret.unwrap();
    assert_eq!(volume.secret_name.as_deref(), Some(SECRET));
    assert_eq!(volume.optional, Some(true), "the pods start before the Secret holds anything");
    let projected: BTreeSet<String> = volume.items.unwrap().into_iter().map(|item| item.key).collect();
    assert_eq!(projected, BTreeSet::from(["ca.crt".into(), "tls.crt".into(), "tls.key".into()]));

    let rules = |kind: &str, name: &str| -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
        serde_json::from_value(find(&objects, kind, name)["rules"].clone()).unwrap()
    };
    let secrets = rules("Role", "bucketgate-certificates");
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].resources.as_deref(), Some(&["secrets".to_string()][..]));
    assert_eq!(secrets[0].resource_names.as_deref(), Some(&[SECRET.to_string()][..]));
    assert_eq!(secrets[0].verbs, ["get", "update"]);
    let webhooks = rules("ClusterRole", "bucketgate-webhook-ca");
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0].api_groups.as_deref(), Some(&["admissionregistration.k8s.io".to_string()][..]));
    assert_eq!(webhooks[0].resource_names.as_deref(), Some(&[WEBHOOK_CONFIGURATION.to_string()][..]));
    assert_eq!(webhooks[0].verbs, ["get", "update"]);
    for binding in [
        find(&objects, "RoleBinding", "bucketgate-certificates"),
        find(&objects, "ClusterRoleBinding", "bucketgate-webhook-ca"),
    ] {
        assert_eq!(binding["subjects"][0]["name"], "bucketgate");
        assert_eq!(binding["subjects"][0]["namespace"], "bucketgate-system");
    }
}

/// The alerts in manifests/monitoring query metrics under the names bucketgate exports
/// them: a renamed metric would leave its alert silent for ever rather than failing.
#[test]
fn alerts_query_metrics_that_bucketgate_exports() {
    let objects = if kubectl() {
        render(&root().join("monitoring"))
    } else {
        parse_stream(&std::fs::read_to_string(root().join("monitoring/prometheusrule.yaml")).unwrap())
    };
    let rules = find(&objects, "PrometheusRule", "bucketgate");
    if kubectl() {
        assert_eq!(rules["metadata"]["namespace"], "bucketgate-system");
    }
    // A family shows only once it has a series: one of each.
    use bucketgate::metrics::{AdmissionLabels, BackendLabels, BucketStateLabels, Metrics, ProvisionerLabel};
    let metrics = Metrics::default();
    let admission = AdmissionLabels { webhook: "mutate", kind: "Bucket", operation: "CREATE", result: "allowed" };
    metrics.observe(admission, std::time::Duration::from_micros(50));
    let backend = BackendLabels { provisioner: "p".into(), operation: "grant", result: "success" };
    metrics.observe_backend(backend, std::time::Duration::from_millis(5));
    metrics.reconciled("Bucket", "success");
    metrics.looked_up("BucketContent", "found");
    metrics.buckets_missing.get_or_create(&ProvisionerLabel { provisioner: "p".into() }).set(0);
    metrics.unrevoked_keys.get_or_create(&ProvisionerLabel { provisioner: "p".into() }).set(0);
    let _counting = metrics.bucket_states.follow(Box::new(|| {
        let labels = BucketStateLabels { provisioner: "p".into(), state: "stalled", reason: "Failed".into() };
        [(labels, 1)].into()
    }));
    // OpenMetrics names a family in its TYPE line: without _total, _bucket, _count or _sum.
    let families: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_string))
        .collect();
    let mut alerts = 0;
    for rule in rules["spec"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let (alert, expr) = (rule["alert"].as_str().unwrap(), rule["expr"].as_str().unwrap());
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("bucketgate_"))
            .collect();
        assert!(!names.is_empty(), "{alert} queries no bucketgate metric: {expr}");
        for name in names {
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains(*f)))
                .unwrap_or(name);
            assert!(
                families.contains(family),
                "{alert} queries {name}, which bucketgate does not export: {families:?}"
            );
        }
        alerts += 1;
    }
    assert_eq!(alerts, 18);
    // The reasons alerts select by are those the loop writes.
    let text = std::fs::read_to_string(root().join("monitoring/prometheusrule.yaml")).unwrap();
    for reason in [bucketgate::provision::plan::PROVISIONER_SECRET_MISSING, bucketgate::provision::plan::BUCKET_MISSING]
    {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")) || text.contains(&format!("reason!=\"{reason}\"")),
            "{reason}"
        );
    }
}

/// Argo CD's health of a Bucket (manifests/argocd/): the script run in Lua 5.1, as Argo CD's
/// gopher-lua runs it, on each status the provisioning loop writes.
#[test]
fn argo_cd_reads_the_health_of_a_bucket_from_the_status_the_loop_writes() {
    use bucketgate::api::{Bucket, BucketPhase};
    use bucketgate::provision::plan;

    let text = std::fs::read_to_string(root().join("argocd/argocd-cm-patch.yaml")).unwrap();
    let patch = parse_stream(&text).remove(0);
    let config: k8s_openapi::api::core::v1::ConfigMap = typed(&patch);
    assert_eq!(config.metadata.name.as_deref(), Some("argocd-cm"));
    let script = config.data.unwrap()["resource.customizations.health.cosi.io_Bucket"].clone();

    let health = |bucket: &Value| -> (String, String) {
        let lua = mlua::Lua::new();
        // A JSON null is Lua's nil in Argo CD's conversion, not a value of its own.
        let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
        let obj = mlua::LuaSerdeExt::to_value_with(&lua, bucket, options).unwrap();
        lua.globals().set("obj", obj).unwrap();
        let result: mlua::Table = lua.load(&script).eval().unwrap_or_else(|e| panic!("{e}\n{bucket}"));
        (result.get("status").unwrap(), result.get("message").unwrap())
    };
    let with = |bucket: &Bucket, status: &Value| -> Bucket {
        let mut shown = serde_json::to_value(bucket).unwrap();
        json_patch::merge(&mut shown, status);
        serde_json::from_value(shown).unwrap()
    };
    let show = |bucket: &Bucket| serde_json::to_value(bucket).unwrap();
    let created: Bucket = serde_json::from_value(serde_json::json!({
        "apiVersion": "cosi.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "photos", "namespace": "team-a", "uid": "u-1", "generation": 1},
        "spec": {"protocol": "s3", "bucketClassName": "ceph"}}))
    .unwrap();

    let waiting = ("Progressing".to_string(), "waiting for bucketgate to provision the bucket".to_string());
    assert_eq!(health(&show(&created)), waiting, "not looked at yet: no status");
    let defaulted =
        serde_json::json!({"status": serde_json::from_str::<Value>(bucketgate::crds::UNOBSERVED_STATUS).unwrap()});
    assert_eq!(
        health(&show(&with(&created, &defaulted))),
        waiting,
        "the CRD's default status, as the API server shows it"
    );

    let retrying = with(
        &created,
        &plan::not_ready(&created, BucketPhase::Pending, "Retrying", "backend: connection refused".into()),
    );
    assert_eq!(health(&show(&retrying)), ("Progressing".into(), "Retrying: backend: connection refused".into()));
    let early = with(
        &created,
        &plan::not_ready(&created, BucketPhase::Pending, "ContentNotFound", "BucketContent x does not exist".into()),
    );
    assert_eq!(health(&show(&early)).0, "Progressing", "its content may come with the same sync");
    let keyless = with(
        &created,
        &plan::not_ready(&created, BucketPhase::Pending, plan::PROVISIONER_SECRET_MISSING, "no Secret s".into()),
    );
    assert_eq!(
        health(&show(&keyless)),
        ("Progressing".into(), "ProvisionerSecretMissing: no Secret s".into()),
        "External Secrets may write it in a moment"
    );

    let failed = with(
        &retrying,
        &plan::not_ready(&retrying, BucketPhase::Failed, "Failed", "class ceph has no served provisioner".into()),
    );
    assert_eq!(health(&show(&failed)), ("Degraded".into(), "Failed: class ceph has no served provisioner".into()));

    let bound = with(&failed, &plan::bound_status(&failed, "bucket-u-1", plan::Key::BucketUser).unwrap());
    assert_eq!(health(&show(&bound)), ("Healthy".into(), "bound to bucket-u-1".into()));

    let mut changed = show(&bound);
    changed["metadata"]["generation"] = serde_json::json!(2);
    assert_eq!(health(&changed), ("Progressing".into(), "waiting for bucketgate to see generation 2".into()));

    let missing = with(
        &bound,
        &plan::not_ready(&bound, BucketPhase::Bound, plan::BUCKET_MISSING, "the store has no bucket".into()),
    );
    assert_eq!(health(&show(&missing)), ("Degraded".into(), "BucketMissing: the store has no bucket".into()));
    let revoked = with(&bound, &plan::revoked(&bound, "namespace team-a was taken off".into()));
    assert_eq!(health(&show(&revoked)).0, "Degraded");
}
