//! CheckRequest handling on structured input: a method, host, path, headers,
//! `Authorization` value, peer identity and context extensions chosen by the
//! fuzzer, built into a CheckRequest in either of Envoy's header shapes
//! (`headers` map or `header_map` with raw values) and decided by
//! `AuthzService::decide` with `portcullis_fuzz::CHECK_CONFIG`.
//!
//! Tokens: none, a token the trusted issuer minted for a built-in user (valid
//! now), such a token with one byte changed, a token the trusted issuer signed
//! over claims from the input, or any text.
//!
//! Checks: everything `check_response_invariants` checks; and a token is
//! verified only if it is exactly one the trusted issuer signed in this run.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use libfuzzer_sys::fuzz_target;
use portcullis::dev::issuer::USERS;
use portcullis::server::unix_now;
use portcullis_fuzz::{AUDIENCE, check_response_invariants, decide, issuer, live_tokens};
use serde_json::json;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "Delete",
];
const HOSTS: &[&str] = &[
    "api.example.test",
    "API.Example.Test.",
    "api.test:8443",
    "api.test",
    "example.test",
    "[::1]:8080",
    "",
];
const PATHS: &[&str] = &[
    "/healthz",
    "/docs",
    "/docs/x",
    "/maybe",
    "/trial/x",
    "/orders/1",
    "/orders",
    "/api/x",
    "/a/status",
    "/v1/shop/items/1",
    "/reports/42",
    "/internal/x",
    "/ns/x",
    "/me",
    "/t/x",
    "/docs/..%2Forders/1",
    "/docs%2F..%2Fadmin",
    "/docs/..;/me",
    "/docs\\..\\me",
    "/%2e%2e/me",
    "/orders;x/1",
    "//docs//x",
    "/docs?x=../../me",
];
const PRINCIPALS: &[&str] = &[
    "spiffe://cluster.local/ns/shop/sa/cart",
    "cluster.local/ns/billing/sa/batch",
    "spiffe://cluster.local/ns/other/sa/x",
];

#[derive(Debug, Arbitrary)]
enum Pick {
    Known(u8),
    Raw(String),
}

impl Pick {
    fn get(&self, list: &[&str]) -> String {
        match self {
            Pick::Known(i) => list[usize::from(*i) % list.len()].to_owned(),
            Pick::Raw(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Token {
    None,
    Minted {
        user: u8,
        aud: u8,
    },
    Flipped {
        user: u8,
        at: u16,
        to: u8,
    },
    Signed {
        claim: String,
        value: String,
        user: u8,
    },
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Scheme {
    Bearer,
    Lower,
    Spaces,
    Basic,
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: Pick,
    host: Pick,
    path: Pick,
    path_suffix: String,
    token: Token,
    scheme: Scheme,
    authorization_twice: bool,
    raw_headers: bool,
    raw_value_bytes: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    principal: Option<Pick>,
    context: Vec<(String, String)>,
    policy_orders: bool,
}

fuzz_target!(|input: Input| {
    let live = live_tokens();
    // Tokens the trusted issuer signed for this input.
    let mut ours: Vec<String> = Vec::new();
    let token: Option<String> = match &input.token {
        Token::None => None,
        Token::Minted { user, aud } => {
            let per_user = &live[usize::from(*user) % live.len()];
            let t = per_user[usize::from(*aud) % per_user.len()].clone();
            ours.push(t.clone());
            Some(t)
        }
        Token::Flipped { user, at, to } => {
            let per_user = &live[usize::from(*user) % live.len()];
            let original = &per_user[0];
            let mut bytes = original.clone().into_bytes();
            let i = usize::from(*at) % bytes.len();
            bytes[i] = *to;
            let t = String::from_utf8_lossy(&bytes).into_owned();
            if &t == original {
                ours.push(t.clone());
            }
            Some(t)
        }
        Token::Signed { claim, value, user } => {
            let u = &USERS[usize::from(*user) % USERS.len()];
            let now = unix_now();
            let mut claims = issuer().access_claims(u, &[AUDIENCE], now);
            claims["exp"] = json!(now + 86_400);
            claims[claim.as_str()] = serde_json::from_str(value).unwrap_or(json!(value));
            let t = issuer()
                .sign_claims(&claims)
                .unwrap_or_else(|e| panic!("{e}"));
            ours.push(t.clone());
            Some(t)
        }
        Token::Raw(s) => Some(s.clone()),
    };
    let authorization = token.map(|t| match &input.scheme {
        Scheme::Bearer => format!("Bearer {t}"),
        Scheme::Lower => format!("bearer {t}"),
        Scheme::Spaces => format!(" Bearer \t {t} "),
        Scheme::Basic => format!("Basic {t}"),
        Scheme::Raw(s) => format!("{s}{t}"),
    });

    let mut lines: Vec<(String, String)> = input.headers.clone();
    if let Some(a) = &authorization {
        lines.push(("authorization".to_owned(), a.clone()));
        if input.authorization_twice {
            lines.push(("Authorization".to_owned(), a.clone()));
        }
    }
    let (headers, header_map) = if input.raw_headers {
        let mut raw: Vec<HeaderValue> = lines
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_ascii_lowercase(),
                value: String::new(),
                raw_value: v.clone().into_bytes(),
            })
            .collect();
        if let Some(bytes) = &input.raw_value_bytes {
            raw.push(HeaderValue {
                key: "authorization".to_owned(),
                value: String::new(),
                raw_value: bytes.clone(),
            });
        }
        (HashMap::new(), Some(HeaderMap { headers: raw }))
    } else {
        // Envoy's map shape: lower-case names, repeated lines joined with ','.
        let mut map: HashMap<String, String> = HashMap::new();
        for (k, v) in &lines {
            map.entry(k.to_ascii_lowercase())
                .and_modify(|old| {
                    old.push(',');
                    old.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        (map, None)
    };

    let mut context_extensions: HashMap<String, String> = input.context.iter().cloned().collect();
    if input.policy_orders {
        context_extensions.insert("policy".to_owned(), "orders".to_owned());
    }
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: input.principal.as_ref().map(|p| Peer {
                principal: p.get(PRINCIPALS),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: input.method.get(METHODS),
                    host: input.host.get(HOSTS),
                    path: format!("{}{}", input.path.get(PATHS), input.path_suffix),
                    headers,
                    header_map,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    };
    let response = decide(&check);
    let outcome = check_response_invariants(&response);
    if outcome.issuer.is_some() {
        assert!(
            !ours.is_empty(),
            "a token was verified that the trusted issuer did not sign: {input:?}"
        );
    }
});
