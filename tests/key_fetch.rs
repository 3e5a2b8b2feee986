//! Fetching keys from misbehaving servers, all started here on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::Router;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use portcullis::dev::issuer::DevIssuer;
use portcullis::keys::fetch::{FetchError, KeySource, http_client};
use serde_json::json;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn source(issuer: &str, discovery: Option<String>, jwks: Option<String>) -> KeySource {
    source_with(issuer, discovery, jwks, "")
}

/// A key source from configuration, with extra issuer settings (`, key: value`).
fn source_with(
    issuer: &str,
    discovery: Option<String>,
    jwks: Option<String>,
    extra: &str,
) -> KeySource {
    let url = match (discovery, jwks) {
        (Some(d), None) => format!("discovery_url: '{d}'"),
        (None, Some(j)) => format!("jwks_url: '{j}'"),
        _ => panic!("one URL"),
    };
    let yaml = format!(
        "issuers:\n  - {{ name: test, issuer: '{issuer}', {url}{extra} }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }} }}\n"
    );
    let config = portcullis::config::Config::from_yaml(&yaml, "test").unwrap();
    KeySource::from_config(&config.issuers[0].value)
}

fn jwks() -> serde_json::Value {
    DevIssuer::generate("http://127.0.0.1", "t")
        .unwrap()
        .jwks()
        .clone()
}

#[tokio::test]
async fn keys_are_found_through_discovery() {
    let keys = jwks();
    let router = Router::new().route("/jwks", get(move || async move { axum::Json(keys) }));
    let addr = serve(router.clone()).await;
    let doc = json!({ "issuer": "https://sso.example.test/realms/t", "jwks_uri": format!("http://{addr}/jwks") });
    let discovery =
        serve(Router::new().route("/d", get(move || async move { axum::Json(doc) }))).await;
    let set = source(
        "https://sso.example.test/realms/t",
        Some(format!("http://{discovery}/d")),
        None,
    )
    .fetch(&http_client().unwrap())
    .await
    .unwrap();
    assert_eq!((set.keys.len(), set.keys.skipped), (1, 1));
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let doc = json!({ "issuer": "http://keycloak.keycloak.svc:8080/realms/t", "jwks_uri": "http://127.0.0.1:1/jwks" });
    let addr = serve(Router::new().route("/d", get(move || async move { axum::Json(doc) }))).await;
    let err = source(
        "https://sso.example.test/realms/t",
        Some(format!("http://{addr}/d")),
        None,
    )
    .fetch(&http_client().unwrap())
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::IssuerMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_discovered_plain_http_jwks_uri_off_loopback_is_refused() {
    let doc = json!({ "issuer": "https://i", "jwks_uri": "http://keycloak:8080/jwks" });
    let addr = serve(Router::new().route("/d", get(move || async move { axum::Json(doc) }))).await;
    let err = source("https://i", Some(format!("http://{addr}/d")), None)
        .fetch(&http_client().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::BadJwksUri { .. }), "{err}");
}

#[tokio::test]
async fn malformed_documents_are_refused() {
    let router = Router::new()
        .route("/not-json", get(|| async { "<html>login</html>" }))
        .route(
            "/no-keys",
            get(|| async { axum::Json(json!({ "keys": [] })) }),
        )
        .route(
            "/bad-discovery",
            get(|| async { axum::Json(json!({ "issuer": "https://i" })) }),
        );
    let addr = serve(router).await;
    let client = http_client().unwrap();
    let not_json = source("https://i", None, Some(format!("http://{addr}/not-json")))
        .fetch(&client)
        .await;
    assert!(matches!(not_json, Err(FetchError::Jwks { .. })));
    let no_keys = source("https://i", None, Some(format!("http://{addr}/no-keys")))
        .fetch(&client)
        .await;
    assert!(matches!(no_keys, Err(FetchError::Jwks { .. })));
    let bad = source(
        "https://i",
        Some(format!("http://{addr}/bad-discovery")),
        None,
    )
    .fetch(&client)
    .await;
    assert!(matches!(bad, Err(FetchError::BadDiscovery { .. })));
}

#[tokio::test]
async fn an_error_status_is_refused() {
    let router = Router::new().route(
        "/jwks",
        get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
    );
    let addr = serve(router).await;
    let err = source("https://i", None, Some(format!("http://{addr}/jwks")))
        .fetch(&http_client().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_oversized_document_is_refused() {
    let big = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let router = Router::new().route("/jwks", get(move || async move { big }));
    let addr = serve(router).await;
    let err = source("https://i", None, Some(format!("http://{addr}/jwks")))
        .fetch(&http_client().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn redirects_are_followed_within_the_origin_only() {
    let keys = jwks();
    let elsewhere = serve(Router::new().route(
        "/jwks",
        get({
            let keys = keys.clone();
            move || async move { axum::Json(keys) }
        }),
    ))
    .await;
    let router = Router::new()
        .route("/jwks", get(move || async move { axum::Json(keys) }))
        .route(
            "/moved",
            get(|| async { Redirect::temporary("/jwks").into_response() }),
        )
        .route(
            "/away",
            get(move || async move {
                Redirect::temporary(&format!("http://{elsewhere}/jwks")).into_response()
            }),
        );
    let addr = serve(router).await;
    let client = http_client().unwrap();
    let same = source("https://i", None, Some(format!("http://{addr}/moved")))
        .fetch(&client)
        .await;
    assert!(same.is_ok(), "{:?}", same.err());
    let away = source("https://i", None, Some(format!("http://{addr}/away")))
        .fetch(&client)
        .await;
    assert!(
        matches!(away, Err(FetchError::Http { .. })),
        "{:?}",
        away.err()
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_http_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = source("https://i", None, Some(format!("http://{addr}/jwks")))
        .fetch(&http_client().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Http { .. }), "{err}");
}

#[tokio::test]
async fn a_slow_server_times_out_within_the_fetch_timeout() {
    let router = Router::new().route(
        "/jwks",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            "{}"
        }),
    );
    let addr = serve(router).await;
    let source = source_with(
        "https://i",
        None,
        Some(format!("http://{addr}/jwks")),
        ", fetch_timeout_seconds: 1",
    );
    let started = std::time::Instant::now();
    let err = source
        .fetch(&source.http_client().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Http { .. }), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_cache_file_keeps_the_last_good_keys_for_a_restart() {
    let keys = jwks();
    let router = Router::new().route("/jwks", get(move || async move { axum::Json(keys) }));
    let addr = serve(router).await;
    let dir = std::env::temp_dir().join(format!("portcullis-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("acme.jwks.json");
    let extra = format!(", cache_file: '{}'", cache.display());
    let source = source_with(
        "https://i",
        None,
        Some(format!("http://{addr}/jwks")),
        &extra,
    );
    let fetched = source.fetch(&source.http_client().unwrap()).await.unwrap();
    source.write_cache(&fetched).unwrap();

    let restored = source
        .read_cache(std::time::SystemTime::now())
        .expect("cache read back");
    assert_eq!(restored.kids(), fetched.keys.kids());
    assert_eq!(restored.fetched_at, fetched.keys.fetched_at);

    let two_days = std::time::Duration::from_secs(2 * 86_400);
    assert!(
        source
            .read_cache(std::time::SystemTime::now() + two_days)
            .is_none(),
        "too old"
    );
    std::fs::write(&cache, "garbage").unwrap();
    assert!(
        source.read_cache(std::time::SystemTime::now()).is_none(),
        "corrupt"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_refresh_period_follows_a_shorter_cache_control_max_age() {
    let keys = jwks();
    let router = Router::new().route(
        "/jwks",
        get(move || async move { ([("cache-control", "public, max-age=60")], axum::Json(keys)) }),
    );
    let addr = serve(router).await;
    let source = source("https://i", None, Some(format!("http://{addr}/jwks")));
    let fetched = source.fetch(&http_client().unwrap()).await.unwrap();
    assert_eq!(fetched.max_age, Some(std::time::Duration::from_secs(60)));
    assert_eq!(
        source.next_refresh(fetched.max_age),
        std::time::Duration::from_secs(60)
    );
}

#[tokio::test]
async fn a_bearer_token_file_authenticates_the_fetch() {
    let keys = jwks();
    let router = Router::new().route(
        "/openid/v1/jwks",
        get(move |headers: axum::http::HeaderMap| async move {
            match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                Some("Bearer projected-sa-token") => Ok(axum::Json(keys)),
                _ => Err(axum::http::StatusCode::UNAUTHORIZED),
            }
        }),
    );
    let addr = serve(router).await;
    let url = Some(format!("http://{addr}/openid/v1/jwks"));
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let anonymous = source(issuer, None, url.clone())
        .fetch(&http_client().unwrap())
        .await;
    assert!(matches!(
        anonymous,
        Err(FetchError::Status { status: 401, .. })
    ));

    let file = std::env::temp_dir().join(format!("portcullis-sa-token-{}", std::process::id()));
    std::fs::write(&file, "projected-sa-token\n").unwrap();
    let extra = format!(
        ", fetch_bearer_token_file: '{}', token_types: []",
        file.display()
    );
    let source = source_with(issuer, None, url, &extra);
    assert!(source.fetch(&http_client().unwrap()).await.is_ok());
    std::fs::remove_file(&file).unwrap();
    let gone = source.fetch(&http_client().unwrap()).await.unwrap_err();
    assert!(matches!(gone, FetchError::TokenFile { .. }), "{gone}");
}
