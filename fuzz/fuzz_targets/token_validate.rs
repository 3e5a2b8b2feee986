//! Token parsing and verification on arbitrary input.
//!
//! Input: the first byte picks a mode, the rest is data.
//! - mode 0: the data is the whole token;
//! - mode 1: the data replaces the header of a token minted by the trusted issuer
//!   (base64url-encoded), its payload and signature kept;
//! - mode 2: the same for the payload;
//! - mode 3: the data is appended to a minted token;
//! - mode 4: the data, base64url-encoded, replaces the signature.
//!
//! Checks: `Validator::validate_now` never panics, on a strict and a lax
//! validator, at a "now" taken from the input; and nothing is accepted that the
//! trusted issuer did not sign: an accepted token's `header.payload` is exactly
//! that of a minted token, and its claims say so.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{ISSUER, NOW, minted_at_now, signing_input, validators};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // A small clock offset from the input: around the minted tokens' lifetime.
    let (offset, rest) = match rest.split_first() {
        Some((&b, r)) => (i64::from(i8::from_ne_bytes([b])) * 8, r),
        None => (0, rest),
    };
    let now = NOW + offset;
    let minted = minted_at_now();
    let base = &minted[usize::from(mode >> 3) % minted.len()];
    let parts: Vec<&str> = base.split('.').collect();
    let token = match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(rest), parts[1], parts[2]),
        2 => format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(rest), parts[2]),
        3 => format!("{base}{}", String::from_utf8_lossy(rest)),
        _ => format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(rest)),
    };
    for validator in validators() {
        if let Ok(verified) = validator.validate_now(&token, now) {
            let input = signing_input(&token).unwrap_or("");
            assert!(
                minted.iter().any(|m| signing_input(m) == Some(input)),
                "accepted a token the trusted issuer never signed: {token:?}"
            );
            assert_eq!(verified.token.claims.iss, ISSUER);
            assert!(verified.token.claims.exp.is_some_and(|exp| exp + 30 > now));
        }
    }
});
