//! Finding the bearer token in a request (RFC 6750 §2.1).
//!
//! The token comes from `Authorization: Bearer <token>`, the scheme matched
//! case-insensitively. Anything that could stand for two credentials is refused
//! rather than resolved by picking one: Envoy joins repeated header lines with
//! `,` (and a JWT never contains one), and `header_map` keeps each line apart.

use crate::request::Headers;

/// What the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No bearer token: no `Authorization` header, or one with another scheme.
    None,
    /// A bearer token, not yet validated.
    Bearer(&'a str),
}

/// An `Authorization` header that cannot be read as one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Two or more `Authorization` values.
    #[error("more than one Authorization value")]
    Multiple,
    /// A `Bearer` header without a single well-formed token after it.
    #[error("malformed Bearer credential")]
    Malformed,
}

/// Reads the bearer token from the `Authorization` header.
pub fn find(headers: Headers<'_>) -> Result<Credential<'_>, CredentialError> {
    let mut values = headers.get_all("authorization");
    let Some(value) = values.next() else {
        return Ok(Credential::None);
    };
    if values.next().is_some() || value.contains(&b',') {
        return Err(CredentialError::Multiple);
    }
    parse_authorization(value)
}

/// Parses one `Authorization` value: `Bearer` SP+ token, nothing else.
fn parse_authorization(value: &[u8]) -> Result<Credential<'_>, CredentialError> {
    let value = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
    let value = value.trim_matches(is_http_space);
    let (scheme, rest) = value.split_once(is_http_space).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credential::None);
    }
    let token = rest.trim_start_matches(is_http_space);
    if token.is_empty() || !token.bytes().all(is_token68_byte) {
        return Err(CredentialError::Malformed);
    }
    Ok(Credential::Bearer(token))
}

fn is_http_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The `b64token` characters of RFC 6750 §2.1.
fn is_token68_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::HeaderValue;

    use super::*;

    fn from_map(value: &str) -> Result<Credential<'static>, CredentialError> {
        let map: &'static HashMap<String, String> = Box::leak(Box::new(HashMap::from([(
            "authorization".to_owned(),
            value.to_owned(),
        )])));
        find(Headers::Map(map))
    }

    fn raw(key: &str, value: &[u8]) -> HeaderValue {
        HeaderValue {
            key: key.to_owned(),
            raw_value: value.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                from_map(&format!("{scheme} a.b.c")),
                Ok(Credential::Bearer("a.b.c"))
            );
        }
    }

    #[test]
    fn no_header_is_no_credential() {
        let empty = HashMap::new();
        assert_eq!(find(Headers::Map(&empty)), Ok(Credential::None));
        assert_eq!(find(Headers::Raw(&[])), Ok(Credential::None));
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
        assert_eq!(find(Headers::Raw(&headers)), Err(CredentialError::Multiple));
    }

    #[test]
    fn raw_header_value_is_read() {
        let headers = [raw(":path", b"/"), raw("authorization", b"Bearer x.y.z")];
        assert_eq!(
            find(Headers::Raw(&headers)),
            Ok(Credential::Bearer("x.y.z"))
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
            find(Headers::Raw(&headers)),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn extra_spaces_around_the_token_are_tolerated() {
        assert_eq!(
            from_map("Bearer   a.b.c  "),
            Ok(Credential::Bearer("a.b.c"))
        );
    }
}
