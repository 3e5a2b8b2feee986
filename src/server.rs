//! The gRPC front door: `envoy.service.auth.v3.Authorization/Check` and
//! `grpc.health.v1.Health`, on one listener.
//!
//! Health reports `NOT_SERVING` (for the server as a whole, `""`, and for the
//! Authorization service) until every configured issuer has signing keys.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::check::Checker;
use crate::config::Config;
use crate::decision::{Decision, Reason};
use crate::keys::IssuerKeys;
use crate::keys::fetch::{self, KeySource};
use crate::request::Request;
use crate::respond;
use crate::token::{TrustedIssuer, Validator};

/// The fully qualified name of the ext_authz service, as health checks name it.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP client for key fetches could not be built (TLS set-up).
    #[error("cannot build the HTTP client for key fetches: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The ext_authz service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    checker: Arc<Checker>,
}

impl AuthzService {
    /// A service that decides with this checker.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }

    /// Decides on one CheckRequest. Never fails: every outcome is an answer.
    pub fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let now = unix_now();
        let decision = match Request::from_check(check) {
            Ok(request) => {
                let decision = self.checker.check(&request, now);
                log_decision(&decision, &request);
                decision
            }
            Err(e) => Decision::deny(None, Reason::NotHttp(e)),
        };
        respond::check_response(&decision, &self.checker.realm)
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.decide(request.get_ref())))
    }
}

fn log_decision(decision: &Decision, request: &Request<'_>) {
    let request_id = request
        .headers
        .get_all("x-request-id")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    match decision {
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
            request.method = request.method,
            request.id = request_id,
            "Request denied"
        ),
    }
}

fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A running configuration: the checker and the key holders it reads.
#[derive(Debug)]
pub struct Runtime {
    /// The checker for Check calls.
    pub checker: Arc<Checker>,
    /// Key sources and holders, one per issuer, in configuration order.
    pub issuers: Vec<(KeySource, Arc<IssuerKeys>)>,
}

impl Runtime {
    /// Builds the checker and empty key holders for a validated configuration.
    pub fn new(config: &Config) -> Self {
        let mut trusted = Vec::new();
        let mut issuers = Vec::new();
        for issuer in config.issuers.iter().map(|i| &i.value) {
            let keys = Arc::new(IssuerKeys::default());
            trusted.push(TrustedIssuer::from_config(issuer, keys.clone()));
            issuers.push((KeySource::from_config(issuer), keys));
        }
        let validator = Validator::new(trusted, config.max_token_bytes);
        Self {
            checker: Arc::new(Checker::new(config, validator)),
            issuers,
        }
    }

    /// Whether every issuer has keys.
    pub fn keys_loaded(&self) -> bool {
        self.issuers.iter().all(|(_, keys)| keys.is_loaded())
    }
}

/// Serves a validated configuration on `listener` until `shutdown` completes.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let runtime = Arc::new(Runtime::new(config));
    let client = fetch::http_client()?;
    let mut background = tokio::task::JoinSet::new();
    for (source, keys) in &runtime.issuers {
        background.spawn(fetch::refresh_forever(
            source.clone(),
            keys.clone(),
            client.clone(),
        ));
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    report(&reporter, ServingStatus::NotServing).await;
    background.spawn(report_readiness(runtime.clone(), reporter));

    tracing::info!(listen.addr = ?listener.local_addr().ok(), "Serving ext_authz and health over gRPC");
    let authz = AuthorizationServer::new(AuthzService::new(runtime.checker.clone()));
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(authz)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await;
    background.shutdown().await;
    Ok(result?)
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(AUTHORIZATION_SERVICE, status)
        .await;
}

/// Reports SERVING once every issuer has keys.
async fn report_readiness(runtime: Arc<Runtime>, reporter: HealthReporter) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !runtime.keys_loaded() {
        tick.tick().await;
    }
    report(&reporter, ServingStatus::Serving).await;
    tracing::info!("Signing keys of every issuer loaded; serving");
}
