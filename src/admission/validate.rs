//! Validation: refuse, with a message that says how to fix it, what would otherwise fail
//! silently later. One function per kind; each sees the typed new and old objects.
//!
//! On UPDATE the create-time rules run only when the fields they judge changed
//! (ratcheting, as the API server does for CRD schemas), so an object that predates a rule
//! can still have its labels edited or its finalizer removed.

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};

use super::{Kind, Objects, Operation, Request, Verdict, objects};
use crate::api::{
    Bucket, BucketClass, BucketContent, BucketContentPhase, BucketSpec, FINALIZER, FORCE_RELEASE_ANNOTATION, Protocol,
    ReleasePolicy,
};
use crate::catalog::{Catalog, RELEASE_VERB, Recheck};
use crate::config::Config;
use crate::driver::BucketOptions;
use crate::driver::options::{BUCKET_PARAMETERS, KEY_MAX_AGE_DAYS, KEY_PARAMETERS, KeyRotation};
use crate::naming::{
    DRIVER_PARAMETERS, SECRET_NAME_PARAMETER, check_bucket_prefix, check_dns1123_label, check_dns1123_subdomain,
    check_secret_parameters, closest, provisioner_secret, secret_chosen_by_bucket,
};

pub fn validate(kind: Kind, req: &Request, catalog: &Catalog, config: &Config) -> Verdict {
    let mut verdict = Verdict::default();
    // Status is written by the provisioning loop; the API server applies nothing else
    // from a /status request, so there is nothing here to judge.
    if req.sub_resource.is_some() {
        return verdict;
    }
    let ctx = Context { req, catalog, config };
    let result = match kind {
        Kind::Bucket => objects::<Bucket>(req).map(|o| ctx.bucket(&o, &mut verdict)),
        Kind::BucketClass => objects::<BucketClass>(req).map(|o| ctx.class(&o, &mut verdict)),
        Kind::BucketContent => objects::<BucketContent>(req).map(|o| ctx.content(&o, &mut verdict)),
    };
    if let Err(message) = result {
        // A DELETE must never be blocked by an old object that no longer parses.
        if req.operation == Operation::Delete {
            verdict.warn(message);
        } else {
            verdict.deny(message);
        }
    }
    verdict
}

struct Context<'a> {
    req: &'a Request,
    catalog: &'a Catalog,
    config: &'a Config,
}

impl Context<'_> {
    fn bucket(&self, objects: &Objects<Bucket>, verdict: &mut Verdict) {
        match (self.req.operation.clone(), objects.new.as_ref(), objects.old.as_ref()) {
            (Operation::Create, Some(new), _) => {
                self.bucket_spec(&new.spec, verdict);
                self.released_by_hand(None, new, verdict);
            }
            (Operation::Update, Some(new), Some(old)) => {
                immutable_bucket_spec(&old.spec, &new.spec, verdict);
                // Set fields cannot change, so a different spec means a field was newly
                // set: judge the result as a create would.
                if verdict.allowed() && new.spec != old.spec {
                    self.bucket_spec(&new.spec, verdict);
                }
                self.released_by_hand(Some(old), new, verdict);
            }
            (Operation::Delete, _, Some(old)) => self.bucket_delete_advice(old, verdict),
            _ => {}
        }
    }

    fn bucket_spec(&self, spec: &BucketSpec, verdict: &mut Verdict) {
        let Some(protocol) = spec.protocol else {
            verdict.deny("spec.protocol is required: set it to one of s3, gcs, azureBlob");
            return;
        };
        if let Some(secret) = &spec.secret_name
            && let Err(problem) = check_dns1123_subdomain(secret)
        {
            verdict.deny(format!(
                "spec.secretName {secret:?} {problem}: use a valid Secret name such as \"{}\"",
                suggest_name(secret)
            ));
        }
        match &spec.bucket_content_name {
            Some(content) => self.bucket_binding(spec, protocol, content, verdict),
            None => self.bucket_greenfield(spec, protocol, verdict),
        }
        self.bucket_provisioner_secret(spec, verdict);
    }

    /// The provisioner Secret a Bucket's class (or the content it binds) names for it, where
    /// this deployment's loop would read it (another controller's Buckets are its own
    /// business). Refused: one the Bucket's name would choose among the Secrets of a
    /// namespace not its own ([`secret_chosen_by_bucket`]; a class or content made before
    /// that was refused); and one that is the Secret the Bucket's own credentials would go
    /// into (the KEP's per-Bucket provisioner Secret, `${bucket.name}` in
    /// `${bucket.namespace}`, with no `spec.secretName`), which the loop never writes over:
    /// the Bucket would wait for ever.
    fn bucket_provisioner_secret(&self, spec: &BucketSpec, verdict: &mut Verdict) {
        let content = spec.bucket_content_name.as_deref().and_then(|name| self.catalog.content(name));
        let class = spec.bucket_class_name.as_deref().and_then(|name| self.catalog.class(name));
        let (provisioner, parameters) = match (&content, &class) {
            (Some(content), _) => (content.spec.provisioner(), &content.spec.parameters),
            (None, Some(class)) if spec.bucket_content_name.is_none() => {
                (class.spec.provisioner(), &class.spec.parameters)
            }
            _ => return,
        };
        // Most classes name no Secret (the provisioner's key from its environment): nothing
        // more to judge, nor to allocate, on every Bucket's admission.
        if !parameters.contains_key(SECRET_NAME_PARAMETER) || !self.config.has_driver(provisioner) {
            return;
        }
        let named_by = || match &spec.bucket_content_name {
            Some(content) => format!("BucketContent {content:?}"),
            None => format!("BucketClass {:?}", spec.bucket_class_name.as_deref().unwrap_or_default()),
        };
        // A class or content made before that rule: no new Bucket chooses by its name.
        if let Some(problem) = secret_chosen_by_bucket(parameters) {
            verdict.deny(format!("{}: {problem}", named_by()));
            return;
        }
        let owner = (self.req.namespace.clone().unwrap_or_default(), self.req.name.clone());
        let Some(provisioners) = provisioner_secret(parameters, &owner) else { return };
        let own = spec.secret_name.as_deref().unwrap_or(&owner.1);
        if provisioners == (owner.0.clone(), own.to_string()) {
            verdict.deny(format!(
                "the Bucket's credentials would be written into Secret {own:?}, the provisioner Secret that \
                 {} names for it ({SECRET_NAME_PARAMETER}), which bucketgate never writes over: set \
                 spec.secretName to another name, such as \"{}\"",
                named_by(),
                suggest_name(&format!("{own}-credentials"))
            ));
        }
    }

    /// A Bucket that binds to an existing BucketContent (sharing and brownfield): the
    /// namespace must be bindable by name and uid. This is the tenancy boundary.
    fn bucket_binding(&self, spec: &BucketSpec, protocol: Protocol, content_name: &str, verdict: &mut Verdict) {
        let Some(content) = self.catalog.content(content_name) else {
            verdict.recheck(Recheck::BucketContent(content_name.to_string()));
            verdict.deny(format!(
                "spec.bucketContentName {content_name:?} names no BucketContent: check the name, or ask the \
                 bucket's owner to create the BucketContent first"
            ));
            return;
        };
        if let Some(closed) = content.closed_to_binding() {
            verdict.deny(closed.message(content_name));
            return;
        }
        let namespace = self.req.namespace.clone().unwrap_or_default();
        let allowed: Vec<_> = content.spec.bindable_namespaces.iter().filter(|b| b.name == namespace).collect();
        if allowed.is_empty() {
            // The owner may have just added the namespace, and the watch not brought it yet.
            verdict.recheck(Recheck::BucketContent(content_name.to_string()));
            let listed: Vec<&str> = content.spec.bindable_namespaces.iter().map(|b| b.name.as_str()).collect();
            verdict.forbid(format!(
                "namespace {namespace:?} may not bind BucketContent {content_name:?}: it is not in \
                 spec.bindableNamespaces ({}). Ask the owner of {content_name:?} to add {{name: {namespace}, uid: <uid of {namespace}>}}",
                if listed.is_empty() { "empty".to_string() } else { listed.join(", ") }
            ));
            return;
        }
        match self.catalog.namespace_uid(&namespace) {
            None => {
                verdict.recheck(Recheck::Namespace(namespace.clone()));
                verdict.forbid(format!(
                    "the uid of namespace {namespace:?} is not known to bucketgate yet, so binding to BucketContent \
                     {content_name:?} cannot be checked: retry in a few seconds"
                ));
            }
            Some(uid) if !allowed.iter().any(|b| b.uid == uid) => {
                // Either may be newer than the catalog's copy: a namespace just recreated, or
                // a grant just updated to its new uid.
                verdict.recheck(Recheck::Namespace(namespace.clone()));
                verdict.recheck(Recheck::BucketContent(content_name.to_string()));
                verdict.forbid(format!(
                    "BucketContent {content_name:?} lets namespace {namespace:?} bind only with uid {}, but {namespace:?} \
                     now has uid {uid}: the namespace was deleted and recreated, and the grant does not carry over. \
                     Ask the owner of {content_name:?} to update the uid in spec.bindableNamespaces",
                    allowed.iter().map(|b| b.uid.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            Some(_) => {}
        }
        match content.spec.protocol.protocol_type {
            Some(content_protocol) if content_protocol != protocol => verdict.deny(format!(
                "spec.protocol is {protocol} but BucketContent {content_name:?} serves {content_protocol}: set spec.protocol to {content_protocol}"
            )),
            None => verdict.deny(format!(
                "BucketContent {content_name:?} has no spec.protocol.type, so nothing can bind to it: ask its owner to set it"
            )),
            _ => {}
        }
        if let (Some(class), Some(content_class)) = (&spec.bucket_class_name, &content.spec.bucket_class_name)
            && class != content_class
        {
            verdict.deny(format!(
                "spec.bucketClassName {class:?} differs from the class {content_class:?} of BucketContent \
                     {content_name:?}: remove spec.bucketClassName or set it to {content_class:?}"
            ));
        }
        if spec.bucket_prefix.is_some() {
            verdict.warn("spec.bucketPrefix is ignored when binding to an existing BucketContent");
        }
        if content.phase() == Some(BucketContentPhase::Failed) {
            verdict.warn(format!(
                "BucketContent {content_name:?} is in phase Failed: the Bucket will not become usable until it recovers"
            ));
        }
    }

    fn bucket_greenfield(&self, spec: &BucketSpec, protocol: Protocol, verdict: &mut Verdict) {
        if let Some(prefix) = &spec.bucket_prefix {
            let check = check_bucket_prefix(prefix, protocol);
            for error in check.errors {
                verdict.deny(format!("spec.bucketPrefix {prefix:?} {error}"));
            }
            for warning in check.warnings {
                verdict.warn(warning);
            }
        }
        let Some(class_name) = &spec.bucket_class_name else {
            verdict.deny(
                "spec.bucketClassName is required: name a BucketClass, or check that bucketgate's mutating webhook \
                 is registered so that the default class is filled in",
            );
            return;
        };
        let Some(class) = self.catalog.class(class_name) else {
            verdict.recheck(Recheck::BucketClass(class_name.clone()));
            let supporting = self.class_names(|c| c.spec.supported_protocols.contains(&protocol));
            verdict.deny(format!(
                "spec.bucketClassName {class_name:?} names no BucketClass; classes that support {protocol}: {}",
                if supporting.is_empty() { "none".to_string() } else { supporting.join(", ") }
            ));
            return;
        };
        if !class.spec.supported_protocols.contains(&protocol) {
            let supported: Vec<&str> = class.spec.supported_protocols.iter().map(|p| p.as_str()).collect();
            verdict.deny(format!(
                "BucketClass {class_name:?} does not support protocol {protocol} (it supports {}): change \
                 spec.protocol or choose another class",
                supported.join(", ")
            ));
        }
        let provisioner = class.spec.provisioner();
        if provisioner.is_empty() {
            verdict.deny(format!(
                "BucketClass {class_name:?} has no provisioner, so it cannot create buckets: bind to an existing \
                 BucketContent with spec.bucketContentName instead"
            ));
        } else if !self.config.serves(provisioner) {
            verdict.deny(format!(
                "BucketClass {class_name:?} uses provisioner {provisioner:?}, which this bucketgate deployment does \
                 not serve ({}), so the Bucket would never be provisioned: choose a class whose provisioner \
                 is served, or ask a cluster admin to add {provisioner:?} to bucketgate's provisioners",
                served_text(self.config, provisioner)
            ));
        }
    }

    /// Releasing a Bucket by hand, past the provisioning loop: taking `cosi.io/finalizer`
    /// off, or asking for `cosi.io/force-release`. Either way its key is not revoked at the
    /// store, and whoever holds a copy keeps reaching the bucket, even once an admin takes
    /// the namespace off a shared content's `bindableNamespaces`. So it is for those RBAC
    /// lets `release` Buckets (cluster admins, and bucketgate's own ServiceAccount, which
    /// takes the finalizer off once the key is revoked), as the API server answers
    /// ([`Recheck::MayRelease`]); not for a namespace's editors. Only for the provisioners
    /// this deployment's loop drives: another controller releases the others.
    fn released_by_hand(&self, old: Option<&Bucket>, new: &Bucket, verdict: &mut Verdict) {
        let unheld = old.is_some_and(crate::api::held) && !crate::api::held(new);
        let forced = crate::api::force_release_asked(new) && !old.is_some_and(crate::api::force_release_asked);
        if !(unheld || forced) || !self.config.has_any_driver() {
            return;
        }
        if !self.config.drives(&self.catalog.provisioner_of(old.unwrap_or(new))) {
            return;
        }
        let answer = self.catalog.may_release();
        if answer == Some(true) {
            return;
        }
        let what = if unheld {
            format!(
                "only the provisioning loop takes {FINALIZER} off a Bucket, once its key is revoked at the store and its \
                 BucketContent deleted or released (`kubectl describe bucket {}` says what that waits on); taken off by \
                 hand, the key would go on working",
                new.name_any()
            )
        } else {
            format!(
                "{FORCE_RELEASE_ANNOTATION}=true has the Bucket released without its store, its key not revoked there"
            )
        };
        let namespace = self.req.namespace.as_deref().unwrap_or_default();
        let user = self.req.user_info.username.as_deref().unwrap_or("the requester");
        let verb = format!("the verb {RELEASE_VERB:?} on buckets.cosi.io in namespace {namespace:?}");
        let who = match answer {
            Some(_) => format!("{user} may not: that takes {verb}, which cluster admins have"),
            None => {
                verdict.recheck(Recheck::MayRelease(namespace.to_string()));
                format!("whether {user} may ({verb}) could not be asked of the API server: try again")
            }
        };
        verdict.forbid(format!("{what}. {who}"));
    }

    fn bucket_delete_advice(&self, old: &Bucket, verdict: &mut Verdict) {
        let content = old.status_content().and_then(|n| self.catalog.content(n));
        if let Some(content) = content {
            let greenfield_owner = old.spec.bucket_content_name.is_none();
            if greenfield_owner && content.spec.release_policy.unwrap_or_default() == ReleasePolicy::Delete {
                verdict.warn(format!(
                    "BucketContent {:?} has releasePolicy Delete: the backend bucket and every object in it will be destroyed",
                    content.name_any()
                ));
            }
        }
    }

    fn class(&self, objects: &Objects<BucketClass>, verdict: &mut Verdict) {
        match (self.req.operation.clone(), objects.new.as_ref(), objects.old.as_ref()) {
            (Operation::Create, Some(new), _) => {
                self.class_fields(new, verdict);
                self.secret_parameters(new.spec.provisioner(), &new.spec.parameters, verdict);
                self.driver_parameters(new, verdict);
            }
            (Operation::Update, Some(new), Some(old)) => {
                let (n, o) = (&new.spec, &old.spec);
                if n.parameters != o.parameters {
                    verdict.deny(format!(
                        "parameters are immutable (Buckets already provisioned from this class hold a copy): \
                         create a new BucketClass with the new parameters instead; was {:?}, now {:?}",
                        o.parameters, n.parameters
                    ));
                }
                if n.provisioner != o.provisioner {
                    verdict.deny(format!(
                        "provisioner is immutable: was {:?}, now {:?}; create a new BucketClass instead",
                        o.provisioner(),
                        n.provisioner()
                    ));
                }
                if n.release_policy != o.release_policy {
                    verdict.deny(format!(
                        "releasePolicy is immutable: was {}, now {}; create a new BucketClass instead",
                        o.release_policy.unwrap_or_default(),
                        n.release_policy.unwrap_or_default()
                    ));
                }
                if n != o {
                    self.class_fields(new, verdict);
                }
            }
            (Operation::Delete, _, Some(old)) if old.spec.is_default_bucket_class => {
                let protocols: Vec<&str> = old.spec.supported_protocols.iter().map(|p| p.as_str()).collect();
                verdict.warn(format!(
                    "{:?} was the default BucketClass for {}: Buckets that name no class will be refused until another class is the default",
                    old.name_any(),
                    protocols.join(", ")
                ));
            }
            _ => {}
        }
    }

    fn class_fields(&self, class: &BucketClass, verdict: &mut Verdict) {
        let spec = &class.spec;
        if spec.supported_protocols.is_empty() {
            verdict.deny("supportedProtocols is empty: list at least one of s3, gcs, azureBlob");
        }
        let mut seen = Vec::new();
        for protocol in &spec.supported_protocols {
            if seen.contains(protocol) {
                verdict.warn(format!("supportedProtocols lists {protocol} more than once"));
            }
            seen.push(*protocol);
        }
        if spec.is_default_bucket_class {
            let name = class.name_any();
            for protocol in Protocol::ALL.iter().filter(|p| seen.contains(p)) {
                let others: Vec<String> = (self.catalog.default_classes().iter())
                    .filter(|c| {
                        c.metadata.name.as_deref() != Some(name.as_str())
                            && c.spec.supported_protocols.contains(protocol)
                    })
                    .map(|c| c.name_any())
                    .collect();
                if !others.is_empty() {
                    // The other may have just stopped being the default (defaults switched).
                    verdict.recheck(Recheck::BucketClasses);
                    verdict.deny(format!(
                        "cannot be the default BucketClass for {protocol}: {} already is. Set isDefaultBucketClass: \
                         false here, or on {}",
                        others.join(", "),
                        others.join(", ")
                    ));
                }
            }
        }
        let provisioner = spec.provisioner();
        if provisioner.is_empty() {
            verdict.warn(
                "no provisioner: Buckets cannot be provisioned from this class, only bound to existing BucketContents",
            );
        } else if !self.config.serves(provisioner) {
            verdict.warn(format!(
                "provisioner {provisioner:?} is not served by this bucketgate deployment ({}): Buckets of this class will be refused",
                served_text(self.config, provisioner)
            ));
        }
    }

    fn content(&self, objects: &Objects<BucketContent>, verdict: &mut Verdict) {
        match (self.req.operation.clone(), objects.new.as_ref(), objects.old.as_ref()) {
            (Operation::Create, Some(new), _) => {
                self.content_spec(new, verdict);
                self.secret_parameters(new.spec.provisioner(), &new.spec.parameters, verdict);
            }
            (Operation::Update, Some(new), Some(old)) => {
                let (n, o) = (&new.spec, &old.spec);
                if n.parameters != o.parameters {
                    verdict
                        .deny(format!("spec.parameters are immutable: was {:?}, now {:?}", o.parameters, n.parameters));
                }
                if n.provisioner() != o.provisioner() {
                    verdict.deny(format!(
                        "spec.provisioner is immutable (the bucket belongs to {:?}): was {:?}, now {:?}",
                        o.provisioner(),
                        o.provisioner(),
                        n.provisioner()
                    ));
                }
                if o.protocol.protocol_type.is_some() && n.protocol.protocol_type != o.protocol.protocol_type {
                    verdict.deny("spec.protocol.type is immutable once set");
                }
                if n != o && new.meta().deletion_timestamp.is_none() {
                    self.content_spec(new, verdict);
                }
                // Allowed: taking a grant back is the owner's right. What it does to Buckets
                // bound already is not obvious, so it is said before it happens.
                for gone in o.bindable_namespaces.iter().filter(|b| !n.bindable_namespaces.contains(b)) {
                    verdict.warn(format!(
                        "namespace {:?} (uid {}) leaves spec.bindableNamespaces: Buckets bound from it lose their \
                         access (bucketgate revokes their keys) and do not bind again, even if it is listed again",
                        gone.name, gone.uid
                    ));
                }
            }
            _ => {}
        }
    }

    fn content_spec(&self, content: &BucketContent, verdict: &mut Verdict) {
        let spec = &content.spec;
        let Some(protocol) = spec.protocol.protocol_type else {
            verdict.deny("spec.protocol.type is required: set it to one of s3, gcs, azureBlob");
            return;
        };
        let static_content = spec.provisioner().is_empty();
        if static_content {
            if spec.release_policy != Some(ReleasePolicy::Retain) {
                verdict.deny(format!(
                    "spec.releasePolicy is {}, but this BucketContent has no provisioner (a brownfield or static \
                     bucket), and bucketgate cannot delete a bucket it did not create: set spec.releasePolicy: Retain",
                    spec.release_policy.map(|p| p.to_string()).unwrap_or_else(|| "unset (Delete)".into())
                ));
            }
            let located = match protocol {
                Protocol::S3 => spec.protocol.s3.as_ref().and_then(|s| s.bucket_name.as_ref()).is_some(),
                Protocol::Gcs => spec.protocol.gcs.as_ref().and_then(|s| s.bucket_name.as_ref()).is_some(),
                Protocol::AzureBlob => {
                    spec.protocol.azure_blob.as_ref().and_then(|s| s.container_name.as_ref()).is_some()
                }
            };
            if !located {
                let field = match protocol {
                    Protocol::S3 => "spec.protocol.s3.bucketName",
                    Protocol::Gcs => "spec.protocol.gcs.bucketName",
                    Protocol::AzureBlob => "spec.protocol.azureBlob.containerName",
                };
                verdict.deny(format!(
                    "{field} is required for a BucketContent without a provisioner: it names the existing bucket"
                ));
            }
        } else if !self.config.serves(spec.provisioner()) {
            verdict.warn(format!(
                "provisioner {:?} is not served by this bucketgate deployment ({})",
                spec.provisioner(),
                served_text(self.config, spec.provisioner())
            ));
        }
        let mut names = Vec::new();
        for (i, entry) in spec.bindable_namespaces.iter().enumerate() {
            let at = format!("spec.bindableNamespaces[{i}]");
            if entry.name.is_empty() || entry.uid.is_empty() {
                verdict.deny(format!(
                    "{at} needs both name and uid (uid: kubectl get namespace <name> -o jsonpath='{{.metadata.uid}}'); got name {:?}, uid {:?}",
                    entry.name, entry.uid
                ));
                continue;
            }
            if let Err(problem) = check_dns1123_label(&entry.name) {
                verdict.deny(format!("{at}.name {:?} is not a namespace name: it {problem}", entry.name));
            }
            if names.contains(&entry.name) {
                verdict.warn(format!("{at}: namespace {:?} is listed more than once", entry.name));
            }
            names.push(entry.name.clone());
            match self.catalog.namespace_uid(&entry.name) {
                Some(uid) if uid != entry.uid => verdict.warn(format!(
                    "{at}: namespace {:?} has uid {uid}, not {}: Buckets in it cannot bind until the uid matches",
                    entry.name, entry.uid
                )),
                None => verdict.warn(format!("{at}: namespace {:?} does not exist (yet)", entry.name)),
                _ => {}
            }
        }
    }

    /// The provisioner-Secret parameters, judged at creation only: they are immutable, and
    /// objects made before this rule keep working as they did. Refused where this
    /// deployment's loop would fail every Bucket on them; for a provisioner that another
    /// controller drives, which may template more, a warning.
    fn secret_parameters(&self, provisioner: &str, parameters: &BTreeMap<String, String>, verdict: &mut Verdict) {
        let driven = self.config.has_driver(provisioner);
        for problem in check_secret_parameters(parameters).into_iter().chain(secret_chosen_by_bucket(parameters)) {
            if driven { verdict.deny(problem) } else { verdict.warn(problem) }
        }
        // The KEP's per-Bucket provisioner Secret is the Secret a Bucket's credentials go
        // into by default: each Bucket must name another ([`Self::bucket_provisioner_secret`]).
        let probe = ("a-namespace".to_string(), "a-bucket".to_string());
        if driven && provisioner_secret(parameters, &probe).as_ref() == Some(&probe) {
            verdict.warn(
                "the provisioner Secret is named after each Bucket, in its namespace, where the Bucket's own \
                 credentials go unless its spec.secretName names another Secret: Buckets that use these parameters \
                 must set spec.secretName, and are refused without it",
            );
        }
    }

    /// What a class asks of each bucket (versioning, an object lock), refused where this
    /// deployment's S3 driver would fail every Bucket of the class on it; and parameters that
    /// driver does not read, such as the `region` of Rook's and lib-bucket-provisioner's
    /// classes, warned about: they would be copied into every BucketContent and silently do
    /// nothing, while the store's region and endpoint come from the configuration.
    fn driver_parameters(&self, class: &BucketClass, verdict: &mut Verdict) {
        let (provisioner, parameters) = (class.spec.provisioner(), &class.spec.parameters);
        let Some(s3) = self.config.provisioner(provisioner).and_then(|p| p.s3.as_ref()) else { return };
        match BucketOptions::from_parameters(parameters) {
            Err(problems) => problems.into_iter().for_each(|problem| verdict.deny(problem)),
            Ok(BucketOptions { retention: Some(retention), .. })
                if class.spec.release_policy.unwrap_or_default() == ReleasePolicy::Delete =>
            {
                verdict.warn(format!(
                    "every object written to a bucket of this class is kept for {} days ({}): deleting a Bucket \
                     deletes the rest and leaves the bucket with what is still retained, its BucketContent Failed \
                     naming it; with releasePolicy: Retain the bucket is kept whole, on purpose",
                    retention.days,
                    retention.mode.as_str()
                ));
            }
            Ok(_) => {}
        }
        match KeyRotation::from_parameters(parameters) {
            Err(problems) => problems.into_iter().for_each(|problem| verdict.deny(problem)),
            Ok(Some(_)) if s3.iam.is_none() => verdict.warn(format!(
                "{KEY_MAX_AGE_DAYS} rotates keys made for a Bucket alone, and provisioner {provisioner:?} has no iam \
                 configured: its Buckets get the provisioner's own key, which is not rotated"
            )),
            Ok(_) => {}
        }
        let read: Vec<&str> = DRIVER_PARAMETERS.into_iter().chain(BUCKET_PARAMETERS).chain(KEY_PARAMETERS).collect();
        let unread: Vec<&str> = parameters.keys().map(String::as_str).filter(|key| !read.contains(key)).collect();
        if unread.is_empty() {
            return;
        }
        let meant: Vec<String> = (unread.iter())
            .filter_map(|key| {
                closest(key, read.iter().copied()).map(|known| format!("; did you mean {known:?} for {key:?}?"))
            })
            .collect();
        verdict.warn(format!(
            "parameters {unread:?} are not read by bucketgate's S3 driver, which reads only {read:?} and takes \
             the store's endpoint and region from bucketgate-config (for {provisioner:?}: {:?}, region {:?}): they \
             are copied into each BucketContent and change nothing{}",
            s3.endpoint,
            s3.region,
            meant.concat()
        ));
    }

    fn class_names(&self, keep: impl Fn(&BucketClass) -> bool) -> Vec<String> {
        self.catalog.classes_where(keep).iter().map(|c| c.name_any()).collect()
    }
}

/// What this deployment serves, and the name `unserved` was probably meant to be.
fn served_text(config: &Config, unserved: &str) -> String {
    let served = config.served_names();
    let served = if served.is_empty() { "none".to_string() } else { served.join(", ") };
    match config.closest_served(unserved) {
        Some(meant) => format!("it serves {served}; did you mean {meant:?}?"),
        None => format!("it serves {served}"),
    }
}

fn immutable_bucket_spec(old: &BucketSpec, new: &BucketSpec, verdict: &mut Verdict) {
    let fields: [(&str, Option<String>, Option<String>); 5] = [
        ("protocol", old.protocol.map(|p| p.to_string()), new.protocol.map(|p| p.to_string())),
        ("bucketPrefix", old.bucket_prefix.clone(), new.bucket_prefix.clone()),
        ("bucketClassName", old.bucket_class_name.clone(), new.bucket_class_name.clone()),
        ("secretName", old.secret_name.clone(), new.secret_name.clone()),
        ("bucketContentName", old.bucket_content_name.clone(), new.bucket_content_name.clone()),
    ];
    for (field, old, new) in fields {
        if let Some(old) = old
            && new.as_ref() != Some(&old)
        {
            verdict.deny(format!(
                "spec.{field} is immutable once set: was {old:?}, now {}; delete and recreate the Bucket to change it",
                new.map(|n| format!("{n:?}")).unwrap_or_else(|| "unset".into())
            ));
        }
    }
}

/// A DNS-1123 name close to `name`, for messages.
fn suggest_name(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    let trimmed = lowered.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() { "bucket-credentials".into() } else { trimmed.chars().take(253).collect() }
}
