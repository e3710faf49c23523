//! manifests/ as `kubectl apply -k` sends it: rendered with `kubectl kustomize` (on the
//! machine image; the base files are read directly where it is missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

pub fn kubectl() -> bool {
    Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success())
}

pub fn parse_stream(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap().into_iter().filter(|d| !d.is_null()).collect()
}

/// The objects `kubectl apply -k manifests/` would send, with a generated certificate.
pub fn rendered() -> Vec<Value> {
    if !kubectl() {
        eprintln!("kubectl not found: checking manifests/base file by file instead of the kustomize rendering");
        return base_files();
    }
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(&root(), &scratch.path().join("manifests"));
    bucketgate::tls::generate(&["bucketgate.bucketgate-system.svc".into()], &[], 1)
        .unwrap()
        .write(&scratch.path().join("manifests/certs"))
        .unwrap();
    render(&scratch.path().join("manifests"))
}

/// What manifests/base/kustomization.yaml holds, without kustomize: its files, the CRDs it
/// pulls in from ../crds, and its `namespace:` set on the namespaced objects.
fn base_files() -> Vec<Value> {
    const CLUSTER_SCOPED: [&str; 5] = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    let mut objects = Vec::new();
    for dir in ["base", "crds"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "kustomization.yaml" {
                objects.extend(parse_stream(&std::fs::read_to_string(path).unwrap()));
            }
        }
    }
    for object in &mut objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !CLUSTER_SCOPED.contains(&kind) && kind != "CustomResourceDefinition" {
            object["metadata"]["namespace"] = Value::from("bucketgate-system");
        }
    }
    objects
}

pub fn render(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl").arg("kustomize").arg(dir).output().unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut objects = parse_stream(&String::from_utf8(output.stdout).unwrap());
    // kustomize wraps generated base64 over lines; the API server's decoder skips the
    // newlines, k8s-openapi's does not.
    for object in &mut objects {
        let secret = object["kind"] == "Secret";
        if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut).filter(|_| secret) {
            for value in data.values_mut() {
                *value = Value::from(value.as_str().unwrap_or_default().replace('\n', ""));
            }
        }
        for hook in object.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(bundle) = hook.pointer_mut("/clientConfig/caBundle") {
                *bundle = Value::from(bundle.as_str().unwrap_or_default().replace('\n', ""));
            }
        }
    }
    objects
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
