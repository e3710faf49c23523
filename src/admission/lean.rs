//! How the built-in rules read a request's objects: as their kube types, but with
//! `metadata.managedFields` and `metadata.annotations` skipped, not built; of the
//! annotations, only `cosi.io/force-release` is kept, which a rule reads.
//!
//! No rule reads either, and they were most of an object's parse: each managedFields entry
//! becomes a tree of JSON values, and kubectl's last-applied-configuration annotation is
//! the whole object again as an escaped string. A skipped member is only scanned. The API
//! server checks both itself, and policies still see them: they read the request's JSON.
//!
//! The mirrors below use serde's remote derive, so the fields they list must match the
//! types they mirror; the compiler checks that (and, for BucketClass, a struct literal).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

use crate::api::{
    AccessMode, Bucket, BucketClass, BucketClassSpec, BucketContent, BucketContentSpec, BucketContentStatus,
    BucketSpec, BucketStatus, FORCE_RELEASE_ANNOTATION, Protocol, ReleasePolicy,
};

/// An object of kind `K`, read for the rules.
pub struct Lean<K>(pub K);

/// A mirror of `ObjectMeta` named `$name`, reading `annotations` as `$annotations` says.
macro_rules! meta {
    ($name:ident, $annotations:meta) => {
        #[derive(Deserialize)]
        #[serde(remote = "ObjectMeta", rename_all = "camelCase")]
        struct $name {
            #[$annotations]
            annotations: Option<BTreeMap<String, String>>,
            creation_timestamp: Option<Time>,
            deletion_grace_period_seconds: Option<i64>,
            deletion_timestamp: Option<Time>,
            finalizers: Option<Vec<String>>,
            generate_name: Option<String>,
            generation: Option<i64>,
            labels: Option<BTreeMap<String, String>>,
            #[serde(skip)]
            managed_fields: Option<Vec<ManagedFieldsEntry>>,
            name: Option<String>,
            namespace: Option<String>,
            owner_references: Option<Vec<OwnerReference>>,
            resource_version: Option<String>,
            self_link: Option<String>,
            uid: Option<String>,
        }
    };
}

// Only a Bucket's rules read an annotation; read on the others too, it cost a BucketClass
// UPDATE's decision 5% (Criterion), for nothing.
meta!(Meta, serde(skip));
meta!(BucketMeta, serde(default, deserialize_with = "force_release_only"));

/// Of an object's annotations, [`FORCE_RELEASE_ANNOTATION`] alone; the others are scanned,
/// not built, and anything but a map of strings is passed over unjudged, as before.
fn force_release_only<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// Whether a key is the one kept, compared where it lies rather than copied.
    struct Kept(bool);
    impl<'de> Deserialize<'de> for Kept {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kept, D::Error> {
            struct Key;
            impl Visitor<'_> for Key {
                type Value = Kept;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an annotation's name")
                }
                fn visit_str<E>(self, key: &str) -> Result<Kept, E> {
                    Ok(Kept(key == FORCE_RELEASE_ANNOTATION))
                }
            }
            deserializer.deserialize_str(Key)
        }
    }

    struct Annotations;
    impl<'de> Visitor<'de> for Annotations {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("annotations")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = None;
            while let Some(Kept(wanted)) = map.next_key()? {
                if wanted {
                    // A value that is not a string is not "true": passed over.
                    if let serde_json::Value::String(value) = map.next_value()? {
                        kept.get_or_insert_with(BTreeMap::new).insert(FORCE_RELEASE_ANNOTATION.to_string(), value);
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(kept)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Annotations)
}

#[derive(Deserialize)]
#[serde(remote = "Bucket")]
struct BucketDef {
    #[serde(with = "BucketMeta")]
    metadata: ObjectMeta,
    spec: BucketSpec,
    status: Option<BucketStatus>,
}

/// A BucketClass's fields are at the top level. kube's type reads them through
/// `#[serde(flatten)]`, for which serde first copies every member but `metadata` into a
/// buffer of its own and then reads the fields from that: a seventh of the instructions of
/// a BucketClass UPDATE's decision (two objects). Here they are read where they are; the
/// struct literal below fails to compile when the spec gains a field this does not read,
/// and a field read here but not used there is dead code, which the lints refuse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatBucketClass {
    #[serde(with = "Meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    provisioner: Option<String>,
    #[serde(default)]
    is_default_bucket_class: bool,
    supported_protocols: Vec<Protocol>,
    #[serde(default)]
    access_mode: Option<AccessMode>,
    #[serde(default)]
    release_policy: Option<ReleasePolicy>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Lean<BucketClass> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let flat = FlatBucketClass::deserialize(deserializer)?;
        let spec = BucketClassSpec {
            provisioner: flat.provisioner,
            is_default_bucket_class: flat.is_default_bucket_class,
            supported_protocols: flat.supported_protocols,
            access_mode: flat.access_mode,
            release_policy: flat.release_policy,
            parameters: flat.parameters,
        };
        Ok(Lean(BucketClass { metadata: flat.metadata, spec }))
    }
}

#[derive(Deserialize)]
#[serde(remote = "BucketContent")]
struct BucketContentDef {
    #[serde(with = "Meta")]
    metadata: ObjectMeta,
    spec: BucketContentSpec,
    status: Option<BucketContentStatus>,
}

macro_rules! lean {
    ($kind:ty, $def:ty) => {
        impl<'de> Deserialize<'de> for Lean<$kind> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <$def>::deserialize(deserializer).map(Lean)
            }
        }
    };
}

lean!(Bucket, BucketDef);
lean!(BucketContent, BucketContentDef);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    /// What the kube type reads, less the two skipped members.
    fn same_as_kube<K: DeserializeOwned + serde::Serialize>(object: Value)
    where
        Lean<K>: DeserializeOwned,
    {
        let Lean(lean) = serde_json::from_value::<Lean<K>>(object.clone()).unwrap();
        let mut expected = object;
        let metadata = expected["metadata"].as_object_mut().unwrap();
        metadata.remove("managedFields");
        metadata.remove("annotations");
        let kube = serde_json::from_value::<K>(expected.clone()).unwrap();
        // Compared as JSON: the root types have no PartialEq. Every member made it through.
        assert_eq!(serde_json::to_value(&lean).unwrap(), serde_json::to_value(&kube).unwrap());
        assert_eq!(serde_json::to_value(&lean).unwrap(), expected);
    }

    fn metadata() -> Value {
        json!({
            "name": "photos", "namespace": "team-a", "uid": "u-1", "generateName": "photos-",
            "resourceVersion": "7", "generation": 2, "creationTimestamp": "2026-11-21T10:00:00Z",
            "deletionTimestamp": "2026-11-21T11:00:00Z", "deletionGracePeriodSeconds": 0,
            "labels": {"app": "web"}, "finalizers": ["cosi.io/finalizer"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-2"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Bucket\"}"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:protocol": {}}}}]
        })
    }

    #[test]
    fn every_kind_reads_as_its_kube_type_without_the_skipped_members() {
        same_as_kube::<Bucket>(json!({"apiVersion": "cosi.io/v1alpha1", "kind": "Bucket", "metadata": metadata(),
            "spec": {"protocol": "s3", "bucketClassName": "c"}, "status": {"phase": "Bound"}}));
        same_as_kube::<BucketClass>(
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": metadata(),
            "provisioner": "p", "isDefaultBucketClass": true, "supportedProtocols": ["s3"], "parameters": {"a": "b"},
            "accessMode": "rw", "releasePolicy": "Retain"}),
        );
        // Every field of the spec may be left out but the protocols, as kube's type has it.
        let minimal = json!({"metadata": {"name": "c"}, "supportedProtocols": ["s3"]});
        let Lean(lean) = serde_json::from_value::<Lean<BucketClass>>(minimal.clone()).unwrap();
        let kube = serde_json::from_value::<BucketClass>(minimal).unwrap();
        assert_eq!((lean.metadata, lean.spec), (kube.metadata, kube.spec));
        assert!(serde_json::from_value::<Lean<BucketClass>>(json!({"metadata": metadata()})).is_err());
        assert!(serde_json::from_value::<BucketClass>(json!({"metadata": metadata()})).is_err());
        same_as_kube::<BucketContent>(
            json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent", "metadata": metadata(),
            "spec": {"provisioner": "p", "protocol": {"type": "s3"}}, "status": {"phase": "Bound"}}),
        );
    }

    #[test]
    fn skipped_members_are_not_judged_and_the_rest_still_is() {
        let mut object = json!({"metadata": metadata(), "spec": {}});
        object["metadata"]["managedFields"] = json!("not a list");
        object["metadata"]["annotations"] = json!(7);
        assert!(serde_json::from_value::<Lean<Bucket>>(object.clone()).is_ok());
        object["metadata"]["labels"] = json!(["not", "a", "map"]);
        assert!(serde_json::from_value::<Lean<Bucket>>(object).is_err());
    }

    #[test]
    fn of_the_annotations_only_force_release_is_kept() {
        let mut object = json!({"metadata": metadata(), "spec": {}});
        object["metadata"]["annotations"]["cosi.io/force-release"] = json!("true");
        let Lean(bucket) = serde_json::from_value::<Lean<Bucket>>(object.clone()).unwrap();
        let kept = BTreeMap::from([("cosi.io/force-release".to_string(), "true".to_string())]);
        assert_eq!(bucket.metadata.annotations, Some(kept));
        assert!(crate::api::force_release_asked(&bucket));
        // Read from bytes as the webhook reads a review, with an escaped name among them.
        object["metadata"]["annotations"]["a\"quoted\"name"] = json!("x");
        let bytes = serde_json::to_vec(&object).unwrap();
        let Lean(bucket) = serde_json::from_slice::<Lean<Bucket>>(&bytes).unwrap();
        assert!(crate::api::force_release_asked(&bucket));
        object["metadata"]["annotations"]["cosi.io/force-release"] = json!(true);
        let Lean(bucket) = serde_json::from_value::<Lean<Bucket>>(object).unwrap();
        assert_eq!(bucket.metadata.annotations, None, "not a string: passed over");
    }
}
