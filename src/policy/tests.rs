use super::*;
use crate::config::Config;
use crate::token::Roles;

fn policy(yaml: &str) -> Policy {
    let config = Config::from_yaml(yaml, "test").unwrap();
    Policy::compile(config.routes.iter().map(|r| &r.value))
}

fn names<'p>(p: &'p Policy, cases: &[(&str, &str, &str)]) -> Vec<Option<&'p str>> {
    cases
        .iter()
        .map(|(m, h, path)| p.route_for(m, h, path).map(|r| &*r.name))
        .collect()
}

const ROUTES: &str = r#"
routes:
  - name: health
    match: { path: /healthz, methods: [GET] }
    public: true
  - name: admin
    match: { hosts: [api.example.test], path_prefix: /admin }
    public: true
  - name: pinned-port
    match: { hosts: ["api.example.test:8443"], path_prefix: /pinned }
    public: true
  - name: root
    match: { path_prefix: / , methods: [GET, HEAD] }
    public: true
"#;

#[test]
fn a_prefix_matches_on_segment_boundaries_only() {
    let p = policy(ROUTES);
    let host = "api.example.test";
    let got = names(
        &p,
        &[
            ("POST", host, "/admin"),
            ("POST", host, "/admin/"),
            ("POST", host, "/admin/users"),
            ("POST", host, "/administrator"),
            ("POST", host, "/admin-x"),
        ],
    );
    assert_eq!(
        got,
        [Some("admin"), Some("admin"), Some("admin"), None, None]
    );
}

#[test]
fn an_exact_path_matches_only_itself() {
    let p = policy(ROUTES);
    let got = names(
        &p,
        &[
            ("GET", "x", "/healthz"),
            ("POST", "x", "/healthz"),
            ("POST", "x", "/healthz/"),
            ("POST", "x", "/healthz/x"),
        ],
    );
    assert_eq!(got, [Some("health"), None, None, None]);
}

#[test]
fn hosts_match_with_or_without_port() {
    let p = policy(ROUTES);
    let got = names(
        &p,
        &[
            ("POST", "api.example.test", "/admin"),
            ("POST", "api.example.test:8080", "/admin"),
            ("POST", "other.test", "/admin"),
            ("POST", "api.example.test:8443", "/pinned"),
            ("POST", "api.example.test", "/pinned"),
            ("POST", "api.example.test:9443", "/pinned"),
        ],
    );
    assert_eq!(
        got,
        [
            Some("admin"),
            Some("admin"),
            None,
            Some("pinned-port"),
            None,
            None
        ]
    );
}

#[test]
fn configured_hosts_are_case_insensitive() {
    let p = policy(
        "routes:\n  - name: r\n    match: { hosts: [API.Example.Test], path_prefix: / }\n    public: true\n",
    );
    assert!(p.route_for("GET", "api.example.test", "/").is_some());
}

#[test]
fn methods_must_match_and_the_first_route_wins() {
    let p = policy(ROUTES);
    assert_eq!(
        names(
            &p,
            &[
                ("GET", "x", "/healthz"),
                ("DELETE", "x", "/x"),
                ("GET", "x", "/x")
            ]
        ),
        [Some("health"), None, Some("root")]
    );
}

fn requirements(yaml: &str) -> Requirements {
    let p = policy(&format!(
        "issuers:\n  - {{ name: a, issuer: 'https://i', jwks_url: 'https://i/k' }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    require: {yaml}\n"
    ));
    match p.routes.into_iter().next().unwrap().access {
        Access::Token(r) => r,
        Access::Public => panic!("route is public"),
    }
}

fn claims(realm: &[&str], client: &[(&str, &[&str])], scope: Option<&str>) -> Claims {
    let roles = |r: &[&str]| Roles {
        roles: r.iter().map(|s| (*s).to_owned()).collect(),
    };
    Claims {
        realm_access: Some(roles(realm)),
        resource_access: client
            .iter()
            .map(|(c, r)| ((*c).to_owned(), roles(r)))
            .collect(),
        scope: scope.map(str::to_owned),
        ..Default::default()
    }
}

#[test]
fn realm_roles_are_all_required() {
    let r = requirements("{ realm_roles: [a, b] }");
    assert_eq!(r.evaluate(&claims(&["a", "b", "c"], &[], None)), Ok(()));
    assert_eq!(
        r.evaluate(&claims(&["a"], &[], None)),
        Err(Unmet::RealmRole("b".into()))
    );
    assert_eq!(
        r.evaluate(&Claims::default()),
        Err(Unmet::RealmRole("a".into()))
    );
}

#[test]
fn client_roles_are_read_from_the_named_client_only() {
    let r = requirements("{ client_roles: { orders-api: [writer] } }");
    assert_eq!(
        r.evaluate(&claims(&[], &[("orders-api", &["writer"])], None)),
        Ok(())
    );
    let elsewhere = claims(&["writer"], &[("account", &["writer"])], None);
    assert_eq!(
        r.evaluate(&elsewhere),
        Err(Unmet::ClientRole {
            client: "orders-api".into(),
            role: "writer".into()
        })
    );
}

#[test]
fn scopes_are_whole_words_of_the_scope_claim() {
    let r = requirements("{ scopes: [\"orders:read\"] }");
    assert_eq!(
        r.evaluate(&claims(&[], &[], Some("openid orders:read email"))),
        Ok(())
    );
    for scope in [
        None,
        Some(""),
        Some("orders:readonly"),
        Some("openid orders:read:x"),
    ] {
        assert_eq!(
            r.evaluate(&claims(&[], &[], scope)),
            Err(Unmet::Scope("orders:read".into())),
            "{scope:?}"
        );
    }
}

#[test]
fn no_requirements_accept_any_valid_token() {
    let p = policy(
        "issuers:\n  - { name: a, issuer: 'https://i', jwks_url: 'https://i/k' }\nroutes:\n  - name: r\n    match: { path_prefix: / }\n",
    );
    let Access::Token(r) = &p.routes[0].access else {
        panic!("route is public")
    };
    assert_eq!(r.evaluate(&Claims::default()), Ok(()));
}
