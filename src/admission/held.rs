//! How a request holds its objects, and the single pass that reads them for the rules.
//!
//! Read the general way, a request keeps its objects as JSON text: finding where each ends
//! takes a scan, and the rules then parse them into their types, a second pass over the
//! largest part of the body. The API server always sends `kind` before the objects, so
//! [`read`] can parse them straight into their types as it meets them. It reads only that
//! shape: a cosi.io kind named before the objects, objects that match their schema, every
//! field once. Anything else is a `None`, and `decode` reads the body the general way,
//! which is also what words the errors.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::lean::Lean;
use super::{Kind, Objects, REVIEW_API_VERSION, REVIEW_KIND, Request};
use crate::api::{Bucket, BucketClass, BucketContent};

#[derive(Debug)]
pub(super) enum Held {
    /// As the JSON text of each, parsed when a rule or a policy asks.
    Raw { object: Option<Box<RawValue>>, old: Option<Box<RawValue>> },
    /// Parsed for the rules while the body was read; the body is kept for the policies,
    /// which read the objects as JSON values.
    Read { typed: Typed, body: Box<str> },
}

#[derive(Debug)]
pub(super) enum Typed {
    Bucket(Box<Objects<Bucket>>),
    BucketClass(Box<Objects<BucketClass>>),
    BucketContent(Box<Objects<BucketContent>>),
}

/// The kinds whose objects a request can hold already parsed.
pub(super) trait Admitted: Sized + Clone {
    fn held(typed: &Typed) -> Option<&Objects<Self>>;
}

macro_rules! admitted {
    ($kind:ident) => {
        impl Admitted for $kind {
            fn held(typed: &Typed) -> Option<&Objects<Self>> {
                match typed {
                    Typed::$kind(objects) => Some(objects.as_ref()),
                    _ => None,
                }
            }
        }
    };
}

admitted!(Bucket);
admitted!(BucketClass);
admitted!(BucketContent);

impl Typed {
    fn empty(kind: Kind) -> Typed {
        match kind {
            Kind::Bucket => Typed::Bucket(Box::default()),
            Kind::BucketClass => Typed::BucketClass(Box::default()),
            Kind::BucketContent => Typed::BucketContent(Box::default()),
        }
    }

    /// Reads the next value of `map` into the new (or, with `old`, the old) object.
    fn read<'de, A: MapAccess<'de>>(&mut self, old: bool, map: &mut A) -> Result<(), A::Error> {
        fn into<'de, K, A: MapAccess<'de>>(objects: &mut Objects<K>, old: bool, map: &mut A) -> Result<(), A::Error>
        where
            Lean<K>: Deserialize<'de>,
        {
            let object = map.next_value::<Option<Lean<K>>>()?.map(|Lean(object)| object);
            *if old { &mut objects.old } else { &mut objects.new } = object;
            Ok(())
        }
        match self {
            Typed::Bucket(objects) => into(&mut **objects, old, map),
            Typed::BucketClass(objects) => into(&mut **objects, old, map),
            Typed::BucketContent(objects) => into(&mut **objects, old, map),
        }
    }

    /// The metadata of the new and the old object, each `None` where there is no object.
    pub(super) fn metas(&self) -> [Option<&ObjectMeta>; 2] {
        fn of<K: kube::Resource>(objects: &Objects<K>) -> [Option<&ObjectMeta>; 2] {
            [objects.new.as_ref().map(K::meta), objects.old.as_ref().map(K::meta)]
        }
        match self {
            Typed::Bucket(o) => of(o),
            Typed::BucketClass(o) => of(o),
            Typed::BucketContent(o) => of(o),
        }
    }
}

/// The request in `body`, read in one pass, or `None` when the body is not of the shape
/// this reads (see the module's comment).
pub(super) fn read(body: &str) -> Option<Request> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Review {
        api_version: String,
        kind: String,
        request: OnePass,
    }
    let review: Review = serde_json::from_str(body).ok()?;
    let OnePass(mut request) = review.request;
    if review.api_version != REVIEW_API_VERSION || review.kind != REVIEW_KIND || request.uid.is_empty() {
        return None;
    }
    if let Held::Read { body: kept, .. } = &mut request.objects {
        *kept = body.into();
    }
    Some(request)
}

struct OnePass(Request);

#[derive(serde::Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    SubResource,
    Name,
    Namespace,
    Operation,
    UserInfo,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for OnePass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OnePassVisitor)
    }
}

struct OnePassVisitor;

impl<'de> Visitor<'de> for OnePassVisitor {
    type Value = OnePass;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an admission request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnePass, A::Error> {
        let (mut uid, mut gvk, mut operation, mut user_info) = (None, None, None, None);
        let (mut sub_resource, mut name, mut namespace, mut dry_run) = (None, None, None, None);
        let mut typed: Option<Typed> = None;
        let mut seen = 0u16;
        while let Some(field) = map.next_key::<Field>()? {
            if !matches!(field, Field::Other) {
                let bit = 1 << field as u16;
                if seen & bit != 0 {
                    return Err(de::Error::custom("a field appears twice"));
                }
                seen |= bit;
            }
            match field {
                Field::Uid => uid = Some(map.next_value::<String>()?),
                Field::Kind => {
                    let kind: kube::core::GroupVersionKind = map.next_value()?;
                    let ours = Kind::of_gvk(&kind).ok_or_else(|| de::Error::custom("not a cosi.io kind"))?;
                    typed = Some(Typed::empty(ours));
                    gvk = Some(kind);
                }
                Field::SubResource => sub_resource = Some(map.next_value::<Option<String>>()?),
                Field::Name => name = Some(map.next_value::<String>()?),
                Field::Namespace => namespace = Some(map.next_value::<Option<String>>()?),
                Field::Operation => operation = Some(map.next_value()?),
                Field::UserInfo => user_info = Some(map.next_value()?),
                Field::Object | Field::OldObject => match typed.as_mut() {
                    Some(typed) => typed.read(matches!(field, Field::OldObject), &mut map)?,
                    None => return Err(de::Error::custom("an object before the kind")),
                },
                Field::DryRun => dry_run = Some(map.next_value::<bool>()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = || de::Error::custom("a required field is missing");
        let typed = typed.ok_or_else(missing)?;
        Ok(OnePass(Request {
            uid: uid.ok_or_else(missing)?,
            kind: gvk.ok_or_else(missing)?,
            sub_resource: sub_resource.flatten(),
            name: name.unwrap_or_default(),
            namespace: namespace.flatten(),
            operation: operation.ok_or_else(missing)?,
            user_info: user_info.ok_or_else(missing)?,
            dry_run: dry_run.unwrap_or_default(),
            objects: Held::Read { typed, body: Box::default() },
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::admission::{Context, ReviewError, Webhook, decode_generally, encode, review};
    use crate::catalog::Catalog;
    use crate::config::Config;
    use crate::policy::PolicySet;

    fn fixtures() -> PathBuf {
        std::env::var_os("BUCKETGATE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
    }

    /// The captured requests' files, in order.
    fn captured() -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(fixtures().join("admission-reviews"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(files.len() >= 30, "fixtures missing: {files:?}");
        files
    }

    /// The fixture catalog, and the configuration that serves its classes' provisioner.
    fn catalog_and_config() -> (Catalog, Config) {
        let catalog = Catalog::load_dir(&fixtures().join("catalog")).unwrap();
        (catalog, Config::default().with_provisioners(["rook-ceph.ceph.rook.io/bucket".to_string()]))
    }

    /// The response review `webhook` writes for `req`, as text.
    fn answer(webhook: Webhook, req: &Request, ctx: &Context) -> String {
        String::from_utf8(encode(&review(webhook, req, ctx).response).unwrap()).unwrap()
    }

    /// Every captured request takes the one pass, and gets the answers, the policy
    /// document's objects and the name that the general reading gives.
    #[test]
    fn captured_requests_read_in_one_pass_as_they_read_generally() {
        let ((catalog, config), policies) = (catalog_and_config(), PolicySet::default());
        let ctx = Context { catalog: &catalog, config: &config, policies: &policies };
        for file in captured() {
            let body = std::fs::read_to_string(&file).unwrap();
            let one = read(&body).unwrap_or_else(|| panic!("{} did not take the one pass", file.display()));
            let general = decode_generally(&body).unwrap();
            for webhook in [Webhook::Mutate, Webhook::Validate] {
                assert_eq!(
                    answer(webhook, &one, &ctx),
                    answer(webhook, &general, &ctx),
                    "{} {webhook:?}",
                    file.display()
                );
            }
            assert_eq!(one.json_objects(true).unwrap(), general.json_objects(true).unwrap(), "{}", file.display());
            assert_eq!(one.generate_name(), general.generate_name(), "{}", file.display());
            assert_eq!(one.object_labels(), general.object_labels(), "{}", file.display());
            let fields = |r: &Request| {
                format!(
                    "{:?}",
                    (&r.uid, &r.kind, &r.name, &r.namespace, &r.sub_resource, &r.operation, &r.user_info, r.dry_run)
                )
            };
            assert_eq!(fields(&one), fields(&general), "{}", file.display());
        }
    }

    /// Every JSON pointer in `value`, the root's (`""`) included.
    fn pointers(value: &serde_json::Value, at: String, all: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(members) => {
                for (key, member) in members {
                    pointers(member, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), all);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    pointers(item, format!("{at}/{i}"), all);
                }
            }
            _ => {}
        }
        all.push(at);
    }

    /// Each captured request with one value, anywhere in it, changed to each JSON type, and
    /// cut short at every 23rd byte: nothing panics; what the one pass reads, the general
    /// reading reads too, with the same answers and policy objects (a one pass that read a
    /// body differently would judge another object than the one the policies see); what the
    /// one pass leaves, the general reading reads or refuses, saying where the JSON is wrong.
    #[test]
    fn changed_and_cut_requests_read_alike_both_ways_or_are_refused() {
        use serde_json::{Value, json};
        let ((catalog, config), policies) = (catalog_and_config(), PolicySet::default());
        let ctx = Context { catalog: &catalog, config: &config, policies: &policies };
        let (mut one_pass, mut general_only, mut refused) = (0, 0, 0);
        for path in captured() {
            let review_json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let mut bodies = Vec::new();
            let mut all = Vec::new();
            pointers(&review_json, String::new(), &mut all);
            // Inside a managedFields entry, one change stands for all: both ways skip the member.
            for pointer in all.iter().filter(|p| !p.contains("/managedFields/0/")) {
                for replacement in [json!(null), json!(7), json!("x"), json!([]), json!({})] {
                    let mut changed = review_json.clone();
                    *changed.pointer_mut(pointer).unwrap() = replacement;
                    bodies.push(changed.to_string());
                }
            }
            let whole = review_json.to_string();
            bodies.extend(
                (0..whole.len())
                    .step_by(23)
                    .filter(|&cut| whole.is_char_boundary(cut))
                    .map(|cut| whole[..cut].to_string()),
            );
            for body in &bodies {
                let context = || format!("{}: {body}", path.display());
                match (read(body), decode_generally(body)) {
                    (Some(one), Ok(general)) => {
                        one_pass += 1;
                        for webhook in [Webhook::Mutate, Webhook::Validate] {
                            assert_eq!(answer(webhook, &one, &ctx), answer(webhook, &general, &ctx), "{}", context());
                        }
                        let objects = |r: &Request| r.json_objects(true).map_err(|e| e.to_string());
                        assert_eq!(objects(&one), objects(&general), "{}", context());
                    }
                    (Some(_), Err(error)) => {
                        panic!("the one pass read what the general reading refuses ({error}): {}", context())
                    }
                    (None, Ok(general)) => {
                        general_only += 1;
                        for webhook in [Webhook::Mutate, Webhook::Validate] {
                            answer(webhook, &general, &ctx);
                        }
                    }
                    (None, Err(error)) => {
                        refused += 1;
                        // Malformed JSON and values of the wrong type are told with where they are.
                        if let ReviewError::Json(message) = &error {
                            assert!(message.contains(" at line 1 column "), "{message}: {}", context());
                        }
                    }
                }
            }
        }
        // Each way taken often enough for the comparison to mean something.
        assert!(one_pass > 1000 && general_only > 1000 && refused > 1000, "{one_pass} {general_only} {refused}");
    }

    #[test]
    fn other_shapes_are_left_to_the_general_reading() {
        let review = |request: &str| {
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{request}}}}}"#)
        };
        let kind = r#""kind":{"group":"cosi.io","version":"v1alpha1","kind":"Bucket"}"#;
        let rest = r#""uid":"u","operation":"CREATE","userInfo":{"username":"a"}"#;
        let object = r#""object":{"metadata":{"name":"b"},"spec":{"protocol":"s3"}}"#;
        assert!(read(&review(&format!("{kind},{rest},{object}"))).is_some());
        // What the general reading makes of each: a request, or the error it words.
        for (why, request, expected) in [
            ("the object before the kind", format!("{object},{kind},{rest}"), Ok(())),
            ("another kind", format!("{},{rest},{object}", kind.replace("Bucket", "Pod")), Ok(())),
            // Read; the rules then refuse it, naming the field.
            ("an object off its schema", format!("{kind},{rest},{}", object.replace(r#""s3""#, r#""ftp""#)), Ok(())),
            ("a field twice", format!("{kind},{rest},{object},{object}"), Err("duplicate field `object`")),
            (
                "no userInfo",
                format!("{kind},{object},{}", rest.replace(r#","userInfo":{"username":"a"}"#, "")),
                Err("missing field `userInfo`"),
            ),
            (
                "an empty uid",
                format!("{kind},{object},{}", rest.replace(r#""uid":"u""#, r#""uid":"""#)),
                Err("empty uid"),
            ),
        ] {
            let body = review(&request);
            assert!(read(&body).is_none(), "{why}: took the one pass");
            match (crate::admission::decode(body.as_bytes()), expected) {
                (Ok(request), Ok(())) => assert!(matches!(request.objects, Held::Raw { .. }), "{why}"),
                (Err(error), Err(words)) => assert!(error.to_string().contains(words), "{why}: {error}"),
                (got, expected) => panic!("{why}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
