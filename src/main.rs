//! The `portcullis` command: wiring only. See the library for the check itself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::config::Config;
use portcullis::telemetry::{self, LogFormat};

/// External authorization for Envoy and Istio: validates Keycloak-issued JWTs
/// and applies per-route policy over the ext_authz v3 gRPC protocol.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve ext_authz and gRPC health with a configuration file.
    Serve {
        /// The configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary; exit 64 naming the field at fault.
    CheckConfig {
        /// The configuration file (YAML).
        path: PathBuf,
    },
    /// Decide one request with a configuration and print each step: the
    /// route that matched, the token, each requirement's result, the decision.
    Explain {
        /// The configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// A file holding the token (sent as `Authorization: Bearer`).
        #[arg(long)]
        token: Option<PathBuf>,
        /// A request header, `name: value`; repeatable.
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// The caller's mTLS identity (SPIFFE ID).
        #[arg(long)]
        peer: Option<String>,
        /// An Envoy context extension, `key=value`; repeatable.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// Keys of an issuer from a JWKS file instead of fetching, `name=file`; repeatable.
        #[arg(long = "jwks", value_name = "ISSUER=FILE")]
        jwks: Vec<String>,
        /// Decide at this time (seconds since the epoch) instead of now.
        #[arg(long)]
        at: Option<i64>,
        /// The HTTP method.
        method: String,
        /// The URL, e.g. https://api.example.test/orders/1?x=y
        url: String,
    },
    /// FOR LOCAL USE ONLY: a development token issuer in Keycloak's layout.
    DevIssuer {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8180")]
        listen: std::net::SocketAddr,
        /// The realm name.
        #[arg(long, default_value = "demo")]
        realm: String,
    },
    /// FOR LOCAL USE ONLY: an upstream that answers every request with the
    /// method, path and headers it received, as JSON.
    DevUpstream {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
    },
    /// FOR LOCAL USE ONLY: run Envoy, portcullis, a development issuer and an echo
    /// upstream, send requests as different users, print the outcomes, stop.
    Demo {
        /// The Envoy binary (default: $PORTCULLIS_ENVOY, .venv/bin/envoy, or envoy on PATH).
        #[arg(long)]
        envoy: Option<PathBuf>,
    },
}

/// `EX_USAGE` of sysexits.h: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    telemetry::init(cli.log_format, default_filter);
    match cli.command {
        Command::CheckConfig { path } => check_config(&path),
        Command::Serve { config } => run(serve(config)),
        Command::Explain {
            config,
            token,
            headers,
            peer,
            context,
            jwks,
            at,
            method,
            url,
        } => {
            let question = match question(token, headers, peer, context, jwks, at, method, url) {
                Ok(q) => q,
                Err(message) => {
                    eprintln!("portcullis: {message}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run(explain(config, question))
        }
        Command::DevIssuer { listen, realm } => run(dev_issuer(listen, realm)),
        Command::DevUpstream { listen } => run(dev_upstream(listen)),
        Command::Demo { envoy } => run(demo(envoy)),
    }
}

fn run(job: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(job),
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            print!(
                "{}",
                portcullis::config::summary(&config, &path.display().to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let shutdown = shutdown_signal();
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("portcullis: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match bind(&config).await {
        Ok(listeners) => listeners,
        Err(message) => {
            eprintln!("portcullis: {message}");
            return ExitCode::FAILURE;
        }
    };
    let reload = portcullis::server::reload::ReloadSource {
        path: path.clone(),
        trigger: std::sync::Arc::new(tokio::sync::Notify::new()),
    };
    forward_sighup(reload.trigger.clone());
    match portcullis::server::serve_reloading(&config, listeners, shutdown, Some(reload)).await {
        Ok(()) => {
            tracing::info!("Stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "Server failed");
            ExitCode::FAILURE
        }
    }
}

async fn bind(config: &Config) -> Result<portcullis::server::Listeners, String> {
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    Ok(portcullis::server::Listeners {
        grpc: bind(config.listen.grpc).await?,
        admin: Some(bind(config.listen.admin).await?),
        http: match config.listen.http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        },
    })
}

/// Asks for a configuration reload on every SIGHUP.
fn forward_sighup(trigger: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    trigger.notify_one();
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP; reloads follow file changes only")
        }
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when it is first
/// polled: a SIGTERM that arrives while the server is still starting must stop
/// it cleanly rather than kill it.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait(terminate) => {}
            () = wait(interrupt) => {}
        }
        tracing::info!("Shutdown signal received; finishing in-flight checks");
    }
}

#[allow(clippy::too_many_arguments)]
fn question(
    token: Option<PathBuf>,
    headers: Vec<String>,
    peer: Option<String>,
    context: Vec<String>,
    jwks: Vec<String>,
    at: Option<i64>,
    method: String,
    url: String,
) -> Result<portcullis::explain::Question, String> {
    let token = match token {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let split = |item: &str, sep: char, what: &str| {
        item.split_once(sep)
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .ok_or_else(|| format!("{what} {item:?}: expected a {sep:?} between its two parts"))
    };
    Ok(portcullis::explain::Question {
        method,
        url,
        token,
        headers: headers
            .iter()
            .map(|h| split(h, ':', "--header"))
            .collect::<Result<_, _>>()?,
        peer,
        context_extensions: context
            .iter()
            .map(|c| split(c, '=', "--context"))
            .collect::<Result<_, _>>()?,
        jwks_files: jwks
            .iter()
            .map(|j| split(j, '=', "--jwks").map(|(n, f)| (n, PathBuf::from(f))))
            .collect::<Result<_, _>>()?,
        at,
    })
}

async fn explain(config: PathBuf, question: portcullis::explain::Question) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("portcullis: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match portcullis::explain::explain(&config, &question).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn dev_issuer(listen: std::net::SocketAddr, realm: String) -> ExitCode {
    use portcullis::dev::issuer::DevIssuer;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portcullis: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let issuer = match DevIssuer::generate(&format!("http://{listen}"), &realm) {
        Ok(i) => std::sync::Arc::new(i),
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("DEVELOPMENT ISSUER, FOR LOCAL USE ONLY: it signs a token for anyone who asks.");
    println!("issuer:    {}", issuer.issuer());
    println!(
        "discovery: {}/.well-known/openid-configuration",
        issuer.issuer()
    );
    println!(
        "a token:   curl -s -d grant_type=password -d username=alice {}/protocol/openid-connect/token",
        issuer.issuer()
    );
    println!("users:     alice, bob; client: billing-batch (grant_type=client_credentials)");
    let served = axum::serve(listener, issuer.router()).with_graceful_shutdown(shutdown_signal());
    match served.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev_upstream(listen: std::net::SocketAddr) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portcullis: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Echo upstream, FOR LOCAL USE ONLY, on http://{listen}");
    let router = portcullis::dev::upstream::router();
    match axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(envoy: Option<PathBuf>) -> ExitCode {
    let binary = match envoy.map_or_else(portcullis::dev::envoy::find_binary, Ok) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    match portcullis::dev::demo::run(&binary).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
