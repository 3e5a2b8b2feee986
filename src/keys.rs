//! Signing keys per issuer: parsing JWKS documents (RFC 7517) and holding the
//! current key set where checks can read it without a lock.
//!
//! A key set is built whole from one JWKS document and swapped in whole
//! ([`IssuerKeys::store`]); a check loads it once ([`IssuerKeys::load`]). Keys
//! that cannot verify signatures (encryption keys such as Keycloak's RSA-OAEP
//! key, symmetric keys, unknown types or curves) are skipped; a document with
//! no usable key is an error, and the previous set stays in use.

pub mod fetch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Notify, watch};

/// The family of a verification key, which fixes the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa,
    /// EC on P-256: ES256.
    EcP256,
    /// EC on P-384: ES384.
    EcP384,
    /// OKP on Ed25519: EdDSA.
    Ed25519,
}

/// One public key that can verify token signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The JWK's `kid`.
    pub kid: Option<String>,
    /// Its family.
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm is accepted.
    pub alg: Option<Algorithm>,
    /// The key, ready for `jsonwebtoken::crypto::verify`.
    pub key: DecodingKey,
}

/// The usable keys of one JWKS document.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// When the document was fetched, in seconds since the epoch.
    pub fetched_at: i64,
    /// How many keys of the document were skipped as unusable for signatures.
    pub skipped: usize,
    /// Identifies the usable keys: equal sets have equal fingerprints.
    pub fingerprint: u64,
}

/// A JWKS document that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    #[error("not a JWKS document: {0}")]
    NotJwks(#[from] serde_json::Error),
    /// No key in the document can verify signatures.
    #[error("no usable signing key among {total} keys")]
    NoUsableKey {
        /// How many keys the document had.
        total: usize,
    },
}

/// The current key set of one issuer, shared by all checks, and the
/// coordination of refetches when a token names a `kid` the set lacks.
///
/// Only the issuer's refresher task fetches ([`crate::keys::fetch`]); a check
/// that meets an unknown `kid` may wake it ([`IssuerKeys::request_refetch`]) and
/// wait for the fetch to complete. All checks that arrive meanwhile wait for
/// that same fetch, and such wake-ups happen at most once per interval.
pub struct IssuerKeys {
    current: ArcSwapOption<KeySet>,
    refetch: Mutex<RefetchState>,
    min_refetch_interval: Duration,
    wake: Notify,
    fetched: watch::Sender<u64>,
    /// Counts for metrics.
    pub stats: KeyStats,
}

/// Counters of fetches and unknown-kid events, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct KeyStats {
    fetches: [AtomicU64; FetchOutcome::ALL.len()],
    unknown_kid: [AtomicU64; 3],
}

/// How a fetch of keys ended, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// New keys stored.
    Ok,
    /// Connection, TLS, timeout or redirect failure.
    HttpError,
    /// A status other than 200.
    BadStatus,
    /// The document was too large.
    TooLarge,
    /// The document was not usable (not JSON, no usable key, bad discovery).
    Invalid,
    /// The discovery document named another issuer.
    IssuerMismatch,
}

impl FetchOutcome {
    /// Every outcome, in label order.
    pub const ALL: [FetchOutcome; 6] = [
        FetchOutcome::Ok,
        FetchOutcome::HttpError,
        FetchOutcome::BadStatus,
        FetchOutcome::TooLarge,
        FetchOutcome::Invalid,
        FetchOutcome::IssuerMismatch,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::HttpError => "http_error",
            FetchOutcome::BadStatus => "bad_status",
            FetchOutcome::TooLarge => "too_large",
            FetchOutcome::Invalid => "invalid",
            FetchOutcome::IssuerMismatch => "issuer_mismatch",
        }
    }
}

/// Labels of the unknown-kid counter, in index order of [`KeyStats::unknown_kid`].
pub const UNKNOWN_KID_OUTCOMES: [&str; 3] = ["refetch", "rate_limited", "remembered"];

impl KeyStats {
    /// Counts a fetch.
    pub fn count_fetch(&self, outcome: FetchOutcome) {
        if let Some(i) = FetchOutcome::ALL.iter().position(|o| *o == outcome) {
            self.fetches[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fetches so far, by outcome.
    pub fn fetches(&self) -> impl Iterator<Item = (FetchOutcome, u64)> + '_ {
        FetchOutcome::ALL
            .iter()
            .zip(&self.fetches)
            .map(|(o, n)| (*o, n.load(Ordering::Relaxed)))
    }

    /// Unknown-kid events so far, by outcome label.
    pub fn unknown_kid(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        UNKNOWN_KID_OUTCOMES
            .iter()
            .zip(&self.unknown_kid)
            .map(|(l, n)| (*l, n.load(Ordering::Relaxed)))
    }

    fn count_unknown_kid(&self, refetch: &Refetch) {
        let i = match refetch {
            Refetch::Pending(_) => 0,
            Refetch::RateLimited => 1,
            Refetch::Remembered => 2,
        };
        self.unknown_kid[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Unknown kids are remembered this long after a fetch did not find them.
pub const UNKNOWN_KID_MEMORY: Duration = Duration::from_secs(300);
/// At most this many unknown kids are remembered; the memory is cleared when full.
const UNKNOWN_KID_CAPACITY: usize = 1024;

#[derive(Default)]
struct RefetchState {
    in_flight: bool,
    last_requested: Option<Instant>,
    unknown: HashMap<String, Instant>,
}

/// What became of a request to refetch keys for an unknown `kid`.
#[derive(Debug)]
pub enum Refetch {
    /// A fetch is under way; the receiver changes when it completes.
    Pending(watch::Receiver<u64>),
    /// A recent fetch already did not find this `kid`.
    Remembered,
    /// An unknown-kid refetch happened less than the interval ago.
    RateLimited,
}
#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

/// The JWK members we read; others are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

// === impl VerifyingKey ===

impl VerifyingKey {
    /// Whether this key may verify a signature made with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        let family_fits = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        };
        family_fits && self.alg.is_none_or(|own| own == alg)
    }

    fn from_jwk(jwk: RawJwk) -> Option<Self> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        if let Some(ops) = &jwk.key_ops
            && !ops.iter().any(|op| op == "verify")
        {
            return None;
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some(name) => Some(parse_algorithm(name)?),
        };
        let (kind, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let key = DecodingKey::from_rsa_components(jwk.n.as_ref()?, jwk.e.as_ref()?);
                (KeyKind::Rsa, key.ok()?)
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let key = DecodingKey::from_ec_components(jwk.x.as_ref()?, jwk.y.as_ref()?);
                let kind = if crv == "P-256" {
                    KeyKind::EcP256
                } else {
                    KeyKind::EcP384
                };
                (kind, key.ok()?)
            }
            ("OKP", Some("Ed25519")) => (
                KeyKind::Ed25519,
                DecodingKey::from_ed_components(jwk.x.as_ref()?).ok()?,
            ),
            _ => return None,
        };
        let key = Self {
            kid: jwk.kid,
            kind,
            alg,
            key,
        };
        // A key whose own `alg` does not fit its type (RSA-OAEP, HS256 on an RSA key) is unusable.
        match key.alg {
            Some(alg) if !key.accepts(alg) => None,
            _ => Some(key),
        }
    }
}

/// The algorithms portcullis verifies, by JOSE name; `none` and HMAC are absent on purpose.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

// === impl KeySet ===

impl KeySet {
    /// Builds a key set from a JWKS document, skipping keys that cannot verify signatures.
    pub fn from_jwks(document: &[u8], fetched_at: SystemTime) -> Result<Self, JwksError> {
        let fetched_at = unix_seconds(fetched_at);
        let document: JwksDocument = serde_json::from_slice(document)?;
        let total = document.keys.len();
        let mut fingerprint = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut keys = Vec::new();
        for value in document.keys {
            let text = value.to_string();
            let Some(key) = serde_json::from_value::<RawJwk>(value)
                .ok()
                .and_then(VerifyingKey::from_jwk)
            else {
                continue;
            };
            fingerprint.update(text.as_bytes());
            fingerprint.update(b"\n");
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { total });
        }
        let digest = fingerprint.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        Ok(Self {
            skipped: total - keys.len(),
            keys,
            fetched_at,
            fingerprint: u64::from_le_bytes(first),
        })
    }

    /// The keys with this `kid` that may verify `alg`; with no `kid`, every key that may.
    ///
    /// Two keys may share a `kid` (a rotation that reused one); each is tried.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| (kid.is_none() || k.kid.as_deref() == kid) && k.accepts(alg))
    }

    /// Seconds since the document was fetched, at `now` (seconds since the epoch).
    pub fn age_seconds(&self, now: i64) -> i64 {
        now.saturating_sub(self.fetched_at).max(0)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty (never true for a set built by [`KeySet::from_jwks`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys, for logs.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    /// An empty holder; unknown-kid refetches at most once per `min_refetch_interval`.
    pub fn new(min_refetch_interval: Duration) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            refetch: Mutex::new(RefetchState::default()),
            min_refetch_interval,
            wake: Notify::new(),
            fetched: watch::Sender::new(0),
            stats: KeyStats::default(),
        }
    }

    /// The current key set, if one was ever loaded. Lock-free.
    pub fn load(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// The fingerprint of the current set, if one is loaded and not older
    /// than `max_age_seconds` at `now`. Lock-free and without reference counting.
    pub fn fresh_fingerprint(&self, now: i64, max_age_seconds: i64) -> Option<u64> {
        let current = self.current.load();
        let set = current.as_ref()?;
        (set.age_seconds(now) <= max_age_seconds).then_some(set.fingerprint)
    }

    /// Whether a key set is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Replaces the key set whole.
    pub fn store(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
    }

    /// Asks for a refetch because a token names `kid`, which the current set lacks.
    pub fn request_refetch(&self, kid: &str) -> Refetch {
        let refetch = self.decide_refetch(kid);
        self.stats.count_unknown_kid(&refetch);
        refetch
    }

    fn decide_refetch(&self, kid: &str) -> Refetch {
        let now = Instant::now();
        let Ok(mut state) = self.refetch.lock() else {
            return Refetch::RateLimited;
        };
        if state
            .unknown
            .get(kid)
            .is_some_and(|at| now.duration_since(*at) < UNKNOWN_KID_MEMORY)
        {
            return Refetch::Remembered;
        }
        let receiver = self.fetched.subscribe();
        if state.in_flight {
            return Refetch::Pending(receiver);
        }
        let recent = state
            .last_requested
            .is_some_and(|at| now.duration_since(at) < self.min_refetch_interval);
        if recent {
            return Refetch::RateLimited;
        }
        state.in_flight = true;
        state.last_requested = Some(now);
        self.wake.notify_one();
        Refetch::Pending(receiver)
    }

    /// Remembers that the latest fetch did not find `kid`.
    pub fn remember_unknown(&self, kid: &str) {
        if let Ok(mut state) = self.refetch.lock() {
            if state.unknown.len() >= UNKNOWN_KID_CAPACITY {
                state.unknown.clear();
            }
            state.unknown.insert(kid.to_owned(), Instant::now());
        }
    }

    /// For the refresher: completes when a check asks for a refetch.
    pub async fn refetch_requested(&self) {
        self.wake.notified().await;
    }

    /// For the refresher: a fetch is starting.
    pub fn fetch_started(&self) {
        if let Ok(mut state) = self.refetch.lock() {
            state.in_flight = true;
        }
    }

    /// For the refresher: a fetch ended, with a new key set or without.
    /// Checks waiting on it are woken either way.
    pub fn fetch_finished(&self, keys: Option<KeySet>) {
        if let Some(keys) = keys {
            self.store(keys);
        }
        if let Ok(mut state) = self.refetch.lock() {
            state.in_flight = false;
        }
        self.fetched.send_modify(|generation| *generation += 1);
    }
}

impl Default for IssuerKeys {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch of a system time (0 before the epoch).
pub fn unix_seconds(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
