//! Validating a bearer token as a signed JWT (RFC 7519, RFC 7515, RFC 8725).
//!
//! The order of checks keeps expensive and risky work last:
//! size, shape and canonical base64url; the header (`alg` on the issuer's
//! list, no `crit`); the payload's `iss` among configured issuers; the key by
//! `kid` that fits `alg`; the signature; then `exp`, `nbf`, `aud` and
//! Keycloak's `typ`, which must be `Bearer` so ID and refresh tokens are refused.
//! Nothing in the token header (`jwk`, `jku`, `x5u`, `x5c`) is ever used to find a key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

pub mod cache;
mod json;

use cache::{CacheLimits, CachedToken, TokenCache};

use crate::config::IssuerConfig;
use crate::keys::{IssuerKeys, Refetch, parse_algorithm};

/// An issuer whose tokens are accepted, with its current keys.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Its configured name.
    pub name: Arc<str>,
    /// The exact `iss`.
    pub issuer: String,
    /// Accepted audiences; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Tolerance for `exp` and `nbf`, in seconds.
    pub clock_skew_seconds: u64,
    /// Whether tokens without `kid` are tried against every key that fits.
    pub allow_missing_kid: bool,
    /// Accepted `typ` claims; empty means not checked.
    pub token_types: Vec<String>,
    /// Keys fetched longer ago than this are not used.
    pub max_key_age_seconds: i64,
    /// How long a check waits for a refetch triggered by an unknown `kid`.
    pub unknown_kid_wait: Duration,
    /// Its keys, refreshed in the background.
    pub keys: Arc<IssuerKeys>,
}

/// Validates tokens against the trusted issuers.
#[derive(Debug)]
pub struct Validator {
    issuers: Vec<TrustedIssuer>,
    max_token_bytes: usize,
    cache: TokenCache,
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified<'v> {
    /// The issuer that signed it.
    pub issuer: &'v TrustedIssuer,
    /// Its claims, shared with the token cache.
    pub token: Arc<TokenClaims>,
}

/// The verified claims of a token.
#[derive(Debug)]
pub struct TokenClaims {
    /// The claims portcullis reads itself.
    pub claims: Claims,
    /// Every claim, for claim conditions and header mappings of the policy.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// The claims portcullis reads. Others are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: Option<String>,
    /// Audience: one string or an array.
    #[serde(default)]
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: Option<i64>,
    /// Not before, seconds since the epoch.
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    pub iat: Option<i64>,
    /// Keycloak's token type: `Bearer`, `ID`, `Refresh`, `Offline`, `Logout`.
    pub typ: Option<String>,
    /// The client the token was issued to.
    pub azp: Option<String>,
    /// Space-separated scopes.
    pub scope: Option<String>,
    /// The user name.
    pub preferred_username: Option<String>,
    /// Realm roles.
    pub realm_access: Option<Roles>,
    /// Client roles, by client id.
    #[serde(default)]
    pub resource_access: HashMap<String, Roles>,
}

/// A `roles` list, as in `realm_access` and `resource_access.<client>`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Roles {
    /// The roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The `aud` claim, which Keycloak writes as a string when it has one value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// No `aud`.
    #[default]
    None,
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than the configured limit.
    #[error("token longer than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not three canonical base64url parts of JSON, or claims of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header lists `crit` extensions, which are not supported.
    #[error("token header has critical extensions")]
    CriticalHeader,
    /// `iss` is not a configured issuer.
    #[error("issuer not trusted")]
    UnknownIssuer,
    /// `alg` is not on the issuer's list (`none` and HMAC never are).
    #[error("algorithm {0:?} not accepted")]
    AlgorithmNotAllowed(String),
    /// The header has no `kid`.
    #[error("token has no kid")]
    MissingKid,
    /// The issuer's keys have not been loaded yet.
    #[error("signing keys of issuer {issuer} are not loaded")]
    KeysUnavailable {
        /// The issuer's name.
        issuer: Arc<str>,
    },
    /// No key of the issuer has this `kid` and fits `alg`.
    #[error("no signing key for this kid and algorithm")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is missing.
    #[error("token has no exp")]
    MissingExpiry,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` names none of the accepted audiences.
    #[error("audience not accepted")]
    WrongAudience,
    /// `typ` is not an accepted type (`Bearer` by default): an ID, refresh or logout token.
    #[error("not an access token (typ {0:?})")]
    WrongType(Option<String>),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    #[serde(skip)]
    crit: bool,
}

// === impl TrustedIssuer ===

impl TrustedIssuer {
    /// A trusted issuer from its configuration, with its key holder.
    pub fn from_config(config: &IssuerConfig, keys: Arc<IssuerKeys>) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            clock_skew_seconds: config.clock_skew_seconds,
            allow_missing_kid: config.allow_missing_kid,
            token_types: config.token_types.clone(),
            max_key_age_seconds: i64::try_from(config.max_key_age_seconds).unwrap_or(i64::MAX),
            unknown_kid_wait: Duration::from_millis(config.unknown_kid_wait_milliseconds),
            keys,
        }
    }
}

// === impl Validator ===

impl Validator {
    /// A validator for these issuers.
    pub fn new(issuers: Vec<TrustedIssuer>, max_token_bytes: usize) -> Self {
        let off = CacheLimits {
            max_entries: 0,
            max_bytes: 0,
        };
        Self::with_cache(issuers, max_token_bytes, off, Arc::default())
    }

    /// A validator that remembers verified tokens within `limits`.
    pub fn with_cache(
        issuers: Vec<TrustedIssuer>,
        max_token_bytes: usize,
        limits: CacheLimits,
        stats: Arc<cache::CacheStats>,
    ) -> Self {
        Self {
            issuers,
            max_token_bytes,
            cache: TokenCache::new(limits, stats),
        }
    }

    /// The verified-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Validates a compact JWS at time `now` (seconds since the epoch).
    ///
    /// When the issuer's keys lack the token's `kid`, asks for a refetch and
    /// waits for it (bounded by the issuer's `unknown_kid_wait`), then tries
    /// once more: a key rotated in at the issuer is picked up by the first
    /// token it signs. Refetches are shared and rate-limited per issuer.
    pub async fn validate(&self, token: &str, now: i64) -> Result<Verified<'_>, TokenError> {
        match self.validate_now(token, now) {
            Err(TokenError::UnknownKey) => {}
            done => return done,
        }
        let Some((issuer, kid)) = self.unknown_key_context(token) else {
            return Err(TokenError::UnknownKey);
        };
        if let Refetch::Pending(mut fetched) = issuer.keys.request_refetch(&kid) {
            let _ = tokio::time::timeout(issuer.unknown_kid_wait, fetched.changed()).await;
        }
        let retried = self.validate_now(token, now);
        if retried
            .as_ref()
            .is_err_and(|e| *e == TokenError::UnknownKey)
        {
            issuer.keys.remember_unknown(&kid);
        }
        retried
    }

    /// The issuer and `kid` of a token that was refused for an unknown key.
    fn unknown_key_context(&self, token: &str) -> Option<(&TrustedIssuer, String)> {
        let parts = Parts::split(token).ok()?;
        let header = decode_header(parts.header).ok()?;
        let payload = decode_payload(parts.payload).ok()?;
        let issuer = self.issuer_for(payload.get("iss")).ok()?;
        Some((issuer, header.kid?))
    }

    /// Validates with the keys at hand, without waiting for any fetch.
    pub fn validate_now(&self, token: &str, now: i64) -> Result<Verified<'_>, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                limit: self.max_token_bytes,
            });
        }
        if !self.cache.enabled() {
            return self.verify(token, now).map(|(verified, _)| verified);
        }
        let key = cache::hash(token);
        let usable = |entry: &CachedToken| {
            self.issuers.get(entry.issuer).is_some_and(|issuer| {
                now < entry.expires_at
                    && issuer
                        .keys
                        .fresh_fingerprint(now, issuer.max_key_age_seconds)
                        == Some(entry.keys)
            })
        };
        if let Some(entry) = self.cache.lookup(&key, usable)
            && let Some(issuer) = self.issuers.get(entry.issuer)
        {
            return Ok(Verified {
                issuer,
                token: entry.claims.clone(),
            });
        }
        let (verified, entry) = self.verify(token, now)?;
        self.cache.insert(key, entry, now);
        Ok(verified)
    }

    /// Every check, and what the cache would keep of the token.
    fn verify(&self, token: &str, now: i64) -> Result<(Verified<'_>, CachedToken), TokenError> {
        let parts = Parts::split(token)?;
        let header = decode_header(parts.header)?;
        if header.crit {
            return Err(TokenError::CriticalHeader);
        }
        let payload = decode_payload(parts.payload)?;
        let issuer = self.issuer_for(payload.get("iss"))?;
        let alg = issuer.algorithm(&header.alg)?;
        if header.kid.is_none() && !issuer.allow_missing_kid {
            return Err(TokenError::MissingKid);
        }
        let keys = issuer.verify_signature(&parts, header.kid.as_deref(), alg, now)?;
        let claims = Claims::deserialize(&payload)
            .map_err(|_| TokenError::Malformed("claims of the wrong type"))?;
        issuer.check_claims(&claims, now)?;
        let serde_json::Value::Object(payload) = payload else {
            return Err(TokenError::Malformed("payload is not a JSON object"));
        };
        let skew = i64::try_from(issuer.clock_skew_seconds).unwrap_or(0);
        let expires_at = claims.exp.unwrap_or(now).saturating_add(skew);
        let token = Arc::new(TokenClaims { claims, payload });
        let index = self
            .issuers
            .iter()
            .position(|i| std::ptr::eq(i, issuer))
            .unwrap_or(usize::MAX);
        let entry = CachedToken::new(index, token.clone(), expires_at, keys, parts.payload.len());
        Ok((Verified { issuer, token }, entry))
    }

    fn issuer_for(&self, iss: Option<&serde_json::Value>) -> Result<&TrustedIssuer, TokenError> {
        let iss = match iss {
            None => return Err(TokenError::UnknownIssuer),
            Some(serde_json::Value::String(iss)) => iss,
            Some(_) => return Err(TokenError::Malformed("iss is not a string")),
        };
        self.issuers
            .iter()
            .find(|i| &i.issuer == iss)
            .ok_or(TokenError::UnknownIssuer)
    }
}

impl TrustedIssuer {
    fn algorithm(&self, name: &str) -> Result<Algorithm, TokenError> {
        parse_algorithm(name)
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| TokenError::AlgorithmNotAllowed(truncate(name, 16)))
    }

    fn verify_signature(
        &self,
        parts: &Parts<'_>,
        kid: Option<&str>,
        alg: Algorithm,
        now: i64,
    ) -> Result<u64, TokenError> {
        let unavailable = || TokenError::KeysUnavailable {
            issuer: self.name.clone(),
        };
        let keys = self.keys.load().ok_or_else(unavailable)?;
        if keys.age_seconds(now) > self.max_key_age_seconds {
            return Err(unavailable());
        }
        let mut candidates = keys.candidates(kid, alg).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let verified = candidates.any(|key| {
            jsonwebtoken::crypto::verify(
                parts.signature,
                parts.signing_input.as_bytes(),
                &key.key,
                alg,
            )
            .unwrap_or(false)
        });
        if verified {
            Ok(keys.fingerprint)
        } else {
            Err(TokenError::BadSignature)
        }
    }

    fn check_claims(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        let skew = i64::try_from(self.clock_skew_seconds).unwrap_or(0);
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if now >= exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now < nbf.saturating_sub(skew)) {
            return Err(TokenError::NotYetValid);
        }
        let typ_ok = self.token_types.is_empty()
            || claims
                .typ
                .as_ref()
                .is_some_and(|t| self.token_types.contains(t));
        if !typ_ok {
            return Err(TokenError::WrongType(
                claims.typ.as_deref().map(|t| truncate(t, 16)),
            ));
        }
        if !self.audiences.is_empty() && !claims.aud.contains_any(&self.audiences) {
            return Err(TokenError::WrongAudience);
        }
        Ok(())
    }
}

// === impl Audience ===

impl Audience {
    /// Whether any audience of the token is one of `accepted`.
    pub fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::None => false,
            Audience::One(aud) => accepted.contains(aud),
            Audience::Many(auds) => auds.iter().any(|a| accepted.contains(a)),
        }
    }
}

// === compact serialization ===

/// The three parts of a compact JWS.
struct Parts<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    signing_input: &'t str,
}

impl<'t> Parts<'t> {
    fn split(token: &'t str) -> Result<Self, TokenError> {
        let mut it = token.splitn(4, '.');
        let (Some(header), Some(payload), Some(signature), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::Malformed("an empty part"));
        }
        let signing_input = &token[..header.len() + 1 + payload.len()];
        Ok(Self {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

/// Decodes canonical base64url without padding (RFC 7515 §2): padding,
/// whitespace, other alphabets and non-zero trailing bits are refused.
fn decode_part(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("not canonical base64url"))
}

fn decode_header(part: &str) -> Result<Header, TokenError> {
    let not_header = |_| TokenError::Malformed("header is not a JWS header");
    let object = json::parse_object(&decode_part(part)?)
        .ok_or(TokenError::Malformed("header is not a JSON object"))?;
    // `crit` in any form, even `null`, names extensions we do not implement.
    let crit = object.contains_key("crit");
    let mut header = Header::deserialize(serde_json::Value::Object(object)).map_err(not_header)?;
    header.crit = crit;
    Ok(header)
}

/// The payload as a JSON object (duplicate names refused).
fn decode_payload(part: &str) -> Result<serde_json::Value, TokenError> {
    let object = json::parse_object(&decode_part(part)?)
        .ok_or(TokenError::Malformed("payload is not a JSON object"))?;
    Ok(serde_json::Value::Object(object))
}

/// Cuts an attacker-chosen string before it reaches a log line or a reason.
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
