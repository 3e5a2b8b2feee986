//! The gRPC front door, served in-process on 127.0.0.1: health and Check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::unix_now;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Harness {
    addr: SocketAddr,
    admin: SocketAddr,
    issuer: Arc<DevIssuer>,
    jwks_up: Arc<AtomicBool>,
}

/// portcullis with one issuer whose JWKS server answers 503 until `jwks_up` is set.
async fn start() -> Harness {
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = jwks_listener.local_addr().unwrap();
    let issuer = Arc::new(DevIssuer::generate(&format!("http://{jwks_addr}"), "t").unwrap());
    let jwks_up = Arc::new(AtomicBool::new(false));
    let router = Router::new().route(
        "/jwks",
        get({
            let (issuer, up) = (issuer.clone(), jwks_up.clone());
            move || async move {
                if up.load(Ordering::SeqCst) {
                    Ok(axum::Json(issuer.jwks().clone()))
                } else {
                    Err(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(jwks_listener, router).await });

    let yaml = format!(
        "issuers:\n  - {{ name: t, issuer: '{}', jwks_url: 'http://{jwks_addr}/jwks', audiences: [api] }}\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }} }}\n",
        issuer.issuer()
    );
    let config = Config::from_yaml(&yaml, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let listeners = portcullis::server::Listeners {
            grpc: listener,
            admin: Some(admin_listener),
            http: None,
        };
        portcullis::server::serve(&config, listeners, std::future::pending())
            .await
            .unwrap();
    });
    Harness {
        addr,
        admin,
        issuer,
        jwks_up,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    for _ in 0..100 {
        if let Ok(ch) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("portcullis did not accept connections");
}

async fn health(ch: &Channel, service: &str) -> i32 {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    HealthClient::new(ch.clone())
        .check(request)
        .await
        .unwrap()
        .into_inner()
        .status
}

fn http_check(token: Option<&str>) -> CheckRequest {
    portcullis::dev::request::get_with_token("/x", token)
}

async fn check(ch: &Channel, request: CheckRequest) -> CheckResponse {
    AuthorizationClient::new(ch.clone())
        .check(request)
        .await
        .expect("a gRPC OK")
        .into_inner()
}

fn denied_status(response: &CheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code,
        other => panic!("not a denial: {other:?}"),
    }
}

#[tokio::test]
async fn health_is_not_serving_until_keys_load_and_checks_are_denied_meanwhile() {
    let h = start().await;
    let ch = channel(h.addr).await;
    assert_eq!(health(&ch, "").await, ServingStatus::NotServing as i32);
    assert_eq!(
        health(&ch, "envoy.service.auth.v3.Authorization").await,
        ServingStatus::NotServing as i32
    );

    let token = h
        .issuer
        .access_token(issuer::user("alice").unwrap(), &["api"], unix_now())
        .unwrap();
    let early = check(&ch, http_check(Some(&token))).await;
    assert_ne!(early.status.as_ref().unwrap().code, 0);
    assert_eq!(
        denied_status(&early),
        503,
        "keys not loaded: a denial, not a gRPC error"
    );

    let readyz = reqwest::get(format!("http://{}/readyz", h.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(
        readyz.text().await.unwrap().ends_with("\nt\n"),
        "names the missing issuer"
    );

    h.jwks_up.store(true, Ordering::SeqCst);
    let mut serving = false;
    for _ in 0..150 {
        if health(&ch, "").await == ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        serving,
        "health did not turn SERVING after the JWKS came up"
    );
    assert_eq!(
        health(&ch, "envoy.service.auth.v3.Authorization").await,
        ServingStatus::Serving as i32
    );
    let readyz = reqwest::get(format!("http://{}/readyz", h.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let later = check(&ch, http_check(Some(&token))).await;
    assert_eq!(
        later.status.unwrap().code,
        0,
        "allowed once keys are loaded"
    );
}

#[tokio::test]
async fn a_tcp_check_gets_a_denial_not_a_grpc_error() {
    let h = start().await;
    let ch = channel(h.addr).await;
    let tcp = CheckRequest {
        attributes: Some(AttributeContext::default()),
    };
    let response = check(&ch, tcp).await;
    assert_eq!(response.status.unwrap().code, 7);
    let empty = check(&ch, CheckRequest::default()).await;
    assert_eq!(empty.status.unwrap().code, 7);
}

#[tokio::test]
async fn a_missing_token_over_grpc_is_a_401_denial() {
    let h = start().await;
    let ch = channel(h.addr).await;
    let response = check(&ch, http_check(None)).await;
    assert_eq!(response.status.as_ref().unwrap().code, 16);
    assert_eq!(denied_status(&response), 401);
}

/// Sends raw bytes as the CheckRequest message.
async fn check_raw(ch: &Channel, message: Vec<u8>) -> Result<CheckResponse, tonic::Status> {
    #[derive(Clone, Copy, Default)]
    struct RawCodec;
    #[derive(Clone, Copy, Default)]
    struct RawEncoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            buf: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            use prost::bytes::BufMut;
            buf.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = CheckResponse;
        type Encoder = RawEncoder;
        type Decoder = tonic_prost::ProstDecoder<CheckResponse>;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::default()
        }
    }
    let mut grpc = tonic::client::Grpc::new(ch.clone()).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    grpc.unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn undecodable_check_requests_get_a_denial_not_a_grpc_error() {
    use prost::Message;
    let h = start().await;
    let ch = channel(h.addr).await;
    // attributes (1) → request (4) → http (2) → path (4) holding invalid UTF-8.
    let path = [0x22u8, 0x02, 0xff, 0xfe];
    let http = [&[0x12u8, path.len() as u8][..], &path].concat();
    let request = [&[0x22u8, http.len() as u8][..], &http].concat();
    let bad_utf8 = [&[0x0au8, request.len() as u8][..], &request].concat();
    let garbage = vec![0xffu8; 64];
    let oversized = {
        let mut check = http_check(None);
        let http = portcullis::dev::request::http_mut(&mut check).unwrap();
        http.headers
            .insert("x-big".into(), "a".repeat(5 * 1024 * 1024));
        check.encode_to_vec()
    };
    for (case, bytes) in [
        ("invalid UTF-8", bad_utf8),
        ("garbage", garbage),
        ("over 4 MiB", oversized),
    ] {
        let response = check_raw(&ch, bytes)
            .await
            .unwrap_or_else(|s| panic!("{case}: gRPC error {s:?}"));
        assert_eq!(response.status.as_ref().unwrap().code, 3, "{case}");
        assert_eq!(denied_status(&response), 400, "{case}");
    }
}

#[tokio::test]
async fn abandoned_and_slow_connections_do_not_block_checks() {
    use tokio::io::AsyncWriteExt;
    let h = start().await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        // Half of them stop inside the HTTP/2 preface; the others send nothing.
        if i % 2 == 0 {
            stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        idle.push(stream);
    }
    let ch = channel(h.addr).await;
    let started = std::time::Instant::now();
    let response = check(&ch, http_check(None)).await;
    assert_eq!(denied_status(&response), 401);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}
