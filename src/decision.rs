//! The outcome of a check, and the one place where a reason becomes an HTTP
//! status, a `WWW-Authenticate` error (RFC 6750 §3.1) and a reason code.

use std::sync::Arc;

use crate::config::DenyConfig;
use crate::credential::CredentialError;
use crate::policy::require::Unmet;
use crate::request::{PathError, RequestError};
use crate::token::TokenError;

/// What portcullis answers. An allow borrows from the checker that made it
/// (route and header names), so answering costs no reference counting.
#[derive(Debug)]
pub enum Decision<'c> {
    /// Let the request through, with these header changes.
    Allow(Allow<'c>),
    /// Refuse it.
    Deny(Denial),
}

/// An allowed request.
#[derive(Debug)]
pub struct Allow<'c> {
    /// The route that matched (or the TCP rule that allowed).
    pub route: &'c Arc<str>,
    /// The position of the route in the configuration; none for TCP rules.
    pub route_index: Option<usize>,
    /// The issuer of the token, when one was validated.
    pub issuer: Option<&'c str>,
    /// The token's subject, when one was validated.
    pub subject: Option<String>,
    /// Headers to set on the upstream request, overwriting any client copy.
    pub set_headers: Vec<(&'c str, String)>,
    /// Headers to remove from the upstream request.
    pub remove_headers: Removals<'c>,
    /// In a dry-run route: the denial that was not enforced.
    pub would_deny: Option<Reason>,
}

/// The headers an allow removes: often a list made once per route.
#[derive(Debug, Clone)]
pub enum Removals<'c> {
    /// A list made with the configuration.
    Shared(&'c [Arc<str>]),
    /// A list picked for this allow.
    Picked(Vec<&'c str>),
}

impl Removals<'_> {
    /// The names.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (shared, picked) = match self {
            Removals::Shared(names) => (*names, &[][..]),
            Removals::Picked(names) => (&[][..], names.as_slice()),
        };
        shared.iter().map(|n| &**n).chain(picked.iter().copied())
    }

    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Removals::Shared(names) => names.len(),
            Removals::Picked(names) => names.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is among them.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
}

/// A refused request.
#[derive(Debug)]
pub struct Denial {
    /// The route that matched, if one did.
    pub route: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// The request's `x-request-id`, for the body.
    pub request_id: Option<String>,
    /// The route's own status and body for denials.
    pub overrides: Option<Arc<DenyConfig>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The check has no HTTP part (a TCP connection check).
    NotHttp(RequestError),
    /// The CheckRequest could not be decoded, or was over the size limit.
    InvalidCheckRequest,
    /// The path cannot be matched safely.
    InvalidPath(PathError),
    /// No route matches the request.
    NoRoute,
    /// The route needs a token and none was sent.
    MissingToken,
    /// The `Authorization` header is ambiguous or malformed.
    BadCredential(CredentialError),
    /// The token is invalid.
    InvalidToken(TokenError),
    /// The token is valid, but its issuer is not among the route's `issuers`.
    IssuerNotAllowed,
    /// The token is valid but does not meet the route's requirements.
    Insufficient(Unmet),
}

/// How a reason is answered over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The RFC 6750 `error` of the challenge; `None` with a challenge means no error code.
    pub challenge: Challenge,
    /// A stable, machine-readable reason code.
    pub code: &'static str,
}

/// Whether the answer carries a `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No challenge: no credential could change the answer.
    None,
    /// A challenge without an error code: credentials are needed.
    Plain,
    /// A challenge with this `error` code.
    Error(&'static str),
}

// === impl Reason ===

impl Reason {
    /// The status, challenge and code for this reason. Nothing else picks a status.
    pub fn answer(&self) -> Answer {
        use Challenge::{Error, None, Plain};
        let (status, challenge, code) = match self {
            Reason::NotHttp(_) => (403, None, "not_http"),
            Reason::InvalidCheckRequest => (400, None, "invalid_check_request"),
            Reason::InvalidPath(_) => (400, None, "invalid_path"),
            Reason::NoRoute => (403, None, "no_route"),
            Reason::MissingToken => (401, Plain, "missing_token"),
            Reason::BadCredential(CredentialError::Multiple) => {
                (400, Error("invalid_request"), "multiple_credentials")
            }
            Reason::BadCredential(CredentialError::Malformed) => {
                (400, Error("invalid_request"), "malformed_credential")
            }
            Reason::InvalidToken(TokenError::KeysUnavailable { .. }) => {
                (503, None, "keys_unavailable")
            }
            Reason::InvalidToken(e) => (401, Error("invalid_token"), token_code(e)),
            Reason::IssuerNotAllowed => (401, Error("invalid_token"), "issuer_not_allowed"),
            Reason::Insufficient(unmet) => (403, Error("insufficient_scope"), unmet.code),
        };
        Answer {
            status,
            challenge,
            code,
        }
    }

    /// A short human-readable description, safe to show to the client.
    pub fn description(&self) -> String {
        match self {
            Reason::NotHttp(e) => e.to_string(),
            Reason::InvalidCheckRequest => "the authorization request could not be read".to_owned(),
            Reason::InvalidPath(e) => e.to_string(),
            Reason::NoRoute => "no route matches the request".to_owned(),
            Reason::MissingToken => "a bearer token is required".to_owned(),
            Reason::BadCredential(e) => e.to_string(),
            Reason::InvalidToken(e) => e.to_string(),
            Reason::IssuerNotAllowed => "tokens of this issuer are not accepted here".to_owned(),
            Reason::Insufficient(e) => e.description.clone(),
        }
    }
}

fn token_code(error: &TokenError) -> &'static str {
    match error {
        TokenError::TooLarge { .. } => "token_too_large",
        TokenError::Malformed(_) => "token_malformed",
        TokenError::CriticalHeader => "token_critical_header",
        TokenError::UnknownIssuer => "unknown_issuer",
        TokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
        TokenError::MissingKid => "missing_kid",
        TokenError::KeysUnavailable { .. } => "keys_unavailable",
        TokenError::UnknownKey => "unknown_key",
        TokenError::BadSignature => "bad_signature",
        TokenError::MissingExpiry => "missing_exp",
        TokenError::Expired => "token_expired",
        TokenError::NotYetValid => "token_not_yet_valid",
        TokenError::WrongAudience => "wrong_audience",
        TokenError::WrongType(_) => "not_an_access_token",
    }
}

// === impl Decision ===

impl Decision<'_> {
    /// A denial.
    pub fn deny(route: Option<Arc<str>>, reason: Reason) -> Self {
        Decision::Deny(Denial {
            route,
            reason,
            request_id: None,
            overrides: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_is_401_with_a_plain_challenge() {
        let a = Reason::MissingToken.answer();
        assert_eq!((a.status, a.challenge), (401, Challenge::Plain));
    }

    #[test]
    fn bad_token_is_401_invalid_token() {
        let a = Reason::InvalidToken(TokenError::Expired).answer();
        assert_eq!(
            (a.status, a.challenge, a.code),
            (401, Challenge::Error("invalid_token"), "token_expired")
        );
    }

    #[test]
    fn unmet_requirement_is_403_insufficient_scope() {
        let a = Reason::Insufficient(Unmet {
            code: "missing_scope",
            description: "missing scope \"x\"".into(),
            scope: None,
        })
        .answer();
        assert_eq!(a.status, 403);
        assert_eq!(a.challenge, Challenge::Error("insufficient_scope"));
    }

    #[test]
    fn two_credentials_are_400_invalid_request() {
        let a = Reason::BadCredential(CredentialError::Multiple).answer();
        assert_eq!(
            (a.status, a.challenge),
            (400, Challenge::Error("invalid_request"))
        );
    }

    #[test]
    fn keys_not_loaded_is_503_without_challenge() {
        let reason = Reason::InvalidToken(TokenError::KeysUnavailable { issuer: "a".into() });
        assert_eq!(reason.answer().status, 503);
        assert_eq!(reason.answer().challenge, Challenge::None);
    }
}
