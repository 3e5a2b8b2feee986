//! Running it: hot reload, shutdown drain, metrics, against servers started
//! here on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::unix_now;
use portcullis::server::reload::ReloadSource;
use portcullis::server::{Listeners, serve_reloading};
use tokio::sync::{Notify, oneshot};
use tonic::transport::Channel;

struct Server {
    grpc: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    issuer: Arc<DevIssuer>,
    reload: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    /// Milliseconds the JWKS server waits before answering a refetch.
    jwks_delay_ms: Arc<AtomicU64>,
}

fn routes_yaml(issuer: &DevIssuer, jwks: SocketAddr, open_path: &str) -> String {
    format!(
        "drain_timeout_seconds: 5\n\
         issuers:\n  - {{ name: t, issuer: '{}', jwks_url: 'http://{jwks}/jwks', audiences: [api], unknown_kid_wait_milliseconds: 3000, unknown_kid_refetch_interval_seconds: 1 }}\n\
         routes:\n  - {{ name: open, match: {{ path: {open_path} }}, token: public }}\n  - {{ name: rest, match: {{ path_prefix: / }} }}\n",
        issuer.issuer()
    )
}

async fn start() -> Server {
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks = jwks_listener.local_addr().unwrap();
    let issuer = Arc::new(DevIssuer::generate(&format!("http://{jwks}"), "ops").unwrap());
    let delay = Arc::new(AtomicU64::new(0));
    let router = Router::new().route(
        "/jwks",
        get({
            let (issuer, delay) = (issuer.clone(), delay.clone());
            move || async move {
                tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
                axum::Json(issuer.jwks())
            }
        }),
    );
    tokio::spawn(async move { axum::serve(jwks_listener, router).await });

    let dir = std::env::temp_dir().join(format!(
        "portcullis-ops-{}-{}",
        std::process::id(),
        jwks.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("portcullis.yaml");
    std::fs::write(&config_path, routes_yaml(&issuer, jwks, "/open")).unwrap();
    let config = Config::load(&config_path).unwrap();

    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, admin) = (
        grpc_listener.local_addr().unwrap(),
        admin_listener.local_addr().unwrap(),
    );
    let reload = Arc::new(Notify::new());
    let source = ReloadSource {
        path: config_path.clone(),
        trigger: reload.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let listeners = Listeners {
            grpc: grpc_listener,
            admin: Some(admin_listener),
            http: None,
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        serve_reloading(&config, listeners, shutdown, Some(source))
            .await
            .unwrap();
    });
    let server = Server {
        grpc,
        admin,
        config_path,
        issuer,
        reload,
        stop: Some(stop),
        done,
        jwks_delay_ms: delay,
    };
    for _ in 0..200 {
        let ready = reqwest::get(format!("http://{}/readyz", server.admin)).await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("portcullis did not become ready");
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn check(path: &str, token: Option<&str>) -> CheckRequest {
    portcullis::dev::request::get_with_token(path, token)
}

/// The HTTP status a check answers with (200 for an allow).
async fn status(ch: &Channel, request: CheckRequest) -> i32 {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let response = AuthorizationClient::new(ch.clone())
        .check(request)
        .await
        .expect("a gRPC OK")
        .into_inner();
    match response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.unwrap().code,
        _ if response.status.unwrap().code == 0 => 200,
        other => panic!("unexpected {other:?}"),
    }
}

async fn metrics(admin: SocketAddr) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

async fn rewrite_and_reload(server: &Server, open_path: &str) {
    let jwks = server
        .issuer
        .issuer()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        &server.config_path,
        routes_yaml(&server.issuer, jwks, open_path),
    )
    .unwrap();
    server.reload.notify_one();
}

async fn eventually(mut probe: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_steady_checks_loses_none_and_applies_the_new_policy() {
    let server = start().await;
    let ch = channel(server.grpc).await;
    assert_eq!(
        status(&ch, check("/later", None)).await,
        401,
        "protected before the reload"
    );

    let load = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..1500 {
                let code = status(&ch, check("/open", None)).await;
                assert_eq!(code, 200, "/open stays public across the reload");
                answered += 1;
            }
            answered
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    std::fs::write(&server.config_path, config.replace("path: /open }, token: public }", "path: /open }, token: public }\n  - { name: later, match: { path: /later }, token: public }")).unwrap();
    server.reload.notify_one();
    assert_eq!(load.await.unwrap(), 1500, "every check answered");
    assert!(
        eventually(async || status(&ch, check("/later", None)).await == 200).await,
        "new route in force"
    );
    let scrape = metrics(server.admin).await;
    assert_eq!(
        sample(
            &scrape,
            "portcullis_config_reloads_total",
            &[("result", "ok")]
        ),
        Some(1.0)
    );
    stop(server).await;
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_running_policy_stays() {
    let server = start().await;
    let ch = channel(server.grpc).await;
    std::fs::write(&server.config_path, "routes: [\n").unwrap();
    server.reload.notify_one();
    let m = server.admin;
    assert!(
        eventually(async || sample(
            &metrics(m).await,
            "portcullis_config_reloads_total",
            &[("result", "invalid")]
        ) == Some(1.0))
        .await,
        "the refusal is counted"
    );
    assert_eq!(
        status(&ch, check("/open", None)).await,
        200,
        "old policy still in force"
    );
    assert_eq!(status(&ch, check("/x", None)).await, 401);
    rewrite_and_reload(&server, "/x").await;
    assert!(
        eventually(async || status(&ch, check("/x", None)).await == 200).await,
        "a good file after a bad one applies"
    );
    stop(server).await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_check_finish() {
    let server = start().await;
    let ch = channel(server.grpc).await;
    // An unknown kid makes the check wait for a refetch, which the JWKS server delays.
    server.jwks_delay_ms.store(800, Ordering::SeqCst);
    let claims = server
        .issuer
        .access_claims(issuer::user("alice").unwrap(), &["api"], unix_now());
    let token = server
        .issuer
        .sign(
            &serde_json::json!({ "alg": "RS256", "kid": "rotated-later" }),
            &claims,
        )
        .unwrap();
    let in_flight = {
        let ch = ch.clone();
        tokio::spawn(async move { status(&ch, check("/x", Some(&token))).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Server { stop, done, .. } = server;
    stop.unwrap().send(()).unwrap();
    assert_eq!(
        in_flight.await.unwrap(),
        401,
        "the in-flight check was answered"
    );
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("server stopped")
        .unwrap();
}

#[tokio::test]
async fn metrics_parse_and_show_checks_keys_and_latency() {
    let server = start().await;
    let ch = channel(server.grpc).await;
    let token = server
        .issuer
        .access_token(issuer::user("alice").unwrap(), &["api"], unix_now())
        .unwrap();
    assert_eq!(status(&ch, check("/x", Some(&token))).await, 200);
    assert_eq!(status(&ch, check("/x", None)).await, 401);
    let scrape = metrics(server.admin).await;
    let checks = |decision, reason| {
        sample(
            &scrape,
            "portcullis_checks_total",
            &[
                ("route", "rest"),
                ("decision", decision),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(checks("allow", "ok"), Some(1.0));
    assert_eq!(checks("deny", "missing_token"), Some(1.0));
    let fetch: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric.contains("fetch"))
        .collect();
    assert_eq!(
        sample(
            &scrape,
            "portcullis_key_fetches_total",
            &[("issuer", "t"), ("result", "ok")]
        ),
        Some(1.0),
        "{fetch:?}"
    );
    assert_eq!(
        sample(&scrape, "portcullis_key_set_keys", &[("issuer", "t")]),
        Some(1.0)
    );
    assert!(
        sample(
            &scrape,
            "portcullis_key_set_age_seconds",
            &[("issuer", "t")]
        )
        .is_some()
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "portcullis_check_duration_seconds")
    );
    let info: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric.contains("build"))
        .collect();
    assert_eq!(
        sample(
            &scrape,
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{info:?}"
    );
    stop(server).await;
}

async fn stop(server: Server) {
    let Server { stop, done, .. } = server;
    stop.unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("server stopped")
        .unwrap();
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up_without_a_signal() {
    use std::os::unix::fs::symlink;
    let server = start().await;
    let ch = channel(server.grpc).await;
    // Lay the file out as a Kubernetes ConfigMap volume does: the file is a
    // symlink through `..data`, itself a symlink to a timestamped directory.
    let dir = server.config_path.parent().unwrap().to_owned();
    let original = std::fs::read_to_string(&server.config_path).unwrap();
    let first = dir.join("..2026_12_04_a");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("portcullis.yaml"), &original).unwrap();
    symlink("..2026_12_04_a", dir.join("..data")).unwrap();
    std::fs::remove_file(&server.config_path).unwrap();
    symlink("..data/portcullis.yaml", &server.config_path).unwrap();
    assert_eq!(status(&ch, check("/swapped", None)).await, 401);

    let second = dir.join("..2026_12_04_b");
    std::fs::create_dir_all(&second).unwrap();
    let changed = original.replace(
        "path: /open }, token: public }",
        "path: /open }, token: public }\n  - { name: swapped, match: { path: /swapped }, token: public }",
    );
    std::fs::write(second.join("portcullis.yaml"), changed).unwrap();
    symlink("..2026_12_04_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();

    let mut applied = false;
    for _ in 0..60 {
        if status(&ch, check("/swapped", None)).await == 200 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        applied,
        "the swapped configuration was not applied within 6 s"
    );
    stop(server).await;
}
