//! Reconciling Buckets and BucketContents: one pass brings the cluster and the backend one
//! step closer to what the Bucket asks for, and is safe to repeat at any point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::looks;
use super::plan::{self, Key, KeyTurn, KeyWork};
use super::{Context, Error, write_status};
use crate::api::{Bucket, BucketClass, BucketContent, BucketContentPhase, BucketPhase, ReleasePolicy};
use crate::config::S3Settings;
use crate::driver::options::KeyRotation;
use crate::driver::{Connection, Credentials, Deletion, Driver, DriverError, Grant, Metered};
use crate::naming::{check_dns1123_subdomain, secret_chosen_by_bucket};

pub async fn bucket(bucket: Arc<Bucket>, ctx: Arc<Context>) -> Result<Action, Error> {
    if bucket.meta().deletion_timestamp.is_some() {
        return release(&bucket, &ctx).await;
    }
    let namespace = bucket.namespace().unwrap_or_default();
    let buckets: Api<Bucket> = Api::namespaced(ctx.client.clone(), &namespace);
    if !crate::api::held(&*bucket) {
        // Admission adds it; this covers Buckets created while the webhook was away.
        let patch = plan::finalizer_added(bucket.meta());
        buckets.patch(&bucket.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Action::await_change());
    }
    if let Some(problem) = plan::unnameable(&bucket) {
        return Err(Error::Permanent(problem));
    }
    let bound = match &bucket.spec.bucket_content_name {
        Some(name) => match bind(&bucket, name, &ctx).await? {
            Some(bound) => bound,
            None => return Ok(Action::requeue(Duration::from_secs(30))),
        },
        None => match provision(&bucket, &ctx).await? {
            Some(bound) => bound,
            // Another controller's Bucket: admission only, here.
            None => return Ok(Action::await_change()),
        },
    };
    if !look_at_store(&bucket, &bound, &ctx).await {
        return missing(&bucket, &bound.content, &buckets, &ctx).await;
    }
    let content = bound.content.name_any();
    // The next look: at the recheck interval, or sooner where the key's next turn is.
    let next_look = |bucket: &Bucket, turn: Option<Duration>| {
        let recheck = plan::recheck_after(bucket, ctx.recheck_interval);
        Action::requeue(turn.map_or(recheck, |turn| turn.min(recheck)))
    };
    let (bucket, key, turn) = match credentials(&bucket, &bound, &ctx).await? {
        Issued::Taken(retry) => return Ok(Action::requeue(retry)),
        Issued::Written(key) => (bucket, key, None),
        Issued::Found(recorded, turn) => {
            let key = recorded.unwrap_or_else(|| Key::assumed(&bucket, &bound.content));
            if plan::bound_status(&bucket, &content, key).is_none() {
                return Ok(next_look(&bucket, turn));
            }
            // The Secret was written, but the Bucket in the watch cache is not Bound: most
            // often the Secret's own watch event woke this reconcile before the Bucket's
            // brought the status written a moment ago. The API server's copy decides
            // whether to write, so that each Bucket is written Bound, and told so, once.
            let Some(current) = buckets.get_opt(&bucket.name_any()).await? else { return Ok(Action::await_change()) };
            let key = recorded.unwrap_or_else(|| Key::assumed(&current, &bound.content));
            (Arc::new(current), key, turn)
        }
    };
    let Some(status) = plan::bound_status(&bucket, &content, key) else {
        return Ok(next_look(&bucket, turn));
    };
    let was_bound = bucket.phase() == Some(BucketPhase::Bound);
    let was_missing = plan::reports_missing(&bucket);
    buckets.patch_status(&bucket.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    if was_missing {
        let note = format!("the store has bucket {} again", bound.connection.bucket_name);
        ctx.event(&*bucket, EventType::Normal, "BucketFound", "Provision", note).await;
    }
    let took = plan::time_to_bound(&bucket, jiff::Timestamp::now());
    if let Some(took) = took {
        ctx.metrics.time_to_bound.observe(took.as_secs_f64());
    }
    if !was_bound {
        // What the seed report's users timed by hand, in `kubectl describe bucket`.
        let after = took.map(|t| format!(", {} s after the Bucket was created", t.as_secs())).unwrap_or_default();
        let note = format!("bound to BucketContent {content}{after}");
        ctx.event(&*bucket, EventType::Normal, "Bound", "Provision", note).await;
    }
    Ok(next_look(&bucket, turn))
}

/// Greenfield: the BucketContent first (with the backend name in it), then the bucket.
/// `None` when the class's provisioner is driven by another controller.
///
/// The class is read only to make the content, which keeps a copy of what it needs from
/// it: a class deleted later, as admins delete StorageClasses, leaves its Buckets bound.
async fn provision(bucket: &Bucket, ctx: &Context) -> Result<Option<Bound>, Error> {
    let contents: Api<BucketContent> = Api::all(ctx.client.clone());
    let name = crate::naming::content_name_for(&bucket.uid().unwrap_or_default());
    let content = match contents.get_opt(&name).await? {
        Some(content) if plan::made_for(&content, bucket) => {
            if !ctx.drives(content.spec.provisioner()) {
                return Ok(None);
            }
            content
        }
        Some(_) => return Err(Error::Permanent(format!("BucketContent {name} exists and belongs to another Bucket"))),
        None => {
            let class_name = bucket.spec.bucket_class_name.clone().unwrap_or_default();
            let class = Api::<BucketClass>::all(ctx.client.clone())
                .get_opt(&class_name)
                .await?
                .ok_or_else(|| Error::Permanent(format!("BucketClass {class_name:?} does not exist")))?;
            if !ctx.drives(class.spec.provisioner()) {
                return Ok(None);
            }
            let namespace = bucket.namespace().unwrap_or_default();
            let uid = Api::<Namespace>::all(ctx.client.clone()).get(&namespace).await?.uid().unwrap_or_default();
            let content = plan::greenfield_content(bucket, &class, &uid).map_err(Error::Permanent)?;
            let created = contents.create(&PostParams::default(), &content).await?;
            ctx.event(
                bucket,
                EventType::Normal,
                "ContentCreated",
                "Provision",
                format!("created BucketContent {name}"),
            )
            .await;
            created
        }
    };
    // Bound only once the bucket was made and where it is was written down: nothing to ask
    // of the store again.
    if content.phase() == Some(BucketContentPhase::Bound) {
        let connection = recorded_connection(&content);
        return Ok(Some(Bound { content, connection, driver: None }));
    }
    let options = match plan::asked_of_store(&content) {
        Ok(options) => options,
        Err(message) => return Err(content_failed(&content, DriverError::Permanent(message), ctx).await),
    };
    let driver = ctx.driver_for(&content, &owner_of(bucket)).await?;
    let backend = plan::backend_name(&content).to_string();
    let connection = match driver.create_bucket(&backend, &options).await {
        Ok(connection) => connection,
        Err(error) => return Err(content_failed(&content, error, ctx).await),
    };
    tag(bucket, &content, &*driver, ctx).await;
    contents.patch(&name, &PatchParams::default(), &Patch::Merge(&plan::connection_recorded(&connection))).await?;
    let asked = options.summary();
    let status = plan::content_status(&content, BucketContentPhase::Bound, format!("bucket {backend} created{asked}"));
    let content = contents.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    let note = format!("created bucket {backend}{asked}");
    ctx.event(bucket, EventType::Normal, "BucketCreated", "Provision", note).await;
    Ok(Some(Bound { content, connection, driver: Some(driver) }))
}

/// Tags the bucket made for `bucket` with whom it is for. Only said where it fails: the
/// tags serve whoever looks at the store, not the Bucket, which works without them; a store
/// that keeps no tags on buckets is passed over.
async fn tag(bucket: &Bucket, content: &BucketContent, driver: &dyn Driver, ctx: &Context) {
    let backend = plan::backend_name(content);
    match driver.tag_bucket(backend, &plan::bucket_tags(bucket, content)).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(bucket = %super::key(bucket), "the store keeps no tags on buckets"),
        Err(error) => {
            let note = plan::not_tagged(backend, &error);
            ctx.event(bucket, EventType::Warning, "BucketNotTagged", "Provision", note).await;
        }
    }
}

/// Where a BucketContent says its bucket is.
fn recorded_connection(content: &BucketContent) -> Connection {
    let s3 = content.spec.protocol.s3.clone().unwrap_or_default();
    Connection {
        endpoint: s3.endpoint.unwrap_or_default(),
        region: s3.region.unwrap_or_else(|| "us-east-1".into()),
        bucket_name: s3.bucket_name.unwrap_or_default(),
        signature_version: s3.signature_version.unwrap_or_else(|| "s3v4".into()),
    }
}

/// Sharing and brownfield: an existing BucketContent, if the namespace may bind it.
async fn bind(bucket: &Bucket, name: &str, ctx: &Context) -> Result<Option<Bound>, Error> {
    let Some(content) = Api::<BucketContent>::all(ctx.client.clone()).get_opt(name).await? else {
        pending(bucket, "ContentNotFound", format!("BucketContent {name} does not exist"), ctx).await?;
        return Ok(None);
    };
    // Admission refuses these too; a content deleted or released since, or while the webhook
    // was away, is not bound now.
    let bound_before = bucket.status_content() == Some(name);
    if let Some(closed) = content.closed_to_binding().filter(|_| !bound_before) {
        let (reason, message) = (closed.reason(), closed.message(name));
        pending(bucket, reason, message.clone(), ctx).await?;
        ctx.event(bucket, EventType::Warning, reason, "Provision", message).await;
        return Ok(None);
    }
    if !ctx.drives(content.spec.provisioner()) {
        return Err(Error::Permanent(format!(
            "BucketContent {name} belongs to provisioner {:?}, which has no driver here",
            content.spec.provisioner()
        )));
    }
    // Admission refuses a new Bucket of such a content; one made while the webhook was away
    // does not bind it here either. Buckets bound before go on.
    if let Some(problem) = secret_chosen_by_bucket(&content.spec.parameters).filter(|_| !bound_before) {
        return Err(Error::Permanent(format!("BucketContent {name}: {problem}")));
    }
    let namespace = bucket.namespace().unwrap_or_default();
    let uid = Api::<Namespace>::all(ctx.client.clone()).get(&namespace).await?.uid().unwrap_or_default();
    // Checked again here, not only at admission: the grant may have changed since.
    let listed = content.spec.bindable_namespaces.iter().any(|b| b.name == namespace && b.uid == uid);
    if plan::access_revoked(bucket) {
        // The Secret keeps the revoked key (bucketgate writes into a Secret only a rotated
        // key): a Bucket whose access was revoked is not bound again, even once listed
        // again. Nor is the store asked again.
        return Err(Error::AccessRevoked(plan::revoked_message(bucket, &content, &namespace, listed)));
    }
    if !listed {
        if !bound_before {
            return Err(Error::Permanent(format!(
                "namespace {namespace} (uid {uid}) is not in spec.bindableNamespaces of BucketContent {name}"
            )));
        }
        // Bound before, and the grant withdrawn since. bindableNamespaces is a tenancy
        // boundary: it holds for Buckets bound already, not only for new ones, so their key
        // goes too (the Secret stays, owned by the Bucket; its key no longer works).
        if !content.spec.provisioner().is_empty() {
            let driver = ctx.key_driver(&content, &owner_of(bucket), KeyWork::Revoke).await?;
            let uid = bucket.uid().unwrap_or_default();
            driver.revoke(&uid).await.map_err(Error::Driver)?;
            key_holders_changed(&content, plan::key_holder_removed(&content, &uid), ctx).await?;
        }
        return Err(Error::AccessRevoked(plan::revoked_message(bucket, &content, &namespace, false)));
    }
    let connection = recorded_connection(&content);
    Ok(Some(Bound { content, connection, driver: None }))
}

/// Whether the store still has the bucket of `bound`, asked only when [`looks::StoreLooks`]
/// says it is time; if it does, and it was made for this Bucket, what its class asked of it
/// is set again where the store no longer has it. Only the store's answer that it has none
/// says no: a store that cannot be asked, or a provisioner Secret that cannot be read,
/// leaves the Bucket as it was (logged) until its next look, rather than turn a working
/// Bucket not ready. A bucket made in this reconcile (`bound.driver`) is not asked about.
async fn look_at_store(bucket: &Bucket, bound: &Bound, ctx: &Context) -> bool {
    let content = &bound.content;
    let (uid, now) = (bucket.uid().unwrap_or_default(), Instant::now());
    if bound.driver.is_some()
        || content.spec.provisioner().is_empty()
        || !ctx.store_looks.due(&uid, plan::reports_missing(bucket), now)
    {
        return true;
    }
    let inconclusive = |error: Error| {
        tracing::warn!(bucket = %super::key(bucket), %error, "cannot ask the store whether the Bucket's bucket is still there");
        true
    };
    let driver = match ctx.driver_for(content, &owner_of(bucket)).await {
        Ok(driver) => driver,
        Err(error) => return inconclusive(error),
    };
    let there = match driver.has_bucket(plan::backend_name(content)).await {
        Ok(there) => there,
        Err(error) => return inconclusive(Error::Driver(error)),
    };
    ctx.store_looks.looked(&uid, content.spec.provisioner(), there, now);
    if there && plan::made_for(content, bucket) {
        restore_options(bucket, content, &*driver, ctx).await;
        restore_tags(bucket, content, &*driver).await;
    }
    there
}

/// Puts back the tags that say whom the bucket is for ([`tag`]) where it lacks them: a
/// bucket made before bucketgate tagged, or its tags removed at the store. Logged, not said
/// on the Bucket: they serve the store's admin, not its workloads.
async fn restore_tags(bucket: &Bucket, content: &BucketContent, driver: &dyn Driver) {
    let backend = plan::backend_name(content);
    match driver.restore_tags(backend, &plan::bucket_tags(bucket, content)).await {
        Ok(true) => {
            tracing::info!(bucket = %super::key(bucket), backend, "tagged the bucket again with whom it is for")
        }
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(bucket = %super::key(bucket), %error, "cannot check the bucket's tags at its store")
        }
    }
}

/// Sets again at the store what the class asked of the bucket made for `bucket`, where it
/// was turned off or changed there, and says so on the Bucket. The class's copy in the
/// content is what holds: a bucket's options change through a new class, for new Buckets.
async fn restore_options(bucket: &Bucket, content: &BucketContent, driver: &dyn Driver, ctx: &Context) {
    // Judged when the bucket was made; a content whose parameters fail had no bucket made.
    let Ok(options) = plan::asked_of_store(content) else { return };
    let backend = plan::backend_name(content);
    match driver.restore_options(backend, &options).await {
        Ok(restored) if restored.is_empty() => {}
        Ok(restored) => {
            let note = plan::options_restored(content, &restored);
            ctx.event(bucket, EventType::Warning, "OptionsRestored", "Provision", note).await;
        }
        Err(error) => {
            tracing::warn!(bucket = %super::key(bucket), %error, "cannot check what the class asked of the bucket at its store");
        }
    }
}

/// A Bucket whose bucket its store no longer has: `Ready` `False` with the reason and what
/// to do, said once in an Event, and looked at again within minutes. Its status is written
/// again only where that changes it (the provisioner pointed elsewhere, a new generation).
async fn missing(
    bucket: &Bucket,
    content: &BucketContent,
    buckets: &Api<Bucket>,
    ctx: &Context,
) -> Result<Action, Error> {
    let configured = ctx.endpoint_of(content.spec.provisioner()).unwrap_or_default();
    let message = plan::missing_from_store(content, configured);
    let reported = plan::reports_missing(bucket);
    let status = plan::not_ready(bucket, BucketPhase::Bound, plan::BUCKET_MISSING, message.clone());
    write_status(buckets, bucket, &status).await?;
    if !reported {
        ctx.event(bucket, EventType::Warning, plan::BUCKET_MISSING, "Provision", message).await;
    }
    Ok(Action::requeue(looks::while_missing(ctx.recheck_interval)))
}

/// A Bucket's BucketContent, where its bucket is, and the driver already made for it.
struct Bound {
    content: BucketContent,
    connection: Connection,
    /// Made once per reconcile: making one reads the provisioner's credentials.
    driver: Option<Arc<dyn Driver>>,
}

impl Bound {
    /// The driver to make `bucket`'s key with: the one made in this reconcile, if any.
    async fn key_driver(&self, bucket: &Bucket, ctx: &Context) -> Result<Arc<dyn Driver>, Error> {
        match &self.driver {
            Some(driver) => Ok(driver.clone()),
            None => ctx.key_driver(&self.content, &owner_of(bucket), KeyWork::Grant).await,
        }
    }
}

/// What [`credentials`] found or did about a Bucket's Secret.
enum Issued {
    /// Written now, holding this key.
    Written(Key),
    /// There already, owned by the Bucket; the key it says it holds, if it says; and when
    /// that key's next turn is due, where its class rotates keys ([`turn_key`]).
    Found(Option<Key>, Option<Duration>),
    /// The name is taken by a Secret the Bucket does not own (reported, never overwritten):
    /// looked at again after this long.
    Taken(Duration),
}

/// Writes the workload's Secret unless a Secret of its name is there already.
async fn credentials(bucket: &Bucket, bound: &Bound, ctx: &Context) -> Result<Issued, Error> {
    let (content, connection) = (&bound.content, &bound.connection);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default());
    let name = plan::secret_name(bucket);
    if let Some(existing) = secrets.get_opt(&name).await? {
        if plan::owned_by(&existing, bucket) {
            let recorded = Key::recorded(&existing);
            let key = recorded.unwrap_or_else(|| Key::assumed(bucket, content));
            key_holders_changed(content, plan::key_holder_unrecorded(bucket, content, key), ctx).await?;
            let turn = match key {
                Key::BucketUser => key_turned(bucket, bound, &existing, ctx).await,
                Key::Provisioner => {
                    follow_provisioner_key(bucket, content, &existing, ctx).await;
                    None
                }
                Key::None => None,
            };
            return Ok(Issued::Found(recorded, turn));
        }
        let taken = plan::secret_taken(&existing, bucket);
        pending(bucket, taken.reason, taken.message.clone(), ctx).await?;
        let kind = if taken.warning { EventType::Warning } else { EventType::Normal };
        ctx.event(bucket, kind, taken.reason, "Credentials", taken.message).await;
        return Ok(Issued::Taken(taken.retry));
    }
    let holder = bucket.uid().unwrap_or_default();
    let mode = content.spec.access_mode.unwrap_or(crate::api::AccessMode::ReadWrite);
    let grant: Option<Grant> = if content.spec.provisioner().is_empty() {
        // A brownfield bucket that no driver manages: connection data only.
        None
    } else {
        let driver = bound.key_driver(bucket, ctx).await?;
        Some(driver.grant(&connection.bucket_name, &holder, mode).await.map_err(Error::Driver)?)
    };
    key_holders_changed(content, plan::key_holder_unrecorded(bucket, content, Key::of(grant.as_ref())), ctx).await?;
    secrets.create(&PostParams::default(), &plan::credentials_secret(bucket, connection, grant.as_ref())).await?;
    ctx.event(bucket, EventType::Normal, "CredentialsIssued", "Credentials", format!("wrote Secret {name}")).await;
    Ok(Issued::Written(Key::of(grant.as_ref())))
}

/// [`turn_key`], whose failure leaves the Bucket as it is: the key its Secret holds works
/// (a Bucket turned not Ready would hold back rollouts for nothing). Said in a Warning,
/// and tried again within minutes, or at the next look where retrying cannot help.
async fn key_turned(bucket: &Bucket, bound: &Bound, secret: &Secret, ctx: &Context) -> Option<Duration> {
    match turn_key(bucket, bound, secret, ctx).await {
        Ok(next) => next,
        Err(error) => {
            let note = format!(
                "the key in Secret {} was not rotated, or the key it replaced not retired: {error}",
                secret.name_any()
            );
            ctx.event(bucket, EventType::Warning, "KeyRotationFailed", "Credentials", note).await;
            (!error.is_permanent()).then_some(KEY_TURN_RETRY)
        }
    }
}

/// Gives a Secret that holds the provisioner's own key (a store without IAM) the key the
/// provisioner has now, where that changed at its source since the Secret was written: the
/// provisioner Secret a class names, or bucketgate's environment at its restart. What the
/// seed report's users synced by hand into every workload's Secret. Not where the content
/// records its bucket at another store than the provisioner's now, which that key may not
/// reach. A failure leaves the Secret as it is, logged: the key it holds may work still,
/// and the next look tries again.
async fn follow_provisioner_key(bucket: &Bucket, content: &BucketContent, secret: &Secret, ctx: &Context) {
    let configured = ctx.endpoint_of(content.spec.provisioner());
    if configured.and_then(|endpoint| plan::key_elsewhere(content, endpoint, KeyWork::Grant)).is_some() {
        return;
    }
    let name = secret.name_any();
    let followed = async {
        let current = ctx.provisioner_key(content, &owner_of(bucket)).await?;
        let Some(patch) = plan::provisioner_key_changed(secret, &current) else { return Ok(false) };
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default());
        secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok::<_, Error>(true)
    };
    match followed.await {
        Ok(false) => {}
        Ok(true) => {
            let note = format!("Secret {name} now holds the provisioner's current key, changed at its source since");
            ctx.event(bucket, EventType::Normal, "KeyUpdated", "Credentials", note).await;
        }
        Err(error) => tracing::warn!(
            bucket = %super::key(bucket), %error,
            "cannot give the Bucket's Secret the provisioner's current key; it keeps the key it holds"
        ),
    }
}

/// When a rotation that failed for a reason that may pass is tried again.
const KEY_TURN_RETRY: Duration = Duration::from_secs(300);

/// Rotates the key in `bucket`'s Secret, or retires the key a rotation replaced, where the
/// content's class rotates keys and a turn is due ([`plan::key_turn`]); returns when the
/// next turn is due. The Secret is patched as it was read: one changed meanwhile is read
/// again at the retry, and a key made for a patch that failed goes at the next rotation.
async fn turn_key(bucket: &Bucket, bound: &Bound, secret: &Secret, ctx: &Context) -> Result<Option<Duration>, Error> {
    let content = &bound.content;
    // Judged at admission: a content whose parameters do not parse rotates nothing.
    let Ok(Some(rotation)) = KeyRotation::from_parameters(&content.spec.parameters) else { return Ok(None) };
    let now = jiff::Timestamp::now();
    let (holder, name) = (bucket.uid().unwrap_or_default(), secret.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default());
    match plan::key_turn(secret, rotation, now) {
        None => Ok(None),
        Some(KeyTurn::Later(wait)) => Ok(Some(wait)),
        Some(KeyTurn::Rotate { keeping }) => {
            let driver = bound.key_driver(bucket, ctx).await?;
            let new = driver.rotate(&holder, &keeping).await.map_err(Error::Driver)?;
            let patch = plan::key_rotated(secret, &new, &keeping, rotation, now);
            secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let note = plan::rotated_message(&name, rotation, now);
            ctx.event(bucket, EventType::Normal, "KeyRotated", "Credentials", note).await;
            Ok(Some(rotation.grace))
        }
        Some(KeyTurn::Retire { keeping }) => {
            bound.key_driver(bucket, ctx).await?.retire(&holder, &keeping).await.map_err(Error::Driver)?;
            secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&plan::key_retired(secret))).await?;
            let note = format!("the key Secret {name} held before its last rotation no longer works");
            ctx.event(bucket, EventType::Normal, "KeyRetired", "Credentials", note).await;
            Ok(None)
        }
    }
}

/// Writes `change` to `content`'s key holders, where there is one: a Bucket recorded once
/// it holds a key made for it alone on a content not made for it
/// ([`plan::key_holder_unrecorded`]), so that its key is found if the Bucket goes without
/// being released ([`release_gone`]); taken off once its key is revoked
/// ([`plan::key_holder_removed`]).
async fn key_holders_changed(content: &BucketContent, change: Option<Value>, ctx: &Context) -> Result<(), Error> {
    if let Some(change) = change {
        let contents: Api<BucketContent> = Api::all(ctx.client.clone());
        contents.patch_status(&content.name_any(), &PatchParams::default(), &Patch::Merge(&change)).await?;
    }
    Ok(())
}

/// A Bucket going away: its key is revoked; a greenfield Bucket's BucketContent is deleted
/// (releasePolicy Delete, the bucket goes with it) or marked Released (Retain).
async fn release(bucket: &Bucket, ctx: &Context) -> Result<Action, Error> {
    if !crate::api::held(bucket) {
        return Ok(Action::await_change());
    }
    let forced = crate::api::force_release_asked(bucket);
    let contents: Api<BucketContent> = Api::all(ctx.client.clone());
    let content_name = bucket
        .status_content()
        .or(bucket.spec.bucket_content_name.as_deref())
        .map(str::to_string)
        .unwrap_or_else(|| crate::naming::content_name_for(&bucket.uid().unwrap_or_default()));
    // A name no content can have (see plan::unnameable) names nothing to release.
    let content = match check_dns1123_subdomain(&content_name) {
        Ok(()) => contents.get_opt(&content_name).await?,
        Err(_) => None,
    };
    if let Some(content) = content {
        if !ctx.drives(content.spec.provisioner()) {
            // Its own controller releases it and removes the finalizer.
            return Ok(Action::await_change());
        }
        if !forced && !content.spec.provisioner().is_empty() {
            let driver = ctx.key_driver(&content, &owner_of(bucket), KeyWork::Release).await?;
            let uid = bucket.uid().unwrap_or_default();
            driver.revoke(&uid).await.map_err(Error::Driver)?;
            key_holders_changed(&content, plan::key_holder_removed(&content, &uid), ctx).await?;
        }
        if plan::made_for(&content, bucket) {
            match content.spec.release_policy.unwrap_or_default() {
                ReleasePolicy::Delete => {
                    if forced {
                        // The content's own release must not call the backend either.
                        let patch = plan::force_release_marked();
                        contents.patch(&content_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                    }
                    contents.delete(&content_name, &DeleteParams::default()).await?;
                }
                ReleasePolicy::Retain => {
                    let message = format!(
                        "Bucket {}/{} was deleted; the bucket and its data are kept",
                        bucket.namespace().unwrap_or_default(),
                        bucket.name_any()
                    );
                    mark_released(&contents, &content, message).await?;
                }
            }
        }
    } else if !forced && bucket.condition("CredentialsScoped").is_some_and(|c| c.status == "True") {
        // Its content removed by hand under it: nothing says any more which store holds the
        // key made for this Bucket alone. Said, so that it is not left working unseen.
        let user = crate::driver::s3::S3Driver::user_name(&bucket.uid().unwrap_or_default());
        let note = format!(
            "BucketContent {content_name} is gone, so the key made for this Bucket could not be revoked at its \
             store: remove it there by hand (the S3 driver's IAM user {user})"
        );
        ctx.event(bucket, EventType::Warning, "KeyNotRevoked", "Release", note).await;
    }
    ctx.store_looks.forget(&bucket.uid().unwrap_or_default());
    let verb = if forced { "force-released" } else { "released" };
    ctx.event(bucket, EventType::Normal, "Released", "Release", format!("{verb}; removing the finalizer")).await;
    remove_finalizer(&Api::<Bucket>::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default()), bucket)
        .await?;
    Ok(Action::await_change())
}

/// A BucketContent: when deleted, it waits for every bound Bucket to go, then its bucket is
/// destroyed (releasePolicy Delete) or kept (Retain), and the finalizer comes off.
pub async fn content(content: Arc<BucketContent>, ctx: Arc<Context>) -> Result<Action, Error> {
    if content.meta().deletion_timestamp.is_none()
        || !crate::api::held(&*content)
        || !ctx.drives(content.spec.provisioner())
    {
        return Ok(Action::await_change());
    }
    let name = content.name_any();
    let bound = bound_to(&name, &ctx).await?;
    if !bound.is_empty() {
        let status =
            json!({"status": {"message": format!("deletion waits for the Buckets bound to it: {}", bound.join(", "))}});
        Api::<BucketContent>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    }
    let forced = crate::api::force_release_asked(&*content);
    if !forced && !content.spec.provisioner().is_empty() {
        // No Bucket binds it: a key still recorded is one whose Bucket went unreleased.
        for holder in plan::KeyHolder::all(&content) {
            let driver = ctx.key_driver(&content, &(holder.namespace, holder.name), KeyWork::Release).await?;
            driver.revoke(&holder.uid).await.map_err(Error::Driver)?;
        }
    }
    let delete = content.spec.release_policy.unwrap_or_default() == ReleasePolicy::Delete;
    if delete && !forced && !content.spec.provisioner().is_empty() {
        let backend = plan::backend_name(&content);
        let owner = (
            content.labels().get(plan::BUCKET_NAMESPACE_LABEL).cloned().unwrap_or_default(),
            content.labels().get(plan::BUCKET_NAME_LABEL).cloned().unwrap_or_default(),
        );
        let driver = ctx.driver_for(&content, &owner).await?;
        let note = match driver.delete_bucket(backend).await {
            Ok(Deletion::Deleted) => format!("deleted bucket {backend} and its objects"),
            Ok(Deletion::NotFound) => {
                let configured = ctx.endpoint_of(content.spec.provisioner());
                if let Some(message) = configured.and_then(|endpoint| plan::recorded_elsewhere(&content, endpoint)) {
                    return Err(content_failed(&content, DriverError::Permanent(message), &ctx).await);
                }
                format!("bucket {backend} was gone already")
            }
            Err(error) => return Err(content_failed(&content, error, &ctx).await),
        };
        ctx.event(&*content, EventType::Normal, "BucketDeleted", "Release", note).await;
    }
    remove_finalizer(&Api::<BucketContent>::all(ctx.client.clone()), &*content).await?;
    Ok(Action::await_change())
}

/// A Bucket that held a key on `content` and went without being released
/// ([`plan::gone_unreleased`], from watch caches), asked again of the API server, whose
/// answer is current: where the Bucket is indeed gone (or made again, another uid) and the
/// content still says it held a key, the key is revoked. A greenfield content made for it
/// is then marked Released, its bucket and data kept whatever its release policy (deleting
/// data on the word of a sweep is not bucketgate's to do; deleting the content is the
/// admin's way); another content has the record taken off and stays as it is. Either is
/// said in a Warning on the content. `Ok(true)` when the key was revoked here.
pub async fn release_gone(
    content: &BucketContent,
    holder: &plan::KeyHolder,
    held: plan::Held,
    ctx: &Context,
) -> Result<bool, Error> {
    if content.spec.provisioner().is_empty() || !ctx.drives(content.spec.provisioner()) {
        return Ok(false);
    }
    let bucket = Api::<Bucket>::namespaced(ctx.client.clone(), &holder.namespace).get_opt(&holder.name).await?;
    if bucket.is_some_and(|bucket| bucket.uid().as_deref() == Some(holder.uid.as_str())) {
        return Ok(false);
    }
    let contents: Api<BucketContent> = Api::all(ctx.client.clone());
    let Some(current) = contents.get_opt(&content.name_any()).await? else { return Ok(false) };
    if !plan::still_held(&current, holder, held) {
        return Ok(false);
    }
    let owner = (holder.namespace.clone(), holder.name.clone());
    let driver = ctx.key_driver(&current, &owner, KeyWork::Release).await?;
    driver.revoke(&holder.uid).await.map_err(Error::Driver)?;
    let (reason, message) = match held {
        plan::Held::Owner => {
            let message = plan::orphan_message(&holder.namespace, &holder.name);
            mark_released(&contents, &current, message.clone()).await?;
            ("BucketGone", message)
        }
        plan::Held::Recorded => {
            key_holders_changed(&current, plan::key_holder_removed(&current, &holder.uid), ctx).await?;
            ("KeyRevoked", plan::key_left_message(holder))
        }
    };
    ctx.event(&current, EventType::Warning, reason, "Release", message).await;
    Ok(true)
}

/// Marks `content` Released with `message`: its Bucket went, and its bucket stays.
async fn mark_released(contents: &Api<BucketContent>, content: &BucketContent, message: String) -> Result<(), Error> {
    let status = plan::content_status(content, BucketContentPhase::Released, message);
    contents.patch_status(&content.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// The Buckets bound to the content `name`, or naming it, as `namespace/name`. Asked of
/// the API server, whose answer is current (a cache's could miss a Bucket bound a moment
/// ago, and its bucket would be deleted under it), and by the fields the Bucket CRD makes
/// selectable, so that each deletion reads those Buckets rather than every Bucket in the
/// cluster. An API server without selectable fields for custom resources (before 1.31)
/// refuses the selector; then all Buckets are read.
async fn bound_to(name: &str, ctx: &Context) -> Result<Vec<String>, Error> {
    let api: Api<Bucket> = Api::all(ctx.client.clone());
    let mut buckets = Vec::new();
    for field in ["spec.bucketContentName", "status.bucketContentName"] {
        match api.list(&ListParams::default().fields(&format!("{field}={name}"))).await {
            Ok(list) => buckets.extend(list.items),
            Err(kube::Error::Api(status)) if status.code == 400 => {
                buckets = api.list(&ListParams::default()).await?.items;
                break;
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut bound: Vec<String> = buckets
        .iter()
        .filter(|b| b.status_content() == Some(name) || b.spec.bucket_content_name.as_deref() == Some(name))
        .map(|b| format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()))
        .collect();
    bound.sort();
    bound.dedup();
    Ok(bound)
}

fn owner_of(bucket: &Bucket) -> (String, String) {
    (bucket.namespace().unwrap_or_default(), bucket.name_any())
}

async fn remove_finalizer<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = plan::finalizer_removed(object.meta());
    api.patch(&object.meta().name.clone().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Records a backend failure on the BucketContent: Retrying or Failed, with the reason.
async fn content_failed(content: &BucketContent, error: DriverError, ctx: &Context) -> Error {
    let phase = match &error {
        DriverError::Transient(_) => BucketContentPhase::Retrying,
        DriverError::Permanent(_) => BucketContentPhase::Failed,
    };
    let status = plan::content_status(content, phase, error.to_string());
    if let Err(patch_error) = write_status(&Api::all(ctx.client.clone()), content, &status).await {
        tracing::warn!(content = %content.name_any(), %patch_error, "cannot record the backend failure");
    }
    ctx.event(content, EventType::Warning, "BackendFailed", "Provision", error.to_string()).await;
    Error::Driver(error)
}

/// Marks a Bucket Pending with a reason it cannot proceed.
async fn pending(bucket: &Bucket, reason: &str, message: String, ctx: &Context) -> Result<(), Error> {
    let status = plan::not_ready(bucket, BucketPhase::Pending, reason, message);
    let api = Api::namespaced(ctx.client.clone(), &bucket.namespace().unwrap_or_default());
    Ok(write_status(&api, bucket, &status).await?)
}

impl Context {
    /// Whether this loop manages objects of `provisioner` ([`crate::config::Config::drives`]).
    pub fn drives(&self, provisioner: &str) -> bool {
        self.config.drives(provisioner)
    }

    /// Publishes an Event; failing to is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(recorder) = &self.recorder else { return };
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(%error, "cannot publish an event");
        }
    }

    /// The store endpoint `provisioner` is configured with, if it has a driver.
    fn endpoint_of(&self, provisioner: &str) -> Option<&str> {
        self.config.provisioner(provisioner).and_then(|p| p.s3.as_ref()).map(|s3| s3.endpoint.as_str())
    }

    /// The driver to make or revoke a Bucket's key on `content`'s bucket: refused where the
    /// content records its bucket at another endpoint than its provisioner's now and the
    /// store there has no such bucket.
    async fn key_driver(
        &self,
        content: &BucketContent,
        owner: &(String, String),
        work: KeyWork,
    ) -> Result<Arc<dyn Driver>, Error> {
        let driver = self.driver_for(content, owner).await?;
        let configured = self.endpoint_of(content.spec.provisioner());
        if let Some(message) = configured.and_then(|endpoint| plan::key_elsewhere(content, endpoint, work))
            && !driver.has_bucket(plan::backend_name(content)).await.map_err(Error::Driver)?
        {
            return Err(Error::Permanent(message));
        }
        Ok(driver)
    }

    /// The driver for a BucketContent's provisioner, with the provisioner's credentials
    /// (templated for the Bucket `owner`, namespace and name).
    pub async fn driver_for(
        &self,
        content: &BucketContent,
        owner: &(String, String),
    ) -> Result<Arc<dyn Driver>, Error> {
        let (settings, credentials) = self.provisioner_settings(content, owner).await?;
        let driver = (self.drivers)(&settings, credentials);
        Ok(Arc::new(Metered::new(driver, content.spec.provisioner(), self.metrics.clone())))
    }

    /// The key of a BucketContent's provisioner, as [`Context::driver_for`] would make its
    /// driver with.
    async fn provisioner_key(&self, content: &BucketContent, owner: &(String, String)) -> Result<Credentials, Error> {
        Ok(self.provisioner_settings(content, owner).await?.1)
    }

    /// A BucketContent's provisioner's settings, and its credentials (templated for the
    /// Bucket `owner`).
    async fn provisioner_settings(
        &self,
        content: &BucketContent,
        owner: &(String, String),
    ) -> Result<(S3Settings, Credentials), Error> {
        let provisioner = content.spec.provisioner();
        let settings = self
            .config
            .provisioner(provisioner)
            .and_then(|p| p.s3.clone())
            .ok_or_else(|| Error::Permanent(format!("no driver is configured for provisioner {provisioner:?}")))?;
        let credentials = super::credentials::resolve(&self.client, &settings, &content.spec.parameters, owner).await?;
        Ok((settings, credentials))
    }
}
