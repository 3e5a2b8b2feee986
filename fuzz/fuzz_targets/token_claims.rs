//! Claim checks on tokens the trusted issuer really signed, with claims from
//! the input: as if a Keycloak mapper put anything at all into a token.
//!
//! Input: arbitrary; the payload text is signed as is (it may be malformed
//! JSON), under a header chosen from a few shapes.
//!
//! Checks: `Validator::validate_now` never panics; when the strict validator
//! accepts, `iss` is the issuer, `exp` is present and not past (with 30 s skew),
//! `nbf`, if any, is not in the future, `typ` is `Bearer` and `aud` names the
//! configured audience; the lax validator accepts whatever the strict one does
//! (it only checks less).
//!
//! The verified-token cache: a strict validator with the cache on (fresh for
//! each input, with its own key holder) validates the token at `now` and again
//! later; each answer must be the uncached validator's at the same time (a hit
//! must not outlive `exp`). After the key set is replaced by one without the
//! signing key, the cached token must be refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portcullis::token::Audience;
use std::sync::Arc;
use std::time::SystemTime;

use portcullis::keys::{IssuerKeys, KeySet};
use portcullis_fuzz::{
    AUDIENCE, ISSUER, NOW, cached_strict_validator, issuer, jwks_bytes, stranger_jwks, validators,
};
use serde_json::json;

#[derive(Debug, Arbitrary)]
enum Header {
    Keycloak,
    NoKid,
    OtherKid(String),
    Alg(String),
    Crit,
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Payload {
    /// A Keycloak-shaped payload with one claim replaced by JSON from the input.
    Tweak { claim: Claim, value: String },
    /// Any text.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Claim {
    Iss,
    Exp,
    Nbf,
    Iat,
    Aud,
    Typ,
    Sub,
    Azp,
    Scope,
    RealmAccess,
    ResourceAccess,
    PreferredUsername,
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    header: Header,
    payload: Payload,
    clock: i16,
    later: u16,
    rotate: bool,
}

fuzz_target!(|input: Input| {
    let dev = issuer();
    let header = match &input.header {
        Header::Keycloak => json!({ "alg": "RS256", "typ": "JWT", "kid": dev.kid() }),
        Header::NoKid => json!({ "alg": "RS256", "typ": "JWT" }),
        Header::OtherKid(kid) => json!({ "alg": "RS256", "kid": kid }),
        Header::Alg(alg) => json!({ "alg": alg, "kid": dev.kid() }),
        Header::Crit => json!({ "alg": "RS256", "kid": dev.kid(), "crit": ["exp"] }),
        Header::Raw(text) => serde_json::from_str(text).unwrap_or(json!(text)),
    };
    let payload = match &input.payload {
        Payload::Tweak { claim, value } => {
            let user = &portcullis::dev::issuer::USERS[0];
            let mut claims = dev.access_claims(user, &[AUDIENCE, "account"], NOW);
            let value = serde_json::from_str(value).unwrap_or(json!(value));
            let name = match claim {
                Claim::Iss => "iss",
                Claim::Exp => "exp",
                Claim::Nbf => "nbf",
                Claim::Iat => "iat",
                Claim::Aud => "aud",
                Claim::Typ => "typ",
                Claim::Sub => "sub",
                Claim::Azp => "azp",
                Claim::Scope => "scope",
                Claim::RealmAccess => "realm_access",
                Claim::ResourceAccess => "resource_access",
                Claim::PreferredUsername => "preferred_username",
                Claim::Other(name) => name.as_str(),
            };
            claims[name] = value;
            claims.to_string()
        }
        Payload::Raw(text) => text.clone(),
    };
    let Ok(token) = dev.sign_raw(&header, &payload) else {
        return;
    };
    let now = NOW + i64::from(input.clock);
    let [strict, lax] = validators();
    let strict_ok = match strict.validate_now(&token, now) {
        Ok(v) => {
            let c = &v.token.claims;
            assert_eq!(c.iss, ISSUER);
            let exp = c.exp.expect("accepted without exp");
            assert!(
                exp.saturating_add(30) > now,
                "accepted expired: exp {exp}, now {now}"
            );
            if let Some(nbf) = c.nbf {
                assert!(
                    nbf.saturating_sub(30) <= now,
                    "accepted before nbf {nbf}, now {now}"
                );
            }
            assert_eq!(c.typ.as_deref(), Some("Bearer"), "accepted typ {:?}", c.typ);
            let aud_ok = match &c.aud {
                Audience::None => false,
                Audience::One(a) => a == AUDIENCE,
                Audience::Many(list) => list.iter().any(|a| a == AUDIENCE),
            };
            assert!(aud_ok, "accepted aud {:?}", c.aud);
            true
        }
        Err(_) => false,
    };
    let lax_ok = lax.validate_now(&token, now).is_ok();
    if strict_ok {
        assert!(
            lax_ok,
            "the strict validator accepted what the lax one refused"
        );
    }

    // The cache agrees with no cache, at `now` (a miss) and later (a hit).
    let keys = Arc::new(IssuerKeys::default());
    keys.store(KeySet::from_jwks(jwks_bytes(), SystemTime::now()).expect("jwks"));
    let cached = cached_strict_validator(keys.clone(), 4);
    let later = now + i64::from(input.later);
    for at in [now, later, later] {
        let with_cache = cached.validate_now(&token, at).map(|_| ());
        let without = strict.validate_now(&token, at).map(|_| ());
        assert_eq!(
            with_cache, without,
            "cache and no cache disagree at {at} (first at {now})"
        );
    }
    if input.rotate {
        keys.store(KeySet::from_jwks(stranger_jwks(), SystemTime::now()).expect("jwks"));
        assert!(
            cached.validate_now(&token, later).is_err(),
            "a cached token outlived the key that signed it"
        );
    }
});
