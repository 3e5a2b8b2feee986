use std::sync::Arc;

use super::*;
use crate::config::MetadataConfig;
use crate::credential::CredentialError;
use crate::decision::{Reason, Removals};

/// Every answer with its metadata.
const ALL: MetadataConfig = MetadataConfig {
    allowed: true,
    denied: true,
};
use crate::policy::require::Unmet;
use crate::token::TokenError;

fn denial(reason: Reason) -> CheckResponse {
    let decision = Decision::deny(Some(Arc::from("orders")), reason);
    check_response(&decision, "acme", ALL)
}

fn denied_parts(response: &CheckResponse) -> (i32, i32, Vec<(String, String)>, serde_json::Value) {
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("not a denial: {response:?}");
    };
    let headers = denied
        .headers
        .iter()
        .map(|h| {
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect();
    let body = serde_json::from_str(&denied.body).unwrap();
    (
        response.status.as_ref().unwrap().code,
        denied.status.as_ref().unwrap().code,
        headers,
        body,
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn an_allow_overwrites_identity_headers_and_removes_the_rest() {
    let decision = Decision::Allow(Allow {
        route: &ORDERS,
        route_index: Some(0),
        issuer: Some("acme"),
        subject: Some("u-1".into()),
        set_headers: vec![("x-portcullis-subject", "u-1".into())],
        remove_headers: Removals::Picked(vec!["x-portcullis-username"]),
        would_deny: None,
    });
    let response = check_response(&decision, "acme", ALL);
    assert_eq!(response.status.unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("not ok")
    };
    assert_eq!(ok.headers.len(), 1);
    assert_eq!(
        ok.headers[0].append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(
        ok.headers[0].header.as_ref().unwrap().key,
        "x-portcullis-subject"
    );
    assert_eq!(ok.headers_to_remove, ["x-portcullis-username"]);
    let metadata = response.dynamic_metadata.unwrap().fields;
    assert!(matches!(&metadata["sub"].kind, Some(Kind::StringValue(s)) if s == "u-1"));
    assert!(matches!(&metadata["decision"].kind, Some(Kind::StringValue(s)) if s == "allow"));
}

#[test]
fn a_missing_token_is_a_401_with_a_plain_challenge() {
    let (grpc, http, headers, body) = denied_parts(&denial(Reason::MissingToken));
    assert_eq!((grpc, http), (16, 401));
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Bearer realm=\"acme\"")
    );
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(body["error"], "missing_token");
    assert_eq!(body["route"], "orders");
}

#[test]
fn a_bad_token_is_a_401_invalid_token() {
    let (grpc, http, headers, body) =
        denied_parts(&denial(Reason::InvalidToken(TokenError::Expired)));
    assert_eq!((grpc, http), (16, 401));
    let challenge = header(&headers, "www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"acme\", error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(body["error"], "token_expired");
}

#[test]
fn an_unmet_requirement_is_a_403_insufficient_scope() {
    let (grpc, http, headers, body) = denied_parts(&denial(Reason::Insufficient(Unmet {
        code: "missing_scope",
        description: "missing scope \"a\"".into(),
        scope: None,
    })));
    assert_eq!((grpc, http), (7, 403));
    assert!(
        header(&headers, "www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(body["error"], "missing_scope");
}

#[test]
fn an_ambiguous_credential_is_a_400_invalid_request() {
    let (grpc, http, headers, _) =
        denied_parts(&denial(Reason::BadCredential(CredentialError::Multiple)));
    assert_eq!((grpc, http), (3, 400));
    assert!(
        header(&headers, "www-authenticate")
            .unwrap()
            .contains("error=\"invalid_request\"")
    );
}

#[test]
fn no_route_is_a_403_without_challenge() {
    let (grpc, http, headers, _) = denied_parts(&check_response(
        &Decision::deny(None, Reason::NoRoute),
        "acme",
        ALL,
    ));
    assert_eq!((grpc, http), (7, 403));
    assert_eq!(header(&headers, "www-authenticate"), None);
}

#[test]
fn attacker_text_in_a_description_cannot_break_the_challenge() {
    let reason = Reason::InvalidToken(TokenError::AlgorithmNotAllowed("x\"\\\r\n".into()));
    let (_, _, headers, _) = denied_parts(&denial(reason));
    let challenge = header(&headers, "www-authenticate").unwrap();
    assert!(
        !challenge.contains('\\') && !challenge.contains('\r') && !challenge.contains('\n'),
        "{challenge}"
    );
    assert_eq!(challenge.matches('"').count(), 6, "{challenge}");
}

#[test]
fn a_missing_scope_is_named_in_the_challenge_and_the_request_id_in_the_body() {
    let mut decision = Decision::deny(
        Some(Arc::from("orders")),
        Reason::Insufficient(Unmet {
            code: "missing_scope",
            description: "missing scope \"orders:read\"".into(),
            scope: Some("orders:read".into()),
        }),
    );
    if let Decision::Deny(d) = &mut decision {
        d.request_id = Some("req-42".into());
    }
    let (_, _, headers, body) = denied_parts(&check_response(&decision, "acme", ALL));
    let challenge = header(&headers, "www-authenticate").unwrap();
    assert!(
        challenge.ends_with(", scope=\"orders:read\""),
        "{challenge}"
    );
    assert_eq!(body["request_id"], "req-42");
}

static ORDERS: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("orders"));

fn allow<'a>(
    set: &[(&'a str, &str)],
    remove: &[&'a str],
    issuer: Option<&'a str>,
    subject: Option<&str>,
    would_deny: Option<Reason>,
) -> Decision<'a> {
    Decision::Allow(Allow {
        route: &ORDERS,
        route_index: Some(0),
        issuer,
        subject: subject.map(str::to_owned),
        set_headers: set.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        remove_headers: Removals::Picked(remove.to_vec()),
        would_deny,
    })
}

fn wire_decodes_to_message(decision: &Decision<'_>) {
    for allowed in [true, false] {
        for denied in [true, false] {
            let metadata = MetadataConfig { allowed, denied };
            let bytes = encode(decision, "acme", metadata);
            let decoded = CheckResponse::decode(bytes.as_slice()).expect("the wire answer decodes");
            assert_eq!(decoded, check_response(decision, "acme", metadata));
        }
    }
}

#[test]
fn allows_carry_metadata_only_when_asked_and_dry_run_denials_as_denials() {
    let plain = allow(&[], &[], Some("acme"), Some("u-1"), None);
    let dry_run = allow(
        &[],
        &[],
        Some("acme"),
        Some("u-1"),
        Some(Reason::MissingToken),
    );
    let denial = Decision::deny(None, Reason::MissingToken);
    let has = |d: &Decision<'_>, allowed, denied| {
        check_response(d, "acme", MetadataConfig { allowed, denied })
            .dynamic_metadata
            .is_some()
    };
    assert!(!has(&plain, false, true));
    assert!(has(&plain, true, false));
    assert!(has(&dry_run, false, true));
    assert!(!has(&dry_run, true, false));
    assert!(has(&denial, false, true));
    assert!(!has(&denial, true, false));
    assert!(!MetadataConfig::default().allowed && MetadataConfig::default().denied);
}

#[test]
fn an_allow_in_wire_format_decodes_to_the_message_answer() {
    let long = "v".repeat(200);
    let longer = "w".repeat(20_000);
    let cases = [
        allow(&[], &[], None, None, None),
        allow(
            &[],
            &["x-portcullis-subject", "x_portcullis_subject"],
            None,
            None,
            None,
        ),
        allow(
            &[
                ("x-portcullis-subject", "u-1"),
                ("x-portcullis-user", "älice ☃"),
            ],
            &["x-portcullis-roles", "authorization"],
            Some("acme"),
            Some("u-1"),
            None,
        ),
        // Lengths that take two and three bytes as varints.
        allow(
            &[("x-long", &long), ("x-longer", &longer)],
            &[&long],
            Some(&long),
            Some(&longer),
            None,
        ),
        allow(
            &[("x-a", "")],
            &[""],
            Some(""),
            Some(""),
            Some(Reason::MissingToken),
        ),
    ];
    for decision in &cases {
        wire_decodes_to_message(decision);
    }
}

#[test]
fn a_denial_in_wire_format_decodes_to_the_message_answer() {
    let decision = Decision::deny(Some(Arc::from("orders")), Reason::MissingToken);
    wire_decodes_to_message(&decision);
}

proptest::proptest! {
    #[test]
    fn any_allow_in_wire_format_decodes_to_the_message_answer(
        set in proptest::collection::vec(("[a-z_-]{0,40}", "\\PC{0,300}"), 0..10),
        remove in proptest::collection::vec("[a-z_-]{0,200}", 0..20),
        issuer in proptest::option::of("\\PC{0,200}"),
        subject in proptest::option::of("\\PC{0,200}"),
        dry_run in proptest::bool::ANY,
    ) {
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        let would_deny = dry_run.then_some(Reason::NoRoute);
        wire_decodes_to_message(&allow(&set, &remove, issuer.as_deref(), subject.as_deref(), would_deny));
    }
}
