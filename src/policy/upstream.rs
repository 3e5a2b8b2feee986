//! What a route sends to the upstream from a valid token: claims as headers,
//! the whole payload as one header, and whether `Authorization` goes on.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::{HeaderFormat, UpstreamConfig};
use crate::token::Payload;

/// Compiled upstream header rules.
#[derive(Debug, Clone)]
pub struct UpstreamRules {
    claims: Vec<ClaimHeader>,
    payload_header: Option<Arc<str>>,
    /// Whether the client's `Authorization` header goes on to the upstream.
    pub forward_authorization: bool,
}

#[derive(Debug, Clone)]
struct ClaimHeader {
    path: Vec<String>,
    header: Arc<str>,
    format: HeaderFormat,
}

/// Header values longer than this are not sent (Envoy's default limit on all
/// request headers is 60 KiB).
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

impl UpstreamRules {
    /// Compiles validated rules.
    pub fn compile(config: &UpstreamConfig) -> Self {
        Self {
            claims: config
                .claims
                .iter()
                .map(|c| ClaimHeader {
                    path: c.claim.names(),
                    header: Arc::from(c.header.as_str()),
                    format: c.format,
                })
                .collect(),
            payload_header: config.payload_header.as_deref().map(Arc::from),
            forward_authorization: config.forward_authorization,
        }
    }

    /// Every header name these rules may set.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.claims
            .iter()
            .map(|c| &*c.header)
            .chain(self.payload_header.as_deref())
    }

    /// Whether these rules set any header (and so read the payload).
    pub fn sets_headers(&self) -> bool {
        !self.claims.is_empty() || self.payload_header.is_some()
    }

    /// The headers to set for a token's payload. A claim that is absent, or
    /// whose value cannot be a header value, yields no header.
    #[cfg(test)]
    pub fn headers(&self, payload: &Payload) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        self.add_headers(payload, &mut out);
        out
    }

    /// Adds the headers to set for a token's payload to `out`. The payload is
    /// read only when a rule needs it.
    pub fn add_headers<'r>(&'r self, payload: &Payload, out: &mut Vec<(&'r str, String)>) {
        for mapping in &self.claims {
            let value =
                lookup(payload.object(), &mapping.path).and_then(|v| render(v, mapping.format));
            if let Some(value) = value.filter(|v| is_header_value(v)) {
                out.push((&mapping.header, value));
            }
        }
        if let Some(header) = &self.payload_header
            && let Ok(json) = serde_json::to_string(payload.object())
        {
            let value = URL_SAFE_NO_PAD.encode(json);
            if value.len() <= MAX_HEADER_VALUE_BYTES {
                out.push((header, value));
            }
        }
    }
}

fn lookup<'a>(payload: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(payload.get(first)?, |value, name| {
        value.as_object()?.get(name)
    })
}

/// A claim value as header text.
pub fn render(value: &Value, format: HeaderFormat) -> Option<String> {
    match (value, format) {
        (Value::Null, _) => None,
        (Value::String(s), _) => Some(s.clone()),
        (Value::Bool(_) | Value::Number(_), _) => Some(value.to_string()),
        (Value::Array(items), HeaderFormat::Csv) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Bool(_) | Value::Number(_) => Some(item.to_string()),
                    _ => None,
                })
                .filter(|s| !s.contains(','))
                .collect();
            Some(parts.join(","))
        }
        (Value::Array(_) | Value::Object(_), _) => Some(value.to_string()),
    }
}

/// A value Envoy accepts in a header: no control characters, no surrounding
/// space, not empty, not too long.
pub fn is_header_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_HEADER_VALUE_BYTES
        && value.trim() == value
        && !has_control(value)
}

/// Whether a string holds a control character; ASCII (nearly every claim)
/// is checked a byte at a time without branches.
fn has_control(value: &str) -> bool {
    if value.is_ascii() {
        value
            .bytes()
            .fold(false, |found, b| found | (b < 0x20) | (b == 0x7f))
    } else {
        value.chars().any(char::is_control)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{ClaimHeader as ClaimHeaderConfig, ClaimPath};

    #[test]
    fn control_characters_are_found_as_char_is_control_finds_them() {
        let mut samples: Vec<String> = (0..=0x2000u32)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples
            .extend(["plain", "ünïcode", "tab\there", "del\u{7f}", "c1\u{85}x"].map(String::from));
        for sample in &samples {
            assert_eq!(
                has_control(sample),
                sample.chars().any(char::is_control),
                "{sample:?}"
            );
        }
    }

    fn rules(
        mappings: &[(&str, &str, HeaderFormat)],
        payload_header: Option<&str>,
    ) -> UpstreamRules {
        UpstreamRules::compile(&UpstreamConfig {
            claims: mappings
                .iter()
                .map(|(claim, header, format)| ClaimHeaderConfig {
                    claim: ClaimPath::Dotted((*claim).to_owned()),
                    header: (*header).to_owned(),
                    format: *format,
                })
                .collect(),
            payload_header: payload_header.map(str::to_owned),
            forward_authorization: true,
        })
    }

    fn payload() -> Map<String, Value> {
        json!({
            "email": "ann@example.test",
            "tier": 3,
            "verified": true,
            "realm_access": { "roles": ["reader", "a,b", "writer", 7] },
            "address": { "country": "NL" },
            "evil": "x\r\nset-cookie: y",
            "empty": [],
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn every_mapping_kind_renders_as_documented() {
        let r = rules(
            &[
                ("email", "x-email", HeaderFormat::Csv),
                ("tier", "x-tier", HeaderFormat::Csv),
                ("verified", "x-verified", HeaderFormat::Csv),
                ("realm_access.roles", "x-roles", HeaderFormat::Csv),
                ("realm_access.roles", "x-roles-json", HeaderFormat::Json),
                ("address", "x-address", HeaderFormat::Csv),
                ("address.country", "x-country", HeaderFormat::Csv),
                ("evil", "x-evil", HeaderFormat::Csv),
                ("missing", "x-missing", HeaderFormat::Csv),
                ("empty", "x-empty", HeaderFormat::Csv),
            ],
            None,
        );
        let headers: std::collections::HashMap<_, _> =
            r.headers(&payload().into()).into_iter().collect();
        assert_eq!(headers["x-email"], "ann@example.test");
        assert_eq!(headers["x-tier"], "3");
        assert_eq!(headers["x-verified"], "true");
        assert_eq!(headers["x-roles"], "reader,writer,7");
        assert_eq!(headers["x-roles-json"], r#"["reader","a,b","writer",7]"#);
        assert_eq!(headers["x-address"], r#"{"country":"NL"}"#);
        assert_eq!(headers["x-country"], "NL");
        for absent in ["x-evil", "x-missing", "x-empty"] {
            assert!(!headers.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn the_payload_header_is_base64url_json_of_every_claim() {
        let r = rules(&[], Some("x-claims"));
        let headers = r.headers(&payload().into());
        let decoded = URL_SAFE_NO_PAD.decode(&headers[0].1).unwrap();
        let back: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(back, Value::Object(payload()));
    }
}
