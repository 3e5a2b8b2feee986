//! The project's own view of a request to authorize, read from an Envoy `CheckRequest`.
//!
//! Envoy sends request headers in one of two shapes: the `headers` map (values
//! UTF-8 sanitized, repeated headers joined with `,`), or, with
//! `encode_raw_headers: true` (Envoy 1.30+), the ordered `header_map` with raw
//! byte values. [`Headers`] reads both without copying them.
//!
//! The path is matched in one normalized form ([`normalize_path`]); the path
//! that Envoy forwards upstream is never changed.

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

/// A request to authorize, borrowed from the `CheckRequest` it came in.
#[derive(Debug)]
pub struct Request<'a> {
    /// The HTTP method, upper-cased: HTTP/2 lets clients send `delete`, and
    /// some upstreams treat it as `DELETE`.
    pub method: Cow<'a, str>,
    /// The host, lower-cased, without a trailing dot, port kept.
    pub host: String,
    /// The path in normalized form (or forms), or why it could not be normalized.
    pub path: Result<PathReadings, PathError>,
    /// The path with its query, as Envoy sent it (for token query parameters).
    pub raw_path: &'a str,
    /// Envoy's per-route context extensions (standalone Envoy only).
    pub context_extensions: &'a HashMap<String, String>,
    /// The request headers.
    pub headers: Headers<'a>,
    /// The caller's mTLS identity (`source.principal`), empty without mTLS.
    pub peer_principal: &'a str,
}

/// Request headers in either of Envoy's shapes. Names are lower-case.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    /// `request.http.headers`: repeated headers already joined with `,`.
    Map(&'a HashMap<String, String>),
    /// `request.http.header_map`: one entry per header line, raw bytes.
    Raw(&'a [HeaderValue]),
}

/// Why a CheckRequest cannot be read as an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// There is no `request.http`: a TCP check from the network filter.
    #[error("the check has no HTTP request (a TCP connection check)")]
    NotHttp,
}

/// Why a path cannot be matched safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (absolute-form, `*`, or empty).
    #[error("the path is not origin-form")]
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-encoding")]
    BadEscape,
    /// An encoded `/` or `\`, a literal `\`, or an encoded dot segment: servers
    /// disagree on what these mean, so no match on them can be trusted.
    #[error("the path is ambiguous (encoded slash, backslash or dot segment)")]
    Ambiguous,
    /// A control character, raw or encoded.
    #[error("the path has a control character")]
    Control,
}

// === impl Request ===

impl<'a> Request<'a> {
    /// Reads the HTTP part of a CheckRequest.
    pub fn from_check(check: &'a CheckRequest) -> Result<Self, RequestError> {
        let attributes = check.attributes.as_ref().ok_or(RequestError::NotHttp)?;
        let http = attributes
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or(RequestError::NotHttp)?;
        let headers = match &http.header_map {
            Some(map) if http.headers.is_empty() => Headers::Raw(&map.headers),
            _ => Headers::Map(&http.headers),
        };
        let peer_principal = attributes
            .source
            .as_ref()
            .map_or("", |s| s.principal.as_str());
        let method = if http.method.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(http.method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(http.method.as_str())
        };
        Ok(Self {
            method,
            host: normalize_host(&http.host),
            path: read_path(&http.path),
            raw_path: &http.path,
            context_extensions: &attributes.context_extensions,
            headers,
            peer_principal,
        })
    }
}

/// Lower-cases a host and drops a trailing dot (`API.example.` is `api.example`).
pub fn normalize_host(host: &str) -> String {
    let mut host = host.to_ascii_lowercase();
    let (name, port) = split_port(&host);
    if name.len() > 1 && name.ends_with('.') {
        let port = port.map(str::to_owned);
        host.truncate(name.len() - 1);
        if let Some(port) = port {
            host.push(':');
            host.push_str(&port);
        }
    }
    host
}

/// Splits `name:port`, keeping IPv6 literals (`[::1]:80`) whole.
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    let bracket_end = host.rfind(']').unwrap_or(0);
    match host[bracket_end..].rfind(':') {
        Some(i) => {
            let i = bracket_end + i;
            (&host[..i], Some(&host[i + 1..]))
        }
        None => (host, None),
    }
}

// === impl Headers ===

impl<'a> Headers<'a> {
    /// The values sent under `name` (lower-case), one per header line.
    ///
    /// In the map shape, Envoy has already joined repeated lines with `,`, so a
    /// value that contains a comma may stand for several lines.
    pub fn get_all(self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (map, raw) = match self {
            Headers::Map(m) => (m.get(name).map(|v| v.as_bytes()), None),
            Headers::Raw(r) => (None, Some(r)),
        };
        let raw_values = raw
            .into_iter()
            .flatten()
            .filter(move |h| h.key.eq_ignore_ascii_case(name))
            .map(raw_value);
        map.into_iter().chain(raw_values)
    }
}

fn raw_value(header: &HeaderValue) -> &[u8] {
    if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value
    }
}

// === path normalization ===

/// The readings of a path that servers may disagree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathReadings {
    /// Every server reads it the same way.
    One(String),
    /// An encoded slash or backslash, or a dot segment written encoded or with
    /// `;` parameters: one server keeps them as data, another decodes them.
    Ambiguous {
        /// Escapes kept as data (`%2F` stays inside its segment).
        literal: String,
        /// Escapes decoded (`%2F` splits the segment, `%2E%2E` climbs).
        decoded: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Strict,
    Literal,
    Decoded,
}

/// Normalizes a request path for matching.
///
/// The query and fragment are dropped; unreserved characters (RFC 3986 §2.3) are
/// percent-decoded and other escapes upper-cased; `;` parameters are cut from
/// each segment; empty segments (repeated slashes) are merged; `.` and `..`
/// segments are resolved (RFC 3986 §5.2.4), never above the root. A trailing
/// slash is kept. Encoded slashes, backslashes, dot segments written encoded or
/// with `;` parameters (`..;`), and control characters are refused rather than
/// guessed at.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    normalize(raw, Reading::Strict)
}

/// Reads a path once, or twice when servers may read it in two ways.
pub fn read_path(raw: &str) -> Result<PathReadings, PathError> {
    match normalize(raw, Reading::Strict) {
        Ok(path) => Ok(PathReadings::One(path)),
        Err(PathError::Ambiguous) => Ok(PathReadings::Ambiguous {
            literal: normalize(raw, Reading::Literal)?,
            decoded: normalize(raw, Reading::Decoded)?,
        }),
        Err(e) => Err(e),
    }
}

fn normalize(raw: &str, reading: Reading) -> Result<String, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let decoded_slashes;
    let path = if reading == Reading::Decoded {
        decoded_slashes = decode_slashes(path);
        decoded_slashes.as_str()
    } else {
        path
    };
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in path[1..].split('/') {
        let (name, params) = match raw_segment.split_once(';') {
            Some((name, _)) => (name, true),
            None => (raw_segment, false),
        };
        let (segment, had_escape) = decode_segment(name, reading)?;
        trailing_slash = segment.is_empty();
        let dots = segment == "." || segment == "..";
        match (segment.as_str(), reading) {
            ("", _) => {}
            (_, Reading::Strict) if dots && (had_escape || params) => {
                return Err(PathError::Ambiguous);
            }
            (_, Reading::Literal) if dots && (had_escape || params) => {
                segments.push(segment.replace('.', "%2E"));
            }
            (".", _) => trailing_slash = true,
            ("..", _) => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Turns `\\`, `%2F` and `%5C` (any case) into `/`.
fn decode_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find(['%', '\\']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let escape = tail.get(..3).map(str::to_ascii_uppercase);
        if let Some(after) = tail.strip_prefix('\\') {
            out.push('/');
            rest = after;
        } else if matches!(escape.as_deref(), Some("%2F" | "%5C")) {
            out.push('/');
            rest = &tail[3..];
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Decodes escapes of unreserved characters in one segment; reports whether it had any.
fn decode_segment(segment: &str, reading: Reading) -> Result<(String, bool), PathError> {
    let mut out = String::with_capacity(segment.len());
    let mut had_escape = false;
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let value =
                    decode_hex_pair(chars.next(), chars.next()).ok_or(PathError::BadEscape)?;
                had_escape = true;
                push_escaped(&mut out, value, reading)?;
            }
            '\\' if reading == Reading::Literal => out.push_str("%5C"),
            '\\' => return Err(PathError::Ambiguous),
            c if c.is_control() => return Err(PathError::Control),
            c => out.push(c),
        }
    }
    Ok((out, had_escape))
}

fn push_escaped(out: &mut String, value: u8, reading: Reading) -> Result<(), PathError> {
    match value {
        b'/' | b'\\' if reading == Reading::Strict => Err(PathError::Ambiguous),
        v if v.is_ascii_control() => Err(PathError::Control),
        v if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
            out.push(char::from(v));
            Ok(())
        }
        v => {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
            Ok(())
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn decode_hex_pair(hi: Option<char>, lo: Option<char>) -> Option<u8> {
    let hi = hi?.to_digit(16)?;
    let lo = lo?.to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

#[cfg(test)]
mod tests;
