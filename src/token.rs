//! Validating a bearer token as a signed JWT (RFC 7519, RFC 7515, RFC 8725).
//!
//! The order of checks keeps expensive and risky work last:
//! size, shape and canonical base64url; the header (`alg` on the issuer's
//! list, no `crit`); the payload's `iss` among configured issuers; the key by
//! `kid` that fits `alg`; the signature; then `exp`, `nbf`, `aud` and
//! Keycloak's `typ`, which must be `Bearer` so ID and refresh tokens are refused.
//! Nothing in the token header (`jwk`, `jku`, `x5u`, `x5c`) is ever used to find a key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

pub mod cache;
mod json;

use cache::{CacheLimits, CachedToken, TokenCache};
use json::Member;

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
    /// Whether cached tokens will hold their payload as a tree.
    payload_trees: bool,
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
    pub payload: Payload,
}

/// Every claim of a verified token: the payload JSON as signed, read into a
/// tree the first time the policy asks for it (most routes never do).
#[derive(Debug)]
pub struct Payload {
    /// Read strictly before it was accepted: one object, no duplicate names.
    json: Vec<u8>,
    tree: OnceLock<Map<String, Value>>,
}

/// The claims portcullis reads. Others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Roles {
    /// The roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The `aud` claim, which Keycloak writes as a string when it has one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

struct Header<'a> {
    alg: Cow<'a, str>,
    kid: Option<String>,
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
            payload_trees: true,
        }
    }

    /// Says whether the policy reads claims beyond [`Claims`] (so that cached
    /// tokens will hold their payload as a tree), for the cache's byte count.
    /// Until told, the validator assumes it does.
    pub fn set_payload_read(&mut self, read: bool) {
        self.payload_trees = read;
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
        let header = decode_part(parts.header).ok()?;
        let kid = decode_header(&header).ok()?.kid?;
        let payload = decode_part(parts.payload).ok()?;
        let issuer = self.issuer_for(&read_payload(&payload).ok()?.iss).ok()?;
        Some((issuer, kid))
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
        let header = decode_part(parts.header)?;
        let header = decode_header(&header)?;
        if header.crit {
            return Err(TokenError::CriticalHeader);
        }
        let payload = decode_part(parts.payload)?;
        let read = read_payload(&payload)?;
        let issuer = self.issuer_for(&read.iss)?;
        let tree_bytes = read.tree_bytes;
        let alg = issuer.algorithm(&header.alg)?;
        if header.kid.is_none() && !issuer.allow_missing_kid {
            return Err(TokenError::MissingKid);
        }
        let keys = issuer.verify_signature(&parts, header.kid.as_deref(), alg, now)?;
        // Claims of the wrong type are refused only now, as when they were
        // read in a pass of their own after the signature.
        let mut claims = read
            .claims
            .map_err(|_| TokenError::Malformed("claims of the wrong type"))?;
        if let Member::String(iss) = read.iss {
            claims.iss = iss.into_owned();
        }
        issuer.check_claims(&claims, now)?;
        let skew = i64::try_from(issuer.clock_skew_seconds).unwrap_or(0);
        let expires_at = claims.exp.unwrap_or(now).saturating_add(skew);
        let token = Arc::new(TokenClaims {
            claims,
            payload: Payload::checked(payload),
        });
        let index = self
            .issuers
            .iter()
            .position(|i| std::ptr::eq(i, issuer))
            .unwrap_or(usize::MAX);
        let tree_bytes = if self.payload_trees { tree_bytes } else { 0 };
        let bytes = token.heap_bytes() + tree_bytes;
        let entry = CachedToken::new(index, token.clone(), expires_at, keys, bytes);
        Ok((Verified { issuer, token }, entry))
    }

    fn issuer_for(&self, iss: &Member<'_>) -> Result<&TrustedIssuer, TokenError> {
        let iss = match iss {
            Member::Absent => return Err(TokenError::UnknownIssuer),
            Member::String(iss) => iss,
            Member::Other => return Err(TokenError::Malformed("iss is not a string")),
        };
        self.issuers
            .iter()
            .find(|i| i.issuer == *iss)
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

// === impl TokenClaims ===

impl TokenClaims {
    /// About how many heap bytes this takes, allocator overhead included,
    /// before its payload is read as a tree.
    pub fn heap_bytes(&self) -> usize {
        let text = |s: &String| chunk(s.capacity());
        let texts = |v: &Vec<String>| {
            chunk(v.capacity() * size_of::<String>()) + v.iter().map(text).sum::<usize>()
        };
        let opt = |s: &Option<String>| s.as_ref().map_or(0, text);
        let c = &self.claims;
        let aud = match &c.aud {
            Audience::None => 0,
            Audience::One(one) => text(one),
            Audience::Many(many) => texts(many),
        };
        let clients = &c.resource_access;
        let buckets = if clients.capacity() == 0 {
            0
        } else {
            (clients.capacity() * 8 / 7).next_power_of_two()
        };
        let clients = chunk(buckets * (size_of::<(String, Roles)>() + 1))
            + clients
                .iter()
                .map(|(name, roles)| text(name) + texts(&roles.roles))
                .sum::<usize>();
        chunk(size_of::<Self>() + 16)
            + chunk(self.payload.json.capacity())
            + text(&c.iss)
            + [&c.sub, &c.typ, &c.azp, &c.scope, &c.preferred_username]
                .into_iter()
                .map(opt)
                .sum::<usize>()
            + aud
            + c.realm_access.as_ref().map_or(0, |r| texts(&r.roles))
            + clients
    }
}

/// What an allocation of `n` bytes takes from the allocator (glibc: a
/// header, 16-byte steps, 32 bytes at least); nothing for none.
fn chunk(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

// === impl Payload ===

impl Payload {
    /// Payload JSON that `read_payload` accepted.
    fn checked(json: Vec<u8>) -> Self {
        Self {
            json,
            tree: OnceLock::new(),
        }
    }

    /// Every claim, by name; read from the JSON on first use.
    pub fn object(&self) -> &Map<String, Value> {
        // The JSON was read strictly before, with the same parser and nesting
        // limit, so it cannot fail here; an empty map is a safe fallback.
        self.tree
            .get_or_init(|| serde_json::from_slice(&self.json).unwrap_or_default())
    }
}

impl From<Map<String, Value>> for Payload {
    /// A payload already read, for tools and tests.
    fn from(object: Map<String, Value>) -> Self {
        Self {
            json: Vec::new(),
            tree: OnceLock::from(object),
        }
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

/// `null`, a string or an array of strings, as an untagged enum would read
/// them, but directly: an untagged enum buffers the value and formats an
/// error for each variant that does not fit, on every uncached token.
impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AudienceVisitor)
    }
}

struct AudienceVisitor;

impl<'de> serde::de::Visitor<'de> for AudienceVisitor {
    type Value = Audience;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("null, a string or an array of strings")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Audience, E> {
        Ok(Audience::None)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Audience, E> {
        Ok(Audience::None)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
        Ok(Audience::One(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Audience, E> {
        Ok(Audience::One(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
        let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(aud) = seq.next_element::<String>()? {
            all.push(aud);
        }
        Ok(Audience::Many(all))
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

/// The header from its decoded JSON (duplicate names refused).
fn decode_header(json: &[u8]) -> Result<Header<'_>, TokenError> {
    let read =
        json::read_header(json).ok_or(TokenError::Malformed("header is not a JSON object"))?;
    let not_jws = |_| TokenError::Malformed("header is not a JWS header");
    Ok(Header {
        alg: read.alg.map_err(not_jws)?,
        kid: read.kid.map_err(not_jws)?,
        // `crit` in any form, even `null`, names extensions we do not implement.
        crit: read.crit,
    })
}

/// Checks that the decoded payload is a JSON object (duplicate names
/// refused), and returns its `iss`, what it would take as a tree and its
/// claims (or that some are of the wrong type), in one pass.
fn read_payload(json: &[u8]) -> Result<json::ReadClaims<'_>, TokenError> {
    json::read_claims(json).ok_or(TokenError::Malformed("payload is not a JSON object"))
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
