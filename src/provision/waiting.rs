//! Which Buckets wait on each BucketClass and bind each BucketContent, kept up to date from
//! the Buckets' watch, so that a class or content that changes wakes its Buckets without a
//! look at every Bucket. The catalog hands the controller every content and class when it
//! starts and after each of its lists: with a look at every Bucket for each, 10,000
//! contents and 10,000 Buckets took 660 ms of CPU on the replica that also answers
//! admission, growing as the square of the cluster; through this index, under 1 ms
//! (`cargo bench --bench waking`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use super::plan;
use crate::api::Bucket;
use crate::catalog::Catalog;
use crate::naming::provisioner_secret;

/// What a Bucket waits on or binds, as of its last watch event.
#[derive(Clone, Default, PartialEq, Eq)]
struct Names {
    class: Option<String>,
    content: Option<String>,
}

impl Names {
    fn of(bucket: &Bucket) -> Names {
        Names {
            class: plan::class_waited_on(bucket).map(str::to_string),
            content: plan::content_bound(bucket).map(str::to_string),
        }
    }
}

/// The index; clones share it.
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<Index>>);

#[derive(Default)]
struct Index {
    of: HashMap<ObjectRef<Bucket>, Names>,
    by_class: HashMap<String, HashSet<ObjectRef<Bucket>>>,
    by_content: HashMap<String, HashSet<ObjectRef<Bucket>>>,
    /// The Buckets of a list under way, which replace all the others when it is done, as
    /// the watch's store replaces its own.
    listing: Option<HashMap<ObjectRef<Bucket>, Names>>,
}

impl Waiting {
    /// Takes in one event of the Buckets' watch.
    pub fn apply(&self, event: &Event<Bucket>) {
        let mut index = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(bucket) => index.set(ObjectRef::from_obj(bucket), Names::of(bucket)),
            Event::Delete(bucket) => index.set(ObjectRef::from_obj(bucket), Names::default()),
            Event::Init => index.listing = Some(HashMap::new()),
            Event::InitApply(bucket) => {
                let names = Names::of(bucket);
                if names != Names::default() {
                    index.listing.get_or_insert_default().insert(ObjectRef::from_obj(bucket), names);
                }
            }
            Event::InitDone => {
                let listed = index.listing.take().unwrap_or_default();
                *index = Index::default();
                for (bucket, names) in listed {
                    index.set(bucket, names);
                }
            }
        }
    }

    /// The Buckets that wait on the class named `class` (see [`plan::class_waited_on`]).
    pub fn on_class(&self, class: &str) -> Vec<ObjectRef<Bucket>> {
        let index = self.0.lock().unwrap_or_else(|e| e.into_inner());
        index.by_class.get(class).map(|buckets| buckets.iter().cloned().collect()).unwrap_or_default()
    }

    /// The Buckets that bind the content named `content` (see [`plan::content_bound`]).
    pub fn on_content(&self, content: &str) -> Vec<ObjectRef<Bucket>> {
        let index = self.0.lock().unwrap_or_else(|e| e.into_inner());
        index.by_content.get(content).map(|buckets| buckets.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The Buckets among `buckets` whose provisioner Secret is `secret` (namespace, name), as
/// their BucketContent's parameters name it for them, or their class's where the catalog
/// has no content of theirs yet ([`Catalog::source_of`]): a labelled provisioner Secret
/// that comes or changes wakes them. A look at every Bucket, unlike the index above: such
/// Secrets change seldom.
pub fn keyed_by(secret: &(String, String), buckets: &[Arc<Bucket>], catalog: &Catalog) -> Vec<ObjectRef<Bucket>> {
    let keyed = |bucket: &Bucket| {
        let Some(source) = catalog.source_of(bucket) else { return false };
        let owner = (bucket.namespace().unwrap_or_default(), bucket.name_any());
        provisioner_secret(source.parameters(), &owner).as_ref() == Some(secret)
    };
    buckets.iter().filter(|bucket| keyed(bucket)).map(|bucket| ObjectRef::from_obj(&**bucket)).collect()
}

impl Index {
    fn set(&mut self, bucket: ObjectRef<Bucket>, names: Names) {
        let old = match names == Names::default() {
            true => self.of.remove(&bucket),
            false => self.of.insert(bucket.clone(), names.clone()),
        }
        .unwrap_or_default();
        for (map, old, new) in
            [(&mut self.by_class, old.class, names.class), (&mut self.by_content, old.content, names.content)]
        {
            if old == new {
                continue;
            }
            if let Some(old) = old
                && let Some(buckets) = map.get_mut(&old)
            {
                buckets.remove(&bucket);
                if buckets.is_empty() {
                    map.remove(&old);
                }
            }
            if let Some(new) = new {
                map.entry(new).or_default().insert(bucket.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BucketSpec;

    fn bucket(name: &str, class: Option<&str>, content: Option<&str>, phase: Option<&str>) -> Bucket {
        let mut bucket = Bucket::new(name, BucketSpec::default());
        bucket.metadata.namespace = Some("team-a".into());
        bucket.spec.bucket_class_name = class.map(Into::into);
        bucket.spec.bucket_content_name = content.map(Into::into);
        bucket.status = phase.map(|p| serde_json::from_value(serde_json::json!({"phase": p})).unwrap());
        bucket
    }

    fn names(refs: Vec<ObjectRef<Bucket>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn each_change_to_a_bucket_moves_it_in_the_index() {
        let waiting = Waiting::default();
        waiting.apply(&Event::Apply(bucket("a", Some("ceph"), None, None)));
        waiting.apply(&Event::Apply(bucket("b", Some("ceph"), None, Some("Pending"))));
        waiting.apply(&Event::Apply(bucket("c", None, Some("legacy"), None)));
        assert_eq!(names(waiting.on_class("ceph")), ["a", "b"]);
        assert_eq!(names(waiting.on_content("legacy")), ["c"]);

        // Bound: no longer waits on its class, and now binds its content.
        waiting.apply(&Event::Apply(bucket("a", Some("ceph"), Some("bc-a"), Some("Bound"))));
        assert_eq!(names(waiting.on_class("ceph")), ["b"]);
        assert_eq!(names(waiting.on_content("bc-a")), ["a"]);
        // Being deleted: neither.
        let mut deleting = bucket("c", None, Some("legacy"), Some("Bound"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        waiting.apply(&Event::Apply(deleting));
        assert!(waiting.on_content("legacy").is_empty());
        waiting.apply(&Event::Delete(bucket("b", Some("ceph"), None, Some("Pending"))));
        assert!(waiting.on_class("ceph").is_empty());
        assert!(waiting.on_class("minio").is_empty());
        let index = waiting.0.lock().unwrap();
        assert_eq!((index.of.len(), index.by_class.len(), index.by_content.len()), (1, 0, 1), "nothing left behind");
    }

    #[test]
    fn a_provisioner_secret_wakes_the_buckets_whose_content_or_class_names_it() {
        use crate::api::{BucketClass, BucketContent};
        let keyed = |name: &str| -> std::collections::BTreeMap<String, String> {
            [("cosi.io/provisioner-secret-name", name), ("cosi.io/provisioner-secret-namespace", "bucketgate-system")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut class: BucketClass = serde_json::from_value(serde_json::json!(
            {"metadata": {"name": "ceph"}, "provisioner": "rgw", "supportedProtocols": ["s3"]}))
        .unwrap();
        class.spec.parameters = keyed("${bucket.namespace}-store");
        let content = |name: &str, secret: &str| {
            let mut content: BucketContent =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {}})).unwrap();
            content.spec.parameters = keyed(secret);
            content
        };
        // A greenfield content keeps the parameters its class had: they hold, not the class's.
        let made = content(&crate::naming::content_name_for("uid-made"), "old-store");
        let catalog = Catalog::from_objects([class], [content("legacy", "shared-store"), made], []);
        let mut waiting = bucket("waiting", Some("ceph"), None, None);
        waiting.metadata.uid = Some("uid-waiting".into());
        let mut other = bucket("other", Some("ceph"), None, None);
        other.metadata.namespace = Some("team-b".into());
        let mut made = bucket("made", Some("ceph"), None, None);
        made.metadata.uid = Some("uid-made".into());
        let sharing = bucket("sharing", None, Some("legacy"), Some("Bound"));
        let unknown = bucket("unknown", Some("minio"), None, None);
        let buckets: Vec<Arc<Bucket>> = [waiting, other, made, sharing, unknown].into_iter().map(Arc::new).collect();
        let woken = |name: &str| names(keyed_by(&("bucketgate-system".into(), name.into()), &buckets, &catalog));
        assert_eq!(woken("team-a-store"), ["waiting"]);
        assert_eq!(woken("team-b-store"), ["other"]);
        assert_eq!(woken("shared-store"), ["sharing"]);
        assert_eq!(woken("old-store"), ["made"]);
        assert!(keyed_by(&("elsewhere".into(), "team-a-store".into()), &buckets, &catalog).is_empty());
    }

    #[test]
    fn a_list_replaces_what_was_known_once_it_is_done() {
        let waiting = Waiting::default();
        waiting.apply(&Event::Apply(bucket("gone", Some("ceph"), None, None)));
        waiting.apply(&Event::Init);
        waiting.apply(&Event::InitApply(bucket("listed", Some("ceph"), None, None)));
        assert_eq!(names(waiting.on_class("ceph")), ["gone"], "until the list is done");
        waiting.apply(&Event::InitDone);
        assert_eq!(names(waiting.on_class("ceph")), ["listed"]);
        // A list of nothing empties it.
        waiting.apply(&Event::Init);
        waiting.apply(&Event::InitDone);
        assert!(waiting.on_class("ceph").is_empty());
    }
}
