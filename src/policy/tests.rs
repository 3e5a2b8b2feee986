use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::*;
use crate::config::Config;
use crate::policy::require::{TokenView, TraceLine, Unmet};
use crate::token::{Claims, Payload};

const ISSUERS: &str = "issuers:\n  - { name: a, issuer: 'https://a.test', jwks_url: 'https://a.test/k' }\n  - { name: b, issuer: 'https://b.test', jwks_url: 'https://b.test/k' }\n";

fn policy(routes: &str) -> Policy {
    let config = Config::from_yaml(&format!("{ISSUERS}routes:\n{routes}"), "test")
        .unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(config.routes.iter().map(|r| &r.value))
}

struct Req<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    principal: &'a str,
    extensions: HashMap<String, String>,
}

fn req<'a>(method: &'a str, host: &'a str, path: &'a str) -> Req<'a> {
    Req {
        method,
        host,
        path,
        principal: "",
        extensions: HashMap::new(),
    }
}

fn route<'p>(p: &'p Policy, r: &Req<'_>) -> Option<&'p str> {
    let target = Target {
        method: r.method,
        host: r.host,
        path: r.path,
        principal: r.principal,
        context_extensions: &r.extensions,
    };
    p.route_for(&target).map(|route| &*route.name)
}

#[test]
fn hosts_match_exactly_or_by_wildcard_with_or_without_port() {
    let p = policy(
        "  - { name: exact, match: { hosts: [api.example.test], path_prefix: / }, token: public }\n\
         \x20 - { name: pinned, match: { hosts: ['admin.example.test:8443'], path_prefix: / }, token: public }\n\
         \x20 - { name: wild, match: { hosts: ['*.example.test'], path_prefix: / }, token: public }\n",
    );
    let cases = [
        ("api.example.test", Some("exact")),
        ("api.example.test:8080", Some("exact")),
        ("admin.example.test:8443", Some("pinned")),
        ("admin.example.test:9443", Some("wild")),
        ("a.b.example.test", Some("wild")),
        ("example.test", None),
        ("evilexample.test", None),
        ("example.test.evil", None),
    ];
    for (host, want) in cases {
        assert_eq!(route(&p, &req("GET", host, "/")), want, "{host}");
    }
}

#[test]
fn every_path_form_matches_as_documented() {
    let p = policy(
        "  - { name: exact, match: { path: /healthz }, token: public }\n\
         \x20 - { name: prefix, match: { path_prefix: /admin }, token: public }\n\
         \x20 - { name: istio, match: { paths: ['/api/*', '*/status', '/v1/{*}/items/{**}'] }, token: public }\n\
         \x20 - { name: regex, match: { path_regex: '/reports/[0-9]+' }, token: public }\n",
    );
    let cases = [
        ("/healthz", Some("exact")),
        ("/healthz/", None),
        ("/admin", Some("prefix")),
        ("/admin/x/y", Some("prefix")),
        ("/administrator", None),
        ("/api/orders", Some("istio")),
        ("/api", None),
        ("/svc/status", Some("istio")),
        ("/v1/shop/items", Some("istio")),
        ("/v1/shop/items/9/x", Some("istio")),
        ("/v1/shop/x/items", None),
        ("/reports/42", Some("regex")),
        ("/reports/42/x", None),
        ("/reports/x", None),
    ];
    for (path, want) in cases {
        assert_eq!(route(&p, &req("GET", "h", path)), want, "{path}");
    }
}

#[test]
fn methods_must_match_and_the_first_route_wins() {
    let p = policy(
        "  - { name: read, match: { path_prefix: /, methods: [GET, HEAD] }, token: public }\n\
         \x20 - { name: rest, match: { path_prefix: / }, token: public }\n",
    );
    assert_eq!(route(&p, &req("GET", "h", "/x")), Some("read"));
    assert_eq!(route(&p, &req("DELETE", "h", "/x")), Some("rest"));
}

#[test]
fn peers_match_by_principal_namespace_or_service_account() {
    let p = policy(
        "  - { name: exact, match: { path: /e, principals: ['spiffe://cluster.local/ns/shop/sa/cart'] }, token: public }\n\
         \x20 - { name: bare, match: { path: /b, principals: ['cluster.local/ns/shop/sa/cart'] }, token: public }\n\
         \x20 - { name: wild, match: { path: /w, principals: ['cluster.local/ns/shop/*'] }, token: public }\n\
         \x20 - { name: ns, match: { path: /n, namespaces: [shop] }, token: public }\n\
         \x20 - { name: sa, match: { path: /s, service_accounts: [shop/cart] }, token: public }\n\
         \x20 - { name: anyone, match: { path: /a, principals: ['*'] }, token: public }\n",
    );
    let cart = "spiffe://cluster.local/ns/shop/sa/cart";
    let other = "spiffe://cluster.local/ns/billing/sa/cart";
    let cases = [
        ("/e", cart, Some("exact")),
        ("/e", other, None),
        ("/b", cart, Some("bare")),
        ("/w", cart, Some("wild")),
        ("/w", other, None),
        ("/n", cart, Some("ns")),
        ("/n", other, None),
        ("/s", cart, Some("sa")),
        ("/s", "spiffe://cluster.local/ns/shop/sa/carts", None),
        ("/a", other, Some("anyone")),
        ("/a", "", None),
        ("/n", "", None),
    ];
    for (path, principal, want) in cases {
        let mut r = req("GET", "h", path);
        r.principal = principal;
        assert_eq!(route(&p, &r), want, "{path} from {principal:?}");
    }
}

#[test]
fn context_extensions_pick_a_route_without_a_path() {
    let p = policy(
        "  - { name: by-name, match: { context_extensions: { policy: orders } } }\n\
         \x20 - { name: fallback, match: { path_prefix: / }, token: public }\n",
    );
    let mut r = req("GET", "h", "/anything");
    r.extensions.insert("policy".into(), "orders".into());
    assert_eq!(route(&p, &r), Some("by-name"));
    r.extensions.insert("policy".into(), "billing".into());
    assert_eq!(route(&p, &r), Some("fallback"));
}

#[test]
fn routes_hidden_by_earlier_ones_are_found() {
    let p = policy(
        "  - { name: all-api, match: { path_prefix: /api }, token: public }\n\
         \x20 - { name: api-admin, match: { path_prefix: /api/admin }, token: public }\n\
         \x20 - { name: api-exact, match: { path: /api/x, methods: [GET] }, token: public }\n\
         \x20 - { name: other, match: { path_prefix: /other, hosts: [a.test] }, token: public }\n\
         \x20 - { name: other-any-host, match: { path_prefix: /other }, token: public }\n",
    );
    let hidden: Vec<_> = p
        .shadowed()
        .iter()
        .map(|(h, by)| (&*h.name, &*by.name))
        .collect();
    assert_eq!(hidden, [("api-admin", "all-api"), ("api-exact", "all-api")]);
}

fn claims(realm: &[&str], client: &[(&str, &[&str])], scope: Option<&str>) -> Claims {
    let roles = |r: &[&str]| crate::token::Roles {
        roles: r.iter().map(|s| (*s).to_owned()).collect(),
    };
    Claims {
        realm_access: Some(roles(realm)),
        resource_access: client
            .iter()
            .map(|(c, r)| ((*c).to_owned(), roles(r)))
            .collect(),
        scope: scope.map(str::to_owned),
        azp: Some("web".into()),
        ..Default::default()
    }
}

/// Evaluates `require` (YAML) against claims and a payload.
fn eval(require: &str, claims: &Claims, payload: &Value) -> Result<(), Unmet> {
    let p = policy(&format!(
        "  - name: r\n    match: {{ path_prefix: / }}\n    require: {require}\n"
    ));
    let payload = Payload::from(payload.as_object().cloned().unwrap_or_default());
    p.routes[0].requirement.evaluate(
        TokenView {
            claims,
            payload: &payload,
        },
        None,
    )
}

fn code(result: Result<(), Unmet>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(unmet) => unmet.code,
    }
}

#[test]
fn role_scope_group_and_client_requirements() {
    let c = claims(
        &["reader"],
        &[("orders-api", &["writer"])],
        Some("openid orders:read"),
    );
    let groups = json!({ "groups": ["/eng/backend"] });
    let cases = [
        ("{ realm_roles: [reader] }", "ok"),
        ("{ realm_roles: [reader, admin] }", "missing_realm_role"),
        ("{ client_roles: { orders-api: [writer] } }", "ok"),
        (
            "{ client_roles: { account: [writer] } }",
            "missing_client_role",
        ),
        ("{ scopes: ['orders:read'] }", "ok"),
        ("{ scopes: ['orders:rea'] }", "missing_scope"),
        ("{ groups: [/eng/backend] }", "ok"),
        ("{ groups: [/eng] }", "missing_group"),
        ("{ azp: [web, cli] }", "ok"),
        ("{ azp: [cli] }", "client_not_allowed"),
    ];
    for (require, want) in cases {
        assert_eq!(code(eval(require, &c, &groups)), want, "{require}");
    }
}

#[test]
fn claim_conditions_on_dotted_and_literal_paths() {
    let payload = json!({
        "email": "ann@example.test",
        "email_verified": true,
        "tier": 3,
        "address": { "country": "NL" },
        "tags": ["beta", "staff"],
        "https://example.test/tenant": { "id": "t-1" },
        "urn:ex:level": "gold",
    });
    let c = Claims::default();
    let cases = [
        (
            "{ claims: [{ claim: email_verified, equals: true }] }",
            "ok",
        ),
        (
            "{ claims: [{ claim: email_verified, equals: 'true' }] }",
            "claim_not_met",
        ),
        ("{ claims: [{ claim: tier, one_of: [2, 3] }] }", "ok"),
        ("{ claims: [{ claim: address.country, equals: NL }] }", "ok"),
        (
            "{ claims: [{ claim: address.city, present: true }] }",
            "claim_not_met",
        ),
        (
            "{ claims: [{ claim: address.city, present: false }] }",
            "ok",
        ),
        ("{ claims: [{ claim: tags, contains: staff }] }", "ok"),
        (
            "{ claims: [{ claim: tags, contains: admin }] }",
            "claim_not_met",
        ),
        (
            "{ claims: [{ claim: email, regex: '.*@example[.]test' }] }",
            "ok",
        ),
        (
            "{ claims: [{ claim: email, regex: 'example' }] }",
            "claim_not_met",
        ),
        (
            "{ claims: [{ claim: ['https://example.test/tenant', id], equals: t-1 }] }",
            "ok",
        ),
        (
            "{ claims: [{ claim: ['urn:ex:level'], equals: gold }] }",
            "ok",
        ),
        ("{ claims: [{ claim: urn:ex:level, equals: gold }] }", "ok"),
        ("{ claims: [{ claim: tier, regex: '3' }] }", "claim_not_met"),
    ];
    for (require, want) in cases {
        assert_eq!(code(eval(require, &c, &payload)), want, "{require}");
    }
}

#[test]
fn all_any_and_not_combine() {
    let c = claims(&["reader", "auditor"], &[], Some("a"));
    let p = json!({});
    let cases = [
        (
            "{ any: [{ realm_roles: [admin] }, { realm_roles: [reader] }] }",
            "ok",
        ),
        (
            "{ any: [{ realm_roles: [admin] }, { scopes: [b] }] }",
            "no_alternative_met",
        ),
        ("{ not: { realm_roles: [suspended] } }", "ok"),
        ("{ not: { realm_roles: [auditor] } }", "excluded"),
        (
            "{ all: [{ realm_roles: [reader] }, { scopes: [a] }] }",
            "ok",
        ),
        (
            "{ realm_roles: [reader], not: { any: [{ realm_roles: [x] }, { realm_roles: [auditor] }] } }",
            "excluded",
        ),
        (
            "{ all: [{ any: [{ scopes: [z] }, { realm_roles: [auditor] }] }], realm_roles: [nope] }",
            "missing_realm_role",
        ),
    ];
    for (require, want) in cases {
        assert_eq!(code(eval(require, &c, &p)), want, "{require}");
    }
}

#[test]
fn a_trace_records_every_requirement_with_its_result() {
    let p = policy(
        "  - name: r\n    match: { path_prefix: / }\n    require: { realm_roles: [reader, admin], any: [{ scopes: [a] }, { scopes: [b] }] }\n",
    );
    let c = claims(&["reader"], &[], Some("b"));
    let mut trace = Vec::new();
    let payload = Payload::from(Map::new());
    let result = p.routes[0].requirement.evaluate(
        TokenView {
            claims: &c,
            payload: &payload,
        },
        Some(&mut trace),
    );
    assert_eq!(result.unwrap_err().code, "missing_realm_role");
    let lines: Vec<(usize, &str, bool)> = trace
        .iter()
        .map(|TraceLine { depth, what, held }| (*depth, what.as_str(), *held))
        .collect();
    assert_eq!(
        lines,
        [
            (0, "realm role \"reader\"", true),
            (0, "realm role \"admin\"", false),
            (0, "any of:", true),
            (1, "scope \"a\"", false),
            (1, "scope \"b\"", true),
        ]
    );
}

#[test]
fn no_requirements_accept_any_valid_token() {
    let p = policy("  - name: r\n    match: { path_prefix: / }\n");
    let payload = Payload::from(Map::new());
    let view = TokenView {
        claims: &Claims::default(),
        payload: &payload,
    };
    assert_eq!(p.routes[0].requirement.evaluate(view, None), Ok(()));
}
