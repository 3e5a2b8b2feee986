//! The check path in process: a full check with a cached token, with an
//! uncached RS256 and ES256 token, and, in the same run, the bare signature
//! verification of those tokens, so the overhead above the cryptography reads
//! as a ratio. Run with `cargo bench --bench check`; BENCHMARKS.md has figures.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jsonwebtoken::{Algorithm, DecodingKey};
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::unix_now;
use portcullis::keys::KeySet;
use portcullis::server::{AuthzService, Runtime};
use serde_json::json;

/// Runs a future that never waits (keys are loaded, so a check never does).
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the check waited"),
    }
}

struct Setup {
    service: AuthzService,
    rs256: String,
    es256: String,
    rs_key: DecodingKey,
    es_key: DecodingKey,
}

fn setup(cache_entries: usize) -> Setup {
    let rsa = DevIssuer::generate("https://sso.example.test", "acme").unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let mut jwks = rsa.jwks();
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }));
    let yaml = format!(
        "token_cache: {{ max_entries: {cache_entries} }}\n\
         issuers:\n  - {{ name: acme, issuer: '{}', jwks_url: 'https://sso.example.test/k', audiences: [orders-api], algorithms: [RS256, ES256] }}\n\
         routes:\n  - {{ name: health, match: {{ path: /healthz }}, token: public }}\n  - {{ name: admin, match: {{ path_prefix: /admin }}, require: {{ realm_roles: [admin] }} }}\n  - {{ name: orders-read, match: {{ hosts: [api.example.test], path_prefix: /orders, methods: [GET] }}, require: {{ realm_roles: [orders-reader], scopes: ['orders:read'] }} }}\n  - {{ name: rest, match: {{ path_prefix: / }} }}\n",
        rsa.issuer()
    );
    let config = Config::from_yaml(&yaml, "bench").unwrap();
    let runtime = Runtime::new(&config);
    let set = KeySet::from_jwks(jwks.to_string().as_bytes(), SystemTime::now()).unwrap();
    runtime.snapshot().issuers[0].keys.store(set);
    let claims = rsa.access_claims(
        issuer::user("alice").unwrap(),
        &["orders-api", "account"],
        unix_now() + 3600,
    );
    let rs256 = rsa.sign_claims(&claims).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "ES256", "typ": "JWT", "kid": "ec-1" }).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = ec
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    let es256 = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let sig_key = &jwks["keys"][1];
    Setup {
        service: AuthzService::new(Arc::new(runtime)),
        rs256,
        es256,
        rs_key: DecodingKey::from_rsa_components(
            sig_key["n"].as_str().unwrap(),
            sig_key["e"].as_str().unwrap(),
        )
        .unwrap(),
        es_key: DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..65]),
        )
        .unwrap(),
    }
}

/// A CheckRequest shaped like Envoy's, with the headers a browser and Envoy add.
fn check_request(token: &str) -> CheckRequest {
    let headers = [
        (":authority", "api.example.test"),
        (":method", "GET"),
        (":path", "/orders/1001?expand=items"),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "9609691a-1d35-4c8f-8b3a-5e0d2f6b7a11"),
        ("x-envoy-attempt-count", "1"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let mut map: std::collections::HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    map.insert("authorization".into(), format!("Bearer {token}"));
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: "api.example.test".into(),
                    path: "/orders/1001?expand=items".into(),
                    headers: map,
                    protocol: "HTTP/2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bench(c: &mut Criterion) {
    let cached = setup(100_000);
    let uncached = setup(0);
    let rs_request = check_request(&cached.rs256);
    let es_request = check_request(&cached.es256);
    let uncached_rs = check_request(&uncached.rs256);
    let uncached_es = check_request(&uncached.es256);
    now_or_never(cached.service.answer(&rs_request));

    let mut group = c.benchmark_group("check");
    group.bench_function("cached_rs256", |b| {
        b.iter(|| now_or_never(cached.service.answer(black_box(&rs_request))))
    });
    group.bench_function("uncached_rs256", |b| {
        b.iter(|| now_or_never(uncached.service.answer(black_box(&uncached_rs))))
    });
    group.bench_function("uncached_es256", |b| {
        b.iter(|| now_or_never(uncached.service.answer(black_box(&uncached_es))))
    });
    group.bench_function("cached_es256", |b| {
        now_or_never(cached.service.answer(&es_request));
        b.iter(|| now_or_never(cached.service.answer(black_box(&es_request))))
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    let bare = |token: &str, key: &DecodingKey, alg: Algorithm| {
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert!(jsonwebtoken::crypto::verify(signature, input.as_bytes(), key, alg).unwrap());
    };
    group.bench_function("rs256", |b| {
        b.iter(|| {
            bare(
                black_box(&uncached.rs256),
                &uncached.rs_key,
                Algorithm::RS256,
            )
        })
    });
    group.bench_function("es256", |b| {
        b.iter(|| {
            bare(
                black_box(&uncached.es256),
                &uncached.es_key,
                Algorithm::ES256,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
