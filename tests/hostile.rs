//! Hostile input, one table per kind of attack, each case asserting the exact
//! status and reason code of the answer. In-process, through the same
//! `AuthzService::decide` that serves gRPC and HTTP. docs/security.md lists
//! the kinds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::unix_now;
use portcullis::keys::KeySet;
use portcullis::server::grpc::Inbound;
use portcullis::server::{AuthzService, Runtime};
use serde_json::{Value, json};

const ISSUER: &str = "https://sso.example.test/realms/acme";

struct Keys {
    rsa: DevIssuer,
    ec: aws_lc_rs::signature::EcdsaKeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        Keys {
            rsa: DevIssuer::generate("https://sso.example.test", "acme").unwrap(),
            ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    })
}

fn jwks() -> Value {
    use aws_lc_rs::signature::KeyPair;
    let mut jwks = keys().rsa.jwks();
    let point = keys().ec.public_key().as_ref().to_vec();
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }));
    jwks
}

fn service() -> AuthzService {
    let yaml = format!(
        "max_token_bytes: 4096\n\
         token_sources: [authorization, {{ cookie: session }}, {{ query: access_token }}]\n\
         issuers:\n  - {{ name: acme, issuer: '{ISSUER}', jwks_url: 'https://sso.example.test/k', audiences: [orders-api], algorithms: [RS256, ES256] }}\n\
         routes:\n  - {{ name: docs, match: {{ path_prefix: /docs }}, token: public }}\n  - {{ name: admin, match: {{ path_prefix: /admin }}, require: {{ realm_roles: [admin] }} }}\n  - {{ name: api, match: {{ path_prefix: / }} }}\n"
    );
    let config = Config::from_yaml(&yaml, "hostile").unwrap();
    let runtime = Runtime::new(&config);
    let set = KeySet::from_jwks(jwks().to_string().as_bytes(), SystemTime::now()).unwrap();
    runtime.snapshot().issuers[0].keys.store(set);
    AuthzService::new(Arc::new(runtime))
}

fn claims() -> Value {
    let mut claims =
        keys()
            .rsa
            .access_claims(issuer::user("alice").unwrap(), &["orders-api"], unix_now());
    claims["iss"] = json!(ISSUER);
    claims
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn rs256(header: Value, claims: &Value) -> String {
    keys().rsa.sign(&header, claims).unwrap()
}

fn good() -> String {
    rs256(
        json!({ "alg": "RS256", "typ": "JWT", "kid": keys().rsa.kid() }),
        &claims(),
    )
}

fn with_claims(change: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    change(&mut c);
    rs256(json!({ "alg": "RS256", "kid": keys().rsa.kid() }), &c)
}

fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    portcullis::dev::request::check_request(method, "api.example.test", path, headers)
}

/// (HTTP status, reason code) of an answer; (200, "ok") for an allow.
fn outcome(response: &CheckResponse) -> (i32, String) {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let body: Value = serde_json::from_str(&d.body).unwrap();
            (
                d.status.as_ref().unwrap().code,
                body["error"].as_str().unwrap().to_owned(),
            )
        }
        _ => {
            assert_eq!(
                response.status.as_ref().unwrap().code,
                0,
                "an allow has gRPC OK"
            );
            (200, "ok".into())
        }
    }
}

async fn table(cases: Vec<(&str, CheckRequest, (i32, &str))>) {
    let service = service();
    for (case, request, (status, reason)) in cases {
        let got = outcome(&service.decide(&request).await);
        assert_eq!(got, (status, reason.to_owned()), "{case}");
    }
}

fn bearer(token: &str) -> CheckRequest {
    let auth = format!("Bearer {token}");
    http("GET", "/orders", &[("authorization", auth.as_str())])
}

#[tokio::test]
async fn forged_algorithms_and_keys_are_refused() {
    let payload = b64(&claims().to_string());
    let kid = keys().rsa.kid();
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({ "alg": alg, "kid": kid }).to_string());
        cases.push((
            alg,
            bearer(&format!("{header}.{payload}.AAAA")),
            (401, "algorithm_not_allowed"),
        ));
    }
    let hs_input = format!(
        "{}.{payload}",
        b64(&json!({ "alg": "HS256", "kid": kid }).to_string())
    );
    let n = jwks()["keys"][1]["n"].as_str().unwrap().to_owned();
    let hmac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, n.as_bytes()),
        hs_input.as_bytes(),
    );
    let hs = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(hmac.as_ref()));
    cases.push((
        "HS256 keyed with the public key",
        bearer(&hs),
        (401, "algorithm_not_allowed"),
    ));
    let stranger = DevIssuer::generate("https://sso.example.test", "acme").unwrap();
    let embedded = json!({
        "alg": "RS256", "kid": kid, "jwk": stranger.jwks()["keys"][1],
        "jku": "https://evil.example/jwks", "x5u": "https://evil.example/x5u", "x5c": ["MIIB"],
    });
    let forged = stranger.sign(&embedded, &claims()).unwrap();
    cases.push((
        "keys in the header (jwk, jku, x5u, x5c)",
        bearer(&forged),
        (401, "bad_signature"),
    ));
    let crit = rs256(
        json!({ "alg": "RS256", "kid": kid, "crit": ["exp"] }),
        &claims(),
    );
    cases.push(("crit", bearer(&crit), (401, "token_critical_header")));
    let crit_null = rs256(
        json!({ "alg": "RS256", "kid": kid, "crit": null }),
        &claims(),
    );
    cases.push((
        "crit: null",
        bearer(&crit_null),
        (401, "token_critical_header"),
    ));
    let es_input = format!(
        "{}.{payload}",
        b64(&json!({ "alg": "ES256", "kid": "ec-1" }).to_string())
    );
    let zeros = format!("{es_input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    cases.push((
        "ECDSA signature of zeros",
        bearer(&zeros),
        (401, "bad_signature"),
    ));
    let enc_kid = jwks()["keys"][0]["kid"].as_str().unwrap().to_owned();
    let enc = rs256(json!({ "alg": "RS256", "kid": enc_kid }), &claims());
    cases.push((
        "kid of the encryption key",
        bearer(&enc),
        (401, "unknown_key"),
    ));
    for kid in [
        "../../etc/passwd",
        "a\u{0}b",
        "line\nbreak",
        "http://evil/jwks",
    ] {
        let token = rs256(json!({ "alg": "RS256", "kid": kid }), &claims());
        cases.push((
            "kid with path or control characters",
            bearer(&token),
            (401, "unknown_key"),
        ));
    }
    table(cases).await;
}

#[tokio::test]
async fn malformed_encodings_and_sizes_are_refused() {
    let token = good();
    let parts: Vec<&str> = token.split('.').collect();
    let signature_std = parts[2].replace('-', "+").replace('_', "/");
    assert_ne!(
        signature_std, parts[2],
        "a 2048-bit signature has '-' or '_' in base64url"
    );
    let cases = vec![
        ("valid control", bearer(&token), (200, "ok")),
        (
            "padding",
            bearer(&format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
            (401, "token_malformed"),
        ),
        (
            "standard alphabet",
            bearer(&format!("{}.{}.{}", parts[0], parts[1], signature_std)),
            (401, "bad_signature"),
        ),
        (
            "standard-alphabet padding",
            bearer(&format!("{}.{}=.{}", parts[0], parts[1], parts[2])),
            (401, "token_malformed"),
        ),
        (
            "trailing bits",
            bearer(&format!("e31.{}.{}", parts[1], parts[2])),
            (401, "token_malformed"),
        ),
        (
            "four parts",
            bearer(&format!("{token}.x")),
            (401, "token_malformed"),
        ),
        (
            "oversized",
            bearer(&format!("{}.{}.{}", parts[0], "A".repeat(5000), parts[2])),
            (401, "token_too_large"),
        ),
        (
            "deeply nested JSON",
            bearer(&format!(
                "{}.{}.{}",
                parts[0],
                b64(&format!("{}{}", "[".repeat(3000), "]".repeat(3000))),
                parts[2]
            )),
            (401, "token_too_large"),
        ),
        (
            "nested JSON within the size limit",
            bearer(&format!(
                "{}.{}.{}",
                parts[0],
                b64(&format!("{{\"a\":{}{}}}", "[".repeat(600), "]".repeat(600))),
                parts[2]
            )),
            (401, "token_malformed"),
        ),
        (
            "duplicate claims",
            bearer(
                &keys()
                    .rsa
                    .sign_raw(
                        &json!({ "alg": "RS256", "kid": keys().rsa.kid() }),
                        &claims().to_string().replacen('{', "{\"iss\":\"x\",", 1),
                    )
                    .unwrap(),
            ),
            (401, "token_malformed"),
        ),
    ];
    table(cases).await;
}

#[tokio::test]
async fn time_and_audience_claims_are_checked_strictly() {
    let cases = vec![
        (
            "exp as a string",
            bearer(&with_claims(|c| c["exp"] = json!("9999999999"))),
            (401, "token_malformed"),
        ),
        (
            "nbf as a boolean",
            bearer(&with_claims(|c| c["nbf"] = json!(true))),
            (401, "token_malformed"),
        ),
        (
            "iat as an object",
            bearer(&with_claims(|c| c["iat"] = json!({}))),
            (401, "token_malformed"),
        ),
        (
            "exp missing",
            bearer(&with_claims(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            (401, "missing_exp"),
        ),
        (
            "aud as a string",
            bearer(&with_claims(|c| c["aud"] = json!("orders-api"))),
            (200, "ok"),
        ),
        (
            "aud as an array",
            bearer(&with_claims(|c| c["aud"] = json!(["x", "orders-api"]))),
            (200, "ok"),
        ),
        (
            "aud missing",
            bearer(&with_claims(|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            (401, "wrong_audience"),
        ),
        (
            "Keycloak's default account audience",
            bearer(&with_claims(|c| c["aud"] = json!("account"))),
            (401, "wrong_audience"),
        ),
        (
            "ID token",
            bearer(&with_claims(|c| c["typ"] = json!("ID"))),
            (401, "not_an_access_token"),
        ),
    ];
    table(cases).await;
}

#[tokio::test]
async fn ambiguous_credentials_are_refused() {
    let token = good();
    let auth = format!("Bearer {token}");
    let cookie = format!("session={token}");
    let raw_twice = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: "a".into(),
                    path: "/orders".into(),
                    header_map: Some(HeaderMap {
                        headers: vec![
                            raw("authorization", auth.as_bytes()),
                            raw("authorization", auth.as_bytes()),
                        ],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let query = format!("/orders?access_token={token}");
    let cases = vec![
        (
            "repeated header lines",
            raw_twice,
            (400, "multiple_credentials"),
        ),
        (
            "comma-joined values",
            http(
                "GET",
                "/orders",
                &[("authorization", &format!("{auth},{auth}"))],
            ),
            (400, "multiple_credentials"),
        ),
        (
            "header and cookie",
            http(
                "GET",
                "/orders",
                &[("authorization", &auth), ("cookie", &cookie)],
            ),
            (400, "multiple_credentials"),
        ),
        (
            "header and query",
            http("GET", &query, &[("authorization", &auth)]),
            (400, "multiple_credentials"),
        ),
        (
            "cookie alone",
            http("GET", "/orders", &[("cookie", &cookie)]),
            (200, "ok"),
        ),
        (
            "another scheme",
            http(
                "GET",
                "/orders",
                &[("authorization", &format!("Basic {token}"))],
            ),
            (401, "missing_token"),
        ),
        (
            "non-UTF-8 header bytes",
            raw_request(b"Bearer \xff\xfe"),
            (400, "malformed_credential"),
        ),
    ];
    table(cases).await;
}

fn raw(key: &str, value: &[u8]) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        raw_value: value.to_vec(),
        ..Default::default()
    }
}

fn raw_request(authorization: &[u8]) -> CheckRequest {
    let mut request = http("GET", "/orders", &[]);
    let http = portcullis::dev::request::http_mut(&mut request).unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![raw("authorization", authorization)],
    });
    request
}

#[tokio::test]
async fn request_tricks_are_decided_on_what_the_upstream_reads() {
    let forged = [
        ("x-envoy-original-path", "/docs"),
        ("x-forwarded-uri", "/docs"),
        ("x-forwarded-host", "docs.example.test"),
        ("x-http-method-override", "GET"),
        ("x-original-url", "/docs"),
    ];
    let tcp = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: "spiffe://cluster.local/ns/a/sa/b".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let cases = vec![
        ("a TCP check", tcp, (403, "not_http")),
        (
            "dot segments",
            http("GET", "/docs/../admin/x", &[]),
            (401, "missing_token"),
        ),
        (
            "encoded dot segments",
            http("GET", "/docs/%2e%2e/admin/x", &[]),
            (400, "invalid_path"),
        ),
        (
            "dot segment with parameters",
            http("GET", "/admin/..;/docs", &[]),
            (400, "invalid_path"),
        ),
        (
            "encoded slash",
            http("GET", "/docs/..%2fadmin", &[]),
            (400, "invalid_path"),
        ),
        (
            "encoded backslash",
            http("GET", "/docs/..%5cadmin", &[]),
            (400, "invalid_path"),
        ),
        (
            "backslash",
            http("GET", "/docs\\..\\admin", &[]),
            (400, "invalid_path"),
        ),
        (
            "encoded slash inside public",
            http("GET", "/docs/a%2fb", &[]),
            (200, "ok"),
        ),
        (
            "repeated slashes",
            http("GET", "//admin//x", &[]),
            (401, "missing_token"),
        ),
        (
            "parameters",
            http("GET", "/admin;x=1/x", &[]),
            (401, "missing_token"),
        ),
        (
            "query naming a public path",
            http("GET", "/admin?/docs", &[]),
            (401, "missing_token"),
        ),
        (
            "fragment",
            http("GET", "/admin#/docs", &[]),
            (401, "missing_token"),
        ),
        (
            "control character",
            http("GET", "/docs/%00", &[]),
            (400, "invalid_path"),
        ),
        (
            "bad escape",
            http("GET", "/docs/%zz", &[]),
            (400, "invalid_path"),
        ),
        (
            "absolute form",
            http("GET", "http://evil/docs", &[]),
            (400, "invalid_path"),
        ),
        (
            "asterisk form",
            http("OPTIONS", "*", &[]),
            (400, "invalid_path"),
        ),
        (
            "forged routing headers",
            http("GET", "/admin", &forged),
            (401, "missing_token"),
        ),
        (
            "lower-case method",
            http("delete", "/admin", &[]),
            (401, "missing_token"),
        ),
    ];
    table(cases).await;
}

#[tokio::test]
async fn hosts_with_case_dots_and_ports_match_the_same_route() {
    let service = service();
    for host in [
        "API.Example.Test",
        "api.example.test.",
        "api.example.test:8443",
        "api.example.test.:80",
    ] {
        let mut request = http("GET", "/docs/x", &[]);
        portcullis::dev::request::http_mut(&mut request)
            .unwrap()
            .host = host.into();
        assert_eq!(
            outcome(&service.decide(&request).await),
            (200, "ok".into()),
            "{host}"
        );
    }
}

#[tokio::test]
async fn huge_header_maps_and_undecodable_requests_get_answers() {
    let service = service();
    let many: HashMap<String, String> = (0..20_000)
        .map(|i| (format!("x-h-{i}"), "v".repeat(32)))
        .collect();
    let mut request = http("GET", "/docs/x", &[]);
    portcullis::dev::request::http_mut(&mut request)
        .unwrap()
        .headers = many;
    assert_eq!(
        outcome(&service.decide(&request).await),
        (200, "ok".into()),
        "20000 headers"
    );
    let undecodable = service
        .answer_inbound(Inbound::Undecodable("test".into()))
        .await;
    let undecodable: CheckResponse = prost::Message::decode(undecodable.as_slice()).unwrap();
    assert_eq!(outcome(&undecodable), (400, "invalid_check_request".into()));
    let empty = service.decide(&CheckRequest::default()).await;
    assert_eq!(outcome(&empty), (403, "not_http".into()));
}
