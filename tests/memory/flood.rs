//! A flood of distinct valid tokens through one check service, measuring the
//! growth of the resident set against the token cache's byte bound. Each test
//! file that uses it holds one test, so nothing else runs in its process.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::request::check_request;
use portcullis::dev::stack::unix_now;
use portcullis::keys::KeySet;
use portcullis::server::{AuthzService, Runtime};
use serde_json::{Value, json};

/// The cache's byte bound in this test.
const MAX_BYTES: usize = 4 << 20;
/// Tokens sent: unbounded, they would take about ten times the bound.
const TOKENS: usize = 5_000;
/// Checks before the baseline: few, so that the cache is far from full then.
const WARM_UP: usize = 10;
/// What the process may grow by beyond the bound: allocator slack, the
/// cache's table, metrics.
const SLACK: usize = 6 << 20;

fn now_or_never<F: Future>(future: F) -> F::Output {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the check waited"),
    }
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Sends `TOKENS` distinct valid tokens (alice's claims changed by `tweak`)
/// to a route that requires `require`, and checks the resident growth.
pub(crate) fn flood(require: &str, tweak: impl Fn(&mut Value)) {
    let dev = DevIssuer::generate("https://sso.example.test", "acme").unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let yaml = format!(
        "token_cache: {{ max_entries: 1000000, max_bytes: {MAX_BYTES} }}\n\
         issuers:\n  - {{ name: acme, issuer: '{}', jwks_url: 'https://sso.example.test/k', audiences: [orders-api], algorithms: [ES256] }}\n\
         routes:\n  - {{ name: staff, match: {{ path_prefix: / }}, require: {require} }}\n",
        dev.issuer()
    );
    let config = Config::from_yaml(&yaml, "test").unwrap();
    let runtime = Arc::new(Runtime::new(&config));
    let keys = KeySet::from_jwks(jwks.to_string().as_bytes(), SystemTime::now()).unwrap();
    runtime.snapshot().issuers[0].keys.store(keys);
    let service = AuthzService::new(runtime.clone());

    let rng = SystemRandom::new();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT","kid":"ec-1"}"#);
    let mut claims = dev.access_claims(
        issuer::user("alice").unwrap(),
        &["orders-api", "account"],
        unix_now() + 3600,
    );
    claims["groups"] = json!(["/staff", "/staff/orders", "/everyone"]);
    claims["address"] = json!({ "country": "NZ", "locality": "Wellington" });
    tweak(&mut claims);
    let mut token = |i: usize| {
        claims["jti"] = json!(format!("token-{i}"));
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = ec.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let mut check = |i: usize| {
        let bearer = format!("Bearer {}", token(i));
        let request = check_request(
            "GET",
            "api.example.test",
            "/orders",
            &[("authorization", &bearer)],
        );
        let wire = now_or_never(service.answer(&request));
        let response: CheckResponse = prost::Message::decode(wire.as_slice()).unwrap();
        assert!(
            matches!(response.http_response, Some(HttpResponse::OkResponse(_))),
            "token {i} was not allowed: {response:?}"
        );
    };

    // Warm up allocator, metrics and the cache's table before the baseline.
    for i in 0..WARM_UP {
        check(i);
    }
    let before = resident_bytes();
    for i in WARM_UP..TOKENS {
        check(i);
    }
    let grown = resident_bytes().saturating_sub(before);
    let cache = runtime.snapshot();
    let cache = cache.checker.validator().cache();
    assert!(
        cache.bytes() <= MAX_BYTES,
        "estimate {} over the bound",
        cache.bytes()
    );
    assert!(
        cache.len() < TOKENS / 2,
        "the cache evicted ({} entries kept of {TOKENS})",
        cache.len()
    );
    assert!(
        grown <= MAX_BYTES + SLACK,
        "resident set grew by {grown} bytes for a bound of {MAX_BYTES} ({} entries kept)",
        cache.len()
    );
}
