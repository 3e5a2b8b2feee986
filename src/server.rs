//! The front doors: gRPC (`envoy.service.auth.v3.Authorization/Check` and
//! `grpc.health.v1.Health`) on one listener, and the admin HTTP listener
//! (`/metrics`, `/livez`, `/readyz`) on another.
//!
//! Readiness: health reports `NOT_SERVING` (for the server as a whole, `""`,
//! and for the Authorization service), and `/readyz` answers 503 naming the
//! issuers at fault, while any issuer marked `required` has no usable keys:
//! none loaded yet, or the last good ones older than `max_key_age_seconds`.

pub mod admin;
pub mod grpc;
pub mod http;
pub mod reload;
pub mod runtime;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::{Config, DecisionLogConfig, LogLevel, MetadataConfig};
use crate::decision::{Allow, Decision, Reason};
use crate::request::Request;
use crate::respond;
use crate::telemetry::metrics::{CheckLabels, Name};
pub use runtime::{ApplyError, Runtime, Snapshot};

/// The fully qualified name of the ext_authz service, as health checks name it.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// A gRPC request that has not been answered after this is dropped: a client
/// that opens a stream and never finishes its request holds nothing longer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readiness is re-evaluated.
const READINESS_PERIOD: Duration = Duration::from_millis(200);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration could not be put in place.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// The listeners to serve on.
#[derive(Debug)]
pub struct Listeners {
    /// ext_authz and health over gRPC.
    pub grpc: TcpListener,
    /// Metrics, liveness and readiness over HTTP, if wanted.
    pub admin: Option<TcpListener>,
    /// ext_authz over HTTP (Envoy `http_service`), if wanted.
    pub http: Option<TcpListener>,
}

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    runtime: Arc<Runtime>,
}

impl AuthzService {
    /// A service that decides with this runtime.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }

    /// Answers a CheckRequest as it arrived, well-formed or not, with the
    /// encoded CheckResponse.
    pub async fn answer_inbound(&self, inbound: grpc::Inbound) -> Vec<u8> {
        match inbound {
            grpc::Inbound::Check(check) => self.answer(&check).await,
            grpc::Inbound::Undecodable(why) => {
                tracing::warn!(error = %why, "Undecodable CheckRequest denied");
                let decision = Decision::deny(None, Reason::InvalidCheckRequest);
                self.runtime
                    .metrics
                    .record_check(&labels(&decision), Duration::ZERO);
                let snapshot = self.runtime.snapshot();
                respond::encode(
                    &decision,
                    &snapshot.checker.realm,
                    snapshot.checker.metadata,
                )
            }
        }
    }

    /// Answers one CheckRequest with the encoded CheckResponse, as the gRPC
    /// service sends it. Never fails: every outcome is an answer.
    pub async fn answer(&self, check: &CheckRequest) -> Vec<u8> {
        self.run(check, respond::encode).await
    }

    /// Decides on one CheckRequest, as a message (the HTTP flavour reads it).
    /// The same decision as [`AuthzService::answer`].
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        self.run(check, respond::check_response).await
    }

    async fn run<T>(
        &self,
        check: &CheckRequest,
        reply: fn(&Decision, &str, MetadataConfig) -> T,
    ) -> T {
        let started = Instant::now();
        // One snapshot for the whole check, even if a reload happens meanwhile.
        let snapshot = self.runtime.snapshot();
        let checker = &snapshot.checker;
        let decision = match Request::from_check(check) {
            Ok(request) => {
                let mut decision = checker.check(&request, unix_now()).await;
                log_decision(&snapshot.decision_log, &decision, &request);
                if let Decision::Deny(denial) = &mut decision {
                    let request_id = request_id(&request);
                    if !request_id.is_empty() {
                        denial.request_id = Some(request_id.to_owned());
                    }
                }
                decision
            }
            Err(_) => {
                let principal = check
                    .attributes
                    .as_ref()
                    .and_then(|a| a.source.as_ref())
                    .map_or("", |s| s.principal.as_str());
                let decision = checker.check_tcp(principal);
                tracing::debug!(
                    peer.principal = principal,
                    allowed = matches!(decision, Decision::Allow(_)),
                    "TCP check"
                );
                decision
            }
        };
        let response = reply(&decision, &checker.realm, checker.metadata);
        let metrics = &self.runtime.metrics;
        match &decision {
            Decision::Allow(Allow {
                route_index: Some(index),
                would_deny: None,
                ..
            }) if *index < snapshot.allowed.len() => {
                snapshot.allowed[*index].inc();
                metrics.record_duration(started.elapsed());
            }
            _ => metrics.record_check(&labels(&decision), started.elapsed()),
        }
        response
    }
}

fn labels(decision: &Decision) -> CheckLabels {
    static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    let (route, decision_label, reason) = match decision {
        Decision::Allow(a) => match &a.would_deny {
            Some(reason) => (Some(a.route), "would_deny", reason.answer().code),
            None => (Some(a.route), "allow", "ok"),
        },
        Decision::Deny(d) => (d.route.as_ref(), "deny", d.reason.answer().code),
    };
    CheckLabels {
        route: Name(route.unwrap_or(&NO_ROUTE).clone()),
        decision: decision_label,
        reason,
    }
}

/// The request's `x-request-id`, if it is printable and of a sane length.
fn request_id<'r>(request: &Request<'r>) -> &'r str {
    request
        .headers
        .get_all("x-request-id")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("")
}

/// Emits one event at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($args:tt)+) => {
        match $level {
            LogLevel::Off => {}
            LogLevel::Error => tracing::error!($($args)+),
            LogLevel::Warn => tracing::warn!($($args)+),
            LogLevel::Info => tracing::info!($($args)+),
            LogLevel::Debug => tracing::debug!($($args)+),
            LogLevel::Trace => tracing::trace!($($args)+),
        }
    };
}

/// The trace id of the request: W3C `traceparent`, else B3 `x-b3-traceid`.
fn trace_id<'r>(request: &Request<'r>) -> &'r str {
    let header = |name| {
        request
            .headers
            .get_all(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let id = match header("traceparent") {
        Some(traceparent) => traceparent.split('-').nth(1),
        None => header("x-b3-traceid"),
    };
    id.filter(|id| id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or("")
}

/// One line per decision, at the configured level. Never the token. The
/// request and trace ids are read only when the line is written.
fn log_decision(levels: &DecisionLogConfig, decision: &Decision, request: &Request<'_>) {
    match decision {
        Decision::Allow(Allow {
            would_deny: Some(reason),
            route,
            ..
        }) => event_at!(
            levels.denied,
            route.name = %route,
            reason = reason.answer().code,
            status = reason.answer().status,
            error = %reason.description(),
            request.method = &*request.method,
            request.id = request_id(request),
            trace.id = trace_id(request),
            "Request would be denied (dry run); allowed"
        ),
        Decision::Allow(allow) => event_at!(
            levels.allowed,
            route.name = %allow.route,
            jwt.iss = allow.issuer.unwrap_or(""),
            jwt.sub = allow.subject.as_deref().unwrap_or(""),
            request.method = &*request.method,
            request.id = request_id(request),
            trace.id = trace_id(request),
            "Request authorized"
        ),
        Decision::Deny(denial) => event_at!(
            levels.denied,
            route.name = denial.route.as_deref().unwrap_or(""),
            reason = denial.reason.answer().code,
            status = denial.reason.answer().status,
            error = %denial.reason.description(),
            request.method = &*request.method,
            request.id = request_id(request),
            trace.id = trace_id(request),
            "Request denied"
        ),
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    crate::keys::unix_seconds(SystemTime::now())
}

/// Serves a validated configuration until `shutdown` completes.
pub async fn serve(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_reloading(config, listeners, shutdown, None).await
}

/// Serves a validated configuration, reloading it from `reload` when given,
/// until `shutdown` completes.
///
/// Shutdown: health turns `NOT_SERVING`, the listeners stop taking
/// connections, in-flight checks get `drain_timeout_seconds` to finish, then
/// the server returns.
pub async fn serve_reloading(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reload: Option<reload::ReloadSource>,
) -> Result<(), ServeError> {
    let runtime = Arc::new(Runtime::new(config));
    runtime.start_refreshers()?;
    let mut background = tokio::task::JoinSet::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    report(&reporter, ServingStatus::NotServing).await;
    background.spawn(report_readiness(runtime.clone(), reporter.clone()));
    if let Some(source) = reload {
        let (runtime, initial) = (runtime.clone(), config.clone());
        background.spawn(async move { reload::watch(source, runtime, &initial).await });
    }
    let (stop_http, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Some(admin) = listeners.admin {
        tracing::info!(listen.addr = ?admin.local_addr().ok(), "Serving metrics, liveness and readiness over HTTP");
        let served = axum::serve(admin, admin::router(runtime.clone()))
            .with_graceful_shutdown(until_stopped(stopped.clone()));
        background.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "Admin server failed");
            }
        });
    }
    if let Some(http) = listeners.http {
        tracing::info!(listen.addr = ?http.local_addr().ok(), "Serving ext_authz over HTTP");
        let router = http::router(AuthzService::new(runtime.clone()), &config.http_path_prefix);
        let served =
            axum::serve(http, router).with_graceful_shutdown(until_stopped(stopped.clone()));
        background.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "HTTP ext_authz server failed");
            }
        });
    }

    tracing::info!(listen.addr = ?listeners.grpc.local_addr().ok(), "Serving ext_authz and health over gRPC");
    let authz = grpc::AuthorizationService::new(
        AuthzService::new(runtime.clone()),
        config.max_check_request_bytes,
    );
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        shutdown.await;
        report(&reporter, ServingStatus::NotServing).await;
        let _ = stop_http.send(true);
        let _ = draining.send(());
    };
    let server = tonic::transport::Server::builder()
        // A stream that never completes its request is given up after this.
        .timeout(CHECK_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(1024))
        .add_service(health)
        .add_service(authz)
        .serve_with_incoming_shutdown(incoming(listeners.grpc), signal);
    let drain = Duration::from_secs(config.drain_timeout_seconds);
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = async {
            let _ = drain_started.await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain.seconds = drain.as_secs(), "In-flight checks did not finish in time; stopping anyway");
            Ok(())
        }
    };
    runtime.stop_refreshers();
    background.shutdown().await;
    result
}

/// Accepted connections with TCP_NODELAY: without it, small answers wait for
/// delayed ACKs (about 40 ms per denial was measured).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(AUTHORIZATION_SERVICE, status)
        .await;
}

/// Keeps the health service's status in step with the issuers' keys.
async fn report_readiness(runtime: Arc<Runtime>, reporter: HealthReporter) {
    let mut ready = false;
    let mut tick = tokio::time::interval(READINESS_PERIOD);
    loop {
        tick.tick().await;
        let missing = runtime.missing_issuers(unix_now());
        if missing.is_empty() != ready {
            ready = missing.is_empty();
            if ready {
                tracing::info!("Signing keys of every required issuer loaded; serving");
                report(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!(issuers.missing = ?missing, "Required issuers have no usable keys; not serving");
                report(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}
