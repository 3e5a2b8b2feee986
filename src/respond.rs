//! The answer to Envoy: a [`Decision`] as an ext_authz v3 `CheckResponse`.
//!
//! Every answer is a gRPC OK carrying the decision; a denial is never a gRPC
//! error, since Envoy may be configured to let requests through on errors.
//! Upstream headers are set with `OVERWRITE_IF_EXISTS_OR_ADD`: Envoy versions
//! that honour `append_action` would otherwise add a second copy beside the
//! client's, and older ones ignore it and overwrite anyway.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

use crate::decision::{Allow, Challenge, Decision, Denial, Reason};

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code).
mod code {
    pub(super) const OK: i32 = 0;
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// Builds the CheckResponse for a decision. `realm` goes into challenges.
pub fn check_response(decision: &Decision, realm: &str) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => allowed(allow),
        Decision::Deny(denial) => denied(denial, realm),
    }
}

fn allowed(allow: &Allow) -> CheckResponse {
    let headers = allow
        .set_headers
        .iter()
        .map(|(name, value)| overwrite(name, value))
        .collect();
    let mut metadata = vec![("decision", "allow"), ("route", &*allow.route)];
    metadata.extend(allow.issuer.as_deref().map(|i| ("issuer", i)));
    metadata.extend(allow.subject.as_deref().map(|s| ("sub", s)));
    metadata.extend(
        allow
            .would_deny
            .as_ref()
            .map(|r| ("would_deny", r.answer().code)),
    );
    CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: allow.remove_headers.clone(),
            ..Default::default()
        })),
        dynamic_metadata: Some(strings_struct(&metadata)),
    }
}

fn denied(denial: &Denial, realm: &str) -> CheckResponse {
    let answer = denial.reason.answer();
    let description = denial.reason.description();
    let scope = match &denial.reason {
        Reason::Insufficient(unmet) => unmet.scope.as_deref(),
        _ => None,
    };
    let overrides = denial.overrides.as_deref();
    let (content_type, body) = match overrides.and_then(|o| o.body.as_ref()) {
        Some(body) => {
            let content_type = overrides.and_then(|o| o.content_type.as_deref());
            (
                content_type.unwrap_or("text/plain; charset=utf-8"),
                body.clone(),
            )
        }
        None => (
            "application/json",
            json_body(denial, answer.code, &description),
        ),
    };
    let mut headers = vec![overwrite("content-type", content_type)];
    if let Some(challenge) = challenge(answer.challenge, realm, &description, scope) {
        headers.push(overwrite("www-authenticate", &challenge));
    }
    let status = overrides.and_then(|o| o.status).unwrap_or(answer.status);
    let grpc_code = match answer.status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        503 => code::UNAVAILABLE,
        _ => code::PERMISSION_DENIED,
    };
    let mut metadata = vec![("decision", "deny"), ("reason", answer.code)];
    metadata.extend(denial.route.as_deref().map(|r| ("route", r)));
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code,
            message: answer.code.to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body,
        })),
        dynamic_metadata: Some(strings_struct(&metadata)),
    }
}

/// The default denial body: the reason code, a description, the route and the request id.
fn json_body(denial: &Denial, code: &str, description: &str) -> String {
    serde_json::json!({
        "error": code,
        "message": description,
        "route": denial.route.as_deref(),
        "request_id": denial.request_id.as_deref(),
    })
    .to_string()
}

/// `Bearer realm="…"` (RFC 6750 §3), with `error`, `error_description`, and
/// `scope` when a missing scope is the reason.
fn challenge(
    challenge: Challenge,
    realm: &str,
    description: &str,
    scope: Option<&str>,
) -> Option<String> {
    match challenge {
        Challenge::None => None,
        Challenge::Plain => Some(format!("Bearer realm=\"{realm}\"")),
        Challenge::Error(error) => {
            let mut value = format!(
                "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{}\"",
                quotable(description)
            );
            if let Some(scope) = scope {
                value.push_str(&format!(", scope=\"{}\"", quotable(scope)));
            }
            Some(value)
        }
    }
}

/// RFC 6750 §3: `error_description` holds printable ASCII without `"` and `\`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn strings_struct(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                let value = Value {
                    kind: Some(Kind::StringValue((*v).to_owned())),
                };
                ((*k).to_owned(), value)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
