//! The whole local stack: development issuer, echo upstream, portcullis and a
//! real Envoy in front. **For local use only.** The demo and the end-to-end
//! tests both run on it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::DevError;
use super::envoy::{self, Envoy};
use super::issuer::DevIssuer;
use crate::config::Config;

/// `config/demo.yaml`, as built into this binary.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.yaml");

/// The address `config/demo.yaml` expects the development issuer at; the stack
/// replaces it with the address it actually bound.
pub const DEMO_ISSUER_BASE: &str = "http://127.0.0.1:8180";

/// The realm of the development issuer in `config/demo.yaml`.
pub const DEMO_REALM: &str = "demo";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The Envoy binary.
    pub envoy_binary: std::path::PathBuf,
    /// Envoy's configuration (YAML); addresses are rewritten.
    pub envoy_config: String,
    /// portcullis's configuration (YAML), in which [`DEMO_ISSUER_BASE`] is replaced.
    pub portcullis_config: String,
    /// Point Envoy's `portcullis` cluster at the HTTP ext_authz listener
    /// (for `config/envoy-http.yaml`) instead of gRPC.
    pub authz_over_http: bool,
}

/// A running stack. Stop it with [`Stack::stop`]; dropping it also ends Envoy.
#[derive(Debug)]
pub struct Stack {
    /// The development issuer, to mint tokens.
    pub issuer: Arc<DevIssuer>,
    /// The Envoy in front.
    pub envoy: Envoy,
    /// The portcullis gRPC address.
    pub authz: SocketAddr,
    /// The portcullis admin (metrics, readiness) address.
    pub admin: SocketAddr,
    /// The portcullis HTTP ext_authz address.
    pub http: SocketAddr,
    /// The echo upstream's address.
    pub upstream: SocketAddr,
    shutdown: Vec<oneshot::Sender<()>>,
    tasks: JoinSet<()>,
}

impl StackOptions {
    /// The demo's stack: `config/envoy.yaml` and `config/demo.yaml`.
    pub fn demo(envoy_binary: &Path) -> Self {
        Self {
            envoy_binary: envoy_binary.to_owned(),
            envoy_config: envoy::STANDALONE_CONFIG.to_owned(),
            portcullis_config: DEMO_CONFIG.to_owned(),
            authz_over_http: false,
        }
    }
}

impl Stack {
    /// Starts everything and waits until each part is ready.
    pub async fn start(options: &StackOptions) -> Result<Self, DevError> {
        Self::start_with(options, |_| {}).await
    }

    /// Like [`Stack::start`], with a change to Envoy's configuration after its addresses are set.
    pub async fn start_with(
        options: &StackOptions,
        tweak_envoy: impl FnOnce(&mut Value),
    ) -> Result<Self, DevError> {
        let mut tasks = JoinSet::new();
        let mut shutdown = Vec::new();

        let issuer_listener = bind().await?;
        let base = format!("http://{}", local_addr(&issuer_listener)?);
        let issuer = Arc::new(DevIssuer::generate(&base, DEMO_REALM)?);
        shutdown.push(spawn_http(
            &mut tasks,
            issuer_listener,
            issuer.clone().router(),
        ));

        let upstream_listener = bind().await?;
        let upstream = local_addr(&upstream_listener)?;
        shutdown.push(spawn_http(
            &mut tasks,
            upstream_listener,
            super::upstream::router(),
        ));

        let config_text = options.portcullis_config.replace(DEMO_ISSUER_BASE, &base);
        let config = Config::from_yaml(&config_text, "portcullis config")
            .map_err(|e| DevError::Portcullis(e.to_string()))?;
        let authz_listener = bind().await?;
        let authz = local_addr(&authz_listener)?;
        let admin_listener = bind().await?;
        let admin = local_addr(&admin_listener)?;
        let http_listener = bind().await?;
        let http = local_addr(&http_listener)?;
        let listeners = crate::server::Listeners {
            grpc: authz_listener,
            admin: Some(admin_listener),
            http: Some(http_listener),
        };
        let (stop_authz, stopped) = oneshot::channel::<()>();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = crate::server::serve(&config, listeners, shutdown).await {
                tracing::error!(error = %e, "portcullis stopped");
            }
        });
        shutdown.push(stop_authz);
        wait_serving(authz).await?;

        let authz_target = if options.authz_over_http { http } else { authz };
        let mut envoy_config = envoy::local_config(&options.envoy_config, authz_target, upstream)?;
        tweak_envoy(&mut envoy_config);
        let envoy = Envoy::start(&options.envoy_binary, &envoy_config).await?;
        Ok(Self {
            issuer,
            envoy,
            authz,
            admin,
            http,
            upstream,
            shutdown,
            tasks,
        })
    }

    /// The URL of `path` through Envoy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.envoy.listener)
    }

    /// Stops Envoy, portcullis and the test servers.
    pub async fn stop(self) {
        self.envoy.stop().await;
        for stop in self.shutdown {
            let _ = stop.send(());
        }
        let mut tasks = self.tasks;
        if tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tasks.abort_all();
        }
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    crate::server::unix_now()
}

async fn bind() -> Result<TcpListener, DevError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DevError::io("bind 127.0.0.1:0"))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, DevError> {
    listener.local_addr().map_err(DevError::io("local address"))
}

fn spawn_http(
    tasks: &mut JoinSet<()>,
    listener: TcpListener,
    router: axum::Router,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tasks.spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

/// Waits until portcullis's health service reports SERVING (its keys are loaded).
async fn wait_serving(addr: SocketAddr) -> Result<(), DevError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let poll = async {
        loop {
            let status = async {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
                let mut client = HealthClient::new(endpoint.connect().await.ok()?);
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                Some(client.check(request).await.ok()?.into_inner().status)
            };
            if status.await
                == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, poll)
        .await
        .map_err(|_| DevError::Portcullis("health did not report SERVING in time".to_owned()))
}
