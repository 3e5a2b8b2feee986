use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use super::*;

#[test]
fn normalized_paths_match_the_rfc_3986_table() {
    let cases = [
        ("/", "/"),
        ("/orders", "/orders"),
        ("/orders/", "/orders/"),
        ("/orders?x=1", "/orders"),
        ("/orders#frag", "/orders"),
        ("/a//b///c", "/a/b/c"),
        ("//admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/../admin", "/admin"),
        ("/../../admin", "/admin"),
        ("/public/..//admin", "/admin"),
        ("/admin;jsessionid=1/users", "/admin/users"),
        ("/admin;x", "/admin"),
        ("/%61dmin", "/admin"),
        ("/a%7eb", "/a~b"),
        ("/a%2db", "/a-b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a/.", "/a/"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    for raw in [
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/%2e%2e/admin",
        "/a/%2E/b",
        "/.%2e/x",
    ] {
        assert_eq!(normalize_path(raw), Err(PathError::Ambiguous), "{raw}");
    }
}

#[test]
fn malformed_escapes_and_controls_are_refused() {
    assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(normalize_path("/a%4"), Err(PathError::BadEscape));
    assert_eq!(normalize_path("/a%"), Err(PathError::BadEscape));
    assert_eq!(normalize_path("/a%00b"), Err(PathError::Control));
    assert_eq!(normalize_path("/a%0ab"), Err(PathError::Control));
    assert_eq!(normalize_path("/a\u{7f}"), Err(PathError::Control));
}

#[test]
fn paths_that_are_not_origin_form_are_refused() {
    for raw in ["", "*", "admin", "http://evil/admin", "?x=/admin"] {
        assert_eq!(
            normalize_path(raw),
            Err(PathError::NotOriginForm),
            "{raw:?}"
        );
    }
}

#[test]
fn normalization_is_idempotent_on_the_table() {
    for raw in [
        "/a//b/../c/./d;p",
        "/%7Euser/x/",
        "/x/y/z/../../..",
        "/caf%c3%a9/",
    ] {
        let once = normalize_path(raw).unwrap();
        assert_eq!(normalize_path(&once).unwrap(), once, "{raw}");
    }
}

#[test]
fn hosts_are_lower_cased_without_trailing_dot() {
    assert_eq!(normalize_host("API.Example.Test"), "api.example.test");
    assert_eq!(normalize_host("api.example.test."), "api.example.test");
    assert_eq!(
        normalize_host("api.example.test.:8443"),
        "api.example.test:8443"
    );
    assert_eq!(normalize_host("[::1]:80"), "[::1]:80");
}

#[test]
fn ports_split_off_ipv6_literals_correctly() {
    assert_eq!(split_port("[::1]:80"), ("[::1]", Some("80")));
    assert_eq!(split_port("[::1]"), ("[::1]", None));
    assert_eq!(split_port("a.test:8080"), ("a.test", Some("8080")));
    assert_eq!(split_port("a.test"), ("a.test", None));
}

fn check_with(http: HttpRequest, principal: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: principal.to_owned(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn map_headers_shape_is_read() {
    let http = HttpRequest {
        method: "GET".into(),
        host: "Api.Example.Test".into(),
        path: "/orders/../admin?x".into(),
        headers: HashMap::from([("authorization".into(), "Bearer t".into())]),
        ..Default::default()
    };
    let check = check_with(http, "spiffe://cluster.local/ns/foo/sa/curl");
    let request = Request::from_check(&check).unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.host, "api.example.test");
    assert_eq!(request.path, Ok(PathReadings::One("/admin".into())));
    assert_eq!(
        request.peer_principal,
        "spiffe://cluster.local/ns/foo/sa/curl"
    );
    let auth: Vec<_> = request.headers.get_all("authorization").collect();
    assert_eq!(auth, vec![b"Bearer t".as_slice()]);
}

#[test]
fn raw_header_map_shape_is_read_with_repeated_lines_apart() {
    let line = |k: &str, v: &[u8]| HeaderValue {
        key: k.into(),
        raw_value: v.to_vec(),
        ..Default::default()
    };
    let http = HttpRequest {
        method: "POST".into(),
        host: "a.test".into(),
        path: "/x".into(),
        header_map: Some(HeaderMap {
            headers: vec![
                line(":path", b"/x"),
                line("accept", b"a"),
                line("accept", b"b"),
            ],
        }),
        ..Default::default()
    };
    let check = check_with(http, "");
    let request = Request::from_check(&check).unwrap();
    assert!(matches!(request.headers, Headers::Raw(_)));
    let accept: Vec<_> = request.headers.get_all("accept").collect();
    assert_eq!(accept, vec![b"a".as_slice(), b"b".as_slice()]);
}

#[test]
fn a_check_without_http_is_a_tcp_check() {
    let tcp = CheckRequest {
        attributes: Some(AttributeContext::default()),
    };
    assert_eq!(
        Request::from_check(&tcp).unwrap_err(),
        RequestError::NotHttp
    );
    let empty = CheckRequest::default();
    assert_eq!(
        Request::from_check(&empty).unwrap_err(),
        RequestError::NotHttp
    );
}

#[test]
fn dot_segments_with_parameters_are_ambiguous() {
    for raw in ["/admin/..;/docs", "/admin/.;x/docs", "/a/%2e%2e;/b"] {
        assert_eq!(normalize_path(raw), Err(PathError::Ambiguous), "{raw}");
    }
    assert_eq!(
        read_path("/admin/..;/docs"),
        Ok(PathReadings::Ambiguous {
            literal: "/admin/%2E%2E/docs".into(),
            decoded: "/docs".into(),
        })
    );
}

#[test]
fn ambiguous_paths_have_a_literal_and_a_decoded_reading() {
    let cases = [
        ("/docs/..%2fadmin", "/docs/..%2Fadmin", "/admin"),
        ("/a%5Cb", "/a%5Cb", "/a/b"),
        ("/a\\b", "/a%5Cb", "/a/b"),
        ("/docs/%2e%2e/admin", "/docs/%2E%2E/admin", "/admin"),
    ];
    for (raw, literal, decoded) in cases {
        let want = PathReadings::Ambiguous {
            literal: literal.into(),
            decoded: decoded.into(),
        };
        assert_eq!(read_path(raw), Ok(want), "{raw}");
    }
    assert_eq!(
        read_path("/plain/x"),
        Ok(PathReadings::One("/plain/x".into()))
    );
    assert_eq!(read_path("/a%zz"), Err(PathError::BadEscape));
}

#[test]
fn lower_case_methods_are_upper_cased_for_matching() {
    let http = HttpRequest {
        method: "delete".into(),
        host: "a.test".into(),
        path: "/x".into(),
        ..Default::default()
    };
    let check = check_with(http, "");
    assert_eq!(Request::from_check(&check).unwrap().method, "DELETE");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("admin".to_owned()),
            Just("docs".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("%2F".to_owned()),
            Just("a;b".to_owned()),
            Just("..;".to_owned()),
            Just("%61dmin".to_owned()),
            Just("x%20y".to_owned()),
            "[a-z%0-9;.~-]{0,6}",
        ];
        (proptest::collection::vec(segment, 0..8), any::<bool>()).prop_map(|(segments, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if query {
                path.push_str("?next=/admin");
            }
            path
        })
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(raw in path_strategy()) {
            if let Ok(once) = normalize_path(&raw) {
                prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn an_unambiguous_path_reads_the_same_decoded_or_literal(raw in path_strategy()) {
            // What a decoding upstream makes of a path (escaped slashes and dots
            // decoded, `;` cut) is what portcullis matched, whenever portcullis
            // found the path unambiguous. So no path that decodes into a
            // protected prefix can be matched outside it.
            if let Ok(PathReadings::One(matched)) = read_path(&raw) {
                prop_assert_eq!(normalize(&raw, Reading::Decoded), Ok(matched.clone()));
                prop_assert_eq!(normalize(&raw, Reading::Literal), Ok(matched));
            }
        }

        #[test]
        fn an_ambiguous_path_keeps_both_readings_apart(raw in path_strategy()) {
            if let Ok(PathReadings::Ambiguous { literal, decoded }) = read_path(&raw) {
                prop_assert_eq!(normalize(&raw, Reading::Decoded), Ok(decoded));
                prop_assert_eq!(normalize(&raw, Reading::Literal), Ok(literal));
            }
        }
    }
}
