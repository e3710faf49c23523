//! The provisioning loop: binds Buckets to BucketContents, creates, shares and deletes
//! buckets through the drivers, and writes each Bucket's credentials Secret.
//!
//! It runs in `bucketgate serve` on the replica that holds the `bucketgate-provisioner`
//! Lease; every replica answers admission. Its watches wake it, as soon as the API server
//! has stored an object, and keep it correct across restarts. Admission cannot wake it
//! sooner: kube-runtime reconciles only what its watch has delivered, and at admission the
//! object is not stored yet (and may still be refused by a later webhook or a quota).

pub mod credentials;
mod looks;
pub mod plan;
mod reconcile;
pub mod waiting;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, watch};

use crate::api::{Bucket, BucketClass, BucketContent, BucketPhase};
use crate::catalog::Catalog;
use crate::config::{Config, S3Settings};
use crate::driver::{Credentials, Driver, DriverError};
use crate::metrics::{BucketStateLabels, BucketTally, Metrics, ProvisionerLabel, TurnLabels};
use crate::turns::Turns;

/// Makes a driver for a provisioner's settings and credentials.
pub type DriverFactory = Box<dyn Fn(&S3Settings, Credentials) -> Arc<dyn Driver> + Send + Sync>;

/// S3 drivers sharing one connection pool, and each store's bound on IAM requests.
pub fn s3_drivers(metrics: &Metrics) -> DriverFactory {
    let drivers = crate::driver::s3::S3Drivers::new(crate::driver::s3::http_client(), metrics.iam_requests.clone());
    Box::new(move |settings, credentials| Arc::new(drivers.driver(settings, credentials)))
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    /// Events for `kubectl describe`; none in the tests that do not expect them.
    pub recorder: Option<Recorder>,
    pub drivers: DriverFactory,
    pub metrics: Arc<Metrics>,
    /// Failed attempts per object, for exponential backoff; cleared on success.
    attempts: Mutex<HashMap<String, u32>>,
    /// How often bound Buckets are looked at when nothing changed ([`plan::recheck_after`]).
    recheck_interval: Duration,
    /// When each bound Bucket's store was last asked whether its bucket is there.
    store_looks: looks::StoreLooks,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        recorder: Option<Recorder>,
        drivers: DriverFactory,
        metrics: Arc<Metrics>,
    ) -> Context {
        let recheck_interval = plan::RECHECK_INTERVAL;
        let store_looks = looks::StoreLooks::at_timed_looks(recheck_interval, metrics.buckets_missing.clone());
        let attempts = Mutex::new(HashMap::new());
        Context { client, config, recorder, drivers, metrics, attempts, recheck_interval, store_looks }
    }

    /// Looks at bound Buckets, and asks their stores, every `interval` (to one and a half
    /// times it) in place of the hour.
    pub fn with_recheck_interval(mut self, interval: Duration) -> Context {
        self.recheck_interval = interval;
        self.store_looks = looks::StoreLooks::at_timed_looks(interval, self.metrics.buckets_missing.clone());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("backend: {0}")]
    Driver(DriverError),
    /// Retrying cannot help until something changes (a missing class, no driver).
    #[error("{0}")]
    Permanent(String),
    /// The provisioner Secret a class names is not there, most often not yet: GitOps applies
    /// it beside the class and the Buckets, or External Secrets writes it after its own
    /// sync. Retried as a failure that may pass (1 s, 2 s, 4 s ..., as CSI's
    /// external-provisioner retries a missing Secret of a StorageClass), the Bucket Pending
    /// with reason [`plan::PROVISIONER_SECRET_MISSING`]: bound seconds after the Secret
    /// comes, rather than Failed until a retry five minutes later.
    #[error("{0}")]
    ProvisionerSecretMissing(String),
    /// A Bucket's access to a shared BucketContent was withdrawn: it stays Failed, with
    /// [`plan::ACCESS_REVOKED`] as its reason, until it is deleted.
    #[error("{0}")]
    AccessRevoked(String),
}

impl Error {
    pub(super) fn is_permanent(&self) -> bool {
        matches!(self, Error::Permanent(_) | Error::AccessRevoked(_) | Error::Driver(DriverError::Permanent(_)))
    }
}

/// A reconcile's result as the metrics count it.
fn outcome(result: &Result<Action, Error>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(error) if error.is_permanent() => "failed",
        Err(_) => "retry",
    }
}

/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// 1 s, 2 s, 4 s ... up to five minutes for errors that may pass; five minutes for the
/// others, which mostly wait for a change that triggers a new reconcile anyway.
pub fn backoff(attempt: u32, permanent: bool) -> Duration {
    if permanent {
        return MAX_BACKOFF;
    }
    Duration::from_secs(1u64 << attempt.min(9)).min(MAX_BACKOFF)
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or("")
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = {
        let mut attempts = ctx.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let count = attempts.entry(key(&*object)).or_insert(0);
        *count += 1;
        *count
    };
    let delay = backoff(attempt - 1, error.is_permanent());
    tracing::warn!(object = %key(&*object), attempt, retry_in = ?delay, %error, "reconcile failed");
    Action::requeue(delay)
}

/// A Bucket whose revocation its status records already waits only for its deletion,
/// which its watch brings: nothing else can change it, and looking again every five minutes
/// would only repeat its Event and log line. One that does not record it yet (its status
/// could not be written) is looked at again as any failure is.
fn bucket_error_policy(bucket: Arc<Bucket>, error: &Error, ctx: Arc<Context>) -> Action {
    if matches!(error, Error::AccessRevoked(_)) && plan::access_revoked(&bucket) {
        return Action::await_change();
    }
    error_policy(bucket, error, ctx)
}

async fn reconcile_bucket(bucket: Arc<Bucket>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile::bucket(bucket.clone(), ctx.clone()).await;
    ctx.metrics.reconciled("Bucket", outcome(&result));
    match &result {
        Ok(_) => {
            ctx.attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(&*bucket));
        }
        Err(error) if bucket.meta().deletion_timestamp.is_none() => record_failure(&bucket, error, &ctx).await,
        Err(error) => release_failed(&*bucket, error, &ctx).await,
    }
    result
}

async fn reconcile_content(content: Arc<BucketContent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile::content(content.clone(), ctx.clone()).await;
    ctx.metrics.reconciled("BucketContent", outcome(&result));
    match &result {
        Ok(_) => {
            ctx.attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(&*content));
        }
        // The store's failures are on the content already (its status and a BackendFailed
        // Event); the others, a provisioner Secret gone say, would only be logged.
        Err(Error::Driver(_)) => {}
        Err(error) => release_failed(&*content, error, &ctx).await,
    }
    result
}

/// Says on an object being deleted what its deletion waits on: its phase stays as it was,
/// and it would otherwise stay Terminating with nothing in `kubectl describe`.
async fn release_failed<K: Resource<DynamicType = ()>>(object: &K, error: &Error, ctx: &Context) {
    let note = format!("the deletion waits: {error}");
    ctx.event(object, kube::runtime::events::EventType::Warning, "ReleaseFailed", "Release", note).await;
}

/// Puts a failure on the Bucket, where its user looks: phase Failed when retrying cannot
/// help, Pending while it is retried, with the reason in the Ready condition.
async fn record_failure(bucket: &Bucket, error: &Error, ctx: &Context) {
    let (status, reason) = match error {
        Error::AccessRevoked(message) => (plan::revoked(bucket, message.clone()), plan::ACCESS_REVOKED),
        Error::ProvisionerSecretMissing(message) => {
            let reason = plan::PROVISIONER_SECRET_MISSING;
            (plan::not_ready(bucket, BucketPhase::Pending, reason, message.clone()), reason)
        }
        _ if error.is_permanent() => {
            (plan::not_ready(bucket, BucketPhase::Failed, "Failed", error.to_string()), "Failed")
        }
        _ => (plan::not_ready(bucket, BucketPhase::Pending, "Retrying", error.to_string()), "Retrying"),
    };
    let api: Api<Bucket> = Api::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default());
    if let Err(patch_error) = write_status(&api, bucket, &status).await {
        tracing::warn!(bucket = %key(bucket), %patch_error, "cannot record the failure on the Bucket");
    }
    ctx.event(bucket, kube::runtime::events::EventType::Warning, reason, "Provision", error.to_string()).await;
}

/// Writes the status patch `status` of `object`, unless it says again what the object shows
/// ([`plan::changes`]): a failure met again at a retry, a Bucket still waiting on the same
/// thing. A store down for an hour would otherwise have every status written again at each
/// retry.
async fn write_status<K>(api: &Api<K>, object: &K, status: &serde_json::Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if plan::changes(object, status) {
        api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(status)).await?;
    }
    Ok(())
}

/// A watch that retries with backoff and keeps what the catalog keeps of an object (see
/// [`crate::catalog::trim`]).
fn trimmed<K>(api: Api<K>) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| crate::catalog::trim(object.meta_mut()))
}

/// Runs both controllers, for as long as the task that runs them is not aborted.
///
/// Two watches of their own: Buckets, and by metadata the Secrets bucketgate wrote.
/// BucketContents and BucketClasses come from the admission `catalog`, which every replica
/// keeps anyway: the leader holds one copy of each, not two.
pub async fn run_controllers(ctx: Arc<Context>, catalog: Catalog, max_concurrent_reconciles: u16) {
    let client = ctx.client.clone();
    let turns = Arc::new(ReconcileTurns::new(max_concurrent_reconciles, ctx.metrics.reconcile_turns.clone()));
    let (bucket_turns, for_buckets) = (turns.clone(), catalog.clone());
    let (buckets_store, buckets_writer) = reflector::store();
    let (ctx_for_sweep, buckets_for_sweep) = (ctx.clone(), buckets_store.clone());
    // Counted while the controllers run: this future is dropped when they stop.
    let _counting = ctx.metrics.bucket_states.follow(tally(buckets_store.clone(), catalog.clone(), ctx.config.clone()));
    // A Bucket that waits on its class, or on the content it binds, goes on as soon as that
    // appears or changes, rather than at its next retry.
    let waiting = waiting::Waiting::default();
    let (for_classes, for_contents) = (waiting.clone(), waiting.clone());
    let (keyed_buckets, keyed_catalog) = (buckets_store.clone(), catalog.clone());
    let provisioner_secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default().labels(plan::PROVISIONER_SECRET_LABEL),
    )
    .default_backoff()
    .touched_objects();
    let buckets_watch = trimmed(Api::<Bucket>::all(client.clone()))
        .inspect_ok(move |event| waiting.apply(event))
        .reflect(buckets_writer)
        .applied_objects();
    let buckets = Controller::for_stream(buckets_watch, buckets_store)
        // Only the Secrets bucketgate wrote carry this label; no need to watch the others.
        // kube-runtime watches owned objects by their metadata: no credentials are held here.
        .owns(Api::<Secret>::all(client), watcher::Config::default().labels(plan::BUCKET_NAME_LABEL))
        .watches_shared_stream(catalog.class_updates(), move |class: Arc<BucketClass>| {
            for_classes.on_class(&class.name_any())
        })
        .watches_shared_stream(catalog.content_updates(), move |content: Arc<BucketContent>| {
            for_contents.on_content(&content.name_any())
        })
        // A provisioner Secret an admin labelled wakes the Buckets it keys as it comes or
        // changes: one waiting for it binds at once, and Secrets holding its key take the
        // new one now rather than at their next look. By metadata: no key is held here.
        .watches_stream(provisioner_secrets, move |secret: PartialObjectMeta<Secret>| {
            let secret = (secret.namespace().unwrap_or_default(), secret.name_any());
            waiting::keyed_by(&secret, &keyed_buckets.state(), &keyed_catalog)
        })
        .run(
            move |bucket, ctx| {
                let turns = bucket_turns.of(&for_buckets.provisioner_of(&bucket));
                async move { turns.take(reconcile_bucket(bucket, ctx)).await }
            },
            bucket_error_policy,
            ctx.clone(),
        )
        .for_each(|result| report("Bucket", result));
    // The content controller acts only on contents being deleted (reconcile::content): the
    // others are not queued, at the start or after a list, 10,000 reconciles for nothing.
    let deleting =
        catalog.content_updates().filter(|content| std::future::ready(content.metadata.deletion_timestamp.is_some()));
    let contents = Controller::for_shared_stream(deleting, catalog.contents_store())
        .run(
            move |content, ctx| {
                let turns = turns.of(content.spec.provisioner());
                async move { turns.take(reconcile_content(content, ctx)).await }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| report("BucketContent", result));
    let orphans = sweep_orphans(ctx_for_sweep, catalog, buckets_for_sweep);
    futures::future::join3(buckets, contents, orphans).await;
}

/// At the start, and then every recheck interval, the Buckets that went without being
/// released while holding a key on a content ([`plan::gone_unreleased`],
/// [`reconcile::release_gone`]): no watch shows such a going (a Bucket without a finalizer
/// is gone at once, and one gone while no replica led is never seen to go), and its key
/// would go on working.
async fn sweep_orphans(ctx: Arc<Context>, catalog: Catalog, buckets: reflector::Store<Bucket>) {
    // Both lists first: swept on half of either, a content would be missed until the next
    // sweep, an interval later.
    if buckets.wait_until_ready().await.is_err() || catalog.contents_store().wait_until_ready().await.is_err() {
        return;
    }
    let mut ticker = tokio::time::interval(ctx.recheck_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said while this loop runs only: once it stops, the next leader's sweep says.
    let _said = SaidWhileRunning(ctx.metrics.unrevoked_keys.clone());
    loop {
        ticker.tick().await;
        let uids: HashSet<String> = buckets.state().iter().filter_map(|bucket| bucket.uid()).collect();
        let unrevoked = sweep(&ctx, &catalog.contents_store(), &uids).await;
        for provisioner in ctx.config.provisioners.iter().filter(|p| ctx.config.has_driver(&p.name)) {
            let label = ProvisionerLabel { provisioner: provisioner.name.clone() };
            ctx.metrics
                .unrevoked_keys
                .get_or_create(&label)
                .set(unrevoked.get(&provisioner.name).copied().unwrap_or(0));
        }
    }
}

/// One sweep of `contents` against the Buckets there are (`buckets`, uids): the keys it
/// could not revoke, by provisioner, for `bucketgate_unrevoked_keys`.
async fn sweep(
    ctx: &Context,
    contents: &reflector::Store<BucketContent>,
    buckets: &HashSet<String>,
) -> BTreeMap<String, i64> {
    let mut unrevoked = BTreeMap::<String, i64>::new();
    for (content, holder, held) in plan::gone_unreleased(contents.state().iter(), buckets) {
        let bucket = format!("{}/{}", holder.namespace, holder.name);
        match reconcile::release_gone(&content, &holder, held, ctx).await {
            Ok(true) => tracing::warn!(
                content = %content.name_any(), %bucket, released = held == plan::Held::Owner,
                "revoked the key of a Bucket that went unreleased"
            ),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(
                    content = %content.name_any(), %bucket, %error,
                    "cannot revoke the key of a Bucket that went unreleased; trying again at the next sweep"
                );
                *unrevoked.entry(content.spec.provisioner().to_string()).or_default() += 1;
            }
        }
    }
    unrevoked
}

/// Clears a gauge of the provisioning loop's when dropped: the loop stopped (this replica no
/// longer leads, or the loop starts again with new drivers), and what it found is not said
/// as if it still looked.
struct SaidWhileRunning(Family<ProvisionerLabel, Gauge>);

impl Drop for SaidWhileRunning {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Counts the Buckets of the provisioners this loop drives by where they stand
/// ([`plan::standing`]), for `bucketgate_buckets`; another deployment's are its to count.
/// Public for the benchmark of a scrape (benches/waking.rs).
pub fn tally(buckets: reflector::Store<Bucket>, catalog: Catalog, config: Config) -> BucketTally {
    Box::new(move || {
        let mut counts = BTreeMap::new();
        for bucket in buckets.state() {
            // Those whose class is not there yet (no provisioner known) are this loop's too.
            let provisioner = catalog.provisioner_of(&bucket);
            if !config.drives(&provisioner) {
                continue;
            }
            let (state, reason) = plan::standing(&bucket);
            *counts.entry(BucketStateLabels { provisioner, state, reason }).or_insert(0) += 1;
        }
        counts
    })
}

/// How many reconciles run at once for each provisioner, Buckets and BucketContents
/// together. A new leader is handed every Bucket at once: it works on a few of each store's
/// at a time, as client-go's workers would, rather than sending the API server and the
/// stores thousands of requests together. One bound for all would let a store that is slow,
/// or Buckets queued for its IAM API, hold up the Buckets of every other store.
struct ReconcileTurns {
    bound: usize,
    by_provisioner: Mutex<HashMap<String, Arc<Turns>>>,
    gauges: Family<TurnLabels, Gauge>,
}

impl ReconcileTurns {
    /// `bound` 0: no bound (the turns are still counted).
    fn new(bound: u16, gauges: Family<TurnLabels, Gauge>) -> ReconcileTurns {
        let bound = if bound == 0 { Semaphore::MAX_PERMITS } else { bound.into() };
        ReconcileTurns { bound, by_provisioner: Mutex::default(), gauges }
    }

    fn of(&self, provisioner: &str) -> Arc<Turns> {
        let mut by_provisioner = self.by_provisioner.lock().unwrap_or_else(|e| e.into_inner());
        let made = || {
            Arc::new(Turns::new(Arc::new(Semaphore::new(self.bound)), |state| {
                self.gauges.get_or_create_owned(&TurnLabels { provisioner: provisioner.to_string(), state })
            }))
        };
        by_provisioner.entry(provisioner.to_string()).or_insert_with(made).clone()
    }
}

/// Logs what a controller reports that nothing else does: a watch of its failing (no RBAC
/// for it, the API server away), which otherwise would leave the loop idle without a word.
/// Failed reconciles are logged by [`error_policy`].
async fn report<T>(kind: &'static str, result: Result<T, kube::runtime::controller::Error<Error, watcher::Error>>) {
    if let Err(kube::runtime::controller::Error::QueueError(error)) = result {
        watch_failed(kind, Some(error)).await;
    }
}

async fn watch_failed(controller: &'static str, error: Option<watcher::Error>) {
    if let Some(error) = error {
        tracing::warn!(controller, %error, "a watch failed; retrying with backoff");
    }
}

/// Stops the controllers' task and waits until it has: a reconcile still running on another
/// worker would otherwise record what it found after this replica forgot it
/// ([`looks::StoreLooks::clear`]).
async fn stop_controllers(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// The Lease whose holder runs the provisioning loop.
pub const LEASE: &str = "bucketgate-provisioner";

/// This replica as the Lease knows it, and how much its loop does at once when it leads.
#[derive(Clone, Debug)]
pub struct Replica {
    pub lease_namespace: String,
    pub identity: String,
    /// Reconciles run at once for each provisioner; 0 for no bound.
    pub max_concurrent_reconciles: u16,
    /// How often bound Buckets are looked at, and their stores asked, when nothing changed.
    pub recheck_interval: Duration,
}

/// Leader election around the controllers: they run while this replica holds the Lease.
///
/// When `shutdown` completes the controllers stop and the Lease is released rather than
/// left to expire. A follower takes a released Lease at once: kube-lease-manager looks
/// again only when the Lease it last read expires (up to 15 s on), so a follower also
/// watches the Lease and, when it sees it released, starts a new manager, which reads it
/// afresh. A rollout then holds up the Buckets created during it for a moment, not 15 s.
pub async fn run(
    client: Client,
    catalog: Catalog,
    config: Config,
    replica: Replica,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let Replica { lease_namespace, identity, max_concurrent_reconciles, recheck_interval } = replica;
    // Set first and kept: a replica that should lead and cannot (no Lease, say) is what the
    // no-leader alert is for.
    metrics.provisioning_enabled.set(1);
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "bucketgate".into(), instance: Some(identity.clone()) });
    let ctx = Context::new(client.clone(), config, Some(recorder), s3_drivers(&metrics), metrics.clone());
    let ctx = Arc::new(ctx.with_recheck_interval(recheck_interval));
    let mut released = std::pin::pin!(released(Api::namespaced(client.clone(), &lease_namespace)));
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Some(manager) = lease_manager(&client, &lease_namespace, &identity, shutdown.as_mut()).await else {
            return Ok(());
        };
        let (mut leading, lease) = manager.watch().await;
        let stop = loop {
            let leader = *leading.borrow_and_update();
            match (leader, running.is_some()) {
                (true, false) => {
                    tracing::info!("leading: the provisioning loop runs on this replica");
                    let controllers = run_controllers(ctx.clone(), catalog.clone(), max_concurrent_reconciles);
                    running = Some(tokio::spawn(controllers));
                }
                (false, true) => {
                    tracing::info!("no longer leading: the provisioning loop stops on this replica");
                    if let Some(task) = running.take() {
                        stop_controllers(task).await;
                    }
                    ctx.store_looks.clear();
                }
                _ => {}
            }
            metrics.leader.set(i64::from(running.is_some()));
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break Stop::ManagerEnded },
                Some(()) = released.next(), if running.is_none() => break Stop::Retake,
                () = &mut shutdown => {
                    tracing::info!("stopping: the provisioning loop stops and the Lease is released");
                    break Stop::Shutdown;
                }
            }
        };
        let led = running.take();
        let was_leading = led.is_some();
        if let Some(task) = led {
            stop_controllers(task).await;
        }
        ctx.store_looks.clear();
        metrics.leader.set(0);
        if !was_leading && !matches!(stop, Stop::ManagerEnded) {
            // A follower holds nothing to release: its manager is stopped where it waits, to
            // read the Lease afresh or for good. (Dropping its channel would make it release
            // the Lease if it thought it expired, which another replica may have taken in
            // the meantime.)
            lease.abort();
            let _ = lease.await;
            if matches!(stop, Stop::Retake) {
                continue;
            }
            return Ok(());
        }
        // The manager releases the Lease once nobody listens to it any more, and reports
        // how it ended.
        drop(leading);
        lease.await??;
        return Ok(());
    }
}

/// Why a replica stopped following its Lease manager.
enum Stop {
    /// The Lease was seen released: a new manager reads it afresh.
    Retake,
    Shutdown,
    /// The manager's task ended by itself.
    ManagerEnded,
}

/// Runs the loop with the configuration in force, and from the start again with each new
/// one, which may bring other drivers, endpoints and provisioners to drive: the leader
/// releases its Lease, and the replicas run for it again with what they now read. While the
/// configuration has no driver, nothing runs and this replica never leads.
pub async fn supervise(
    client: Client,
    catalog: Catalog,
    mut configs: watch::Receiver<Arc<Config>>,
    replica: Replica,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let driven = configs.borrow_and_update().driven();
        if !driven.has_any_driver() {
            metrics.provisioning_enabled.set(0);
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                Ok(()) = configs.changed() => continue,
            }
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let running = run(client.clone(), catalog.clone(), driven.clone(), replica.clone(), metrics.clone(), stopped);
        let mut running = std::pin::pin!(running);
        // A closed channel (the store gone) is no change: the loop runs on until shutdown.
        // Nor is an edit the loop does not read (a provisioner served at admission only): a
        // restart lists every watch again and hands the Lease over, for nothing.
        let again = loop {
            tokio::select! {
                result = &mut running => return result,
                () = &mut shutdown => break false,
                Ok(()) = configs.changed() => {
                    if configs.borrow_and_update().driven() != driven {
                        break true;
                    }
                }
            }
        };
        if again {
            tracing::info!("the configuration changed: the provisioning loop starts again with it");
        }
        let _ = stop.send(());
        running.await?;
        if !again {
            return Ok(());
        }
    }
}

/// A manager of the Lease, once the API server lets it read the Lease; `None` when shutdown
/// comes first. Not reading it is retried, as the watches retry: a replica that started
/// while the API server was away, or before its Role was granted, would otherwise never
/// provision while it went on answering admission.
async fn lease_manager(
    client: &Client,
    namespace: &str,
    identity: &str,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<kube_lease_manager::LeaseManager> {
    let mut attempt = 0;
    loop {
        let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await;
        // The loop's own backoff, kept short: nothing else makes this replica provision.
        let wait = backoff(attempt, false).min(Duration::from_secs(30));
        attempt = attempt.saturating_add(1);
        match built {
            Ok(manager) => return Some(manager),
            Err(error) => tracing::warn!(%error, retry_in = ?wait, "cannot read the provisioning Lease"),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.as_mut() => return None,
        }
    }
}

/// An item each time the Lease is seen without a holder (released, or not yet taken).
fn released(leases: Api<Lease>) -> impl futures::Stream<Item = ()> + Send {
    watcher(leases, watcher::Config::default().fields(&format!("metadata.name={LEASE}")))
        .default_backoff()
        .applied_objects()
        .filter_map(|lease| async move {
            match lease {
                Ok(lease) => {
                    lease.spec.is_none_or(|spec| spec.holder_identity.is_none_or(|h| h.is_empty())).then_some(())
                }
                Err(error) => {
                    // The manager still takes the Lease when it expires.
                    watch_failed("Lease", Some(error)).await;
                    None
                }
            }
        })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(0, false), Duration::from_secs(1));
        assert_eq!(backoff(3, false), Duration::from_secs(8));
        assert_eq!(backoff(30, false), MAX_BACKOFF);
        assert_eq!(backoff(0, true), MAX_BACKOFF);
    }
}
