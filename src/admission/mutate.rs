//! Mutation: default class and protocol, the provisioner label and the finalizer.

use kube::Resource;

use super::patch::{add, ensure_finalizer, ensure_label};
use super::{Kind, Operation, Request, Verdict, objects};
use crate::api::{Bucket, BucketContent, FINALIZER, PROVISIONER_LABEL, Protocol};
use crate::catalog::{Catalog, Recheck};
use crate::naming::label_value;

pub fn mutate(kind: Kind, req: &Request, catalog: &Catalog) -> Verdict {
    // The API server ignores metadata and spec changes sent through /status, and DELETE
    // has no object to patch: both pass untouched.
    if req.sub_resource.is_some() || !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::default();
    }
    let create = req.operation == Operation::Create;
    let mut verdict = Verdict::default();
    match kind {
        Kind::Bucket => match objects::<Bucket>(req) {
            Ok(objects) => {
                if let Some(bucket) = &objects.new {
                    mutate_bucket(create, bucket, catalog, &mut verdict);
                }
            }
            Err(message) => verdict.deny(message),
        },
        Kind::BucketContent => match objects::<BucketContent>(req) {
            Ok(objects) => {
                if let Some(content) = &objects.new {
                    mutate_content(content, &mut verdict);
                }
            }
            Err(message) => verdict.deny(message),
        },
        // Nothing to default on a class; its rules are all validation.
        Kind::BucketClass => {}
    }
    verdict
}

fn mutate_bucket(create: bool, bucket: &Bucket, catalog: &Catalog, verdict: &mut Verdict) {
    let meta = bucket.meta();
    // Never re-add the finalizer while the provisioner is releasing the Bucket.
    if meta.deletion_timestamp.is_some() {
        return;
    }
    let spec = &bucket.spec;
    let mut provisioner = None;
    if let Some(content_name) = &spec.bucket_content_name {
        if let Some(content) = catalog.content(content_name) {
            if create
                && spec.protocol.is_none()
                && let Some(protocol) = content.spec.protocol.protocol_type
            {
                verdict.patch.push(add(&["spec", "protocol"], protocol.as_str().into()));
            }
            provisioner = Some(content.spec.provisioner().to_string());
        } else if create {
            // Refused by the validating webhook, with its message, unless the catalog is
            // only behind: then the content's protocol and provisioner belong here. (Not on
            // updates: a Bucket outlives its content's deletion, and each of its updates
            // would ask the API server again.)
            verdict.recheck(Recheck::BucketContent(content_name.clone()));
        }
    } else {
        let class_name = match &spec.bucket_class_name {
            Some(name) => Some(name.clone()),
            None if create => match default_class(spec.protocol, catalog) {
                Ok(name) => {
                    verdict.patch.push(add(&["spec", "bucketClassName"], name.clone().into()));
                    Some(name)
                }
                Err(message) => {
                    // No default, or several: the classes may have changed since the watch
                    // last said (a default class applied with the Bucket, or switched).
                    if spec.protocol.is_some() {
                        verdict.recheck(Recheck::BucketClasses);
                    }
                    verdict.deny(message);
                    return;
                }
            },
            None => None,
        };
        let class = class_name.as_deref().and_then(|name| catalog.class(name));
        if let (None, Some(name), true) = (&class, class_name, create) {
            verdict.recheck(Recheck::BucketClass(name));
        }
        if let Some(class) = class {
            if create
                && spec.protocol.is_none()
                && let [only] = class.spec.supported_protocols.as_slice()
            {
                verdict.patch.push(add(&["spec", "protocol"], only.as_str().into()));
            }
            provisioner = Some(class.spec.provisioner().to_string());
        }
    }
    if let Some(provisioner) = provisioner.filter(|p| !p.is_empty()) {
        verdict.patch.extend(ensure_label(meta, PROVISIONER_LABEL, &label_value(&provisioner)));
    }
    verdict.patch.extend(ensure_finalizer(meta, FINALIZER));
}

fn mutate_content(content: &BucketContent, verdict: &mut Verdict) {
    let meta = content.meta();
    if meta.deletion_timestamp.is_some() {
        return;
    }
    let provisioner = content.spec.provisioner();
    if !provisioner.is_empty() {
        verdict.patch.extend(ensure_label(meta, PROVISIONER_LABEL, &label_value(provisioner)));
    }
    verdict.patch.extend(ensure_finalizer(meta, FINALIZER));
}

/// The one default class for `protocol`, or a message that says why there is none.
pub fn default_class(protocol: Option<Protocol>, catalog: &Catalog) -> Result<String, String> {
    let Some(protocol) = protocol else {
        return Err("spec.protocol is not set, so no default BucketClass can be chosen: set spec.protocol \
                    to one of s3, gcs, azureBlob, or name a class in spec.bucketClassName"
            .into());
    };
    let supports = |c: &crate::api::BucketClass| c.spec.supported_protocols.contains(&protocol);
    // The defaults first: normally one, while all classes may support the protocol.
    let defaults: Vec<String> = catalog.default_classes().iter().filter(|c| supports(c)).map(|c| names(c)).collect();
    match defaults.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            let supporting = catalog.classes_where(supports);
            if supporting.is_empty() {
                return Err(format!(
                    "no BucketClass supports protocol {protocol}, so none can be the default: ask a cluster admin to create one"
                ));
            }
            Err(format!(
                "there is no default BucketClass for protocol {protocol}; classes that support {protocol}: {}. \
                 Set spec.bucketClassName to one of them, or ask a cluster admin to mark one isDefaultBucketClass: true",
                supporting.iter().map(|c| names(c)).collect::<Vec<_>>().join(", ")
            ))
        }
        several => Err(format!(
            "several BucketClasses are the default for protocol {protocol} ({}): set spec.bucketClassName to choose \
             one, and ask a cluster admin to leave only one default",
            several.join(", ")
        )),
    }
}

fn names(class: &crate::api::BucketClass) -> String {
    class.meta().name.clone().unwrap_or_default()
}
