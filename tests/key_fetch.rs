//! Fetching keys from misbehaving servers, all started here on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

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
    KeySource {
        name: "test".into(),
        issuer: issuer.into(),
        discovery_url: discovery,
        jwks_url: jwks,
        allow_insecure_http: false,
        refresh_interval: Duration::from_secs(300),
    }
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
    assert_eq!((set.len(), set.skipped), (1, 1));
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
