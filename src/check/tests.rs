use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;

use super::*;
use crate::credential::CredentialError;
use crate::dev::issuer::{self, DevIssuer};
use crate::keys::{IssuerKeys, KeySet};
use crate::policy::require::Unmet;
use crate::request::PathError;
use crate::token::{TokenError, TrustedIssuer};

const NOW: i64 = 1_767_225_600;

fn dev() -> &'static DevIssuer {
    static ISSUER: OnceLock<DevIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| DevIssuer::generate("http://127.0.0.1:8180", "demo").unwrap())
}

fn checker() -> Checker {
    checker_with(include_str!("../../config/demo.yaml"))
}

/// A checker for a configuration whose first issuer is the dev issuer (`demo`).
fn checker_with(yaml: &str) -> Checker {
    let config = Config::from_yaml(yaml, "test").unwrap_or_else(|e| panic!("{e}"));
    let keys = Arc::new(IssuerKeys::default());
    keys.store(KeySet::from_jwks(dev().jwks().to_string().as_bytes(), SystemTime::now()).unwrap());
    let issuers = config
        .issuers
        .iter()
        .map(|i| TrustedIssuer::from_config(&i.value, keys.clone()))
        .collect();
    Checker::new(&config, Validator::new(issuers, config.max_token_bytes))
}

fn token(user: &str) -> String {
    let user = issuer::user(user).unwrap();
    dev().access_token(user, &["orders-api"], NOW).unwrap()
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    crate::dev::request::check_request(method, "api.example.test", path, headers)
}

/// The demo configuration's checker, made once: decisions borrow from it.
fn demo_checker() -> &'static Checker {
    static CHECKER: OnceLock<Checker> = OnceLock::new();
    CHECKER.get_or_init(checker)
}

async fn decide(method: &str, path: &str, headers: &[(&str, &str)]) -> Decision<'static> {
    let check = check_request(method, path, headers);
    demo_checker()
        .check(&Request::from_check(&check).unwrap(), NOW)
        .await
}

fn denied(decision: Decision<'_>) -> Reason {
    match decision {
        Decision::Deny(d) => d.reason,
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    }
}

fn allowed(decision: Decision<'_>) -> Allow<'_> {
    match decision {
        Decision::Allow(a) => a,
        Decision::Deny(d) => panic!("denied: {d:?}"),
    }
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user))
}

#[tokio::test]
async fn a_public_route_allows_without_a_token_and_strips_identity_headers() {
    let allow = allowed(decide("GET", "/docs/x", &[("x-portcullis-subject", "forged")]).await);
    assert_eq!(&**allow.route, "docs");
    assert!(allow.set_headers.is_empty());
    assert!(allow.remove_headers.contains("x-portcullis-subject"));
    assert!(allow.remove_headers.contains("x_portcullis_subject"));
    assert_eq!(
        allow.remove_headers.len(),
        14,
        "seven names (identity and claim headers), dashed and underscored"
    );
}

#[tokio::test]
async fn a_public_route_ignores_even_a_broken_token() {
    allowed(decide("GET", "/docs", &[("authorization", "Bearer garbage")]).await);
}

#[tokio::test]
async fn a_protected_route_without_a_token_is_missing_token() {
    assert_eq!(
        denied(decide("GET", "/orders", &[]).await),
        Reason::MissingToken
    );
    assert_eq!(
        denied(decide("GET", "/orders", &[("authorization", "Basic YTpi")]).await),
        Reason::MissingToken
    );
}

#[tokio::test]
async fn a_valid_token_with_the_roles_is_allowed_with_identity_headers() {
    let allow = allowed(decide("GET", "/orders/1", &[("authorization", &bearer("alice"))]).await);
    let headers: HashMap<_, _> = allow.set_headers.iter().cloned().collect();
    assert_eq!(headers["x-portcullis-username"], "alice");
    assert_eq!(
        headers["x-portcullis-subject"],
        issuer::user("alice").unwrap().sub
    );
    assert_eq!(
        headers["x-portcullis-realm-roles"],
        "default-roles-demo,offline_access,orders-reader"
    );
    assert_eq!(headers["x-portcullis-client"], "web-frontend");
    assert_eq!(headers["x-portcullis-issuer"], "demo");
    assert!(
        allow.remove_headers.iter().all(|h| h.contains('_')),
        "{:?}",
        allow.remove_headers
    );
    assert_eq!(
        allow.remove_headers.len(),
        7,
        "only the underscore spellings"
    );
}

#[tokio::test]
async fn a_valid_token_without_the_role_is_insufficient() {
    let reason = denied(decide("GET", "/orders", &[("authorization", &bearer("bob"))]).await);
    assert_eq!(
        reason,
        Reason::Insufficient(Unmet {
            code: "missing_realm_role",
            description: "missing realm role \"orders-reader\"".into(),
            scope: None,
        })
    );
}

#[tokio::test]
async fn two_tokens_are_an_invalid_request() {
    let two = format!("{},{}", bearer("alice"), bearer("alice"));
    let reason = denied(decide("GET", "/orders", &[("authorization", &two)]).await);
    assert_eq!(reason, Reason::BadCredential(CredentialError::Multiple));
}

#[tokio::test]
async fn an_invalid_token_is_denied_with_its_reason() {
    let reason = denied(decide("GET", "/me", &[("authorization", "Bearer a.b.c")]).await);
    assert!(matches!(
        reason,
        Reason::InvalidToken(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn unmatched_requests_are_denied() {
    let reason = denied(
        decide(
            "GET",
            "/administrator",
            &[("authorization", &bearer("alice"))],
        )
        .await,
    );
    assert_eq!(reason, Reason::NoRoute);
}

#[tokio::test]
async fn an_ambiguous_path_is_denied_before_matching() {
    let reason = denied(decide("GET", "/docs/..%2fadmin", &[]).await);
    assert_eq!(reason, Reason::InvalidPath(PathError::Ambiguous));
}

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_a_public_prefix() {
    let reason = denied(decide("GET", "/docs/../orders/1", &[]).await);
    assert_eq!(reason, Reason::MissingToken);
}

#[tokio::test]
async fn claims_that_cannot_be_header_values_are_removed_not_set() {
    let user = issuer::user("alice").unwrap();
    let mut claims = dev().access_claims(user, &["orders-api"], NOW);
    claims["preferred_username"] = json!("alice\r\nx-portcullis-subject: admin");
    claims["realm_access"]["roles"] = json!(["orders-reader", "a,b"]);
    claims.as_object_mut().unwrap().remove("sub");
    let auth = format!("Bearer {}", dev().sign_claims(&claims).unwrap());
    let allow = allowed(decide("GET", "/me", &[("authorization", &auth)]).await);
    let set: HashMap<_, _> = allow.set_headers.iter().cloned().collect();
    assert!(!set.contains_key("x-portcullis-username"));
    assert!(!set.contains_key("x-portcullis-subject"));
    assert_eq!(set["x-portcullis-realm-roles"], "orders-reader");
    assert!(allow.remove_headers.contains("x-portcullis-username"));
    assert!(allow.remove_headers.contains("x-portcullis-subject"));
}

const ROUTES_HEAD: &str = "issuers:\n  - { name: demo, issuer: 'http://127.0.0.1:8180/realms/demo', jwks_url: 'http://127.0.0.1:8180/k', audiences: [orders-api] }\n  - { name: other, issuer: 'https://other.test', jwks_url: 'https://other.test/k' }\nroutes:\n";

async fn decide_with(routes: &str, path: &str, headers: &[(&str, &str)]) -> Decision<'static> {
    // Leaked: the decision borrows from its checker (a few per test run).
    let checker: &'static Checker =
        Box::leak(Box::new(checker_with(&format!("{ROUTES_HEAD}{routes}"))));
    let check = check_request("GET", path, headers);
    checker
        .check(&Request::from_check(&check).unwrap(), NOW)
        .await
}

#[tokio::test]
async fn an_optional_route_allows_anonymous_but_refuses_a_bad_token() {
    let routes = "  - { name: feed, match: { path_prefix: / }, token: optional }\n";
    let anonymous = allowed(decide_with(routes, "/feed", &[]).await);
    assert!(anonymous.subject.is_none());
    let bob = bearer("bob");
    let identified = allowed(decide_with(routes, "/feed", &[("authorization", &bob)]).await);
    assert_eq!(
        identified.subject.as_deref(),
        Some(issuer::user("bob").unwrap().sub)
    );
    let bad = denied(decide_with(routes, "/feed", &[("authorization", "Bearer a.b.c")]).await);
    assert!(
        matches!(bad, Reason::InvalidToken(_)),
        "an invalid token is never anonymous"
    );
}

#[tokio::test]
async fn a_route_accepts_only_its_issuers() {
    let routes = "  - { name: partners, match: { path_prefix: / }, issuers: [other] }\n";
    let bob = bearer("bob");
    let reason = denied(decide_with(routes, "/x", &[("authorization", &bob)]).await);
    assert_eq!(reason, Reason::IssuerNotAllowed);
}

#[tokio::test]
async fn a_dry_run_route_allows_and_reports_what_it_would_deny() {
    let routes = "  - { name: trial, match: { path_prefix: / }, dry_run: true, require: { realm_roles: [admin] } }\n";
    let bob = bearer("bob");
    let allow = allowed(decide_with(routes, "/x", &[("authorization", &bob)]).await);
    assert_eq!(
        allow.would_deny.map(|r| r.answer().code),
        Some("missing_realm_role")
    );
    assert!(
        allow
            .set_headers
            .iter()
            .any(|(n, _)| &**n == "x-portcullis-subject"),
        "identity kept"
    );
    let anonymous = allowed(decide_with(routes, "/x", &[]).await);
    assert_eq!(anonymous.would_deny, Some(Reason::MissingToken));
    assert!(anonymous.set_headers.is_empty());
}

#[tokio::test]
async fn an_ambiguous_path_is_allowed_only_when_every_reading_is_public() {
    let routes = "  - { name: docs, match: { path_prefix: /docs }, token: public }\n  - { name: files, match: { path_prefix: /files }, token: public }\n  - { name: rest, match: { path_prefix: / } }\n";
    let both_public = allowed(decide_with(routes, "/docs/a%2Fb", &[]).await);
    assert_eq!(&**both_public.route, "docs");
    let escapes = denied(decide_with(routes, "/docs/..%2Fadmin", &[]).await);
    assert_eq!(escapes, Reason::InvalidPath(PathError::Ambiguous));
    let strict = format!("ambiguous_paths: reject\n{ROUTES_HEAD}{routes}");
    let checker = checker_with(&strict);
    let check = check_request("GET", "/docs/a%2Fb", &[]);
    let reason = denied(
        checker
            .check(&Request::from_check(&check).unwrap(), NOW)
            .await,
    );
    assert_eq!(reason, Reason::InvalidPath(PathError::Ambiguous));
}

#[tokio::test]
async fn tcp_checks_are_denied_unless_a_rule_allows_the_caller() {
    let none = checker_with(&format!(
        "{ROUTES_HEAD}  - {{ name: r, match: {{ path_prefix: / }} }}\n"
    ));
    assert!(matches!(
        none.check_tcp("spiffe://cluster.local/ns/shop/sa/cart"),
        Decision::Deny(_)
    ));
    let rules = format!(
        "tcp:\n  allow:\n    - {{ name: shop, namespaces: [shop] }}\n{ROUTES_HEAD}  - {{ name: r, match: {{ path_prefix: / }} }}\n"
    );
    let tcp = checker_with(&rules);
    assert!(matches!(
        tcp.check_tcp("spiffe://cluster.local/ns/shop/sa/cart"),
        Decision::Allow(_)
    ));
    assert!(matches!(
        tcp.check_tcp("spiffe://cluster.local/ns/billing/sa/x"),
        Decision::Deny(_)
    ));
    assert!(matches!(tcp.check_tcp(""), Decision::Deny(_)));
}

#[tokio::test]
async fn a_route_can_set_its_own_upstream_headers_and_strip_authorization() {
    let routes = "  - name: r\n    match: { path_prefix: / }\n    upstream: { claims: [{ claim: azp, header: x-client-app }], forward_authorization: false }\n  - { name: other, match: { path: /never }, upstream: { claims: [{ claim: sub, header: x-other }] } }\n";
    let bob = bearer("bob");
    let allow = allowed(decide_with(routes, "/x", &[("authorization", &bob)]).await);
    assert!(
        allow
            .set_headers
            .contains(&("x-client-app", "web-frontend".to_owned()))
    );
    assert!(allow.remove_headers.contains("authorization"));
    assert!(
        allow.remove_headers.contains("x-other"),
        "another route's header is owned too"
    );
    assert!(allow.remove_headers.contains("x_client_app"));
    assert!(!allow.remove_headers.contains("x-client-app"));
}

#[tokio::test]
async fn a_route_can_answer_denials_with_its_own_status_and_body() {
    use crate::respond::check_response;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let routes = "  - name: hidden\n    match: { path_prefix: / }\n    deny: { status: 404, body: not found }\n";
    let decision = decide_with(routes, "/x", &[]).await;
    let response = check_response(&decision, "demo", crate::config::MetadataConfig::default());
    let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
        panic!("not denied")
    };
    assert_eq!(denied.status.unwrap().code, 404);
    assert_eq!(denied.body, "not found");
    assert_eq!(
        response.status.unwrap().code,
        16,
        "still a 401 reason underneath"
    );
}
