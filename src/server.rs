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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::check::Checker;
use crate::config::Config;
use crate::decision::{Allow, Decision, Reason};
use crate::keys::IssuerKeys;
use crate::keys::fetch::{self, KeySource};
use crate::request::Request;
use crate::respond;
use crate::telemetry::metrics::{CheckLabels, Metrics, Name};
use crate::token::{TrustedIssuer, Validator};

/// The fully qualified name of the ext_authz service, as health checks name it.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// How often readiness is re-evaluated.
const READINESS_PERIOD: Duration = Duration::from_millis(200);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP client for an issuer's key fetches could not be built (TLS, CA file).
    #[error("issuer {issuer}: cannot build the HTTP client for key fetches: {reason}")]
    HttpClient {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
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

/// One configured issuer at run time.
#[derive(Debug)]
pub struct IssuerRuntime {
    /// Its configured name.
    pub name: Arc<str>,
    /// Where its keys come from.
    pub source: KeySource,
    /// Its keys.
    pub keys: Arc<IssuerKeys>,
    /// Whether readiness waits for it.
    pub required: bool,
}

/// A running configuration: the checker, the issuers' keys, the metrics.
#[derive(Debug)]
pub struct Runtime {
    /// The checker for Check calls.
    pub checker: Arc<Checker>,
    /// The issuers, in configuration order.
    pub issuers: Vec<IssuerRuntime>,
    /// The metrics.
    pub metrics: Metrics,
}

impl Runtime {
    /// Builds the checker, empty key holders and metrics for a validated configuration.
    pub fn new(config: &Config) -> Self {
        let mut trusted = Vec::new();
        let mut issuers = Vec::new();
        for issuer in config.issuers.iter().map(|i| &i.value) {
            let interval = Duration::from_secs(issuer.unknown_kid_refetch_interval_seconds);
            let keys = Arc::new(IssuerKeys::new(interval));
            trusted.push(TrustedIssuer::from_config(issuer, keys.clone()));
            issuers.push(IssuerRuntime {
                name: Arc::from(issuer.name.as_str()),
                source: KeySource::from_config(issuer),
                keys,
                required: issuer.required,
            });
        }
        let validator = Validator::new(trusted, config.max_token_bytes);
        let metric_issuers = issuers
            .iter()
            .map(|i| (i.name.clone(), i.keys.clone()))
            .collect();
        Self {
            checker: Arc::new(Checker::new(config, validator)),
            issuers,
            metrics: Metrics::new(metric_issuers, unix_now),
        }
    }

    /// The required issuers without usable keys at `now`; empty when ready.
    pub fn missing_issuers(&self, now: i64) -> Vec<Arc<str>> {
        self.issuers
            .iter()
            .filter(|i| i.required)
            .filter(|i| {
                let max_age = i64::try_from(i.source.max_key_age.as_secs()).unwrap_or(i64::MAX);
                i.keys
                    .load()
                    .is_none_or(|set| set.age_seconds(now) > max_age)
            })
            .map(|i| i.name.clone())
            .collect()
    }
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

    /// Decides on a CheckRequest as it arrived, well-formed or not.
    pub async fn decide_inbound(&self, inbound: grpc::Inbound) -> CheckResponse {
        match inbound {
            grpc::Inbound::Check(check) => self.decide(&check).await,
            grpc::Inbound::Undecodable(why) => {
                tracing::warn!(error = %why, "Undecodable CheckRequest denied");
                let decision = Decision::deny(None, Reason::InvalidCheckRequest);
                self.runtime
                    .metrics
                    .record_check(&labels(&decision), Duration::ZERO);
                respond::check_response(&decision, &self.runtime.checker.realm)
            }
        }
    }

    /// Decides on one CheckRequest. Never fails: every outcome is an answer.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let checker = &self.runtime.checker;
        let decision = match Request::from_check(check) {
            Ok(request) => {
                let mut decision = checker.check(&request, unix_now()).await;
                let request_id = request_id(&request);
                log_decision(&decision, &request, request_id);
                if let Decision::Deny(denial) = &mut decision
                    && !request_id.is_empty()
                {
                    denial.request_id = Some(request_id.to_owned());
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
        let response = respond::check_response(&decision, &checker.realm);
        self.runtime
            .metrics
            .record_check(&labels(&decision), started.elapsed());
        response
    }
}

fn labels(decision: &Decision) -> CheckLabels {
    static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    let (route, decision_label, reason) = match decision {
        Decision::Allow(a) => match &a.would_deny {
            Some(reason) => (Some(&a.route), "would_deny", reason.answer().code),
            None => (Some(&a.route), "allow", "ok"),
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

fn log_decision(decision: &Decision, request: &Request<'_>, request_id: &str) {
    match decision {
        Decision::Allow(Allow {
            would_deny: Some(reason),
            route,
            ..
        }) => tracing::info!(
            route.name = %route,
            reason = reason.answer().code,
            status = reason.answer().status,
            error = %reason.description(),
            request.method = &*request.method,
            request.id = request_id,
            "Request would be denied (dry run); allowed"
        ),
        Decision::Allow(allow) => tracing::debug!(
            route.name = %allow.route,
            jwt.iss = allow.issuer.as_deref().unwrap_or(""),
            jwt.sub = allow.subject.as_deref().unwrap_or(""),
            request.id = request_id,
            "Request authorized"
        ),
        Decision::Deny(denial) => tracing::info!(
            route.name = denial.route.as_deref().unwrap_or(""),
            reason = denial.reason.answer().code,
            status = denial.reason.answer().status,
            error = %denial.reason.description(),
            request.method = &*request.method,
            request.id = request_id,
            "Request denied"
        ),
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// Serves a validated configuration until `shutdown` completes.
pub async fn serve(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let runtime = Arc::new(Runtime::new(config));
    let mut background = tokio::task::JoinSet::new();
    for issuer in &runtime.issuers {
        let client = issuer
            .source
            .http_client()
            .map_err(|reason| ServeError::HttpClient {
                issuer: issuer.source.name.clone(),
                reason,
            })?;
        let refresh = fetch::refresh_forever(issuer.source.clone(), issuer.keys.clone(), client);
        background.spawn(refresh);
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    report(&reporter, ServingStatus::NotServing).await;
    background.spawn(report_readiness(runtime.clone(), reporter));
    if let Some(admin) = listeners.admin {
        tracing::info!(listen.addr = ?admin.local_addr().ok(), "Serving metrics, liveness and readiness over HTTP");
        let router = admin::router(runtime.clone());
        background.spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!(error = %e, "Admin server failed");
            }
        });
    }

    if let Some(http) = listeners.http {
        tracing::info!(listen.addr = ?http.local_addr().ok(), "Serving ext_authz over HTTP");
        let router = http::router(AuthzService::new(runtime.clone()), &config.http_path_prefix);
        background.spawn(async move {
            if let Err(e) = axum::serve(http, router).await {
                tracing::error!(error = %e, "HTTP ext_authz server failed");
            }
        });
    }

    tracing::info!(listen.addr = ?listeners.grpc.local_addr().ok(), "Serving ext_authz and health over gRPC");
    let authz = grpc::AuthorizationService::new(
        AuthzService::new(runtime.clone()),
        config.max_check_request_bytes,
    );
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(authz)
        .serve_with_incoming_shutdown(incoming(listeners.grpc), shutdown)
        .await;
    background.shutdown().await;
    Ok(result?)
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
