//! Shared fixtures and invariants for the portcullis fuzz targets.
//!
//! Keys are generated once per process (RSA key generation is slow); every
//! fixture is a `OnceLock`. Nothing here talks to the network: key holders are
//! filled directly from the development issuer's JWKS.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use jsonwebtoken::Algorithm;
use portcullis::config::Config;
use portcullis::dev::issuer::{self as dev, DevIssuer};
use portcullis::keys::{IssuerKeys, KeySet};
use portcullis::server::grpc::Inbound;
use portcullis::server::{AuthzService, Runtime};
use portcullis::token::cache::CacheLimits;
use portcullis::token::{TrustedIssuer, Validator};

/// A fixed "now" for token targets: 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;
/// The dev issuer's base URL and realm; its `iss` is [`ISSUER`].
pub const BASE_URL: &str = "https://sso.example.test";
/// The realm of the dev issuer.
pub const REALM: &str = "acme";
/// The `iss` of every token the fixtures mint.
pub const ISSUER: &str = "https://sso.example.test/realms/acme";
/// The audience the strict validator and the check config require.
pub const AUDIENCE: &str = "orders-api";

/// The one trusted signing issuer of this process.
pub fn issuer() -> &'static DevIssuer {
    static ISSUER_KEYS: OnceLock<DevIssuer> = OnceLock::new();
    ISSUER_KEYS.get_or_init(|| {
        DevIssuer::generate(BASE_URL, REALM).unwrap_or_else(|e| panic!("dev issuer: {e}"))
    })
}

/// The JWKS document of [`issuer`], as bytes.
pub fn jwks_bytes() -> &'static [u8] {
    static JWKS: OnceLock<Vec<u8>> = OnceLock::new();
    JWKS.get_or_init(|| issuer().jwks().to_string().into_bytes())
}

/// A key holder loaded with [`issuer`]'s keys, fetched "now" (wall clock).
pub fn loaded_keys() -> Arc<IssuerKeys> {
    let keys = Arc::new(IssuerKeys::default());
    let set = KeySet::from_jwks(jwks_bytes(), SystemTime::now())
        .unwrap_or_else(|e| panic!("the dev issuer's JWKS must parse: {e}"));
    keys.store(set);
    keys
}

fn trusted(
    audiences: &[&str],
    algorithms: &[Algorithm],
    allow_missing_kid: bool,
    token_types: &[&str],
) -> TrustedIssuer {
    TrustedIssuer {
        name: Arc::from("acme"),
        issuer: ISSUER.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        algorithms: algorithms.to_vec(),
        clock_skew_seconds: 30,
        allow_missing_kid,
        token_types: token_types.iter().map(|t| (*t).to_owned()).collect(),
        // Keys are stored with the wall clock; token targets validate at NOW,
        // which may be before or after: keep the age check out of the way.
        max_key_age_seconds: i64::MAX,
        unknown_kid_wait: Duration::ZERO,
        keys: loaded_keys(),
    }
}

/// A strict validator (as [`validators`]' first) over its own key holder
/// `keys`, with the verified-token cache on (`max_entries` entries).
pub fn cached_strict_validator(keys: Arc<IssuerKeys>, max_entries: usize) -> Validator {
    let mut issuer = trusted(&[AUDIENCE], &[Algorithm::RS256], false, &["Bearer"]);
    issuer.keys = keys;
    let limits = CacheLimits {
        max_entries,
        max_bytes: 1 << 20,
    };
    Validator::with_cache(vec![issuer], 16 * 1024, limits, Arc::default())
}

/// The JWKS of another issuer with the same `iss` (as after a key rotation
/// that dropped the old key).
pub fn stranger_jwks() -> &'static [u8] {
    static JWKS: OnceLock<Vec<u8>> = OnceLock::new();
    JWKS.get_or_init(|| {
        DevIssuer::generate(BASE_URL, REALM)
            .unwrap_or_else(|e| panic!("dev issuer: {e}"))
            .jwks()
            .to_string()
            .into_bytes()
    })
}

/// The validators token targets run: a strict one as configured by default
/// (RS256, `kid` required, audience and `typ` checked), and a lax one (several
/// algorithms, missing `kid` allowed, no audience or type check).
pub fn validators() -> &'static [Validator; 2] {
    static VALIDATORS: OnceLock<[Validator; 2]> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let strict = Validator::new(
            vec![trusted(
                &[AUDIENCE],
                &[Algorithm::RS256],
                false,
                &["Bearer"],
            )],
            16 * 1024,
        );
        let lax = Validator::new(
            vec![trusted(
                &[],
                &[
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::ES256,
                    Algorithm::EdDSA,
                ],
                true,
                &[],
            )],
            64 * 1024,
        );
        [strict, lax]
    })
}

/// Tokens minted by [`issuer`] for the built-in users, issued at `NOW`, with
/// the audience the strict validator wants.
pub fn minted_at_now() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        dev::USERS
            .iter()
            .map(|u| {
                issuer()
                    .access_token(u, &[AUDIENCE, "account"], NOW)
                    .unwrap_or_else(|e| panic!("mint: {e}"))
            })
            .collect()
    })
}

/// Audience lists of [`live_tokens`]: the right one, others, none.
pub const LIVE_AUDIENCES: &[&[&str]] = &[&[AUDIENCE, "account"], &["account"], &[], &[AUDIENCE]];

/// Tokens minted by [`issuer`] at start-up, valid for a day of wall-clock time
/// (for the CheckRequest targets, which decide at the real "now"): per built-in
/// user (`dev::USERS` order), per audience list of [`LIVE_AUDIENCES`].
pub fn live_tokens() -> &'static Vec<Vec<String>> {
    static TOKENS: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let now = portcullis::server::unix_now();
        dev::USERS
            .iter()
            .map(|u| {
                LIVE_AUDIENCES
                    .iter()
                    .map(|aud| {
                        let mut claims = issuer().access_claims(u, aud, now);
                        claims["exp"] = serde_json::json!(now + 86_400);
                        issuer()
                            .sign_claims(&claims)
                            .unwrap_or_else(|e| panic!("mint: {e}"))
                    })
                    .collect()
            })
            .collect()
    })
}

/// The `header.payload` part of a compact JWS (what the signature covers).
pub fn signing_input(token: &str) -> Option<&str> {
    let last_dot = token.rfind('.')?;
    Some(&token[..last_dot])
}

// === the CheckRequest fixture ===

/// The configuration the CheckRequest targets decide with: every kind of
/// match and requirement, two issuers (only `acme` has keys), no fetches;
/// metadata on every answer, since the invariants read route and issuer there.
pub const CHECK_CONFIG: &str = r#"
realm: fuzz
metadata: { allowed: true, denied: true }
issuers:
  - name: acme
    issuer: https://sso.example.test/realms/acme
    jwks_url: https://sso.example.test/realms/acme/protocol/openid-connect/certs
    audiences: [orders-api]
    unknown_kid_wait_milliseconds: 0
  - name: other
    issuer: https://other.example.test/realms/x
    jwks_url: https://other.example.test/realms/x/protocol/openid-connect/certs
    required: false
    unknown_kid_wait_milliseconds: 0
upstream:
  claims:
    - { claim: email, header: x-portcullis-email }
    - { claim: resource_access.orders-api.roles, header: x-portcullis-orders-roles, format: json }
  payload_header: x-portcullis-claims
tcp:
  allow:
    - { name: shop-to-db, namespaces: [shop] }
routes:
  - name: health
    match: { path: /healthz }
    token: public
  - name: docs
    match: { path_prefix: /docs, hosts: ["*.example.test", "api.test", "api.test:8443"] }
    token: public
  - name: maybe
    match: { path_prefix: /maybe }
    token: optional
  - name: trial
    match: { path_prefix: /trial }
    dry_run: true
    require: { realm_roles: [admin] }
  - name: orders-read
    match: { path_prefix: /orders, methods: [GET, HEAD] }
    require:
      realm_roles: [orders-reader]
      scopes: ["orders:read"]
  - name: orders-write
    match: { path_prefix: /orders, methods: [POST, PUT, PATCH, DELETE] }
    issuers: [acme]
    require:
      client_roles: { orders-api: [orders-writer] }
    upstream:
      claims: [{ claim: azp, header: x-portcullis-client-app }]
      forward_authorization: false
    deny: { status: 403, body: "orders are read-only for you", content_type: text/plain }
  - name: istio
    match: { paths: ["/api/*", "*/status", "/v1/{*}/items/{**}"] }
    require:
      any:
        - { realm_roles: [admin] }
        - { azp: [billing-batch], scopes: [profile] }
      not: { realm_roles: [suspended] }
  - name: reports
    match: { path_regex: "/reports/[0-9]+" }
    require:
      claims:
        - { claim: email_verified, equals: true }
        - { claim: preferred_username, regex: "[a-z]+" }
        - { claim: realm_access.roles, contains: default-roles-demo }
        - { claim: act, present: false }
  - name: mesh
    match:
      path_prefix: /internal
      principals: ["spiffe://cluster.local/ns/shop/sa/cart", "cluster.local/ns/billing/*"]
    token: optional
  - name: by-namespace
    match: { path_prefix: /ns, namespaces: [shop], service_accounts: [shop/cart] }
    require: { groups: [/eng] }
  - name: by-context
    match: { context_extensions: { policy: orders } }
    require: { client_roles: { orders-api: [orders-writer] } }
  - name: me
    match: { path: /me }
  - name: tenant
    match: { path_prefix: /t, hosts: ["*"] }
    require:
      claims:
        - { claim: ["https://example.test/tenant", id], equals: t-1 }
        - { claim: tier, one_of: [gold, platinum] }
"#;

/// Routes on which a request may be allowed without a verified token:
/// public and optional routes, and the dry-run route.
pub const OPEN_ROUTES: &[&str] = &["health", "docs", "maybe", "mesh", "trial"];

/// The TCP rule of [`CHECK_CONFIG`]: allows requests without HTTP attributes.
pub const TCP_RULE: &str = "shop-to-db";

/// Every header portcullis may set with [`CHECK_CONFIG`]: the identity headers
/// of the default configuration and the claim headers.
pub const OWNED_HEADERS: &[&str] = &[
    "x-portcullis-subject",
    "x-portcullis-username",
    "x-portcullis-realm-roles",
    "x-portcullis-client",
    "x-portcullis-issuer",
    "x-portcullis-email",
    "x-portcullis-orders-roles",
    "x-portcullis-claims",
    "x-portcullis-client-app",
];

/// The body of the `orders-write` route's own denials.
pub const ORDERS_WRITE_BODY: &str = "orders are read-only for you";

/// The parsed [`CHECK_CONFIG`].
pub fn check_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml(CHECK_CONFIG, "fuzz")
            .unwrap_or_else(|e| panic!("the fuzz check config must load: {e}"))
    })
}

/// The service, with `acme`'s keys loaded (`other` has none: its tokens are 503).
pub fn service() -> &'static AuthzService {
    static SERVICE: OnceLock<AuthzService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = Runtime::new(check_config());
        for i in &runtime.snapshot().issuers {
            if &*i.name == "acme" {
                let set = KeySet::from_jwks(jwks_bytes(), SystemTime::now())
                    .unwrap_or_else(|e| panic!("jwks: {e}"));
                i.keys.store(set);
            }
        }
        AuthzService::new(Arc::new(runtime))
    })
}

/// A current-thread tokio runtime with timers (the validator may wait on one).
pub fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("tokio: {e}"))
    })
}

/// Runs one CheckRequest through `AuthzService::answer`, as the gRPC service
/// does, and reads the answer back: it must be a well-formed CheckResponse.
pub fn decide(check: &CheckRequest) -> CheckResponse {
    let service = service();
    decoded(tokio().block_on(service.answer(check)))
}

/// Runs a request as the gRPC service received it (decoded or not) through
/// `AuthzService::answer_inbound`.
pub fn decide_inbound(inbound: Inbound) -> CheckResponse {
    let service = service();
    decoded(tokio().block_on(service.answer_inbound(inbound)))
}

fn decoded(wire: Vec<u8>) -> CheckResponse {
    prost::Message::decode(wire.as_slice())
        .unwrap_or_else(|e| panic!("the answer is not a CheckResponse: {e}"))
}

/// The string fields of the response's dynamic metadata.
pub fn metadata(response: &CheckResponse) -> Vec<(String, String)> {
    let Some(md) = &response.dynamic_metadata else {
        return Vec::new();
    };
    md.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

fn meta<'m>(md: &'m [(String, String)], key: &str) -> Option<&'m str> {
    md.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What a response reveals about the decision, after its invariants held.
#[derive(Debug)]
pub struct Outcome {
    /// Whether the request was allowed.
    pub allowed: bool,
    /// The issuer of a verified token, from the metadata.
    pub issuer: Option<String>,
    /// The route, from the metadata.
    pub route: Option<String>,
}

/// Checks what every CheckResponse must satisfy, whatever the request:
///
/// - a status and an HTTP response, OK exactly when it is an `OkResponse`;
/// - a denial has status 400, 401, 403 or 503, a JSON body with an `error`,
///   and header values without control characters (no header injection);
/// - an allow of an HTTP request sets or removes every header portcullis owns
///   (both spellings), sets no other header, and each value it sets is
///   non-empty, trimmed and free of control characters;
/// - an allow without a verified token is on a public, optional or dry-run
///   route (or is the TCP rule) and sets no header;
/// - `would_deny` appears only on the dry-run route.
pub fn check_response_invariants(response: &CheckResponse) -> Outcome {
    let status = response
        .status
        .as_ref()
        .expect("CheckResponse without status");
    let http = response
        .http_response
        .as_ref()
        .expect("CheckResponse without http_response");
    let md = metadata(response);
    let route = meta(&md, "route").map(str::to_owned);
    let issuer = meta(&md, "issuer").map(str::to_owned);
    match http {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(status.code, 0, "OkResponse with a non-OK status");
            assert_eq!(meta(&md, "decision"), Some("allow"));
            if route.as_deref() == Some(TCP_RULE) {
                assert!(issuer.is_none() && ok.headers.is_empty());
                return Outcome {
                    allowed: true,
                    issuer,
                    route,
                };
            }
            let set: HashSet<&str> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| {
                    assert!(
                        OWNED_HEADERS.contains(&h.key.as_str()),
                        "allow sets a header portcullis does not own: {:?}",
                        h.key
                    );
                    assert!(
                        !h.value.is_empty()
                            && h.value.trim() == h.value
                            && !h.value.chars().any(char::is_control),
                        "header {:?} set to an unsafe value {:?}",
                        h.key,
                        h.value
                    );
                    h.key.as_str()
                })
                .collect();
            for name in OWNED_HEADERS {
                assert!(
                    set.contains(name) || ok.headers_to_remove.iter().any(|r| r == name),
                    "owned header {name} neither set nor removed: a client copy would pass"
                );
                let underscored = name.replace('-', "_");
                assert!(
                    ok.headers_to_remove.contains(&underscored),
                    "{underscored} not removed"
                );
            }
            if issuer.is_none() {
                assert!(
                    set.is_empty(),
                    "identity headers set without a verified token"
                );
                let r = route.as_deref().unwrap_or("");
                assert!(
                    OPEN_ROUTES.contains(&r),
                    "allowed without a verified token on route {r:?}"
                );
            }
            if meta(&md, "would_deny").is_some() {
                assert_eq!(
                    route.as_deref(),
                    Some("trial"),
                    "would_deny off the dry-run route"
                );
            }
            Outcome {
                allowed: true,
                issuer,
                route,
            }
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(status.code, 0, "DeniedResponse with an OK status");
            assert_eq!(meta(&md, "decision"), Some("deny"));
            let code = denied.status.as_ref().map_or(0, |s| s.code);
            assert!(
                matches!(code, 400 | 401 | 403 | 503),
                "denial with HTTP status {code}"
            );
            for h in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
                assert!(
                    !h.value.chars().any(char::is_control),
                    "denial header {:?} with a control character: {:?}",
                    h.key,
                    h.value
                );
            }
            if route.as_deref() == Some("orders-write") {
                assert_eq!(denied.body, ORDERS_WRITE_BODY);
            } else {
                let body: serde_json::Value =
                    serde_json::from_str(&denied.body).expect("denial body is not JSON");
                assert!(
                    body["error"].is_string(),
                    "denial body without error: {body}"
                );
            }
            Outcome {
                allowed: false,
                issuer: None,
                route,
            }
        }
        HttpResponse::ErrorResponse(_) => panic!("portcullis never answers ErrorResponse"),
    }
}

#[cfg(test)]
mod tests {
    //! The fixtures reach what the targets mean to reach: run with
    //! `cargo test --manifest-path fuzz/Cargo.toml --lib` (stable is enough).

    use std::collections::HashMap;

    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    use super::*;

    fn request(method: &str, path: &str, authorization: Option<&str>) -> CheckRequest {
        let mut headers = HashMap::new();
        if let Some(a) = authorization {
            headers.insert("authorization".to_owned(), a.to_owned());
        }
        headers.insert("x-portcullis-subject".to_owned(), "forged".to_owned());
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: method.to_owned(),
                        host: "api.example.test".to_owned(),
                        path: path.to_owned(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn outcome(method: &str, path: &str, authorization: Option<&str>) -> (Outcome, CheckResponse) {
        let response = decide(&request(method, path, authorization));
        (check_response_invariants(&response), response)
    }

    #[test]
    fn minted_tokens_validate_at_now() {
        let [strict, lax] = validators();
        for token in minted_at_now() {
            assert!(strict.validate_now(token, NOW).is_ok());
            assert!(lax.validate_now(token, NOW).is_ok());
            assert!(strict.validate_now(token, NOW + 3600).is_err());
        }
    }

    #[test]
    fn checks_reach_every_outcome() {
        let alice = format!("Bearer {}", live_tokens()[0][0]);
        let bob = format!("Bearer {}", live_tokens()[1][0]);
        let (o, _) = outcome("GET", "/orders/1", Some(&alice));
        assert!(o.allowed && o.issuer.as_deref() == Some("acme"), "{o:?}");
        let (o, _) = outcome("GET", "/orders/1", Some(&bob));
        assert!(
            !o.allowed && o.route.as_deref() == Some("orders-read"),
            "{o:?}"
        );
        let (o, _) = outcome("GET", "/orders/1", None);
        assert!(!o.allowed, "{o:?}");
        let (o, _) = outcome("GET", "/healthz", None);
        assert!(o.allowed && o.issuer.is_none(), "{o:?}");
        let (o, _) = outcome("POST", "/orders", Some(&bob));
        assert!(
            !o.allowed && o.route.as_deref() == Some("orders-write"),
            "{o:?}"
        );
        let (o, _) = outcome("GET", "/trial/x", None);
        assert!(o.allowed && o.route.as_deref() == Some("trial"), "{o:?}");
        // One character of the signature changed (not the last: its low bits are padding).
        let original = &live_tokens()[0][0];
        let at = original.len() - 10;
        let was = &original[at..=at];
        let forged = format!(
            "{}{}{}",
            &original[..at],
            if was == "A" { "B" } else { "A" },
            &original[at + 1..]
        );
        let (o, _) = outcome("GET", "/orders/1", Some(&format!("Bearer {forged}")));
        assert!(!o.allowed, "{o:?}");
        let (o, _) = outcome("GET", "/docs/..%2Forders/1", None);
        assert!(!o.allowed, "{o:?}");
    }
}
