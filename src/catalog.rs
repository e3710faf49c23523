//! What admission needs to know about the cluster, held in memory: BucketClasses,
//! BucketContents, Namespaces (uids and labels) and the names of the Buckets in each
//! namespace (for quotas). The webhook calls the API server only for an object a review
//! turned on and the catalog lacked, or held in a version that refused ([`fetch`]). On the
//! leader the provisioning loop's controllers read the classes and contents from here too
//! ([`Catalog::content_updates`]), so that no replica holds them twice.
//!
//! Both sources fill the same kube-runtime reflector stores: [`Catalog::watch`] from the
//! API server, [`Catalog::load_dir`] from a directory of YAML or JSON (for running without
//! a cluster and for the CLI).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::api::{Bucket, BucketClass, BucketContent};

mod fetch;
pub use fetch::{Fetched, Lookup, RELEASE_VERB, Recheck, fetch};

type NamespaceMeta = PartialObjectMeta<Namespace>;
type BucketMeta = PartialObjectMeta<Bucket>;

#[derive(Clone)]
pub struct Catalog {
    classes: Store<BucketClass>,
    contents: Store<BucketContent>,
    namespaces: Store<NamespaceMeta>,
    buckets: Arc<BucketNames>,
    synced: Arc<AtomicBool>,
    defaults: Arc<Defaults>,
    content_changes: broadcast::Sender<Change<BucketContent>>,
    class_changes: broadcast::Sender<Change<BucketClass>>,
    /// Objects read from the API server for one review, newer than the stores' copies
    /// (see [`Catalog::with_fetched`]).
    fetched: Option<Arc<Fetched>>,
}

/// A change the catalog's watch applied to one of its stores, announced to the
/// provisioning loop's controllers: they read the catalog's stores rather than watch the
/// same kinds again into stores of their own. (A leader's second copy of 10,000
/// BucketContents was a third of its memory.)
#[derive(Clone)]
enum Change<K> {
    /// Created or changed; as stored.
    Applied(Arc<K>),
    /// A list, the first or after the watch was away, replaced the whole store.
    Listed,
}

/// How many changes a controller may fall behind by before it is given everything again.
const CHANGES_BUFFER: usize = 1024;

/// The names of the Buckets in each namespace, kept from the Bucket watch's events.
///
/// A quota policy counts a namespace's Buckets on every Bucket CREATE. Counted through a
/// store of the Buckets, which copies out every entry to filter them, that took 140 µs
/// with 10,000 Buckets in the cluster, and grew with them; here it is a lookup.
#[derive(Default)]
struct BucketNames {
    by_namespace: RwLock<HashMap<String, HashSet<String>>>,
}

type NamesByNamespace = HashMap<String, HashSet<String>>;

fn add_name(names: &mut NamesByNamespace, meta: &kube::core::ObjectMeta) {
    if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
        names.entry(namespace.clone()).or_default().insert(name.clone());
    }
}

/// Applies the Bucket watch's events to [`BucketNames`] as kube's reflector applies them
/// to a store: a (re)list is gathered apart and replaces the names when it is complete, so
/// that a count never reads a list half received.
struct BucketNamesWriter {
    names: Arc<BucketNames>,
    relisting: Option<NamesByNamespace>,
}

impl BucketNamesWriter {
    /// Applies `event`; true when it completed a list.
    fn apply(&mut self, event: &watcher::Event<BucketMeta>) -> bool {
        let live = || self.names.by_namespace.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => self.relisting = Some(NamesByNamespace::new()),
            watcher::Event::InitApply(bucket) => add_name(self.relisting.get_or_insert_default(), &bucket.metadata),
            watcher::Event::InitDone => {
                *live() = self.relisting.take().unwrap_or_default();
                return true;
            }
            watcher::Event::Apply(bucket) => add_name(&mut live(), &bucket.metadata),
            watcher::Event::Delete(bucket) => {
                let (Some(namespace), Some(name)) = (&bucket.metadata.namespace, &bucket.metadata.name) else {
                    return false;
                };
                let mut live = live();
                if let Some(names) = live.get_mut(namespace) {
                    names.remove(name);
                    if names.is_empty() {
                        live.remove(namespace);
                    }
                }
            }
        }
        false
    }
}

/// The default classes, found again only after the classes changed: every Bucket CREATE
/// without a class asks for them, and looking through a thousand classes each time was
/// a tenth of the webhook's time under load.
#[derive(Default)]
struct Defaults {
    /// Raised after each change to the classes store has been applied.
    version: AtomicU64,
    /// The default classes by name, and the version they were found at.
    found: RwLock<Option<(u64, Vec<Arc<BucketClass>>)>>,
}

impl Defaults {
    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("catalog file {path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("catalog file {path}: {kind} {name:?}: {message}")]
    Object { path: PathBuf, kind: String, name: String, message: String },
}

impl Catalog {
    /// Builds a catalog from objects in hand (tests, benchmarks, the offline loader).
    pub fn from_objects(
        classes: impl IntoIterator<Item = BucketClass>,
        contents: impl IntoIterator<Item = BucketContent>,
        namespaces: impl IntoIterator<Item = Namespace>,
    ) -> Catalog {
        Catalog::with_buckets(classes, contents, namespaces, [])
    }

    /// [`Catalog::from_objects`] with Buckets, which quota policies count.
    pub fn with_buckets(
        classes: impl IntoIterator<Item = BucketClass>,
        contents: impl IntoIterator<Item = BucketContent>,
        namespaces: impl IntoIterator<Item = Namespace>,
        buckets: impl IntoIterator<Item = Bucket>,
    ) -> Catalog {
        let namespaces = namespaces.into_iter().map(namespace_meta);
        let mut names = NamesByNamespace::new();
        for bucket in buckets {
            add_name(&mut names, &bucket.metadata);
        }
        Catalog {
            classes: filled(classes),
            contents: filled(contents),
            namespaces: filled(namespaces),
            buckets: Arc::new(BucketNames { by_namespace: RwLock::new(names) }),
            synced: Arc::new(AtomicBool::new(true)),
            defaults: Arc::default(),
            content_changes: broadcast::channel(CHANGES_BUFFER).0,
            class_changes: broadcast::channel(CHANGES_BUFFER).0,
            fetched: None,
        }
    }

    /// Loads every `.yaml`, `.yml` and `.json` file below `dir`. BucketClass, BucketContent,
    /// Namespace and Bucket documents go into the catalog; other kinds (Kustomizations) are
    /// skipped so that an examples directory can be used as it is.
    /// Each file is parsed within serde-saphyr's default budget (1,024 documents and 250,000
    /// nodes a file), which keeps a hostile file from exhausting memory: split larger catalogs.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let mut sorted = Sorted::default();
        each_document(dir, |path, doc| sorted.add(path, doc))?;
        Ok(sorted.into_catalog())
    }

    /// Every document of the files [`Catalog::load_dir`] reads, with the file it came from,
    /// for `policy audit`, which judges the objects as well as deciding against them.
    pub fn documents_in(dir: &Path) -> Result<Vec<(PathBuf, serde_json::Value)>, CatalogError> {
        let mut documents = Vec::new();
        each_document(dir, |path, doc| {
            documents.push((path.to_path_buf(), doc));
            Ok(())
        })?;
        Ok(documents)
    }

    /// The cluster's Namespaces, BucketClasses, BucketContents and Buckets as documents,
    /// listed once: what `policy audit` judges, and decides against.
    pub async fn list_documents(client: &Client) -> Result<Vec<serde_json::Value>, kube::Error> {
        let mut documents = Vec::new();
        for namespace in Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await? {
            documents.push(serde_json::to_value(namespace).map_err(kube::Error::SerdeError)?);
        }
        let resources = [
            ApiResource::erase::<BucketClass>(&()),
            ApiResource::erase::<BucketContent>(&()),
            ApiResource::erase::<Bucket>(&()),
        ];
        for resource in resources {
            let mut pages = Pages::new(client, resource, 500);
            while let Some(page) = pages.next().await? {
                documents.extend(page);
            }
        }
        Ok(documents)
    }

    /// The YAML (or JSON) documents of one catalog file, `text` read from `path`.
    pub fn documents(path: &Path, text: &str) -> Result<Vec<serde_json::Value>, CatalogError> {
        serde_saphyr::from_multiple(text)
            .map_err(|e| CatalogError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Sorts documents by kind into a catalog; `path` says where each came from, for errors.
    pub fn from_documents(
        documents: impl IntoIterator<Item = (PathBuf, serde_json::Value)>,
    ) -> Result<Catalog, CatalogError> {
        let mut sorted = Sorted::default();
        for (path, doc) in documents {
            sorted.add(&path, doc)?;
        }
        Ok(sorted.into_catalog())
    }

    /// Watches the four kinds through the API server (Namespaces and Buckets as metadata only). The returned future drives the
    /// watches and must be polled for the catalog to fill; [`Catalog::is_synced`] turns
    /// true once every initial list has arrived.
    pub fn watch(client: Client) -> (Catalog, impl Future<Output = ()> + Send + 'static) {
        let (classes, classes_writer) = reflector::store();
        let (contents, contents_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        let catalog = Catalog {
            classes,
            contents,
            namespaces,
            buckets: Arc::default(),
            synced: Arc::new(AtomicBool::new(false)),
            defaults: Arc::default(),
            content_changes: broadcast::channel(CHANGES_BUFFER).0,
            class_changes: broadcast::channel(CHANGES_BUFFER).0,
            fetched: None,
        };

        let config = watcher::Config::default();
        let defaults = catalog.defaults.clone();
        let announce_class = announce(catalog.classes.clone(), catalog.class_changes.clone());
        let classes_run = drive(
            watcher(Api::<BucketClass>::all(client.clone()), config.clone()),
            classes_writer,
            "BucketClass",
            move |event| {
                defaults.changed();
                announce_class(event);
            },
        );
        let contents_run = drive(
            watcher(Api::<BucketContent>::all(client.clone()), config.clone()),
            contents_writer,
            "BucketContent",
            announce(catalog.contents.clone(), catalog.content_changes.clone()),
        );
        let namespaces_run = drive(
            watcher(Api::<NamespaceMeta>::all(client.clone()), config.clone()),
            namespaces_writer,
            "Namespace",
            |_| {},
        );
        let (buckets_listed, buckets_ready) = futures::channel::oneshot::channel();
        let buckets_writer = BucketNamesWriter { names: catalog.buckets.clone(), relisting: None };
        let buckets_run =
            drive_bucket_names(watcher(Api::<BucketMeta>::all(client), config), buckets_writer, buckets_listed);
        let ready = {
            let catalog = catalog.clone();
            async move {
                let synced = futures::future::join4(
                    catalog.classes.wait_until_ready(),
                    catalog.contents.wait_until_ready(),
                    catalog.namespaces.wait_until_ready(),
                    buckets_ready,
                )
                .await;
                if let (Ok(()), Ok(()), Ok(()), Ok(())) = synced {
                    tracing::info!("catalog synced");
                    catalog.synced.store(true, Ordering::Release);
                }
            }
        };
        let run = async move {
            futures::future::join5(classes_run, contents_run, namespaces_run, buckets_run, ready).await;
        };
        (catalog, run)
    }

    /// True once every watch has delivered its initial list.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// This catalog with `fetched` before its own objects of the same names: for deciding
    /// once more a review that turned on objects the watches may not have brought yet (or
    /// not their latest version). Kept for that one review only, so that nothing read
    /// outside the watches outlives it (a later change would not reach it).
    pub fn with_fetched(&self, fetched: Fetched) -> Catalog {
        Catalog { fetched: Some(Arc::new(fetched)), ..self.clone() }
    }

    pub fn class(&self, name: &str) -> Option<Arc<BucketClass>> {
        match self.listed_classes() {
            Some(all) => all.get(name).cloned(),
            None => self.fetched(|f| f.classes.get(name)).or_else(|| self.classes.get(&ObjectRef::new(name))),
        }
    }

    /// Every class by name, where this review listed them from the API server.
    fn listed_classes(&self) -> Option<&HashMap<String, Arc<BucketClass>>> {
        self.fetched.as_deref().filter(|f| f.classes_listed).map(|f| &f.classes)
    }

    /// The classes `keep` accepts, by name. Filtered under the store's lock, so that a
    /// lookup on the admission path copies only the few classes it is after.
    pub fn classes_where(&self, keep: impl Fn(&BucketClass) -> bool) -> Vec<Arc<BucketClass>> {
        let mut classes = match self.listed_classes() {
            Some(all) => all.values().filter(|c| keep(c)).cloned().collect(),
            None => self.classes.state_filter(keep),
        };
        // Stable order, so that messages listing classes do not change between calls.
        classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        classes
    }

    /// The classes marked `isDefaultBucketClass`, by name.
    pub fn default_classes(&self) -> Vec<Arc<BucketClass>> {
        if self.listed_classes().is_some() {
            return self.classes_where(|c| c.spec.is_default_bucket_class);
        }
        let version = self.defaults.version.load(Ordering::Acquire);
        let fresh = |found: &Option<(u64, Vec<Arc<BucketClass>>)>| match found {
            Some((at, classes)) if *at == version => Some(classes.clone()),
            _ => None,
        };
        // A poisoned lock only means a reader panicked; the cached list is still whole.
        if let Some(classes) = fresh(&self.defaults.found.read().unwrap_or_else(|e| e.into_inner())) {
            return classes;
        }
        let mut found = self.defaults.found.write().unwrap_or_else(|e| e.into_inner());
        if let Some(classes) = fresh(&found) {
            return classes;
        }
        // Read after `version`: a change applied since then raised it, so the list found
        // here is looked for again on the next call.
        let classes = self.classes_where(|c| c.spec.is_default_bucket_class);
        *found = Some((version, classes.clone()));
        classes
    }

    pub fn classes(&self) -> Vec<Arc<BucketClass>> {
        self.classes_where(|_| true)
    }

    pub fn content(&self, name: &str) -> Option<Arc<BucketContent>> {
        self.fetched(|f| f.contents.get(name)).or_else(|| self.contents.get(&ObjectRef::new(name)))
    }

    /// The provisioner whose store a Bucket's bucket is at, as the catalog knows it
    /// ([`Catalog::source_of`]); "" where it knows neither content nor class (yet).
    pub fn provisioner_of(&self, bucket: &Bucket) -> String {
        self.source_of(bucket).map(|source| source.provisioner().to_string()).unwrap_or_default()
    }

    /// What a Bucket's bucket is made or reached from, as the catalog knows it: the
    /// BucketContent its status or spec names, or the one made for it (before its status
    /// says so), else its class.
    pub fn source_of(&self, bucket: &Bucket) -> Option<Source> {
        let named = [bucket.status_content(), bucket.spec.bucket_content_name.as_deref()];
        let content = named.into_iter().flatten().find_map(|name| self.content(name)).or_else(|| {
            let made_for = crate::naming::content_name_for(&bucket.metadata.uid.clone()?);
            self.content(&made_for)
        });
        match content {
            Some(content) => Some(Source::Content(content)),
            None => bucket.spec.bucket_class_name.as_deref().and_then(|name| self.class(name)).map(Source::Class),
        }
    }

    /// Whether the request's user may release Buckets by hand, as the API server answered
    /// for this review ([`Recheck::MayRelease`]); `None` before it was asked, or when it
    /// could not be.
    pub fn may_release(&self) -> Option<bool> {
        self.fetched.as_deref().and_then(|f| f.may_release)
    }

    fn namespace(&self, name: &str) -> Option<Arc<NamespaceMeta>> {
        self.fetched(|f| f.namespaces.get(name)).or_else(|| self.namespaces.get(&ObjectRef::new(name)))
    }

    fn fetched<K>(&self, find: impl Fn(&Fetched) -> Option<&Arc<K>>) -> Option<Arc<K>> {
        self.fetched.as_deref().and_then(find).cloned()
    }

    pub fn namespace_uid(&self, name: &str) -> Option<String> {
        self.namespace(name).and_then(|ns| ns.metadata.uid.clone())
    }

    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespace(name).map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }

    /// Buckets in `namespace`, from the watch cache, other than one named `besides`: a
    /// Bucket created again under the name of one whose deletion the watch has not brought
    /// yet, or a Bucket there judged as its own creation (`policy audit`), is not counted
    /// against itself.
    pub fn bucket_count(&self, namespace: &str, besides: &str) -> usize {
        let names = self.buckets.by_namespace.read().unwrap_or_else(|e| e.into_inner());
        names.get(namespace).map_or(0, |names| names.len() - usize::from(names.contains(besides)))
    }

    pub fn len(&self) -> (usize, usize, usize) {
        (self.classes.len(), self.contents.len(), self.namespaces.len())
    }

    /// The BucketContents, as the catalog holds them: without managedFields and kubectl's
    /// last-applied copy.
    pub fn contents_store(&self) -> Store<BucketContent> {
        self.contents.clone()
    }

    /// Every BucketContent, then each one the watch creates or changes; all of them again
    /// after each list (what changed while the watch was away is known only from the list)
    /// and whenever the reader has fallen behind: nothing is missed, and admission's watch
    /// never waits for the reader. A controller's trigger, as its own watch would be.
    pub fn content_updates(&self) -> impl futures::Stream<Item = Arc<BucketContent>> + Send + 'static {
        updates(self.contents.clone(), self.content_changes.subscribe())
    }

    /// The BucketClasses, as [`Catalog::content_updates`] gives the contents.
    pub fn class_updates(&self) -> impl futures::Stream<Item = Arc<BucketClass>> + Send + 'static {
        updates(self.classes.clone(), self.class_changes.subscribe())
    }
}

/// The objects of `store`, then those `changes` announces. Subscribed before the store is
/// read, so that a change in between is given twice rather than not at all.
fn updates<K>(store: Store<K>, changes: broadcast::Receiver<Change<K>>) -> impl futures::Stream<Item = Arc<K>>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let pending: VecDeque<Arc<K>> = store.state().into();
    futures::stream::unfold((changes, store, pending), |(mut changes, store, mut pending)| async move {
        loop {
            if let Some(next) = pending.pop_front() {
                return Some((next, (changes, store, pending)));
            }
            match changes.recv().await {
                Ok(Change::Applied(object)) => return Some((object, (changes, store, pending))),
                Ok(Change::Listed) | Err(broadcast::error::RecvError::Lagged(_)) => pending.extend(store.state()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Announces on `changes` what the watch applied to `store`. Deletions are not announced:
/// controllers act on deletions through finalizers, while the object is still there.
fn announce<K>(store: Store<K>, changes: broadcast::Sender<Change<K>>) -> impl Fn(&watcher::Event<K>) + Send
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    move |event| {
        let change = match event {
            watcher::Event::Apply(object) => match store.get(&ObjectRef::from_obj(object)) {
                Some(stored) => Change::Applied(stored),
                None => return,
            },
            watcher::Event::InitDone => Change::Listed,
            _ => return,
        };
        // An error only says that nobody listens: this replica is not leading.
        let _ = changes.send(change);
    }
}

fn filled<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut writer: Writer<K> = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader()
}

/// A Namespace as the catalog keeps it: its metadata only.
fn namespace_meta(namespace: Namespace) -> NamespaceMeta {
    NamespaceMeta { types: None, metadata: namespace.metadata, _phantom: Default::default() }
}

/// The annotation in which `kubectl apply` keeps a whole copy of what it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of a cached object reads, admission, policies (`$.class`,
/// `$.content`) and the provisioning loop alike: managedFields and kubectl's copy of the
/// object, which together are most of a stored object's size where objects are applied.
pub(crate) fn trim(meta: &mut kube::core::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps `writer`'s store up to date from `stream`, calling `changed` with each event once
/// it has been applied to the store.
async fn drive<K, S>(stream: S, writer: Writer<K>, kind: &'static str, changed: impl Fn(&watcher::Event<K>) + Send)
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    stream
        .default_backoff()
        .modify(|object: &mut K| trim(object.meta_mut()))
        .reflect(writer)
        .for_each(|event| {
            match event {
                Ok(event) => changed(&event),
                Err(error) => tracing::warn!(kind, %error, "catalog watch failed; retrying with backoff"),
            }
            async {}
        })
        .await;
}

/// Keeps the Bucket names up to date from `stream`, and says when the first list is in.
async fn drive_bucket_names<S>(stream: S, mut writer: BucketNamesWriter, listed: futures::channel::oneshot::Sender<()>)
where
    S: futures::Stream<Item = Result<watcher::Event<BucketMeta>, watcher::Error>> + Send,
{
    let mut listed = Some(listed);
    stream
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    if writer.apply(&event) {
                        // The receiver is gone only when the catalog's readiness was dropped.
                        listed.take().map(|listed| listed.send(()));
                    }
                }
                Err(error) => tracing::warn!(kind = "Bucket", %error, "catalog watch failed; retrying with backoff"),
            }
            async {}
        })
        .await;
}

/// Catalog objects sorted by kind as documents arrive.
#[derive(Default)]
struct Sorted {
    classes: Vec<BucketClass>,
    contents: Vec<BucketContent>,
    namespaces: Vec<Namespace>,
    buckets: Vec<Bucket>,
}

impl Sorted {
    fn add(&mut self, path: &Path, doc: serde_json::Value) -> Result<(), CatalogError> {
        if doc.is_null() {
            return Ok(());
        }
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        match kind.as_str() {
            "BucketClass" => self.classes.push(typed(path, &kind, doc)?),
            "BucketContent" => self.contents.push(typed(path, &kind, doc)?),
            "Namespace" => self.namespaces.push(typed(path, &kind, doc)?),
            "Bucket" => self.buckets.push(typed(path, &kind, doc)?),
            _ => tracing::debug!(path = %path.display(), kind, "catalog skips a document of another kind"),
        }
        Ok(())
    }

    fn into_catalog(self) -> Catalog {
        Catalog::with_buckets(self.classes, self.contents, self.namespaces, self.buckets)
    }
}

/// `doc` as a `K`, kept as the watch keeps it ([`trim`]).
fn typed<K: DeserializeOwned + Resource>(path: &Path, kind: &str, doc: serde_json::Value) -> Result<K, CatalogError> {
    let name = doc.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
    let refused = |message: String| CatalogError::Object {
        path: path.to_path_buf(),
        kind: kind.to_string(),
        name: name.clone(),
        message,
    };
    // The stores index objects by name (and panic on one without); the API server never
    // stores one, but a file written by hand may hold one.
    if name.is_empty() {
        return Err(refused("metadata.name is missing: every object in a catalog needs one".into()));
    }
    let mut object: K = crate::api::from_value(doc).map_err(refused)?;
    trim(object.meta_mut());
    Ok(object)
}

/// Where a Bucket's bucket comes from ([`Catalog::source_of`]).
pub enum Source {
    Content(Arc<BucketContent>),
    Class(Arc<BucketClass>),
}

impl Source {
    pub fn provisioner(&self) -> &str {
        match self {
            Source::Content(content) => content.spec.provisioner(),
            Source::Class(class) => class.spec.provisioner(),
        }
    }

    /// The class parameters: a content's copy of its class's (they hold for it), or the class's.
    pub fn parameters(&self) -> &BTreeMap<String, String> {
        match self {
            Source::Content(content) => &content.spec.parameters,
            Source::Class(class) => &class.spec.parameters,
        }
    }
}

/// The objects of one kind, listed from the API server a page at a time (`policy audit`,
/// `review`, and `serve`'s audit, which judges each page before it asks for the next).
/// Read as they are, not as bucketgate's types: what a policy's path selects is what the
/// API server holds, fields these types lack included.
pub struct Pages {
    api: Api<DynamicObject>,
    resource: ApiResource,
    params: Option<ListParams>,
}

impl Pages {
    pub fn new(client: &Client, resource: ApiResource, limit: u32) -> Pages {
        let api = Api::all_with(client.clone(), &resource);
        Pages { api, resource, params: Some(ListParams::default().limit(limit)) }
    }

    /// The next page, each object a document that says its kind (the items of a list need
    /// not); `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<serde_json::Value>>, kube::Error> {
        let Some(params) = self.params.take() else { return Ok(None) };
        let page = self.api.list(&params).await?;
        if let Some(token) = page.metadata.continue_.as_deref().filter(|token| !token.is_empty()) {
            self.params = Some(params.continue_token(token));
        }
        let mut documents = Vec::with_capacity(page.items.len());
        for object in page.items {
            let mut document = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
            document["apiVersion"] = self.resource.api_version.clone().into();
            document["kind"] = self.resource.kind.clone().into();
            documents.push(document);
        }
        Ok(Some(documents))
    }
}

/// Hands each document of the catalog files below `dir` to `take`, in the files' order,
/// file by file, so that only one file's documents are ever held as YAML values.
fn each_document(
    dir: &Path,
    mut take: impl FnMut(&Path, serde_json::Value) -> Result<(), CatalogError>,
) -> Result<(), CatalogError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    for path in files {
        let text =
            std::fs::read_to_string(&path).map_err(|source| CatalogError::Read { path: path.clone(), source })?;
        for doc in Catalog::documents(&path, &text)? {
            take(&path, doc)?;
        }
    }
    Ok(())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Read { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| CatalogError::Read { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool) -> BucketClass {
        crate::api::from_value(serde_json::json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass",
            "metadata": {"name": name}, "provisioner": "p", "supportedProtocols": ["s3"], "isDefaultBucketClass": default}))
        .unwrap()
    }

    /// Objects read for one review come before the watches' copies of the same names, and
    /// stay with that review's catalog.
    #[test]
    fn fetched_objects_come_first_for_the_review_they_were_read_for() {
        let content = |grant: &str| -> BucketContent {
            crate::api::from_value(serde_json::json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketContent",
                "metadata": {"name": "shared"}, "spec": {"bindableNamespaces": [{"name": grant, "uid": "u"}]}}))
            .unwrap()
        };
        let namespace = |uid: &str| -> Namespace {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "team-a", "uid": uid}})).unwrap()
        };
        let watched = Catalog::from_objects([], [content("team-a")], [namespace("old")]);
        let fetched = Fetched::of([class("new", false)], [content("team-b")], [namespace("new")]);
        let review = watched.with_fetched(fetched);
        assert_eq!(review.content("shared").unwrap().spec.bindable_namespaces[0].name, "team-b");
        assert_eq!(review.namespace_uid("team-a").as_deref(), Some("new"));
        assert!(review.class("new").is_some());
        assert_eq!(watched.content("shared").unwrap().spec.bindable_namespaces[0].name, "team-a");
        assert_eq!(watched.namespace_uid("team-a").as_deref(), Some("old"));
        assert!(watched.class("new").is_none());
    }

    /// The default classes are kept between calls, and found again after the watch
    /// changes the classes.
    #[tokio::test]
    async fn default_classes_follow_the_watch() {
        let (classes, writer) = reflector::store();
        let catalog = Catalog { classes, ..Catalog::from_objects([], [], []) };
        let (events, stream) = futures::channel::mpsc::unbounded();
        let defaults = catalog.defaults.clone();
        tokio::spawn(drive(stream, writer, "BucketClass", move |_| defaults.changed()));
        let send = |event| events.unbounded_send(Ok(event)).unwrap();
        let until = |want: &[&str]| {
            let catalog = catalog.clone();
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            async move {
                for _ in 0..200 {
                    let names: Vec<String> =
                        catalog.default_classes().iter().map(|c| c.metadata.name.clone().unwrap()).collect();
                    if names == want {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                panic!("default classes never became {want:?}");
            }
        };
        until(&[]).await;
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(class("b", true)));
        send(watcher::Event::InitApply(class("plain", false)));
        send(watcher::Event::InitDone);
        until(&["b"]).await;
        send(watcher::Event::Apply(class("a", true)));
        until(&["a", "b"]).await;
        send(watcher::Event::Apply(class("b", false)));
        until(&["a"]).await;
        send(watcher::Event::Delete(class("a", true)));
        until(&[]).await;
    }

    /// What the provisioning loop's controllers are given of the catalog's classes: those
    /// stored, then each change once applied; all of them again after a list, and when the
    /// reader has fallen further behind than the channel holds. A deletion is not given.
    #[tokio::test]
    async fn updates_give_the_store_then_its_changes_and_all_again_after_a_list() {
        let (classes, writer) = reflector::store();
        let mut catalog = Catalog { classes, ..Catalog::from_objects([], [], []) };
        catalog.class_changes = broadcast::channel(4).0;
        let (events, stream) = futures::channel::mpsc::unbounded();
        let announced = announce(catalog.classes.clone(), catalog.class_changes.clone());
        tokio::spawn(drive(stream, writer, "BucketClass", announced));
        let send = |event| events.unbounded_send(Ok(event)).unwrap();
        async fn next(updates: &mut (impl futures::Stream<Item = Arc<BucketClass>> + Unpin), n: usize) -> Vec<String> {
            let taken = updates.take(n).collect::<Vec<_>>();
            let taken = tokio::time::timeout(std::time::Duration::from_secs(5), taken).await;
            let mut names: Vec<String> =
                taken.expect("fewer updates than expected").iter().map(|c| c.metadata.name.clone().unwrap()).collect();
            names.sort();
            names
        }
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(class("a", false)));
        send(watcher::Event::InitDone);
        while catalog.class("a").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        let mut updates = Box::pin(catalog.class_updates());
        assert_eq!(next(&mut updates, 1).await, ["a"], "what is stored comes first");
        send(watcher::Event::Apply(class("b", true)));
        send(watcher::Event::Delete(class("a", false)));
        send(watcher::Event::Apply(class("c", false)));
        assert_eq!(next(&mut updates, 2).await, ["b", "c"], "each change once, the deletion not");
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(class("d", false)));
        send(watcher::Event::InitApply(class("b", false)));
        send(watcher::Event::InitDone);
        assert_eq!(next(&mut updates, 2).await, ["b", "d"], "a list gives the store as it now is");

        // Six changes into a channel of four: the two oldest are lost to this reader, which
        // is given the whole store instead.
        for name in ["e", "f", "g", "h", "i", "j"] {
            send(watcher::Event::Apply(class(name, false)));
        }
        while catalog.class("j").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut given = next(&mut updates, 8).await;
        given.extend(next(&mut updates, 4).await);
        given.sort();
        given.dedup();
        assert_eq!(given, ["b", "d", "e", "f", "g", "h", "i", "j"]);
    }

    /// Neither source keeps managedFields or kubectl's copy of an object; other annotations
    /// stay (the loop reads `cosi.io/force-release` from the catalog's contents).
    #[tokio::test]
    async fn cached_objects_keep_no_managed_fields_or_last_applied_copy() {
        let metadata = serde_json::json!({"name": "standard", "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "annotations": {LAST_APPLIED: "{\"kind\":\"BucketClass\"}", "cosi.io/force-release": "true"}});
        let document = serde_json::json!({"apiVersion": "cosi.io/v1alpha1", "kind": "BucketClass", "metadata": metadata,
            "provisioner": "p", "supportedProtocols": ["s3"]});
        let kept = |class: &BucketClass| {
            assert!(class.metadata.managed_fields.is_none());
            let annotations = class.metadata.annotations.clone().unwrap_or_default();
            assert_eq!(annotations.keys().collect::<Vec<_>>(), ["cosi.io/force-release"]);
        };
        let from_file = Catalog::from_documents([(PathBuf::from("classes.yaml"), document.clone())]).unwrap();
        kept(&from_file.class("standard").unwrap());

        let (classes, writer) = reflector::store();
        let catalog = Catalog { classes, ..Catalog::from_objects([], [], []) };
        let (events, stream) = futures::channel::mpsc::unbounded();
        tokio::spawn(drive(stream, writer, "BucketClass", |_| {}));
        let class: BucketClass = crate::api::from_value(document).unwrap();
        assert!(class.metadata.managed_fields.is_some(), "the watch delivers them");
        for event in [watcher::Event::Init, watcher::Event::InitApply(class), watcher::Event::InitDone] {
            events.unbounded_send(Ok(event)).unwrap();
        }
        while catalog.class("standard").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        kept(&catalog.class("standard").unwrap());
    }

    /// Counts follow the watch as a store would: an update is not a new Bucket, a delete
    /// takes one away, and a relist replaces the names only once it is complete.
    #[test]
    fn bucket_counts_follow_the_watch() {
        let bucket = |namespace: &str, name: &str| BucketMeta {
            types: None,
            metadata: kube::core::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            _phantom: Default::default(),
        };
        let catalog = Catalog::from_objects([], [], []);
        let mut writer = BucketNamesWriter { names: catalog.buckets.clone(), relisting: None };
        let counts = || (catalog.bucket_count("team-a", ""), catalog.bucket_count("team-b", ""));
        assert!(!writer.apply(&watcher::Event::Init));
        writer.apply(&watcher::Event::InitApply(bucket("team-a", "photos")));
        writer.apply(&watcher::Event::InitApply(bucket("team-a", "logs")));
        assert_eq!(counts(), (0, 0), "a list half received is not counted");
        assert!(writer.apply(&watcher::Event::InitDone));
        assert_eq!(counts(), (2, 0));
        writer.apply(&watcher::Event::Apply(bucket("team-a", "photos")));
        writer.apply(&watcher::Event::Apply(bucket("team-b", "photos")));
        assert_eq!(counts(), (2, 1));
        writer.apply(&watcher::Event::Delete(bucket("team-a", "logs")));
        writer.apply(&watcher::Event::Delete(bucket("team-b", "never-seen")));
        assert_eq!(counts(), (1, 1));
        // A relist after a watch error: what was deleted meanwhile is gone after it.
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(bucket("team-b", "photos")));
        assert_eq!(counts(), (1, 1));
        assert!(writer.apply(&watcher::Event::InitDone));
        assert_eq!(counts(), (0, 1));
    }

    #[test]
    fn loads_yaml_and_json_and_skips_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: cosi.io/v1alpha1\nkind: BucketClass\nmetadata: {name: fast}\nprovisioner: p\nsupportedProtocols: [s3]\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, uid: u-1}\n---\n\
             apiVersion: cosi.io/v1alpha1\nkind: Bucket\nmetadata: {name: b, namespace: team-a}\nspec: {}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/c.json"),
            r#"{"apiVersion":"cosi.io/v1alpha1","kind":"BucketContent","metadata":{"name":"legacy"},"spec":{"protocol":{"type":"s3"}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let catalog = Catalog::load_dir(dir.path()).unwrap();
        assert_eq!(catalog.len(), (1, 1, 1));
        assert_eq!(catalog.bucket_count("team-a", ""), 1);
        assert_eq!(catalog.bucket_count("team-a", "b"), 0, "not counted against itself");
        assert_eq!(catalog.bucket_count("team-b", "b"), 0);
        assert_eq!(catalog.class("fast").unwrap().spec.provisioner(), "p");
        assert!(catalog.content("legacy").is_some());
        assert_eq!(catalog.namespace_uid("team-a").as_deref(), Some("u-1"));
        assert!(catalog.is_synced());
    }

    #[test]
    fn broken_files_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: cosi.io/v1alpha1\nkind: BucketClass\nmetadata: {name: x}\nsupportedProtocols: [ftp]\n",
        )
        .unwrap();
        let err = Catalog::load_dir(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("BucketClass \"x\"") && err.contains("unknown variant `ftp`"),
            "{err}"
        );

        // Found by the fuzzer: a nameless object reached the stores, which panicked on it.
        for kind in ["BucketClass", "BucketContent", "Namespace", "Bucket"] {
            std::fs::write(dir.path().join("bad.yaml"), format!("apiVersion: v1\nkind: {kind}\nmetad0ta: {{}}\n"))
                .unwrap();
            let err = Catalog::load_dir(dir.path()).err().unwrap().to_string();
            assert!(err.contains(&format!("bad.yaml: {kind} \"\": metadata.name is missing")), "{err}");
        }

        std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed\n").unwrap();
        let err = Catalog::load_dir(dir.path()).err().unwrap();
        assert!(matches!(err, CatalogError::Parse { .. }), "{err}");
        assert!(matches!(Catalog::load_dir(&dir.path().join("nope")), Err(CatalogError::Read { .. })));
    }
}
