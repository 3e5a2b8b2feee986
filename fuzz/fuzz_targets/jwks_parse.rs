//! JWKS parsing: `KeySet::from_jwks` on arbitrary bytes.
//!
//! Input: the first byte picks a mode: 0..=127 takes the rest as the document;
//! otherwise the rest is spliced into the `keys` array of the trusted issuer's
//! real JWKS (so the parser gets past the outer JSON often).
//!
//! Checks: never panics; a set that parses is not empty, and looking keys up by
//! each of its `kid`s and for every algorithm never panics.
#![no_main]

use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use portcullis::keys::KeySet;
use portcullis_fuzz::jwks_bytes;

const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let document: Vec<u8> = if mode < 128 {
        rest.to_vec()
    } else {
        // {"keys":[<real keys>, <input>]}
        let real = jwks_bytes();
        let close = real.iter().rposition(|&b| b == b']').unwrap_or(real.len());
        let mut doc = real[..close].to_vec();
        doc.push(b',');
        doc.extend_from_slice(rest);
        doc.extend_from_slice(&real[close..]);
        doc
    };
    let Ok(set) = KeySet::from_jwks(&document, SystemTime::now()) else {
        return;
    };
    assert!(!set.is_empty(), "an empty key set parsed");
    assert!(set.kids().len() <= set.len());
    let kids: Vec<String> = set.kids().into_iter().map(str::to_owned).collect();
    for alg in ALGORITHMS {
        let _ = set.candidates(None, *alg).count();
        for kid in &kids {
            let _ = set.candidates(Some(kid), *alg).count();
        }
    }
    let _ = format!("{set:?}");
});
