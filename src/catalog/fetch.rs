//! Reading from the API server what a review turned on and the catalog lacked, or held in
//! a version that refused.
//!
//! The catalog is a watch cache, and a watch is behind by design: a BucketContent and a
//! Bucket naming it in one `kubectl apply`, or a namespace and a Bucket in it, reach the
//! webhook faster than the first object's watch event reaches the catalog; after a watch
//! error the catalog catches up only at its next list. Seen against a real API server: a
//! Bucket refused as naming "no BucketContent" for a content created a moment before.
//! Rather than refuse, or patch short, on the catalog's word alone, the webhook asks the
//! API server for just the objects its answer turned on, and decides again with them.
//!
//! One answer is not an object: whether the requester may release a Bucket by hand, which
//! RBAC decides and only the API server can tell (a SubjectAccessReview).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use super::NamespaceMeta;
use crate::api::{BucketClass, BucketContent};
use crate::naming::check_dns1123_subdomain;

/// An object to read again from the API server: a rule answered on the catalog's word for
/// it, where the catalog may only be behind: it did not hold the object, or held a version
/// that refused (a grant, a namespace's uid). Rules note one only where the answer was a
/// refusal or a patch short of what the object would give, so that admitted requests do
/// not wait on the API server; policies note the request's namespace whenever the catalog
/// lacks it, as which of them apply turns on its labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recheck {
    BucketClass(String),
    /// Every BucketClass: choosing the default class, and keeping it to one, read them all.
    BucketClasses,
    BucketContent(String),
    Namespace(String),
    /// Whether the request's user may release Buckets by hand in this namespace: RBAC's verb
    /// [`RELEASE_VERB`] on `buckets.cosi.io` there.
    MayRelease(String),
}

/// The RBAC verb on `buckets` (group `cosi.io`) that lets a user release a Bucket by hand:
/// take `cosi.io/finalizer` off it, or ask the loop to release it without its store
/// (`cosi.io/force-release`). Either leaves the Bucket's key working at the store, so it is
/// not a tenant's to do. Cluster admins have it through `*`; bucketgate's ClusterRole names it.
pub const RELEASE_VERB: &str = "release";

impl Recheck {
    pub fn kind(&self) -> &'static str {
        match self {
            Recheck::BucketClass(_) | Recheck::BucketClasses => "BucketClass",
            Recheck::BucketContent(_) => "BucketContent",
            Recheck::Namespace(_) => "Namespace",
            Recheck::MayRelease(_) => "SubjectAccessReview",
        }
    }

    /// The object's name (the namespace, for [`Recheck::MayRelease`]); empty for
    /// [`Recheck::BucketClasses`].
    pub fn name(&self) -> &str {
        match self {
            Recheck::BucketClass(name)
            | Recheck::BucketContent(name)
            | Recheck::Namespace(name)
            | Recheck::MayRelease(name) => name,
            Recheck::BucketClasses => "",
        }
    }
}

impl std::fmt::Display for Recheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recheck::BucketClasses => f.write_str("every BucketClass"),
            Recheck::MayRelease(namespace) => write!(f, "whether the requester may release Buckets in {namespace:?}"),
            named => write!(f, "{} {:?}", named.kind(), named.name()),
        }
    }
}

/// Objects read from the API server for one review (see [`super::Catalog::with_fetched`]).
#[derive(Default, Clone)]
pub struct Fetched {
    pub(super) classes: HashMap<String, Arc<BucketClass>>,
    pub(super) contents: HashMap<String, Arc<BucketContent>>,
    pub(super) namespaces: HashMap<String, Arc<NamespaceMeta>>,
    /// `classes` holds every class there is: they were listed.
    pub(super) classes_listed: bool,
    /// The API server's answer to [`Recheck::MayRelease`], for the request's user (a review
    /// is for one request).
    pub(super) may_release: Option<bool>,
}

impl Fetched {
    /// Objects in hand, as a lookup would have read them (for tests of what is decided
    /// with them).
    #[cfg(test)]
    pub fn of(
        classes: impl IntoIterator<Item = BucketClass>,
        contents: impl IntoIterator<Item = BucketContent>,
        namespaces: impl IntoIterator<Item = Namespace>,
    ) -> Fetched {
        let namespaces = namespaces.into_iter().map(super::namespace_meta);
        Fetched {
            classes: by_name(classes),
            contents: by_name(contents),
            namespaces: by_name(namespaces),
            classes_listed: false,
            may_release: None,
        }
    }

    /// The API server's answer to whether the requester may release Buckets by hand.
    pub fn release_answer(may_release: bool) -> Fetched {
        Fetched { may_release: Some(may_release), ..Fetched::default() }
    }

    /// Every class there is, as a list would have read them.
    pub fn listing(classes: impl IntoIterator<Item = BucketClass>) -> Fetched {
        Fetched { classes: by_name(classes), classes_listed: true, ..Fetched::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
            && self.contents.is_empty()
            && self.namespaces.is_empty()
            && !self.classes_listed
            && self.may_release.is_none()
    }

    pub fn extend(&mut self, more: Fetched) {
        if more.classes_listed {
            self.classes = more.classes;
            self.classes_listed = true;
        } else {
            self.classes.extend(more.classes);
        }
        self.contents.extend(more.contents);
        self.namespaces.extend(more.namespaces);
        self.may_release = more.may_release.or(self.may_release);
    }
}

/// What the API server said of one object to recheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// It exists: the catalog was behind. For a [`Recheck::MayRelease`]: answered.
    Found,
    /// It does not exist: the catalog was right.
    Absent,
    /// No answer within the time, or an error (logged): the catalog's word stands.
    Failed,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Found => "found",
            Lookup::Absent => "absent",
            Lookup::Failed => "error",
        }
    }
}

/// Reads each of `objects` from the API server, all at once, each within `timeout`; asks
/// for `user` what is asked about the requester.
pub async fn fetch(
    client: &Client,
    objects: &[Recheck],
    user: &UserInfo,
    timeout: Duration,
) -> (Fetched, Vec<(Recheck, Lookup)>) {
    let lookups = objects.iter().map(|m| async move {
        let name = m.name();
        // The names come from the request's object, unchecked (mutating webhooks run before
        // the schema), and kube puts a name into the path as it is: "x/../../../api/v1/..."
        // would have bucketgate's ServiceAccount GET a path of the requester's choosing. No
        // object has a name that is not a DNS subdomain, so there is nothing to ask for.
        if matches!(m, Recheck::BucketClass(_) | Recheck::BucketContent(_) | Recheck::Namespace(_))
            && check_dns1123_subdomain(name).is_err()
        {
            return (m.clone(), Ok(None));
        }
        let read = match m {
            Recheck::BucketClass(_) => within(timeout, Api::<BucketClass>::all(client.clone()).get_opt(name))
                .await
                .map(|found| found.map(|c| Fetched { classes: by_name([c]), ..Fetched::default() })),
            Recheck::BucketClasses => {
                within(timeout, Api::<BucketClass>::all(client.clone()).list(&Default::default()))
                    .await
                    .map(|list| Some(Fetched::listing(list.items)))
            }
            Recheck::BucketContent(_) => within(timeout, Api::<BucketContent>::all(client.clone()).get_opt(name))
                .await
                .map(|found| found.map(|c| Fetched { contents: by_name([c]), ..Fetched::default() })),
            Recheck::Namespace(_) => within(timeout, Api::<Namespace>::all(client.clone()).get_metadata_opt(name))
                .await
                .map(|found| found.map(|ns| Fetched { namespaces: by_name([ns]), ..Fetched::default() })),
            Recheck::MayRelease(namespace) => {
                let review = may_release(user, namespace);
                within(timeout, Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review))
                    .await
                    .map(|answered| Some(Fetched::release_answer(answered.status.is_some_and(|status| status.allowed))))
            }
        };
        (m.clone(), read)
    });
    let mut fetched = Fetched::default();
    let mut outcomes = Vec::with_capacity(objects.len());
    for (object, read) in futures::future::join_all(lookups).await {
        let lookup = match read {
            Ok(Some(found)) => {
                fetched.extend(found);
                Lookup::Found
            }
            Ok(None) => Lookup::Absent,
            Err(error) => {
                tracing::warn!(
                    object = %object,
                    %error,
                    "could not read from the API server an object the catalog does not hold; deciding without it"
                );
                Lookup::Failed
            }
        };
        outcomes.push((object, lookup));
    }
    (fetched, outcomes)
}

/// The question whether `user` may release Buckets by hand in `namespace`, asked of the API
/// server's authorizer as the request's user, groups and extra put it: RBAC, or whatever
/// else the cluster authorizes with, decides.
fn may_release(user: &UserInfo, namespace: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::api::GROUP.into()),
                resource: Some("buckets".into()),
                verb: Some(RELEASE_VERB.into()),
                namespace: Some(namespace.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

fn by_name<K: Resource>(objects: impl IntoIterator<Item = K>) -> HashMap<String, Arc<K>> {
    objects.into_iter().map(|o| (o.meta().name.clone().unwrap_or_default(), trimmed(o))).collect()
}

/// As the catalog keeps its objects (see [`super::trim`]).
fn trimmed<K: Resource>(mut object: K) -> Arc<K> {
    super::trim(object.meta_mut());
    Arc::new(object)
}

async fn within<T>(timeout: Duration, read: impl Future<Output = kube::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => read.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
