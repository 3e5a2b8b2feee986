use super::*;

const ISSUER: &str = "issuers:\n  - { name: acme, issuer: 'https://sso.example.test/realms/acme', jwks_url: 'https://sso.example.test/k' }\n";

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, "test.yaml")
}

fn invalid(yaml: &str) -> String {
    match load(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn with_route(route: &str) -> String {
    format!("{ISSUER}routes:\n  - name: r\n{route}")
}

#[test]
fn the_shipped_example_configurations_are_valid() {
    for (name, text) in [
        (
            "config/portcullis.yaml",
            include_str!("../../config/portcullis.yaml"),
        ),
        ("config/demo.yaml", include_str!("../../config/demo.yaml")),
    ] {
        let config = Config::from_yaml(text, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.routes.is_empty());
        assert!(
            warnings(&config).is_empty(),
            "{name}: {:?}",
            warnings(&config)
        );
    }
}

#[test]
fn defaults_are_applied() {
    let config = load(&with_route("    match: { path_prefix: / }\n")).unwrap();
    assert_eq!(config.listen.grpc.to_string(), "0.0.0.0:9191");
    assert_eq!(config.realm, "portcullis");
    assert_eq!(config.max_token_bytes, 16384);
    assert_eq!(config.identity_headers.subject, "x-portcullis-subject");
    let issuer = &config.issuers[0].value;
    assert_eq!(issuer.algorithms, ["RS256"]);
    assert_eq!(
        (issuer.clock_skew_seconds, issuer.refresh_interval_seconds),
        (30, 300)
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let e = invalid(&with_route(
        "    match: { path_prefix: / }\n    requires: { realm_roles: [x] }\n",
    ));
    assert!(
        e.contains("line 6") && e.contains("unknown field `requires`"),
        "{e}"
    );
    let e = invalid(&format!(
        "{ISSUER}routes: []\nlisten: {{ grcp: '0.0.0.0:1' }}\n"
    ));
    assert!(e.contains("unknown field `grcp`"), "{e}");
}

#[test]
fn malformed_yaml_is_refused_with_its_line() {
    let e = invalid("routes: [\n");
    assert!(e.contains("test.yaml") && e.contains("line 1"), "{e}");
    let e = invalid("routes:\n  - name: r\n    match: { path_prefix: / }\n    public: maybe\n");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn route_errors_name_the_route_and_field() {
    let cases = [
        (
            "    match: { path_prefix: admin }\n",
            "match.path_prefix",
            "must start with '/'",
        ),
        ("    match: { path: /a/../b }\n", "match.path", "normalized"),
        ("    match: { path: '/a%2fb' }\n", "match.path", "ambiguous"),
        (
            "    match: { path: /a, path_prefix: /b }\n",
            "match.path",
            "exactly one",
        ),
        (
            "    match: { methods: [GET] }\n",
            "match.path",
            "exactly one",
        ),
        (
            "    match: { path: /a, methods: [get] }\n",
            "match.methods[0]",
            "unknown method",
        ),
        (
            "    match: { path: /a, hosts: ['a b'] }\n",
            "match.hosts[0]",
            "host",
        ),
        (
            "    match: { path: /a }\n    token: public\n    require: {}\n",
            "require",
            "only a route whose token is required",
        ),
        (
            "    match: { path: /a }\n    require: { scopes: ['a b'] }\n",
            "require.scopes",
            "space",
        ),
        (
            "    match: { path: /a }\n    require: { realm_roles: [''] }\n",
            "require.realm_roles",
            "empty",
        ),
        (
            "    match: { path: /a }\n    require: { client_roles: { api: [] } }\n",
            "require.client_roles.api",
            "at least one",
        ),
        (
            "    match: { path_regex: '/a(' }\n",
            "match.path_regex",
            "invalid regular expression",
        ),
        (
            "    match: { paths: ['/a/*/b'] }\n",
            "match.paths[0]",
            "`*` may stand only",
        ),
        (
            "    match: { path: /a }\n    require: { claims: [{ claim: email, regex: '[' }] }\n",
            "require.claims[0]",
            "invalid regular expression",
        ),
        (
            "    match: { path: /a }\n    require: { claims: [{ claim: email, equals: a, present: true }] }\n",
            "require.claims[0]",
            "exactly one",
        ),
        (
            "    match: { path: /a }\n    require: { any: [{ realm_roles: [a] }] }\n",
            "require.any",
            "one entry",
        ),
        (
            "    match: { path: /a }\n    require: { any: [{ realm_roles: [a] }, {}] }\n",
            "require.any[1]",
            "always met",
        ),
        (
            "    match: { path: /a }\n    require: { not: {} }\n",
            "require.not",
            "never be met",
        ),
        (
            "    match: { path: /a }\n    token: optional\n    require: { realm_roles: [a] }\n",
            "require",
            "only a route whose token is required",
        ),
        (
            "    match: { path: /a }\n    issuers: [nobody]\n",
            "issuers[0]",
            "no issuer has this name",
        ),
        (
            "    match: { path: /a, service_accounts: [cart] }\n",
            "match.service_accounts[0]",
            "<namespace>/<service account>",
        ),
        (
            "    match: { path: /a, principals: ['a*b'] }\n",
            "match.principals[0]",
            "`*` only at its start or end",
        ),
        (
            "    match: { path: /a }\n    require: { groups: [eng] }\n",
            "require.groups",
            "full paths",
        ),
    ];
    for (route, field, message) in cases {
        let e = invalid(&with_route(route));
        assert!(
            e.contains(&format!("routes[0] \"r\" (line 4): {field}")),
            "{e}"
        );
        assert!(e.contains(message), "{e}");
    }
}

#[test]
fn issuer_errors_name_the_issuer_and_field() {
    let route = "routes:\n  - { name: r, match: { path_prefix: / } }\n";
    let cases = [
        (
            "{ name: a, issuer: 'https://i' }",
            "discovery_url, jwks_url",
            "exactly one",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', discovery_url: 'https://d' }",
            "discovery_url, jwks_url",
            "exactly one",
        ),
        (
            "{ name: a, issuer: 'sso.example.test/realms/a', jwks_url: 'https://k' }",
            "issuer",
            "URL",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', max_key_age_seconds: 60 }",
            "max_key_age_seconds",
            "refresh_interval",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', ca_file: /nonexistent.pem }",
            "ca_file",
            "cannot read",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', fetch_timeout_seconds: 0 }",
            "fetch_timeout_seconds",
            "between",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'ftp://k' }",
            "jwks_url",
            "scheme",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'not a url' }",
            "jwks_url",
            "not a URL",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'http://keycloak:8080/k' }",
            "jwks_url",
            "loopback",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', algorithms: [HS256] }",
            "algorithms[0]",
            "unsupported",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', algorithms: [none] }",
            "algorithms[0]",
            "unsupported",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', algorithms: [] }",
            "algorithms",
            "at least one",
        ),
        (
            "{ name: a, issuer: '', jwks_url: 'https://k' }",
            "issuer",
            "exact",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', clock_skew_seconds: 3600 }",
            "clock_skew_seconds",
            "300",
        ),
        (
            "{ name: a, issuer: 'https://i', jwks_url: 'https://k', refresh_interval_seconds: 1 }",
            "refresh_interval_seconds",
            "between",
        ),
    ];
    for (issuer, field, message) in cases {
        let e = invalid(&format!("issuers:\n  - {issuer}\n{route}"));
        assert!(e.contains(&format!("issuers[0] (line 2): {field}")), "{e}");
        assert!(e.contains(message), "{e}");
    }
}

#[test]
fn http_key_urls_are_allowed_on_loopback_or_when_opted_in() {
    let route = "routes:\n  - { name: r, match: { path_prefix: / } }\n";
    for issuer in [
        "{ name: a, issuer: 'https://i', jwks_url: 'http://127.0.0.1:8180/k' }",
        "{ name: a, issuer: 'https://i', jwks_url: 'http://localhost/k' }",
        "{ name: a, issuer: 'https://i', jwks_url: 'http://[::1]/k' }",
        "{ name: a, issuer: 'https://i', jwks_url: 'http://keycloak:8080/k', allow_insecure_http: true }",
    ] {
        load(&format!("issuers:\n  - {issuer}\n{route}")).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn duplicate_issuer_names_and_iss_are_refused() {
    let route = "routes:\n  - { name: r, match: { path_prefix: / } }\n";
    let same_name = "issuers:\n  - { name: a, issuer: 'https://i', jwks_url: 'https://k' }\n  - { name: a, issuer: 'https://j', jwks_url: 'https://k' }\n";
    assert!(invalid(&format!("{same_name}{route}")).contains("issuers[1] (line 3): name"));
    let same_iss = "issuers:\n  - { name: a, issuer: 'https://i', jwks_url: 'https://k' }\n  - { name: b, issuer: 'https://i', jwks_url: 'https://k' }\n";
    assert!(invalid(&format!("{same_iss}{route}")).contains("issuers[1] (line 3): issuer"));
}

#[test]
fn duplicate_route_names_and_identity_headers_are_refused() {
    let two = "    match: { path: /a }\n  - name: r\n    match: { path: /b }\n";
    let e = invalid(&with_route(two));
    assert!(e.contains("routes[1] \"r\" (line 6): name"), "{e}");
    let route = "routes:\n  - { name: r, match: { path_prefix: / }, token: public }\n";
    let e = invalid(&format!(
        "identity_headers: {{ subject: x-a, username: x-a }}\n{route}"
    ));
    assert!(e.contains("identity_headers.username"), "{e}");
}

#[test]
fn parse_errors_name_the_file_not_input() {
    let e = invalid("routes: [\n");
    assert!(!e.contains("<input>") && e.contains("test.yaml"), "{e}");
}

#[test]
fn a_protected_route_without_any_issuer_is_refused() {
    let e = invalid("routes:\n  - { name: r, match: { path_prefix: / } }\n");
    assert!(e.contains("no issuer"), "{e}");
}

#[test]
fn no_routes_and_bad_top_level_values_are_refused() {
    assert!(invalid(&format!("{ISSUER}routes: []\n")).contains("routes: at least one"));
    assert!(invalid("{}").contains("routes"));
    let route = "routes:\n  - { name: r, match: { path_prefix: / }, token: public }\n";
    assert!(invalid(&format!("realm: 'a\"b'\n{route}")).contains("realm"));
    assert!(invalid(&format!("max_token_bytes: 10\n{route}")).contains("max_token_bytes"));
    assert!(
        invalid(&format!(
            "identity_headers: {{ subject: 'X-User' }}\n{route}"
        ))
        .contains("identity_headers.subject")
    );
    assert!(
        invalid(&format!(
            "identity_headers: {{ username: authorization }}\n{route}"
        ))
        .contains("reserved")
    );
    assert!(invalid(&format!("listen: {{ grpc: 'nowhere' }}\n{route}")).contains("line 1"));
}

#[test]
fn an_issuer_without_audiences_gets_a_warning() {
    let config = load(&with_route("    match: { path_prefix: / }\n")).unwrap();
    let w = warnings(&config);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("acme"));
    assert!(summary(&config, "x.yaml").contains("warning: issuer \"acme\" checks no audience"));
}

#[test]
fn a_missing_file_is_a_read_error() {
    let e = Config::load(Path::new("/nonexistent/portcullis.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/portcullis.yaml"));
}

#[test]
fn a_route_hidden_by_an_earlier_one_gets_a_warning() {
    let routes = "    match: { path_prefix: /api }\n  - name: admin\n    match: { path_prefix: /api/admin }\n";
    let config = load(&with_route(routes)).unwrap();
    let w = warnings(&config);
    assert!(
        w.iter()
            .any(|w| w.contains("route \"admin\" (line 6) is never reached: route \"r\" (line 4)")),
        "{w:?}"
    );
}

#[test]
fn token_sources_are_read_and_checked() {
    let route = "routes:\n  - { name: r, match: { path_prefix: / }, token: public }\n";
    let config = load(&format!(
        "token_sources: [authorization, {{ header: x-access-token }}, {{ cookie: session }}, {{ query: access_token }}]\n{route}"
    ))
    .unwrap();
    assert_eq!(config.token_sources.len(), 4);
    assert_eq!(
        load(route).unwrap().token_sources,
        [TokenSourceConfig::Authorization]
    );
    let e = invalid(&format!(
        "token_sources: [{{ header: Authorization }}]\n{route}"
    ));
    assert!(e.contains("token_sources[0]"), "{e}");
    let e = invalid(&format!(
        "token_sources: [authorization, authorization]\n{route}"
    ));
    assert!(e.contains("token_sources[1]: listed twice"), "{e}");
    let e = invalid(&format!("token_sources: []\n{route}"));
    assert!(e.contains("token_sources"), "{e}");
}
