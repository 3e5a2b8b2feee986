//! Finding the bearer token in a request (RFC 6750 §2).
//!
//! Where a token may be is configured (`token_sources`): the `Authorization`
//! header with the `Bearer` scheme (matched case-insensitively, RFC 6750 §2.1),
//! another header, a cookie, or a query parameter (§2.3). Anything that could
//! stand for two credentials is refused rather than resolved by picking one:
//! a token in two sources, a header sent twice (Envoy joins repeated lines with
//! `,`, and a JWT never contains one; `header_map` keeps each line apart), a
//! cookie or parameter given twice.

use std::borrow::Cow;

use crate::request::Headers;

/// What the request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No bearer token in any configured source (an `Authorization` header
    /// with another scheme is not a bearer token).
    None,
    /// A bearer token, not yet validated.
    Bearer(Cow<'a, str>),
}

/// Credentials that cannot be read as one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Two or more tokens: in two sources, or twice in one.
    #[error("more than one credential")]
    Multiple,
    /// A token that is empty or has characters no token has.
    #[error("malformed bearer credential")]
    Malformed,
}

/// Where a bearer token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// A header holding the token, with or without `Bearer `.
    Header(String),
    /// A cookie holding the token.
    Cookie(String),
    /// A query parameter holding the token.
    Query(String),
}

/// Finds the one bearer token among `sources`. `raw_path` is the request
/// path with its query, as Envoy sent it.
pub fn find<'a>(
    headers: Headers<'a>,
    raw_path: &'a str,
    sources: &'a [TokenSource],
) -> Result<Credential<'a>, CredentialError> {
    let mut found: Option<Cow<'a, str>> = None;
    for source in sources {
        let token = match source {
            TokenSource::Authorization => from_authorization(headers)?,
            TokenSource::Header(name) => from_header(headers, name)?,
            TokenSource::Cookie(name) => from_cookie(headers, name)?,
            TokenSource::Query(name) => from_query(raw_path, name)?,
        };
        if let Some(token) = token {
            if found.is_some() {
                return Err(CredentialError::Multiple);
            }
            found = Some(token);
        }
    }
    Ok(found.map_or(Credential::None, Credential::Bearer))
}

/// The one value of a header, refusing repeats (two lines). A value that
/// holds a `,` is two lines joined: callers refuse it unless it parsed as one
/// token, which holds no `,` (so the common case reads the value once).
fn single<'a>(headers: Headers<'a>, name: &'a str) -> Result<Option<&'a [u8]>, CredentialError> {
    let mut values = headers.get_all(name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Multiple);
    }
    Ok(Some(value))
}

/// What a single header value yielded, unless it holds a `,`: two values joined.
fn unless_joined<'a>(
    value: &[u8],
    parsed: Result<Option<&'a str>, CredentialError>,
) -> Result<Option<Cow<'a, str>>, CredentialError> {
    match parsed {
        Ok(Some(token)) => Ok(Some(Cow::Borrowed(token))),
        _ if value.contains(&b',') => Err(CredentialError::Multiple),
        other => other.map(|t| t.map(Cow::Borrowed)),
    }
}

fn from_authorization(headers: Headers<'_>) -> Result<Option<Cow<'_, str>>, CredentialError> {
    let Some(value) = single(headers, "authorization")? else {
        return Ok(None);
    };
    unless_joined(value, parse_authorization(value))
}

fn from_header<'a>(
    headers: Headers<'a>,
    name: &'a str,
) -> Result<Option<Cow<'a, str>>, CredentialError> {
    let Some(value) = single(headers, name)? else {
        return Ok(None);
    };
    unless_joined(value, token_in_header(value))
}

/// A header holding a token, with or without `Bearer `.
fn token_in_header(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    let value = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
    let value = value.trim_matches(is_http_space);
    let token = match value.split_once(is_http_space) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            rest.trim_start_matches(is_http_space)
        }
        _ => value,
    };
    checked(token).map(Some)
}

fn from_cookie<'a>(
    headers: Headers<'a>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, CredentialError> {
    let mut found = None;
    for header in headers.get_all("cookie") {
        let header = std::str::from_utf8(header).map_err(|_| CredentialError::Malformed)?;
        // Cookie values hold neither `;` nor `,` (RFC 6265 §4.1.1); Envoy may join lines with either.
        for pair in header.split([';', ',']) {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key == name {
                if found.is_some() {
                    return Err(CredentialError::Multiple);
                }
                found = Some(checked(value.trim_matches('"'))?);
            }
        }
    }
    Ok(found.map(Cow::Borrowed))
}

fn from_query<'a>(raw_path: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, CredentialError> {
    let Some((_, query)) = raw_path.split_once('?') else {
        return Ok(None);
    };
    let query = query.split('#').next().unwrap_or("");
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return Err(CredentialError::Multiple);
            }
            found = Some(percent_decoded(value)?);
        }
    }
    match found {
        Some(Cow::Borrowed(t)) => checked(t).map(|t| Some(Cow::Borrowed(t))),
        Some(Cow::Owned(t)) => {
            checked(&t)?;
            Ok(Some(Cow::Owned(t)))
        }
        None => Ok(None),
    }
}

fn percent_decoded(value: &str) -> Result<Cow<'_, str>, CredentialError> {
    if !value.contains('%') {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = |c: Option<u8>| c.and_then(|c| char::from(c).to_digit(16));
            let (hi, lo) = (hex(bytes.next()), hex(bytes.next()));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(CredentialError::Malformed);
            };
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| CredentialError::Malformed)?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| CredentialError::Malformed)
}

/// A token: non-empty, only `b64token` characters (RFC 6750 §2.1).
fn checked(token: &str) -> Result<&str, CredentialError> {
    if token.is_empty() || !all_token68(token.as_bytes()) {
        return Err(CredentialError::Malformed);
    }
    Ok(token)
}

/// Parses one `Authorization` value: `Bearer` SP+ token; other schemes are no bearer token.
fn parse_authorization(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    let value = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
    let value = value.trim_matches(is_http_space);
    let (scheme, rest) = value.split_once(is_http_space).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    checked(rest.trim_start_matches(is_http_space)).map(Some)
}

fn is_http_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Whether every byte is a `b64token` character (RFC 6750 §2.1).
///
/// This runs over every byte of every token, so it is written to vectorize:
/// fixed-size chunks, each folded without branches, instead of a loop that
/// stops at the first bad byte.
fn all_token68(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(32);
    let whole = chunks
        .by_ref()
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_token68_byte(b)));
    whole && chunks.remainder().iter().all(|&b| is_token68_byte(b))
}

/// The `b64token` characters: letters, digits, `-._~+/` and `=`.
#[inline(always)]
fn is_token68_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    let mark = (b == b'-') | (b == b'.') | (b == b'_') | (b == b'~');
    let base64 = (b == b'+') | (b == b'/') | (b == b'=');
    letter | digit | mark | base64
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::HeaderValue;

    use super::*;

    const AUTH: &[TokenSource] = &[TokenSource::Authorization];

    fn from_map(value: &str) -> Result<Credential<'static>, CredentialError> {
        let map: &'static HashMap<String, String> = Box::leak(Box::new(HashMap::from([(
            "authorization".to_owned(),
            value.to_owned(),
        )])));
        find(Headers::Map(map), "/", AUTH)
    }

    fn raw(key: &str, value: &[u8]) -> HeaderValue {
        HeaderValue {
            key: key.to_owned(),
            raw_value: value.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn token_characters_are_exactly_rfc6750_b64token() {
        for b in 0..=255u8 {
            let spec = b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            assert_eq!(is_token68_byte(b), spec, "byte {b:#04x}");
        }
    }

    #[test]
    fn one_bad_byte_anywhere_in_a_long_token_is_refused() {
        // Lengths around the 32-byte chunks, a bad byte at every position.
        for len in [1, 31, 32, 33, 64, 95, 100] {
            let good = "a".repeat(len);
            assert!(all_token68(good.as_bytes()));
            for at in 0..len {
                for bad in [b',', b' ', b'"', 0x80, 0xff, 0] {
                    let mut token = good.clone().into_bytes();
                    token[at] = bad;
                    assert!(!all_token68(&token), "len {len}, {bad:#04x} at {at}");
                }
            }
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                from_map(&format!("{scheme} a.b.c")),
                Ok(Credential::Bearer("a.b.c".into()))
            );
        }
    }

    #[test]
    fn no_header_is_no_credential() {
        let empty = HashMap::new();
        assert_eq!(find(Headers::Map(&empty), "/", AUTH), Ok(Credential::None));
        assert_eq!(find(Headers::Raw(&[]), "/", AUTH), Ok(Credential::None));
    }

    #[test]
    fn other_schemes_are_not_bearer_tokens() {
        assert_eq!(from_map("Basic YWxpY2U6c2VjcmV0"), Ok(Credential::None));
        assert_eq!(from_map("Bearertoken"), Ok(Credential::None));
        assert_eq!(from_map("DPoP a.b.c"), Ok(Credential::None));
    }

    #[test]
    fn comma_joined_values_are_refused_as_multiple() {
        assert_eq!(
            from_map("Bearer a.b.c,Bearer d.e.f"),
            Err(CredentialError::Multiple)
        );
        assert_eq!(
            from_map("Basic x,Bearer a.b.c"),
            Err(CredentialError::Multiple)
        );
    }

    #[test]
    fn repeated_raw_headers_are_refused_as_multiple() {
        let headers = [
            raw("authorization", b"Bearer a.b.c"),
            raw("Authorization", b"Bearer a.b.c"),
        ];
        assert_eq!(
            find(Headers::Raw(&headers), "/", AUTH),
            Err(CredentialError::Multiple)
        );
    }

    #[test]
    fn raw_header_value_is_read() {
        let headers = [raw(":path", b"/"), raw("authorization", b"Bearer x.y.z")];
        assert_eq!(
            find(Headers::Raw(&headers), "/", AUTH),
            Ok(Credential::Bearer("x.y.z".into()))
        );
    }

    #[test]
    fn malformed_bearer_values_are_refused() {
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer a.b c",
            "Bearer a\"b",
            "Bearer a;b",
        ] {
            assert_eq!(
                from_map(value),
                Err(CredentialError::Malformed),
                "{value:?}"
            );
        }
        let headers = [raw("authorization", b"Bearer \xff\xfe")];
        assert_eq!(
            find(Headers::Raw(&headers), "/", AUTH),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn extra_spaces_around_the_token_are_tolerated() {
        assert_eq!(
            from_map("Bearer   a.b.c  "),
            Ok(Credential::Bearer("a.b.c".into()))
        );
    }

    fn map(pairs: &[(&str, &str)]) -> &'static HashMap<String, String> {
        Box::leak(Box::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Authorization,
            TokenSource::Header("x-access-token".into()),
            TokenSource::Cookie("session".into()),
            TokenSource::Query("access_token".into()),
        ]
    }

    fn found(
        headers: &[(&str, &str)],
        path: &'static str,
    ) -> Result<Credential<'static>, CredentialError> {
        let sources: &'static [TokenSource] = Box::leak(sources().into_boxed_slice());
        find(Headers::Map(map(headers)), path, sources)
    }

    #[test]
    fn a_token_is_found_in_each_configured_source() {
        let t = Ok(Credential::Bearer("a.b.c".into()));
        assert_eq!(found(&[("authorization", "Bearer a.b.c")], "/"), t);
        assert_eq!(found(&[("x-access-token", "a.b.c")], "/"), t);
        assert_eq!(found(&[("x-access-token", "Bearer a.b.c")], "/"), t);
        assert_eq!(found(&[("cookie", "theme=dark; session=a.b.c")], "/"), t);
        assert_eq!(found(&[], "/x?y=1&access_token=a.b.c"), t);
        assert_eq!(found(&[], "/x?access_token=a%2Eb.c#frag"), t);
        assert_eq!(
            found(&[("cookie", "other=1")], "/x?token=a.b.c"),
            Ok(Credential::None)
        );
    }

    #[test]
    fn a_token_in_two_places_is_refused_as_ambiguous() {
        let multiple = Err(CredentialError::Multiple);
        let auth = ("authorization", "Bearer a.b.c");
        assert_eq!(found(&[auth, ("x-access-token", "d.e.f")], "/"), multiple);
        assert_eq!(found(&[auth, ("cookie", "session=d.e.f")], "/"), multiple);
        assert_eq!(found(&[auth], "/?access_token=d.e.f"), multiple);
        assert_eq!(
            found(&[("cookie", "session=a.b.c; session=d.e.f")], "/"),
            multiple
        );
        assert_eq!(
            found(&[("cookie", "session=a.b.c,session=d.e.f")], "/"),
            multiple
        );
        assert_eq!(
            found(&[], "/?access_token=a.b.c&access_token=a.b.c"),
            multiple
        );
        assert_eq!(found(&[("x-access-token", "a.b.c,d.e.f")], "/"), multiple);
    }

    #[test]
    fn malformed_tokens_in_any_source_are_refused() {
        let malformed = Err(CredentialError::Malformed);
        assert_eq!(found(&[("x-access-token", "a b")], "/"), malformed);
        assert_eq!(found(&[("cookie", "session=")], "/"), malformed);
        assert_eq!(found(&[], "/?access_token="), malformed);
        assert_eq!(found(&[], "/?access_token=%zz"), malformed);
        assert_eq!(found(&[], "/?access_token=a%22b"), malformed);
    }

    #[test]
    fn only_configured_sources_are_read() {
        let headers = map(&[("x-access-token", "a.b.c"), ("cookie", "session=a.b.c")]);
        let only_auth = find(Headers::Map(headers), "/?access_token=a.b.c", AUTH);
        assert_eq!(only_auth, Ok(Credential::None));
    }
}
