//! Signing keys per issuer: parsing JWKS documents (RFC 7517) and holding the
//! current key set where checks can read it without a lock.
//!
//! A key set is built whole from one JWKS document and swapped in whole
//! ([`IssuerKeys::store`]); a check loads it once ([`IssuerKeys::load`]). Keys
//! that cannot verify signatures (encryption keys such as Keycloak's RSA-OAEP
//! key, symmetric keys, unknown types or curves) are skipped; a document with
//! no usable key is an error, and the previous set stays in use.

pub mod fetch;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

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
    /// When the document was fetched.
    pub fetched_at: SystemTime,
    /// How many keys of the document were skipped as unusable for signatures.
    pub skipped: usize,
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

/// The current key set of one issuer, shared by all checks.
#[derive(Default)]
pub struct IssuerKeys {
    current: ArcSwapOption<KeySet>,
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
        let document: JwksDocument = serde_json::from_slice(document)?;
        let total = document.keys.len();
        let keys: Vec<VerifyingKey> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<RawJwk>(value).ok())
            .filter_map(VerifyingKey::from_jwk)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { total });
        }
        Ok(Self {
            skipped: total - keys.len(),
            keys,
            fetched_at,
        })
    }

    /// The keys with this `kid` that may verify `alg`.
    ///
    /// Two keys may share a `kid` (a rotation that reused one); each is tried.
    pub fn candidates<'a>(
        &'a self,
        kid: &'a str,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == Some(kid) && k.accepts(alg))
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
    /// The current key set, if one was ever loaded. Lock-free.
    pub fn load(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Whether a key set is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Replaces the key set whole.
    pub fn store(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
    }
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

#[cfg(test)]
mod tests;
