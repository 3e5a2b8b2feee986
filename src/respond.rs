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
use prost::Message;

use crate::config::MetadataConfig;
use crate::decision::{Allow, Challenge, Decision, Denial, Reason};

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code).
mod code {
    pub(super) const OK: i32 = 0;
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// Builds the CheckResponse for a decision. `realm` goes into challenges;
/// `metadata` says which answers carry dynamic metadata.
pub fn check_response(decision: &Decision, realm: &str, metadata: MetadataConfig) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => allowed(allow, metadata),
        Decision::Deny(denial) => denied(denial, realm, metadata),
    }
}

/// Whether an allow carries dynamic metadata: a dry-run denial is a denial.
fn allow_has_metadata(allow: &Allow, metadata: MetadataConfig) -> bool {
    if allow.would_deny.is_some() {
        metadata.denied
    } else {
        metadata.allowed
    }
}

fn allowed(allow: &Allow, metadata_config: MetadataConfig) -> CheckResponse {
    let headers = allow
        .set_headers
        .iter()
        .map(|(name, value)| overwrite(name, value))
        .collect();
    let metadata = allow_metadata(allow);
    CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: allow.remove_headers.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        })),
        dynamic_metadata: allow_has_metadata(allow, metadata_config)
            .then(|| strings_struct(metadata.as_slice())),
    }
}

/// The dynamic metadata of an allow: at most five string fields.
fn allow_metadata<'a>(allow: &'a Allow<'_>) -> Fields<'a> {
    let mut fields = Fields::default();
    fields.push("decision", "allow");
    fields.push("route", allow.route);
    if let Some(issuer) = allow.issuer {
        fields.push("issuer", issuer);
    }
    if let Some(subject) = allow.subject.as_deref() {
        fields.push("sub", subject);
    }
    if let Some(reason) = &allow.would_deny {
        fields.push("would_deny", reason.answer().code);
    }
    fields
}

/// A few string fields, without allocating.
#[derive(Default)]
struct Fields<'a> {
    fields: [(&'a str, &'a str); 5],
    len: usize,
}

impl<'a> Fields<'a> {
    fn push(&mut self, key: &'a str, value: &'a str) {
        if let Some(slot) = self.fields.get_mut(self.len) {
            *slot = (key, value);
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[(&'a str, &'a str)] {
        &self.fields[..self.len]
    }
}

/// The encoded `CheckResponse` of a decision, as sent on the wire.
///
/// An allow, which every request that passes gets, is written straight into
/// protobuf wire format from the decision (one buffer, no intermediate
/// message); `tests` prove that it decodes to the message [`check_response`]
/// builds. A denial is built as a message and encoded by prost.
pub fn encode(decision: &Decision, realm: &str, metadata: MetadataConfig) -> Vec<u8> {
    match decision {
        Decision::Allow(allow) => wire::allowed(allow, allow_has_metadata(allow, metadata)),
        Decision::Deny(denial) => denied(denial, realm, metadata).encode_to_vec(),
    }
}

/// Protobuf wire format of an allow (https://protobuf.dev/programming-guides/encoding/).
mod wire {
    use super::{Allow, HeaderAppendAction, allow_metadata};

    // Field numbers, from envoy.service.auth.v3, envoy.config.core.v3,
    // google.protobuf.Struct/Value and google.rpc.Status.
    const CHECK_RESPONSE_STATUS: u32 = 1;
    const CHECK_RESPONSE_OK: u32 = 3;
    const CHECK_RESPONSE_METADATA: u32 = 4;
    const OK_HEADERS: u32 = 2;
    const OK_HEADERS_TO_REMOVE: u32 = 5;
    const OPTION_HEADER: u32 = 1;
    const OPTION_APPEND_ACTION: u32 = 3;
    const HEADER_KEY: u32 = 1;
    const HEADER_VALUE: u32 = 2;
    const STRUCT_FIELDS: u32 = 1;
    const ENTRY_KEY: u32 = 1;
    const ENTRY_VALUE: u32 = 2;
    const VALUE_STRING: u32 = 3;

    const LEN: u32 = 2;
    const VARINT: u32 = 0;
    const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

    pub(super) fn allowed(allow: &Allow, with_metadata: bool) -> Vec<u8> {
        let headers: usize = allow
            .set_headers
            .iter()
            .map(|(name, value)| field_len(OK_HEADERS, option_len(name, value)))
            .sum();
        let removals: usize = allow
            .remove_headers
            .iter()
            .map(|name| field_len(OK_HEADERS_TO_REMOVE, name.len()))
            .sum();
        let ok_len = headers + removals;
        let metadata = allow_metadata(allow);
        let struct_len: usize = metadata
            .as_slice()
            .iter()
            .map(|(k, v)| field_len(STRUCT_FIELDS, entry_len(k, v)))
            .sum();
        let metadata_len = if with_metadata {
            field_len(CHECK_RESPONSE_METADATA, struct_len)
        } else {
            0
        };
        let total = field_len(CHECK_RESPONSE_STATUS, 0)
            + field_len(CHECK_RESPONSE_OK, ok_len)
            + metadata_len;

        let mut out = Vec::with_capacity(total);
        // status: google.rpc.Status with code OK, every field at its default.
        put_len_prefix(&mut out, CHECK_RESPONSE_STATUS, 0);
        put_len_prefix(&mut out, CHECK_RESPONSE_OK, ok_len);
        for (name, value) in &allow.set_headers {
            put_len_prefix(&mut out, OK_HEADERS, option_len(name, value));
            put_len_prefix(&mut out, OPTION_HEADER, header_len(name, value));
            put_bytes(&mut out, HEADER_KEY, name.as_bytes());
            put_bytes(&mut out, HEADER_VALUE, value.as_bytes());
            put_key(&mut out, OPTION_APPEND_ACTION, VARINT);
            put_varint(&mut out, OVERWRITE);
        }
        for name in allow.remove_headers.iter() {
            put_bytes(&mut out, OK_HEADERS_TO_REMOVE, name.as_bytes());
        }
        if !with_metadata {
            debug_assert_eq!(out.len(), total);
            return out;
        }
        put_len_prefix(&mut out, CHECK_RESPONSE_METADATA, struct_len);
        for (key, value) in metadata.as_slice() {
            put_len_prefix(&mut out, STRUCT_FIELDS, entry_len(key, value));
            put_bytes(&mut out, ENTRY_KEY, key.as_bytes());
            put_len_prefix(&mut out, ENTRY_VALUE, field_len(VALUE_STRING, value.len()));
            put_bytes(&mut out, VALUE_STRING, value.as_bytes());
        }
        debug_assert_eq!(out.len(), total);
        out
    }

    fn header_len(name: &str, value: &str) -> usize {
        field_len(HEADER_KEY, name.len()) + field_len(HEADER_VALUE, value.len())
    }

    fn option_len(name: &str, value: &str) -> usize {
        field_len(OPTION_HEADER, header_len(name, value))
            + varint_len(u64::from(OPTION_APPEND_ACTION << 3))
            + varint_len(OVERWRITE)
    }

    fn entry_len(key: &str, value: &str) -> usize {
        field_len(ENTRY_KEY, key.len())
            + field_len(ENTRY_VALUE, field_len(VALUE_STRING, value.len()))
    }

    /// A length-delimited field of `len` bytes, with its key and length.
    fn field_len(field: u32, len: usize) -> usize {
        varint_len(u64::from(field << 3)) + varint_len(len as u64) + len
    }

    fn varint_len(value: u64) -> usize {
        // 7 bits per byte; at least one byte.
        (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
    }

    fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
        put_varint(out, u64::from(field << 3 | wire_type));
    }

    fn put_len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
        put_key(out, field, LEN);
        put_varint(out, len as u64);
    }

    fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        put_len_prefix(out, field, bytes.len());
        out.extend_from_slice(bytes);
    }

    fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
}

fn denied(denial: &Denial, realm: &str, metadata_config: MetadataConfig) -> CheckResponse {
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
        dynamic_metadata: metadata_config.denied.then(|| strings_struct(&metadata)),
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
