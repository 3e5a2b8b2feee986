//! Load generator for ext_authz gRPC servers (`envoy.service.auth.v3.Authorization/Check`
//! over HTTP/2), and the development issuer files that the Envoy benchmark needs.
//!
//! `load run` starts portcullis (`portcullis serve --config`, with an
//! in-process development issuer serving its keys) and/or the do-nothing
//! `allow-all` server as subprocesses, so it knows their pids; it drives them
//! at a fixed concurrency (closed loop) or a fixed rate (open loop: checks
//! sent when due, whatever the answers), alternating rounds between servers
//! (ABBA order) so that drift on a shared machine hits both alike; it reads
//! each server's CPU time (utime + stime, /proc/PID/stat) before and after
//! each round and its peak memory (VmHWM, /proc/PID/status), and prints
//! checks per second, p50/p99/p99.9 latency, server CPU µs per check and peak
//! memory, with the ratios portcullis / allow-all.
//!
//! `load issuer` writes a JWKS, a token and a portcullis configuration for a
//! fresh development issuer, then serves that issuer's discovery and JWKS on
//! loopback until SIGTERM/SIGINT or `--serve-for` seconds. **For local
//! benchmarks only.**
//!
//! Every loop here is bounded in time; traffic goes only to servers on
//! loopback that this program (or `scripts/bench-envoy`) started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, check_response};
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::{DEMO_CONFIG, DEMO_ISSUER_BASE, DEMO_REALM, unix_now};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(about = "Load generator for ext_authz gRPC servers (benchmarks on loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive Check at a concurrency or a rate and print throughput, latency, server CPU and memory.
    Run(RunArgs),
    /// Write a JWKS, a token and a portcullis config for a fresh development
    /// issuer, then serve its discovery and JWKS on loopback until stopped.
    Issuer(IssuerArgs),
    /// Write an Envoy configuration derived from `config/envoy.yaml` for one
    /// variant of the Envoy benchmark (`scripts/bench-envoy`).
    EnvoyConfig(EnvoyConfigArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// No authorization: the ext_authz filter removed.
    None,
    /// Envoy's jwt_authn (keys from a local JWKS file) and RBAC with the
    /// policy of `config/demo.yaml`, without jwt_authn's token cache.
    Jwt,
    /// The same with `jwt_cache_config`.
    JwtCache,
    /// `config/envoy.yaml`'s ext_authz, to the server at --authz.
    ExtAuthz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// portcullis (`portcullis serve --config`).
    Portcullis,
    /// The do-nothing server (`allow-all`).
    AllowAll,
    /// Both, alternating rounds.
    Both,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Which server(s) to start and drive.
    #[arg(long, value_enum, default_value = "both")]
    server: Which,
    /// Drive an already running server at this address instead of starting one
    /// (needs --token-file; CPU and memory need --pid).
    #[arg(long, conflicts_with = "server")]
    target: Option<SocketAddr>,
    /// The pid of the --target server, for its CPU time and peak memory.
    #[arg(long, requires = "target")]
    pid: Option<u32>,
    /// Tokens to send (one per line, no `Bearer `), e.g. from `load issuer`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The portcullis binary (default: `portcullis` beside this program).
    #[arg(long)]
    portcullis_bin: Option<PathBuf>,
    /// The allow-all binary (default: `allow-all` beside this program).
    #[arg(long)]
    allow_all_bin: Option<PathBuf>,
    /// Closed loop: this many checks in flight at all times.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: this many checks per second, sent when due whatever the
    /// answers (latency counted from when each was sent; how late the
    /// generator itself was is reported apart).
    #[arg(long)]
    rate: Option<u64>,
    /// Open loop: at most this many checks in flight; a check due when they
    /// are all busy is counted as dropped.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// HTTP/2 connections (tonic channels) to each server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds measured per round.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load before each round.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rounds per server; with both servers they alternate A B B A A B ...
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct tokens to cycle through (1: the same token every time, as a
    /// client reusing its access token does; more: a verified-token cache misses).
    #[arg(long, default_value_t = 1)]
    distinct_tokens: usize,
    /// The user whose token is sent (alice, bob, service-account-billing-batch).
    #[arg(long, default_value = "alice")]
    user: String,
    /// The request's method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request's path (`config/demo.yaml` routes; /orders/1 needs a role and a scope).
    #[arg(long, default_value = "/orders/1")]
    path: String,
    /// A JSON object whose top-level keys replace those of portcullis's
    /// configuration (`config/demo.yaml`), e.g. '{"token_cache":{"max_entries":0}}'.
    #[arg(long)]
    portcullis_config: Option<String>,
    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IssuerArgs {
    /// Where to write jwks.json (as the issuer publishes it, with Keycloak's
    /// encryption key first), jwks-sig.json (signing keys only), token,
    /// token-denied (bob's: valid, but without the role of /orders), issuer
    /// and portcullis.yaml.
    #[arg(long)]
    dir: PathBuf,
    /// portcullis's gRPC listener, written into portcullis.yaml.
    #[arg(long, default_value = "127.0.0.1:9191")]
    grpc: SocketAddr,
    /// portcullis's admin listener, written into portcullis.yaml.
    #[arg(long, default_value = "127.0.0.1:9192")]
    admin: SocketAddr,
    /// Lifetime of the token, in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: i64,
    /// The user of the token.
    #[arg(long, default_value = "alice")]
    user: String,
    /// Stop serving after this many seconds anyway.
    #[arg(long, default_value_t = 1800)]
    serve_for: u64,
}

#[derive(Debug, Args)]
struct EnvoyConfigArgs {
    /// Which variant.
    #[arg(long, value_enum)]
    variant: Variant,
    /// The Envoy configuration to start from (default: `config/envoy.yaml` as built in).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Envoy's listener.
    #[arg(long)]
    listen: SocketAddr,
    /// Envoy's admin interface.
    #[arg(long)]
    admin: SocketAddr,
    /// The upstream (cluster `backend`).
    #[arg(long)]
    upstream: SocketAddr,
    /// The ext_authz server (cluster `portcullis`).
    #[arg(long)]
    authz: SocketAddr,
    /// jwt_authn's local JWKS file.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// jwt_authn's issuer (the `iss` of the tokens).
    #[arg(long)]
    issuer: Option<String>,
    /// Keep the access log of `config/envoy.yaml` (off by default: it costs
    /// the same in every variant and would only blur the differences).
    #[arg(long)]
    access_log: bool,
    /// Where to write the configuration (JSON).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Issuer(args) => issuer_command(args).await,
            Command::EnvoyConfig(args) => envoy_config(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

// === the development issuer ===

/// A development issuer serving its discovery and JWKS on loopback.
struct ServedIssuer {
    issuer: Arc<DevIssuer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServedIssuer {
    async fn start() -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let issuer = Arc::new(DevIssuer::generate(&base, DEMO_REALM)?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = issuer.clone().router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            issuer,
            stop: Some(stop),
            task,
        })
    }

    /// The base URL it serves (what `config/demo.yaml` calls http://127.0.0.1:8180).
    fn base(&self) -> String {
        self.issuer.issuer().replace(&format!("/realms/{DEMO_REALM}"), "")
    }

    /// `count` access tokens for `user`, valid for `lifetime` seconds, each
    /// with its own `jti` (so distinct tokens are distinct strings).
    fn tokens(&self, user: &str, count: usize, lifetime: i64) -> Result<Vec<String>, BoxError> {
        let user = issuer::user(user).ok_or_else(|| format!("no built-in user {user:?}"))?;
        let now = unix_now();
        (0..count.max(1))
            .map(|i| {
                let mut claims = self
                    .issuer
                    .access_claims(user, &["orders-api", "account"], now);
                claims["exp"] = json!(now + lifetime);
                if count > 1 {
                    claims["jti"] = json!(format!("bench-{now}-{i}"));
                }
                Ok(self.issuer.sign_claims(&claims)?)
            })
            .collect()
    }

    /// portcullis's configuration: `config/demo.yaml` pointed at this issuer,
    /// listening on loopback where asked. JSON, which is YAML.
    fn portcullis_config(
        &self,
        grpc: SocketAddr,
        admin: SocketAddr,
        overrides: Option<&str>,
    ) -> Result<String, BoxError> {
        let text = DEMO_CONFIG.replace(DEMO_ISSUER_BASE, &self.base());
        let mut config: Value = serde_saphyr::from_str(&text)?;
        config["listen"] = json!({ "grpc": grpc.to_string(), "admin": admin.to_string() });
        if let Some(overrides) = overrides {
            let overrides: Value = serde_json::from_str(overrides)
                .map_err(|e| format!("--portcullis-config is not JSON: {e}"))?;
            let map = overrides.as_object().ok_or("--portcullis-config is not a JSON object")?;
            for (key, value) in map {
                config[key] = value.clone();
            }
        }
        let text = serde_json::to_string_pretty(&config)?;
        portcullis::config::Config::from_yaml(&text, "benchmark config")
            .map_err(|e| format!("the benchmark's portcullis config is refused: {e}"))?;
        Ok(text)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

async fn issuer_command(args: IssuerArgs) -> Result<(), BoxError> {
    let served = ServedIssuer::start().await?;
    std::fs::create_dir_all(&args.dir)?;
    let jwks = served.issuer.jwks();
    let signing_only: Vec<Value> = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["use"] == "sig")
        .cloned()
        .collect();
    let token = served
        .tokens(&args.user, 1, args.lifetime)?
        .pop()
        .ok_or("no token")?;
    write(&args.dir.join("jwks.json"), &jwks.to_string())?;
    write(
        &args.dir.join("jwks-sig.json"),
        &json!({ "keys": signing_only }).to_string(),
    )?;
    write(&args.dir.join("token"), &format!("{token}\n"))?;
    // A valid token of a user without the route's role, for checking that a
    // variant enforces the policy (403), not only the signature.
    let denied = served.tokens("bob", 1, args.lifetime)?.pop().ok_or("no token")?;
    write(&args.dir.join("token-denied"), &format!("{denied}\n"))?;
    write(
        &args.dir.join("issuer"),
        &format!("{}\n", served.issuer.issuer()),
    )?;
    write(
        &args.dir.join("portcullis.yaml"),
        &served.portcullis_config(args.grpc, args.admin, None)?,
    )?;
    println!("ready {}", served.issuer.issuer());
    tokio::select! {
        () = shutdown_signal() => {}
        () = tokio::time::sleep(Duration::from_secs(args.serve_for)) => {}
    }
    served.stop().await;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), BoxError> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()).into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

// === servers under test ===

/// A server under test: where it listens and, when known, its pid.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<tokio::process::Child>,
    dir: Option<PathBuf>,
}

fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn scratch_dir(what: &str) -> Result<PathBuf, BoxError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-{what}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn free_port() -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

impl Server {
    async fn start_portcullis(
        binary: &Path,
        issuer: &ServedIssuer,
        overrides: Option<&str>,
    ) -> Result<Self, BoxError> {
        let dir = scratch_dir("portcullis")?;
        let (grpc, admin) = (free_port().await?, free_port().await?);
        let config = dir.join("portcullis.yaml");
        write(&config, &issuer.portcullis_config(grpc, admin, overrides)?)?;
        let log = std::fs::File::create(dir.join("portcullis.log"))?;
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        Ok(Self {
            name: "portcullis",
            addr: grpc,
            pid: child.id(),
            child: Some(child),
            dir: Some(dir),
        })
    }

    async fn start_allow_all(binary: &Path) -> Result<Self, BoxError> {
        let dir = scratch_dir("allow-all")?;
        let log = std::fs::File::create(dir.join("allow-all.log"))?;
        let mut child = tokio::process::Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| "allow-all did not say where it listens")??
            .ok_or("allow-all exited")?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("allow-all said {line:?}"))?
            .parse()?;
        Ok(Self {
            name: "allow-all",
            addr,
            pid: child.id(),
            child: Some(child),
            dir: Some(dir),
        })
    }

    /// SIGTERM, then SIGKILL after 5 s.
    async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

// === /proc ===

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// === the checks ===

/// What Envoy sends for an HTTP/1.1 request through `config/envoy.yaml`
/// (`encode_raw_headers: true`: the ordered header map with raw values).
struct Template {
    base: CheckRequest,
    tokens: Vec<String>,
}

impl Template {
    fn new(args: &RunArgs, tokens: Vec<String>) -> Self {
        let socket = |port: u32| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        };
        let http = HttpRequest {
            method: args.method.clone(),
            path: args.path.clone(),
            host: "api.example.test".to_owned(),
            scheme: "http".to_owned(),
            protocol: "HTTP/1.1".to_owned(),
            ..HttpRequest::default()
        };
        let base = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(socket(43_512)),
                    ..Peer::default()
                }),
                destination: Some(Peer {
                    address: Some(socket(8080)),
                    ..Peer::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..AttributeContext::default()
            }),
        };
        Self { base, tokens }
    }

    fn request(&self, n: u64) -> CheckRequest {
        let mut check = self.base.clone();
        let token = &self.tokens[usize::try_from(n).unwrap_or(0) % self.tokens.len()];
        let request_id = format!("bench-{n:016x}");
        if let Some(request) = check.attributes.as_mut().and_then(|a| a.request.as_mut()) {
            let seconds = unix_now();
            request.time = Some(envoy_types::pb::google::protobuf::Timestamp { seconds, nanos: 0 });
            if let Some(http) = request.http.as_mut() {
                http.id = n.to_string();
                let raw = |key: &str, value: &str| HeaderValue {
                    key: key.to_owned(),
                    value: String::new(),
                    raw_value: value.as_bytes().to_vec(),
                };
                http.header_map = Some(HeaderMap {
                    headers: vec![
                        raw(":authority", &http.host),
                        raw(":path", &http.path),
                        raw(":method", &http.method),
                        raw(":scheme", "http"),
                        raw("user-agent", "wrk"),
                        raw("accept", "*/*"),
                        raw("authorization", &format!("Bearer {token}")),
                        raw("x-forwarded-proto", "http"),
                        raw("x-request-id", &request_id),
                    ],
                });
            }
        }
        check
    }
}

#[derive(Debug, Default, Clone)]
struct Sample {
    /// Answers with gRPC OK and an OK decision.
    allowed: u64,
    /// Answers with gRPC OK and a denial.
    denied: u64,
    /// gRPC errors.
    errors: u64,
    /// Open loop: checks due while all were busy.
    dropped: u64,
    /// Latencies of the answered checks, in nanoseconds.
    latencies: Vec<u64>,
    /// Open loop: how late each check was sent after it was due, in nanoseconds.
    lags: Vec<u64>,
    elapsed: Duration,
    server_cpu_ticks: Option<u64>,
    client_cpu_ticks: Option<u64>,
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.errors += other.errors;
        self.dropped += other.dropped;
        self.latencies.extend(other.latencies);
        self.lags.extend(other.lags);
        self.elapsed += other.elapsed;
        self.server_cpu_ticks = match (self.server_cpu_ticks, other.server_cpu_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.client_cpu_ticks = match (self.client_cpu_ticks, other.client_cpu_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    fn answered(&self) -> u64 {
        self.allowed + self.denied
    }

    fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Latency percentiles (nearest rank) in microseconds.
fn percentiles(latencies: &mut [u64], quantiles: &[f64]) -> Vec<f64> {
    latencies.sort_unstable();
    quantiles
        .iter()
        .map(|q| {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1] as f64 / 1000.0
        })
        .collect()
}

enum Mode {
    Concurrency(usize),
    Rate(u64),
}

struct Driver {
    clients: Vec<AuthorizationClient<Channel>>,
    template: Arc<Template>,
    counter: Arc<AtomicU64>,
}

impl Driver {
    async fn connect(addr: SocketAddr, connections: usize, template: Arc<Template>) -> Result<Self, BoxError> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(5))
                .connect()
                .await?;
            clients.push(AuthorizationClient::new(channel));
        }
        Ok(Self {
            clients,
            template,
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Waits (at most 30 s) until a check is answered with OK; describes the answer.
    async fn wait_allowed(&self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            let mut client = self.clients[0].clone();
            match client.check(self.template.request(0)).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    let code = answer.status.as_ref().map_or(-1, |s| s.code);
                    if code == 0 {
                        let (set, removed) = match &answer.http_response {
                            Some(check_response::HttpResponse::OkResponse(ok)) => {
                                (ok.headers.len(), ok.headers_to_remove.len())
                            }
                            _ => (0, 0),
                        };
                        return Ok(format!(
                            "answer of {} bytes: {set} headers set, {removed} headers to remove, {}",
                            answer.encoded_len(),
                            if answer.dynamic_metadata.is_some() { "dynamic metadata" } else { "no dynamic metadata" },
                        ));
                    }
                    last = format!("denied (code {code}): {:?}", answer.http_response);
                }
                Err(e) => last = format!("gRPC error: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no check allowed within 30 s; last: {last}"))
    }

    async fn drive(&self, mode: &Mode, duration: Duration, max_in_flight: usize) -> Sample {
        match *mode {
            Mode::Concurrency(n) => self.closed_loop(n, duration).await,
            Mode::Rate(r) => self.open_loop(r, duration, max_in_flight).await,
        }
    }

    async fn closed_loop(&self, concurrency: usize, duration: Duration) -> Sample {
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..concurrency.max(1) {
            let mut client = self.clients[i % self.clients.len()].clone();
            let template = self.template.clone();
            let counter = self.counter.clone();
            tasks.spawn(async move {
                let mut sample = Sample {
                    latencies: Vec::with_capacity(1 << 16),
                    ..Sample::default()
                };
                while Instant::now() < deadline {
                    let request = template.request(counter.fetch_add(1, Ordering::Relaxed));
                    let sent = Instant::now();
                    let answer = client.check(request).await;
                    let latency = sent.elapsed();
                    record(&mut sample, answer, latency);
                }
                sample
            });
        }
        let mut total = Sample::default();
        while let Some(done) = tasks.join_next().await {
            if let Ok(sample) = done {
                total.merge(sample);
            }
        }
        total.elapsed = started.elapsed();
        total
    }

    async fn open_loop(&self, rate: u64, duration: Duration, max_in_flight: usize) -> Sample {
        let started = Instant::now();
        let total_checks = (rate as f64 * duration.as_secs_f64()) as u64;
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Result<_, tonic::Status>, Duration)>();
        let mut dropped = 0;
        let mut lags = Vec::with_capacity(total_checks as usize);
        for i in 0..total_checks {
            let due = started + period.mul_f64(i as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                dropped += 1;
                continue;
            };
            let mut client = self.clients[(i as usize) % self.clients.len()].clone();
            let request = self.template.request(self.counter.fetch_add(1, Ordering::Relaxed));
            let tx = tx.clone();
            // How late the dispatcher is (timer granularity, a busy machine):
            // reported apart, not counted as the server's latency.
            lags.push(u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX));
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = client.check(request).await;
                let _ = tx.send((answer.map(|a| a.into_inner()), sent.elapsed()));
                drop(permit);
            });
        }
        drop(tx);
        let mut total = Sample {
            dropped,
            lags,
            latencies: Vec::with_capacity(total_checks as usize),
            ..Sample::default()
        };
        // Every check has a 5 s timeout, so this ends.
        while let Some((answer, latency)) = rx.recv().await {
            record(&mut total, answer.map(tonic::Response::new), latency);
        }
        total.elapsed = started.elapsed();
        total
    }
}

fn record(
    sample: &mut Sample,
    answer: Result<tonic::Response<envoy_types::pb::envoy::service::auth::v3::CheckResponse>, tonic::Status>,
    latency: Duration,
) {
    match answer {
        Ok(answer) => {
            if answer.get_ref().status.as_ref().is_some_and(|s| s.code == 0) {
                sample.allowed += 1;
            } else {
                sample.denied += 1;
            }
            sample
                .latencies
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        }
        Err(_) => sample.errors += 1,
    }
}

// === run ===

struct Subject {
    server: Server,
    driver: Driver,
    rounds: Vec<Sample>,
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    let mode = match (args.concurrency, args.rate) {
        (_, Some(rate)) => Mode::Rate(rate),
        (Some(n), None) => Mode::Concurrency(n),
        (None, None) => Mode::Concurrency(32),
    };
    let ticks_per_second = clock_ticks_per_second();
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);

    let mut issuer = None;
    let mut subjects: Vec<Subject> = Vec::new();
    let started = start_subjects(&args, &mut issuer, &mut subjects).await;
    let outcome = match started {
        Ok(()) => measure(&args, &mode, duration, warmup, ticks_per_second, &mut subjects).await,
        Err(e) => Err(e),
    };
    let mut peaks = Vec::new();
    for subject in subjects {
        peaks.push((subject.server.name, subject.server.pid.and_then(peak_rss_kib)));
        if outcome.is_err() && subject.server.child.is_some() {
            eprintln!("--- {} log ---\n{}", subject.server.name, subject.server.log());
        }
        subject.server.stop().await;
    }
    if let Some(issuer) = issuer {
        issuer.stop().await;
    }
    let summaries = outcome?;
    report(&args, &mode, &summaries, &peaks, ticks_per_second);
    Ok(())
}

async fn start_subjects(
    args: &RunArgs,
    issuer_slot: &mut Option<ServedIssuer>,
    subjects: &mut Vec<Subject>,
) -> Result<(), BoxError> {
    if let Some(target) = args.target {
        let file = args
            .token_file
            .as_ref()
            .ok_or("--target needs --token-file (from `load issuer`)")?;
        let tokens: Vec<String> = std::fs::read_to_string(file)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err(format!("no token in {}", file.display()).into());
        }
        let template = Arc::new(Template::new(args, tokens));
        let driver = Driver::connect(target, args.connections, template).await?;
        subjects.push(Subject {
            server: Server {
                name: "target",
                addr: target,
                pid: args.pid,
                child: None,
                dir: None,
            },
            driver,
            rounds: Vec::new(),
        });
        return Ok(());
    }
    let served = ServedIssuer::start().await?;
    let tokens = served.tokens(&args.user, args.distinct_tokens, 3600)?;
    let template = Arc::new(Template::new(args, tokens));
    let issuer = issuer_slot.insert(served);
    let mut servers = Vec::new();
    if matches!(args.server, Which::Portcullis | Which::Both) {
        let binary = args
            .portcullis_bin
            .clone()
            .unwrap_or_else(|| beside_me("portcullis"));
        servers.push(
            Server::start_portcullis(&binary, issuer, args.portcullis_config.as_deref()).await?,
        );
    }
    if matches!(args.server, Which::AllowAll | Which::Both) {
        let binary = args
            .allow_all_bin
            .clone()
            .unwrap_or_else(|| beside_me("allow-all"));
        servers.push(Server::start_allow_all(&binary).await?);
    }
    for server in servers {
        // The server may take a moment to bind.
        let mut driver = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.is_none() {
            match Driver::connect(server.addr, args.connections, template.clone()).await {
                Ok(d) => driver = Some(d),
                Err(e) if Instant::now() > deadline => {
                    eprintln!("--- {} log ---\n{}", server.name, server.log());
                    return Err(format!("cannot connect to {}: {e}", server.name).into());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let driver = driver.ok_or("no driver")?;
        subjects.push(Subject {
            server,
            driver,
            rounds: Vec::new(),
        });
    }
    for subject in subjects.iter() {
        let answer = subject
            .driver
            .wait_allowed()
            .await
            .map_err(|e| format!("{}: {e}", subject.server.name))?;
        println!("{}: {answer}", subject.server.name);
    }
    Ok(())
}

async fn measure(
    args: &RunArgs,
    mode: &Mode,
    duration: Duration,
    warmup: Duration,
    ticks_per_second: f64,
    subjects: &mut [Subject],
) -> Result<Vec<(&'static str, Sample)>, BoxError> {
    let self_pid = std::process::id().to_string();
    println!(
        "{:<6} {:<11} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12} {:>8}",
        "round", "server", "checks/s", "p50 µs", "p99 µs", "p99.9 µs", "server µs/ck", "client µs/ck", "denied"
    );
    for round in 0..args.rounds {
        // A B, B A, A B, ...: each server goes first as often as the other.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..subjects.len()).collect()
        } else {
            (0..subjects.len()).rev().collect()
        };
        for index in order {
            let subject = &mut subjects[index];
            if !warmup.is_zero() {
                let _ = subject.driver.drive(mode, warmup, args.max_in_flight).await;
            }
            let pid = subject.server.pid.map(|p| p.to_string());
            let server_before = pid.as_deref().and_then(cpu_ticks);
            let client_before = cpu_ticks(&self_pid);
            let mut sample = subject.driver.drive(mode, duration, args.max_in_flight).await;
            let server_after = pid.as_deref().and_then(cpu_ticks);
            let client_after = cpu_ticks(&self_pid);
            sample.server_cpu_ticks = server_before.zip(server_after).map(|(a, b)| b - a);
            sample.client_cpu_ticks = client_before.zip(client_after).map(|(a, b)| b - a);
            let mut latencies = sample.latencies.clone();
            let p = percentiles(&mut latencies, &[0.5, 0.99, 0.999]);
            println!(
                "{:<6} {:<11} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>12} {:>12} {:>8}",
                round + 1,
                subject.server.name,
                sample.per_second(),
                p[0],
                p[1],
                p[2],
                per_check(sample.server_cpu_ticks, sample.answered(), ticks_per_second),
                per_check(sample.client_cpu_ticks, sample.answered(), ticks_per_second),
                sample.denied + sample.errors,
            );
            if sample.denied + sample.errors > 0 {
                eprintln!(
                    "warning: {}: {} denied, {} gRPC errors in round {}",
                    subject.server.name,
                    sample.denied,
                    sample.errors,
                    round + 1
                );
            }
            subject.rounds.push(sample);
        }
    }
    Ok(subjects
        .iter_mut()
        .map(|s| {
            let mut total = Sample::default();
            for r in s.rounds.drain(..) {
                total.merge(r);
            }
            (s.server.name, total)
        })
        .collect())
}

fn per_check(ticks: Option<u64>, checks: u64, ticks_per_second: f64) -> String {
    match ticks {
        Some(t) if checks > 0 => format!("{:.1}", t as f64 / ticks_per_second * 1e6 / checks as f64),
        _ => "-".to_owned(),
    }
}

fn report(
    args: &RunArgs,
    mode: &Mode,
    summaries: &[(&'static str, Sample)],
    peaks: &[(&'static str, Option<u64>)],
    ticks_per_second: f64,
) {
    let load = match mode {
        Mode::Concurrency(n) => format!("concurrency {n}"),
        Mode::Rate(r) => format!("rate {r}/s"),
    };
    println!(
        "\nall rounds ({load}, {} connections, {} rounds of {} s, {} distinct token(s), {} {}):",
        args.connections, args.rounds, args.duration, args.distinct_tokens, args.method, args.path
    );
    println!(
        "{:<11} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12} {:>10} {:>8} {:>8}",
        "server", "checks/s", "p50 µs", "p99 µs", "p99.9 µs", "server µs/ck", "client µs/ck", "peak RSS", "denied", "dropped"
    );
    let mut rows = Vec::new();
    for (name, sample) in summaries {
        let mut latencies = sample.latencies.clone();
        let p = percentiles(&mut latencies, &[0.5, 0.99, 0.999]);
        let cpu = sample
            .server_cpu_ticks
            .filter(|_| sample.answered() > 0)
            .map(|t| t as f64 / ticks_per_second * 1e6 / sample.answered() as f64);
        let peak = peaks.iter().find(|(n, _)| n == name).and_then(|(_, p)| *p);
        println!(
            "{:<11} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>12} {:>12} {:>10} {:>8} {:>8}",
            name,
            sample.per_second(),
            p[0],
            p[1],
            p[2],
            per_check(sample.server_cpu_ticks, sample.answered(), ticks_per_second),
            per_check(sample.client_cpu_ticks, sample.answered(), ticks_per_second),
            peak.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            sample.denied + sample.errors,
            sample.dropped,
        );
        rows.push((
            *name,
            json!({
                "server": name,
                "checks_per_second": sample.per_second(),
                "p50_us": p[0], "p99_us": p[1], "p999_us": p[2],
                "server_cpu_us_per_check": cpu,
                "peak_rss_kib": peak,
                "allowed": sample.allowed, "denied": sample.denied,
                "errors": sample.errors, "dropped": sample.dropped,
            }),
        ));
    }
    if matches!(mode, Mode::Rate(_)) {
        for (name, sample) in summaries {
            let mut lags = sample.lags.clone();
            let p = percentiles(&mut lags, &[0.5, 0.99, 1.0]);
            println!(
                "{name}: the load generator sent checks late by p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (not counted as latency)",
                p[0], p[1], p[2]
            );
        }
    }
    let find = |n: &str| rows.iter().find(|(name, _)| *name == n).map(|(_, v)| v);
    let mut ratios = Value::Null;
    if let (Some(p), Some(a)) = (find("portcullis"), find("allow-all")) {
        let ratio = |k: &str| {
            let (x, y) = (p[k].as_f64()?, a[k].as_f64()?);
            (y > 0.0).then_some(x / y)
        };
        let show = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!(
            "portcullis / allow-all: checks/s {}, p50 {}, p99 {}, p99.9 {}, server CPU per check {}",
            show(ratio("checks_per_second")),
            show(ratio("p50_us")),
            show(ratio("p99_us")),
            show(ratio("p999_us")),
            show(ratio("server_cpu_us_per_check")),
        );
        ratios = json!({
            "checks_per_second": ratio("checks_per_second"),
            "p50": ratio("p50_us"), "p99": ratio("p99_us"), "p999": ratio("p999_us"),
            "server_cpu_per_check": ratio("server_cpu_us_per_check"),
        });
    }
    if args.json {
        let summary = json!({
            "load": load,
            "connections": args.connections,
            "rounds": args.rounds,
            "duration_seconds": args.duration,
            "distinct_tokens": args.distinct_tokens,
            "servers": rows.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            "ratios": ratios,
        });
        println!("{summary}");
    }
}

// === Envoy configurations ===

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";

/// `config/envoy.yaml` for one variant of the Envoy benchmark: addresses on
/// loopback as given; the access log dropped unless asked for; the
/// authorization filter as the variant says. Everything else (path
/// normalization, header rules, the ext_authz settings) is kept.
fn envoy_config(args: &EnvoyConfigArgs) -> Result<(), BoxError> {
    let yaml = match &args.from {
        Some(path) => std::fs::read_to_string(path)?,
        None => portcullis::dev::envoy::STANDALONE_CONFIG.to_owned(),
    };
    let mut config = portcullis::dev::envoy::local_config(&yaml, args.authz, args.upstream)?;
    let socket = |a: SocketAddr| json!({ "address": a.ip().to_string(), "port_value": a.port() });
    config["admin"]["address"]["socket_address"] = socket(args.admin);
    let listener = &mut config["static_resources"]["listeners"][0];
    listener["address"]["socket_address"] = socket(args.listen);
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    if hcm.get("http_filters").is_none() {
        return Err("config/envoy.yaml has no HTTP connection manager where expected".into());
    }
    if !args.access_log && let Some(map) = hcm.as_object_mut() {
        map.remove("access_log");
    }
    if args.variant != Variant::ExtAuthz {
        // Per-route settings of a filter that is not in the chain go too.
        for host in hcm["route_config"]["virtual_hosts"].as_array_mut().into_iter().flatten() {
            for route in host["routes"].as_array_mut().into_iter().flatten() {
                if let Some(per_filter) = route["typed_per_filter_config"].as_object_mut() {
                    per_filter.remove(EXT_AUTHZ);
                    if per_filter.is_empty() && let Some(r) = route.as_object_mut() {
                        r.remove("typed_per_filter_config");
                    }
                }
            }
        }
    }
    let filters = hcm["http_filters"]
        .as_array_mut()
        .ok_or("http_filters is not a list")?;
    let at = filters
        .iter()
        .position(|f| f["name"] == EXT_AUTHZ)
        .ok_or("config/envoy.yaml has no ext_authz filter")?;
    match args.variant {
        Variant::ExtAuthz => {}
        Variant::None => {
            filters.remove(at);
        }
        Variant::Jwt | Variant::JwtCache => {
            let jwks = args.jwks.as_ref().ok_or("--jwks is needed for jwt variants")?;
            let issuer = args.issuer.as_ref().ok_or("--issuer is needed for jwt variants")?;
            let replacement = jwt_filters(
                &jwks.display().to_string(),
                issuer,
                args.variant == Variant::JwtCache,
            );
            filters.splice(at..=at, replacement);
        }
    }
    write(&args.out, &serde_json::to_string_pretty(&config)?)
}

/// jwt_authn and RBAC doing what portcullis does with `config/demo.yaml`:
/// the same issuer, audience, clock skew and `typ: Bearer`, the same routes
/// and requirements, identity headers from claims.
fn jwt_filters(jwks: &str, issuer: &str, cache: bool) -> Vec<Value> {
    let mut provider = json!({
        "issuer": issuer,
        "audiences": ["orders-api"],
        "local_jwks": { "filename": jwks },
        "forward": true,
        "clock_skew_seconds": 30,
        "payload_in_metadata": "jwt_payload",
        "claim_to_headers": [
            { "header_name": "x-portcullis-subject", "claim_name": "sub" },
            { "header_name": "x-portcullis-username", "claim_name": "preferred_username" },
            { "header_name": "x-portcullis-client", "claim_name": "azp" },
        ],
    });
    if cache {
        provider["jwt_cache_config"] = json!({ "jwt_cache_size": 100 });
    }
    let claim = |path: &[&str], value: Value| {
        let mut keys = vec![json!({ "key": "jwt_payload" })];
        keys.extend(path.iter().map(|k| json!({ "key": k })));
        json!({ "sourced_metadata": { "metadata_matcher": {
            "filter": "envoy.filters.http.jwt_authn",
            "path": keys,
            "value": value,
        }}})
    };
    let exact = |s: &str| json!({ "string_match": { "exact": s } });
    let has = |s: &str| json!({ "list_match": { "one_of": { "string_match": { "exact": s } } } });
    let bearer = claim(&["typ"], exact("Bearer"));
    let prefix = |p: &str| {
        // A prefix on a segment boundary, as portcullis matches it.
        json!({ "or_rules": { "rules": [
            { "url_path": { "path": { "exact": p } } },
            { "url_path": { "path": { "prefix": format!("{p}/") } } },
        ]}})
    };
    let methods = |ms: &[&str]| {
        let rules: Vec<Value> = ms
            .iter()
            .map(|m| json!({ "header": { "name": ":method", "string_match": { "exact": m } } }))
            .collect();
        json!({ "or_rules": { "rules": rules } })
    };
    let all = |rules: Vec<Value>| json!({ "and_rules": { "rules": rules } });
    let all_ids = |ids: Vec<Value>| json!({ "and_ids": { "ids": ids } });
    let policies = json!({
        "healthz": {
            "permissions": [{ "url_path": { "path": { "exact": "/healthz" } } }],
            "principals": [{ "any": true }],
        },
        "docs": { "permissions": [prefix("/docs")], "principals": [{ "any": true }] },
        "orders-read": {
            "permissions": [all(vec![prefix("/orders"), methods(&["GET", "HEAD"])])],
            "principals": [all_ids(vec![
                bearer.clone(),
                claim(&["realm_access", "roles"], has("orders-reader")),
                claim(&["scope"], json!({ "string_match": {
                    "safe_regex": { "regex": "(^|.* )orders:read( .*|$)" }
                }})),
            ])],
        },
        "orders-write": {
            "permissions": [all(vec![prefix("/orders"), methods(&["POST", "PUT", "PATCH", "DELETE"])])],
            "principals": [all_ids(vec![
                bearer.clone(),
                claim(&["resource_access", "orders-api", "roles"], has("orders-writer")),
            ])],
        },
        "admin": {
            "permissions": [prefix("/admin")],
            "principals": [all_ids(vec![bearer.clone(), claim(&["realm_access", "roles"], has("admin"))])],
        },
        "me": {
            "permissions": [{ "url_path": { "path": { "exact": "/me" } } }],
            "principals": [bearer],
        },
    });
    vec![
        json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": { "demo": provider },
                "rules": [
                    { "match": { "path": "/healthz" } },
                    { "match": { "path": "/docs" } },
                    { "match": { "prefix": "/docs/" } },
                    { "match": { "prefix": "/" }, "requires": { "provider_name": "demo" } },
                ],
            },
        }),
        json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": { "action": "ALLOW", "policies": policies },
            },
        }),
    ]
}
