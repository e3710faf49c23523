//! The HTTPS admission server: `POST /mutate`, `POST /validate`, `GET /healthz`,
//! `GET /readyz` and `GET /metrics`, over rustls.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::admission::{self, Context, Kind, Webhook, operation_name};
use crate::catalog::{self, Catalog};
use crate::config::ConfigStore;
use crate::metrics::{AdmissionLabels, Metrics};
use crate::policy::store::PolicyStore;
use crate::tls::{self, CertStore};

/// Large enough for an object and its old version at the API server's own 3 MiB limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// How long a review waits for the API server's answer about objects the catalog did not
/// hold: well inside the webhooks' 5 s timeout, so that the refusal the catalog alone gives
/// still reaches the user when the API server is slow.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AppState {
    pub catalog: Catalog,
    /// The API server the catalog watches, asked for what a review turned on and the
    /// catalog did not hold yet; `None` where the catalog is a directory.
    pub api: Option<kube::Client>,
    pub config: Arc<ConfigStore>,
    pub policies: Arc<PolicyStore>,
    /// The policy audit of the cluster, where one runs.
    pub audit: Arc<crate::policy::audit::LastAudit>,
    pub metrics: Arc<Metrics>,
    pub certs: Arc<CertStore>,
    /// Set when shutdown begins, so that /readyz sends new traffic elsewhere.
    pub shutting_down: AtomicBool,
}

/// Paths the webhook configurations, probes and scrape annotations in manifests/ point at.
pub const MUTATE_PATH: &str = "/mutate";
pub const VALIDATE_PATH: &str = "/validate";
pub const HEALTH_PATH: &str = "/healthz";
pub const READY_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .route(READY_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .route("/policies", get(policies))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    admit(Webhook::Mutate, &state, body).await
}

async fn validate(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    admit(Webhook::Validate, &state, body).await
}

async fn admit(webhook: Webhook, state: &AppState, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let error_labels =
        || AdmissionLabels { webhook: webhook.as_str(), kind: "unknown", operation: "unknown", result: "error" };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.metrics.observe(error_labels(), started.elapsed());
            tracing::warn!(webhook = webhook.as_str(), error = %rejection.body_text(), "request body refused");
            return (rejection.status(), format!("request body refused: {}\n", rejection.body_text())).into_response();
        }
    };
    let request = match admission::decode(&body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.observe(error_labels(), started.elapsed());
            tracing::warn!(webhook = webhook.as_str(), %error, "refused a request that is not an AdmissionReview");
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
    };
    let (policies, config) = (state.policies.current(), state.config.current());
    let ctx = Context { catalog: &state.catalog, config: &config, policies: &policies };
    let admission::Reviewed { response, records, .. } = review_looking_up(webhook, &request, ctx, state).await;
    state.metrics.record_policies(&records);
    let result = if response.allowed { "allowed" } else { "denied" };
    // Refusals at info, as Gatekeeper's --log-denies does; every review at debug (the API
    // server's audit log has them all). Objects are not logged: they can be large, and a
    // later kind may carry secrets.
    macro_rules! answered {
        ($level:ident) => {
            tracing::$level!(
                webhook = webhook.as_str(),
                // As &str, not `%`: a Display field is formatted into a String of its own
                // before the JSON formatter escapes it.
                uid = request.uid.as_str(),
                kind = request.kind.kind.as_str(),
                operation = operation_name(&request.operation),
                subresource = request.sub_resource.as_deref().unwrap_or(""),
                namespace = request.namespace.as_deref().unwrap_or(""),
                name = request.name.as_str(),
                dry_run = request.dry_run,
                result,
                // Not `message`: that is the name of the line's own text.
                response_message = response.result.message.as_str(),
                "admission review answered"
            )
        };
    }
    if response.allowed {
        answered!(debug);
    } else {
        answered!(info);
    }
    let kind = Kind::of(&request).map_or("other", Kind::name);
    let labels =
        AdmissionLabels { webhook: webhook.as_str(), kind, operation: operation_name(&request.operation), result };
    let reply = match admission::encode(&response) {
        Ok(review) => ([(header::CONTENT_TYPE, "application/json")], review).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the response review");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the response review: {error}\n")).into_response()
        }
    };
    state.metrics.observe(labels, started.elapsed());
    reply
}

/// Reviews `request`; where the answer turned on objects the catalog did not hold (or held
/// refusing), reads them from the API server and reviews again with them, until nothing
/// new is asked for or [`LOOKUP_TIMEOUT`] has passed. A second round happens when the first
/// object found lets the rules get further (a grant just given, then the namespace it names).
async fn review_looking_up(
    webhook: Webhook,
    request: &admission::Request,
    ctx: Context<'_>,
    state: &AppState,
) -> admission::Reviewed {
    let mut reviewed = admission::review(webhook, request, &ctx);
    let Some(client) = state.api.as_ref().filter(|_| !reviewed.rechecks.is_empty()) else { return reviewed };
    let deadline = Instant::now() + LOOKUP_TIMEOUT;
    let (mut asked, mut fetched) = (Vec::new(), catalog::Fetched::default());
    loop {
        let new: Vec<_> = reviewed.rechecks.iter().filter(|m| !asked.contains(*m)).cloned().collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if new.is_empty() || left.is_zero() {
            return reviewed;
        }
        let (found, lookups) = catalog::fetch(client, &new, &request.user_info, left).await;
        for (object, lookup) in &lookups {
            state.metrics.looked_up(object.kind(), lookup.as_str());
        }
        tracing::debug!(uid = request.uid.as_str(), ?lookups, "read from the API server what the catalog did not hold");
        asked.extend(new);
        if found.is_empty() {
            return reviewed;
        }
        fetched.extend(found);
        let catalog = state.catalog.with_fetched(fetched.clone());
        reviewed = admission::review(webhook, request, &Context { catalog: &catalog, ..ctx });
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut waiting = Vec::new();
    if !state.catalog.is_synced() {
        waiting.push("catalog not synced");
    }
    if !state.certs.is_loaded() {
        waiting.push("no serving certificate");
    }
    if !state.policies.state().loaded {
        waiting.push("policies not loaded (see GET /policies)");
    }
    if state.shutting_down.load(Ordering::Acquire) {
        waiting.push("shutting down");
    }
    if waiting.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", waiting.join(", "))).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

/// The policies in force with their mode, source and evaluation counts, and the errors of
/// the last load.
async fn policies(State(state): State<Arc<AppState>>) -> Response {
    let set = state.policies.current();
    let load = state.policies.state();
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let metrics = &state.metrics;
    let audit = state.audit.get();
    let found = audit.as_ref().and_then(|a| a.found.as_ref()).map(|(_, tally)| tally);
    let policies: Vec<_> = set
        .policies
        .iter()
        .map(|p| {
            let mode = p.mode.as_str();
            serde_json::json!({
                "name": p.name,
                "mode": mode,
                "onError": p.on_error,
                "description": p.description,
                "source": p.source,
                "line": p.line,
                "loadedAt": time(set.loaded_at),
                "evaluations": {
                    "pass": metrics.policy_count(&p.name, mode, "pass"),
                    "violation": metrics.policy_count(&p.name, mode, "violation"),
                    "error": metrics.policy_count(&p.name, mode, "error"),
                },
                // What the last audit of the cluster found, unless the policy is newer.
                "audit": found.and_then(|f| f.policies.get(&p.name)),
            })
        })
        .collect();
    Json(serde_json::json!({
        "directories": state.policies.dirs(),
        "loaded": load.loaded,
        "loadedAt": time(set.loaded_at),
        "lastAttempt": load.last_attempt.map(time),
        "errors": load.errors.iter().map(|e| serde_json::json!({"file": e.file, "line": e.line, "message": e.message})).collect::<Vec<_>>(),
        "policies": policies,
        "audit": audit.as_ref().map(|a| serde_json::json!({
            "finished": a.found.as_ref().map(|(at, _)| time(*at)),
            "judged": found.map(|f| &f.judged),
            "beingDeleted": found.map(|f| f.being_deleted),
            "builtIn": found.map(|f| &f.built_in),
            "error": a.error,
        })),
    }))
    .into_response()
}

pub struct ServeOptions {
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_body_bytes: DEFAULT_MAX_BODY_BYTES, shutdown_grace: Duration::from_secs(20) }
    }
}

/// An HTTPS server on `listener` that sends every write at once (`TCP_NODELAY`).
///
/// With Nagle's algorithm on, the first response of a connection waited for the client's
/// delayed ACK (40 ms on Linux) in about half the cases: rustls sends its TLS 1.3 session
/// tickets after the handshake, and the response was held behind them until they were
/// acknowledged. The API server opens new connections to webhooks as it scales and
/// restarts; each paid that on its first review.
pub fn https(
    listener: std::net::TcpListener,
    tls: RustlsConfig,
) -> std::io::Result<axum_server::Server<std::net::SocketAddr, RustlsAcceptor<NoDelayAcceptor>>> {
    listener.set_nonblocking(true)?;
    Ok(axum_server::from_tcp(listener)?.acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor)))
}

/// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish within the grace period.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = RustlsConfig::from_config(Arc::new(tls::server_config(state.certs.clone())?));
    let handle = axum_server::Handle::new();
    {
        let (handle, state) = (handle.clone(), state.clone());
        let grace = options.shutdown_grace;
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(
                grace_seconds = grace.as_secs_f64(),
                "shutting down: no new connections, finishing in-flight requests"
            );
            state.shutting_down.store(true, Ordering::Release);
            handle.graceful_shutdown(Some(grace));
        });
    }
    let app = router(state, options.max_body_bytes);
    https(listener, tls)?.handle(handle).serve(app.into_make_service()).await?;
    tracing::info!("server stopped");
    Ok(())
}
