use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::*;
use crate::dev::issuer::{self as dev, DevIssuer};
use crate::keys::KeySet;

const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const ISSUER: &str = "https://sso.example.test/realms/acme";

fn issuer() -> &'static DevIssuer {
    static ISSUER_KEYS: OnceLock<DevIssuer> = OnceLock::new();
    ISSUER_KEYS.get_or_init(|| DevIssuer::generate("https://sso.example.test", "acme").unwrap())
}

fn stranger() -> &'static DevIssuer {
    static OTHER: OnceLock<DevIssuer> = OnceLock::new();
    OTHER.get_or_init(|| DevIssuer::generate("https://sso.example.test", "acme").unwrap())
}

fn loaded_keys(jwks: &Value) -> Arc<IssuerKeys> {
    let keys = Arc::new(IssuerKeys::default());
    keys.store(KeySet::from_jwks(jwks.to_string().as_bytes(), SystemTime::now()).unwrap());
    keys
}

fn trusted(audiences: &[&str], algorithms: &[Algorithm], keys: Arc<IssuerKeys>) -> TrustedIssuer {
    TrustedIssuer {
        name: Arc::from("acme"),
        issuer: ISSUER.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        algorithms: algorithms.to_vec(),
        clock_skew_seconds: 30,
        allow_missing_kid: false,
        token_types: vec!["Bearer".to_owned()],
        max_key_age_seconds: 86_400,
        unknown_kid_wait: std::time::Duration::from_millis(50),
        keys,
    }
}

fn validator() -> Validator {
    let keys = loaded_keys(&issuer().jwks());
    Validator::new(
        vec![trusted(&["orders-api"], &[Algorithm::RS256], keys)],
        16 * 1024,
    )
}

fn claims() -> Value {
    issuer().access_claims(&dev::USERS[0], &["orders-api", "account"], NOW)
}

fn signed(claims: &Value) -> String {
    issuer().sign_claims(claims).unwrap()
}

fn with(change: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    change(&mut c);
    signed(&c)
}

fn header(alg: &str, kid: Option<&str>) -> String {
    let mut h = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        h["kid"] = json!(kid);
    }
    b64(&h.to_string())
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn err(token: &str) -> TokenError {
    validator().validate_now(token, NOW).unwrap_err()
}

#[test]
fn a_keycloak_access_token_is_accepted_with_its_claims() {
    let v = validator();
    let token = signed(&claims());
    let verified = v.validate_now(&token, NOW).unwrap();
    assert_eq!(&*verified.issuer.name, "acme");
    assert_eq!(
        verified.token.claims.preferred_username.as_deref(),
        Some("alice")
    );
    assert_eq!(
        verified
            .token
            .claims
            .realm_access
            .clone()
            .unwrap()
            .roles
            .len(),
        3
    );
    assert_eq!(
        verified.token.claims.resource_access["orders-api"].roles,
        ["orders-writer"]
    );
}

#[test]
fn an_expired_token_is_refused_after_the_skew() {
    let exp = NOW + 300;
    let token = signed(&claims());
    let v = validator();
    assert!(v.validate_now(&token, exp + 29).is_ok());
    assert_eq!(
        v.validate_now(&token, exp + 30).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn a_token_without_exp_is_refused() {
    let token = with(|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(err(&token), TokenError::MissingExpiry);
}

#[test]
fn a_token_not_yet_valid_is_refused_beyond_the_skew() {
    let v = validator();
    let token = with(|c| c["nbf"] = json!(NOW + 100));
    assert_eq!(
        v.validate_now(&token, NOW).unwrap_err(),
        TokenError::NotYetValid
    );
    assert!(v.validate_now(&token, NOW + 71).is_ok());
}

#[test]
fn a_token_of_another_issuer_is_refused() {
    for iss in [
        "https://sso.example.test/realms/other",
        "http://keycloak.keycloak.svc.cluster.local:8080/realms/acme",
        "https://sso.example.test/realms/acme/",
    ] {
        assert_eq!(
            err(&with(|c| c["iss"] = json!(iss))),
            TokenError::UnknownIssuer,
            "{iss}"
        );
    }
    assert_eq!(
        err(&with(|c| c["iss"] = json!(["x"]))),
        TokenError::Malformed("iss is not a string")
    );
    let no_iss = with(|c| {
        c.as_object_mut().unwrap().remove("iss");
    });
    assert_eq!(err(&no_iss), TokenError::UnknownIssuer);
}

#[test]
fn audience_is_matched_as_string_or_array() {
    let v = validator();
    assert!(
        v.validate_now(&with(|c| c["aud"] = json!("orders-api")), NOW)
            .is_ok()
    );
    assert!(
        v.validate_now(&with(|c| c["aud"] = json!(["x", "orders-api"])), NOW)
            .is_ok()
    );
    assert_eq!(
        err(&with(|c| c["aud"] = json!("account"))),
        TokenError::WrongAudience
    );
    assert_eq!(
        err(&with(|c| c["aud"] = json!(["account", "billing-api"]))),
        TokenError::WrongAudience
    );
    let no_aud = with(|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_eq!(err(&no_aud), TokenError::WrongAudience);
    assert!(matches!(
        err(&with(|c| c["aud"] = json!(7))),
        TokenError::Malformed(_)
    ));
}

#[test]
fn audience_is_not_checked_when_none_is_configured() {
    let keys = loaded_keys(&issuer().jwks());
    let v = Validator::new(vec![trusted(&[], &[Algorithm::RS256], keys)], 16 * 1024);
    let no_aud = with(|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert!(v.validate_now(&no_aud, NOW).is_ok());
}

#[test]
fn id_refresh_and_untyped_tokens_are_refused() {
    for typ in [
        json!("ID"),
        json!("Refresh"),
        json!("Offline"),
        json!("Logout"),
        json!("bearer"),
    ] {
        let token = with(|c| c["typ"] = typ.clone());
        assert!(matches!(err(&token), TokenError::WrongType(_)), "{typ}");
    }
    let untyped = with(|c| {
        c.as_object_mut().unwrap().remove("typ");
    });
    assert_eq!(err(&untyped), TokenError::WrongType(None));
}

#[test]
fn alg_none_is_refused_in_any_casing() {
    let payload = b64(&claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = format!("{}.{payload}.", header(alg, Some(issuer().kid().as_str())));
        assert!(
            matches!(err(&token), TokenError::Malformed(_)),
            "empty signature part: {alg}"
        );
        let token = format!(
            "{}.{payload}.AAAA",
            header(alg, Some(issuer().kid().as_str()))
        );
        assert!(
            matches!(err(&token), TokenError::AlgorithmNotAllowed(_)),
            "{alg}"
        );
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // The classic key confusion: HS256 keyed with the RSA public key's bytes.
    let payload = b64(&claims().to_string());
    let input = format!(
        "{}.{payload}",
        header("HS256", Some(issuer().kid().as_str()))
    );
    let jwk = &issuer().jwks()["keys"][1];
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        jwk["n"].as_str().unwrap().as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(err(&token), TokenError::AlgorithmNotAllowed("HS256".into()));
}

#[test]
fn an_algorithm_off_the_issuer_list_is_refused() {
    let token = issuer()
        .sign(&json!({"alg": "RS384", "kid": issuer().kid()}), &claims())
        .unwrap();
    assert_eq!(err(&token), TokenError::AlgorithmNotAllowed("RS384".into()));
}

#[test]
fn a_token_signed_by_an_untrusted_key_with_a_known_kid_is_refused() {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": issuer().kid() });
    let token = stranger().sign(&header, &claims()).unwrap();
    assert_eq!(err(&token), TokenError::BadSignature);
}

#[test]
fn an_unknown_kid_is_refused() {
    let token = issuer()
        .sign(&json!({"alg": "RS256", "kid": "not-in-jwks"}), &claims())
        .unwrap();
    assert_eq!(err(&token), TokenError::UnknownKey);
}

#[test]
fn the_encryption_key_kid_is_not_a_signing_key() {
    let enc = &issuer().jwks()["keys"][0];
    assert_eq!(enc["use"], "enc");
    let token = issuer()
        .sign(&json!({"alg": "RS256", "kid": enc["kid"]}), &claims())
        .unwrap();
    assert_eq!(err(&token), TokenError::UnknownKey);
}

#[test]
fn a_token_without_kid_is_refused() {
    let token = issuer().sign(&json!({"alg": "RS256"}), &claims()).unwrap();
    assert_eq!(err(&token), TokenError::MissingKid);
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let token = signed(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["realm_access"]["roles"] = json!(["admin"]);
    let forged = b64(&forged.to_string());
    parts[1] = &forged;
    assert_eq!(err(&parts.join(".")), TokenError::BadSignature);
}

#[test]
fn a_critical_header_is_refused() {
    let token = issuer()
        .sign(
            &json!({"alg": "RS256", "kid": issuer().kid(), "crit": ["exp"]}),
            &claims(),
        )
        .unwrap();
    assert_eq!(err(&token), TokenError::CriticalHeader);
}

#[test]
fn keys_in_the_token_header_are_never_used() {
    // A header that carries its own key (jwk) and key URLs (jku, x5u): the
    // stranger's signature must still fail against the issuer's published key.
    let jwk = stranger().jwks()["keys"][1].clone();
    let header = json!({
        "alg": "RS256", "kid": issuer().kid(), "jwk": jwk,
        "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert",
    });
    let token = stranger().sign(&header, &claims()).unwrap();
    assert_eq!(err(&token), TokenError::BadSignature);
}

#[test]
fn non_canonical_base64url_is_refused() {
    let token = signed(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let variants = [
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{} .{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            parts[2].replace('-', "+").replace('_', "/")
        ),
    ];
    assert_ne!(
        variants[3], token,
        "a 2048-bit signature has '-' or '_' in base64url"
    );
    for token in variants {
        let e = err(&token);
        assert!(
            matches!(e, TokenError::Malformed(_) | TokenError::BadSignature),
            "{e:?}"
        );
    }
    // `e30` is `{}`; `e31` decodes to the same bytes with non-zero trailing bits.
    let loose = format!("e31.{}.{}", parts[1], parts[2]);
    assert_eq!(
        err(&loose),
        TokenError::Malformed("not canonical base64url")
    );
}

#[test]
fn tokens_with_the_wrong_number_of_parts_are_refused() {
    for token in ["", "a", "a.b", "a.b.c.d", "..", "a..c"] {
        assert!(matches!(err(token), TokenError::Malformed(_)), "{token:?}");
    }
}

#[test]
fn an_oversized_token_is_refused_before_decoding() {
    let v = Validator::new(vec![], 256);
    let token = "x".repeat(257);
    assert_eq!(
        v.validate_now(&token, NOW).unwrap_err(),
        TokenError::TooLarge { limit: 256 }
    );
}

#[test]
fn time_claims_of_the_wrong_type_are_refused() {
    for (claim, value) in [
        ("exp", json!("1767225900")),
        ("nbf", json!(true)),
        ("iat", json!({})),
        ("exp", json!(1.5e9)),
    ] {
        let token = with(|c| c[claim] = value.clone());
        assert!(
            matches!(err(&token), TokenError::Malformed(_)),
            "{claim}={value}"
        );
    }
}

#[test]
fn deeply_nested_json_is_refused_without_crashing() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let token = format!("{}.{}.AAAA", header("RS256", Some("k")), b64(&deep));
    let v = Validator::new(vec![], 1024 * 1024);
    assert!(matches!(
        v.validate_now(&token, NOW).unwrap_err(),
        TokenError::Malformed(_)
    ));
}

#[test]
fn keys_not_yet_loaded_refuse_with_keys_unavailable() {
    let empty = Arc::new(IssuerKeys::default());
    let v = Validator::new(
        vec![trusted(&["orders-api"], &[Algorithm::RS256], empty)],
        16 * 1024,
    );
    let e = v.validate_now(&signed(&claims()), NOW).unwrap_err();
    assert!(matches!(e, TokenError::KeysUnavailable { .. }));
}

#[test]
fn es256_tokens_verify_with_an_ec_key_and_rs256_cannot_pose_as_es256() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let v = Validator::new(
        vec![trusted(
            &["orders-api"],
            &[Algorithm::ES256, Algorithm::RS256],
            loaded_keys(&jwks),
        )],
        16 * 1024,
    );
    let input = format!(
        "{}.{}",
        header("ES256", Some("ec-1")),
        b64(&claims().to_string())
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    assert!(v.validate_now(&token, NOW).is_ok());

    let zeros = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(
        v.validate_now(&zeros, NOW).unwrap_err(),
        TokenError::BadSignature
    );

    let rsa_as_ec = issuer()
        .sign(&json!({"alg": "ES256", "kid": "ec-1"}), &claims())
        .unwrap();
    assert_eq!(
        v.validate_now(&rsa_as_ec, NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

fn validator_for(jwks: &Value, algorithms: &[Algorithm]) -> Validator {
    Validator::new(
        vec![trusted(&["orders-api"], algorithms, loaded_keys(jwks))],
        16 * 1024,
    )
}

#[test]
fn ps256_tokens_verify_with_an_rsa_key() {
    use aws_lc_rs::signature::RSA_PSS_SHA256;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    let jwks = json!({ "keys": [{
        "kty": "RSA", "kid": "ps", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    }]});
    let input = format!(
        "{}.{}",
        header("PS256", Some("ps")),
        b64(&claims().to_string())
    );
    let mut sig = vec![0; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    pair.sign(&RSA_PSS_SHA256, &rng, input.as_bytes(), &mut sig)
        .unwrap();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert!(
        validator_for(&jwks, &[Algorithm::PS256])
            .validate_now(&token, NOW)
            .is_ok()
    );
    let rs_only = validator_for(&jwks, &[Algorithm::RS256]);
    assert!(matches!(
        rs_only.validate_now(&token, NOW),
        Err(TokenError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn eddsa_tokens_verify_with_an_ed25519_key() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let pair = Ed25519KeyPair::generate().unwrap();
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    }]});
    let input = format!(
        "{}.{}",
        header("EdDSA", Some("ed")),
        b64(&claims().to_string())
    );
    let sig = pair.sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let v = validator_for(&jwks, &[Algorithm::EdDSA]);
    assert!(v.validate_now(&token, NOW).is_ok());
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(
        v.validate_now(&forged, NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn keys_past_their_maximum_age_are_unavailable() {
    let keys = Arc::new(IssuerKeys::default());
    let old = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(NOW).unwrap() - 100_000);
    keys.store(KeySet::from_jwks(issuer().jwks().to_string().as_bytes(), old).unwrap());
    let v = Validator::new(
        vec![trusted(&["orders-api"], &[Algorithm::RS256], keys)],
        16 * 1024,
    );
    let e = v.validate_now(&signed(&claims()), NOW).unwrap_err();
    assert!(matches!(e, TokenError::KeysUnavailable { .. }), "{e:?}");
}

#[test]
fn the_typ_check_follows_the_issuer_setting() {
    let mut untyped_issuer = trusted(
        &["orders-api"],
        &[Algorithm::RS256],
        loaded_keys(&issuer().jwks()),
    );
    untyped_issuer.token_types = Vec::new();
    let v = Validator::new(vec![untyped_issuer], 16 * 1024);
    let untyped = with(|c| {
        c.as_object_mut().unwrap().remove("typ");
    });
    assert!(
        v.validate_now(&untyped, NOW).is_ok(),
        "not checked when the list is empty"
    );
    assert!(
        validator().validate_now(&untyped, NOW).is_err(),
        "checked by default"
    );
}

#[test]
fn duplicate_claims_are_refused_even_when_signed() {
    let duplicated = claims().to_string().replacen('{', "{\"typ\":\"ID\",", 1);
    let header = json!({"alg": "RS256", "kid": issuer().kid()});
    let token = issuer().sign_raw(&header, &duplicated).unwrap();
    assert_eq!(
        err(&token),
        TokenError::Malformed("payload is not a JSON object")
    );
}

fn cached_validator(
    jwks: &Value,
    max_entries: usize,
    max_bytes: usize,
) -> (Validator, Arc<IssuerKeys>) {
    let keys = loaded_keys(jwks);
    let limits = cache::CacheLimits {
        max_entries,
        max_bytes,
    };
    let v = Validator::with_cache(
        vec![trusted(&["orders-api"], &[Algorithm::RS256], keys.clone())],
        16 * 1024,
        limits,
        Arc::default(),
    );
    (v, keys)
}

#[test]
fn a_cached_token_is_not_verified_again_but_still_expires() {
    let (v, _) = cached_validator(&issuer().jwks(), 100, 1 << 20);
    let token = signed(&claims());
    assert!(v.validate_now(&token, NOW).is_ok());
    assert!(v.validate_now(&token, NOW + 1).is_ok());
    let stats = v.cache().stats();
    assert_eq!(stats.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(v.cache().len(), 1);
    // exp is NOW + 300, skew 30: the entry is unusable from NOW + 330 on.
    assert_eq!(
        v.validate_now(&token, NOW + 330).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn cached_tokens_are_verified_again_when_the_keys_change() {
    let (v, keys) = cached_validator(&issuer().jwks(), 100, 1 << 20);
    let token = signed(&claims());
    assert!(v.validate_now(&token, NOW).is_ok());
    // The issuer's key is replaced by a stranger's: the cached token must fail now.
    keys.store(
        KeySet::from_jwks(stranger().jwks().to_string().as_bytes(), SystemTime::now()).unwrap(),
    );
    assert_eq!(
        v.validate_now(&token, NOW).unwrap_err(),
        TokenError::UnknownKey
    );
    // The same keys fetched again keep the entry usable.
    keys.store(
        KeySet::from_jwks(issuer().jwks().to_string().as_bytes(), SystemTime::now()).unwrap(),
    );
    assert!(v.validate_now(&token, NOW).is_ok());
    keys.store(
        KeySet::from_jwks(issuer().jwks().to_string().as_bytes(), SystemTime::now()).unwrap(),
    );
    let hits_before = v
        .cache()
        .stats()
        .hits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(v.validate_now(&token, NOW).is_ok());
    assert_eq!(
        v.cache()
            .stats()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        hits_before + 1
    );
}

#[test]
fn cached_tokens_do_not_outlive_the_maximum_key_age() {
    let (v, keys) = cached_validator(&issuer().jwks(), 100, 1 << 20);
    let token = signed(&claims());
    assert!(v.validate_now(&token, NOW).is_ok());
    let old = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(NOW).unwrap() - 100_000);
    keys.store(KeySet::from_jwks(issuer().jwks().to_string().as_bytes(), old).unwrap());
    assert!(matches!(
        v.validate_now(&token, NOW),
        Err(TokenError::KeysUnavailable { .. })
    ));
}

#[test]
fn a_flood_of_unique_tokens_keeps_the_cache_within_its_bounds() {
    let (v, _) = cached_validator(&issuer().jwks(), 50, 1 << 20);
    for i in 0..400 {
        let token = with(|c| c["jti"] = json!(format!("unique-{i}")));
        assert!(v.validate_now(&token, NOW).is_ok());
        assert!(v.cache().len() <= 51, "entries {}", v.cache().len());
    }
    assert!(
        v.cache()
            .stats()
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 349
    );
    let (small, _) = cached_validator(&issuer().jwks(), 10_000, 1 << 20);
    for i in 0..2000 {
        let token = with(|c| c["jti"] = json!(format!("bytes-{i}")));
        assert!(small.validate_now(&token, NOW).is_ok());
    }
    assert!(
        small.cache().bytes() <= (1 << 20) + 4096,
        "bytes {}",
        small.cache().bytes()
    );
}

#[test]
fn invalid_tokens_are_not_cached() {
    let (v, _) = cached_validator(&issuer().jwks(), 100, 1 << 20);
    let forged = stranger()
        .sign(&json!({ "alg": "RS256", "kid": issuer().kid() }), &claims())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            v.validate_now(&forged, NOW).unwrap_err(),
            TokenError::BadSignature
        );
    }
    assert!(v.cache().is_empty());
}

#[test]
fn concurrent_lookups_and_inserts_agree() {
    let (v, _) = cached_validator(&issuer().jwks(), 64, 1 << 20);
    let tokens: Vec<String> = (0..32).map(|i| with(|c| c["jti"] = json!(i))).collect();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (v, tokens) = (&v, &tokens);
            scope.spawn(move || {
                for round in 0..50 {
                    let token = &tokens[(t * 7 + round) % tokens.len()];
                    let verified = v.validate_now(token, NOW).unwrap();
                    assert_eq!(
                        verified.token.claims.preferred_username.as_deref(),
                        Some("alice")
                    );
                }
            });
        }
    });
    assert!(v.cache().len() <= 32);
}

/// Signs `claims()` as JSON text after `edit`, which may write what a `Value` cannot.
fn signed_raw(edit: impl FnOnce(String) -> String) -> String {
    let header = json!({"alg": "RS256", "kid": issuer().kid()});
    issuer()
        .sign_raw(&header, &edit(claims().to_string()))
        .unwrap()
}

const NOT_AN_OBJECT: TokenError = TokenError::Malformed("payload is not a JSON object");

#[test]
fn duplicate_names_deep_in_the_payload_are_refused_even_when_signed() {
    let depth_two = signed_raw(|c| {
        c.replacen(
            "\"realm_access\":{",
            "\"realm_access\":{\"roles\":[\"admin\"],",
            1,
        )
    });
    assert_eq!(err(&depth_two), NOT_AN_OBJECT);
    let depth_three = signed_raw(|c| {
        c.replacen(
            "\"orders-api\":{",
            "\"orders-api\":{\"roles\":[\"admin\"],",
            1,
        )
    });
    assert_eq!(err(&depth_three), NOT_AN_OBJECT);
    let in_an_array = signed_raw(|c| c.replacen('{', "{\"x\":[1,{\"a\":1,\"a\":2}],", 1));
    assert_eq!(err(&in_an_array), NOT_AN_OBJECT);
}

#[test]
fn a_client_named_twice_in_resource_access_is_refused_even_when_signed() {
    // `resource_access` is read into a map, which would keep the last silently.
    let admin = |client: &str| {
        format!("\"resource_access\":{{\"{client}\":{{\"roles\":[\"orders-admin\"]}},")
    };
    let twice = signed_raw(|c| {
        assert!(c.contains("\"orders-api\":{\"roles\""));
        c.replacen("\"resource_access\":{", &admin("orders-api"), 1)
    });
    assert_eq!(err(&twice), NOT_AN_OBJECT);
    let another = signed_raw(|c| c.replacen("\"resource_access\":{", &admin("billing-api"), 1));
    let v = validator();
    let verified = v.validate_now(&another, NOW).unwrap();
    assert_eq!(
        verified.token.claims.resource_access["billing-api"].roles,
        ["orders-admin"]
    );
}

#[test]
fn names_written_with_escapes_that_decode_to_the_same_name_are_duplicates() {
    let top = signed_raw(|c| c.replacen('{', "{\"\\u0074yp\":\"ID\",", 1));
    assert_eq!(err(&top), NOT_AN_OBJECT);
    let nested = signed_raw(|c| {
        c.replacen(
            "\"realm_access\":{",
            "\"realm_access\":{\"r\\u006fles\":[\"admin\"],",
            1,
        )
    });
    assert_eq!(err(&nested), NOT_AN_OBJECT);
    // The same escapes without a twin are read as the names they spell.
    let escaped =
        signed_raw(|c| c.replacen("\"preferred_username\"", "\"preferred\\u005fusername\"", 1));
    let v = validator();
    let verified = v.validate_now(&escaped, NOW).unwrap();
    assert_eq!(
        verified.token.claims.preferred_username.as_deref(),
        Some("alice")
    );
}

#[test]
fn duplicate_names_deep_in_the_header_are_refused() {
    let jwk = json!({ "kty": "RSA", "use": "sig" });
    let header = json!({ "alg": "RS256", "kid": issuer().kid(), "jwk": jwk });
    let token = issuer().sign(&header, &claims()).unwrap();
    assert!(validator().validate_now(&token, NOW).is_ok());
    let (_, rest) = token.split_once('.').unwrap();
    let kid = issuer().kid();
    for raw in [
        format!(r#"{{"alg":"RS256","kid":"{kid}","jwk":{{"kty":"RSA","use":"sig","kty":"EC"}}}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","jwk":{{"x":[{{"a":1,"a":2}}]}}}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","\u0061lg":"none"}}"#),
    ] {
        let token = format!("{}.{rest}", b64(&raw));
        assert_eq!(
            err(&token),
            TokenError::Malformed("header is not a JSON object"),
            "{raw}"
        );
    }
}

#[test]
fn a_payload_with_ten_thousand_distinct_claims_is_accepted() {
    let mut c = claims();
    for i in 0..10_000 {
        c[format!("claim-{i}")] = json!(i);
    }
    let token = signed(&c);
    let keys = loaded_keys(&issuer().jwks());
    let v = Validator::new(
        vec![trusted(&["orders-api"], &[Algorithm::RS256], keys)],
        1024 * 1024,
    );
    let verified = v.validate_now(&token, NOW).unwrap();
    assert_eq!(verified.token.payload.object()["claim-9999"], 9999);
    let twice = issuer()
        .sign_raw(
            &json!({"alg": "RS256", "kid": issuer().kid()}),
            &c.to_string().replacen('{', "{\"claim-5000\":0,", 1),
        )
        .unwrap();
    assert_eq!(v.validate_now(&twice, NOW).unwrap_err(), NOT_AN_OBJECT);
}

#[test]
fn the_payload_is_read_on_first_use_and_holds_every_signed_claim_for_the_policy() {
    use crate::config::RequireConfig;
    use crate::policy::require::{Requirement, TokenView};

    let mut c = claims();
    c["groups"] = json!(["/eng/backend"]);
    c["address"] = json!({ "country": "NL" });
    let v = validator();
    let verified = v.validate_now(&signed(&c), NOW).unwrap();
    let payload = &verified.token.payload;
    assert!(payload.tree.get().is_none(), "read before it was asked for");
    assert_eq!(&Value::Object(payload.object().clone()), &c);

    let evaluate = |require: &str| {
        let config: RequireConfig = serde_saphyr::from_str(require).unwrap();
        let view = TokenView {
            claims: &verified.token.claims,
            payload,
        };
        Requirement::compile(&config)
            .evaluate(view, None)
            .map_err(|unmet| unmet.code)
    };
    assert_eq!(
        evaluate("{ groups: [/eng/backend], claims: [{ claim: address.country, equals: NL }] }"),
        Ok(())
    );
    assert_eq!(
        evaluate("{ claims: [{ claim: preferred_username, equals: alice }] }"),
        Ok(())
    );
    assert_eq!(
        evaluate("{ claims: [{ claim: address.country, equals: DE }] }"),
        Err("claim_not_met")
    );
    assert_eq!(evaluate("{ groups: [/eng] }"), Err("missing_group"));
}

#[test]
fn the_audience_is_null_a_string_or_an_array_of_strings_and_nothing_else() {
    let read = |json: &str| serde_json::from_str::<Audience>(json);
    assert!(matches!(read("null"), Ok(Audience::None)));
    assert!(matches!(read(r#""api""#), Ok(Audience::One(a)) if a == "api"));
    assert!(matches!(read(r#"["a","b"]"#), Ok(Audience::Many(a)) if a == ["a", "b"]));
    assert!(matches!(read("[]"), Ok(Audience::Many(a)) if a.is_empty()));
    for wrong in ["7", "true", "{}", r#"{"a":"b"}"#, r#"["a",1]"#, "[null]"] {
        assert!(read(wrong).is_err(), "{wrong}");
    }
    assert_eq!(
        err(&with(|c| c["aud"] = Value::Null)),
        TokenError::WrongAudience
    );
}

const WRONG_TYPE: TokenError = TokenError::Malformed("claims of the wrong type");

/// Known claims of a type `Claims` cannot hold, each well-formed JSON.
fn wrong_typed_claims() -> Vec<(&'static str, Value)> {
    vec![
        ("sub", json!(1)),
        ("aud", json!(7)),
        ("aud", json!(["a", null])),
        ("typ", json!(["Bearer"])),
        ("scope", json!({"a": "b"})),
        ("preferred_username", json!(true)),
        ("azp", json!(1.5)),
        ("realm_access", json!({"roles": "admin"})),
        ("realm_access", json!("admin")),
        ("realm_access", json!([["a"], ["b"]])),
        ("resource_access", Value::Null),
        ("resource_access", json!([])),
        ("resource_access", json!({"orders-api": null})),
        ("resource_access", json!({"orders-api": {"roles": [1]}})),
        ("iat", json!("1767225600")),
    ]
}

#[test]
fn a_known_claim_of_the_wrong_type_with_a_valid_signature_is_refused_as_the_wrong_type() {
    for (claim, value) in wrong_typed_claims() {
        let token = with(|c| c[claim] = value.clone());
        assert_eq!(err(&token), WRONG_TYPE, "{claim}={value}");
    }
}

#[test]
fn a_known_claim_of_the_wrong_type_with_a_forged_signature_is_a_bad_signature() {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": issuer().kid() });
    for (claim, value) in wrong_typed_claims() {
        let mut c = claims();
        c[claim] = value.clone();
        let token = stranger().sign(&header, &c).unwrap();
        assert_eq!(err(&token), TokenError::BadSignature, "{claim}={value}");
    }
}

#[test]
fn roles_written_as_an_array_of_zero_or_one_role_list_are_read_as_serde_reads_a_struct() {
    let v = validator();
    let empty = with(|c| c["realm_access"] = json!([]));
    let verified = v.validate_now(&empty, NOW).unwrap();
    assert!(
        verified
            .token
            .claims
            .realm_access
            .clone()
            .unwrap()
            .roles
            .is_empty()
    );
    let one = with(|c| c["resource_access"]["orders-api"] = json!([["orders-reader"]]));
    let verified = v.validate_now(&one, NOW).unwrap();
    assert_eq!(
        verified.token.claims.resource_access["orders-api"].roles,
        ["orders-reader"]
    );
    let null = with(|c| c["realm_access"] = Value::Null);
    let verified = v.validate_now(&null, NOW).unwrap();
    assert!(verified.token.claims.realm_access.is_none());
    let other = with(|c| c["realm_access"] = json!({"roles": ["r"], "x": {"y": 1}}));
    let verified = v.validate_now(&other, NOW).unwrap();
    assert_eq!(
        verified.token.claims.realm_access.clone().unwrap().roles,
        ["r"]
    );
}

#[test]
fn duplicate_names_inside_known_claims_are_refused_before_their_types_are_checked() {
    for edit in [
        // Inside `realm_access`, beside `roles`.
        ("\"realm_access\":{", "\"realm_access\":{\"x\":1,\"x\":2,"),
        // Inside one client of `resource_access`.
        ("\"orders-api\":{", "\"orders-api\":{\"x\":[],\"x\":1,"),
        // Two clients of the same name.
        (
            "\"resource_access\":{",
            "\"resource_access\":{\"account\":{},",
        ),
        // Inside a claim of the wrong type.
        ("{", "{\"exp\":{\"a\":1,\"a\":2},"),
        ("{", "{\"aud\":[{\"a\":1,\"a\":2}],"),
        ("{", "{\"sub\":{\"b\":{\"c\":1,\"c\":2}},"),
    ] {
        let token = signed_raw(|c| {
            assert!(c.contains(edit.0), "{}", edit.0);
            let c = if edit.0 == "{" {
                // The claim is moved to the front: remove its other copy.
                let mut v: Value = serde_json::from_str(&c).unwrap();
                let name = edit.1[2..].split('"').next().unwrap().to_owned();
                v.as_object_mut().unwrap().remove(&name);
                v.to_string()
            } else {
                c
            };
            c.replacen(edit.0, edit.1, 1)
        });
        assert_eq!(err(&token), NOT_AN_OBJECT, "{}", edit.1);
    }
}

#[test]
fn time_claims_are_integers_in_the_range_of_i64_and_nothing_else() {
    // Floats, even integral ones, and integers beyond i64 are of the wrong type.
    for raw in [
        "1.5e9",
        "1767225900.0",
        "1.7672259e9",
        "9223372036854775808",
        "18446744073709551615",
        "-9223372036854775809",
        "-0",
    ] {
        let token = signed_raw(|c| {
            let exp = format!("\"exp\":{}", NOW + 300);
            assert!(c.contains(&exp));
            c.replacen(&exp, &format!("\"exp\":{raw}"), 1)
        });
        assert_eq!(err(&token), WRONG_TYPE, "exp={raw}");
    }
    // A number too large for a float is not JSON that can be read at all.
    let token = signed_raw(|c| c.replacen('{', "{\"x\":1,\"nbf\":1e400,", 1));
    assert_eq!(err(&token), NOT_AN_OBJECT);
    // The extremes of i64 are read (and saturate in the checks).
    let v = validator();
    let far = with(|c| {
        c["exp"] = json!(i64::MAX);
        c["nbf"] = json!(i64::MIN);
        c["iat"] = json!(0);
    });
    let verified = v.validate_now(&far, NOW).unwrap();
    assert_eq!(verified.token.claims.exp, Some(i64::MAX));
    assert_eq!(verified.token.claims.nbf, Some(i64::MIN));
    let null = with(|c| c["nbf"] = Value::Null);
    assert!(
        v.validate_now(&null, NOW)
            .unwrap()
            .token
            .claims
            .nbf
            .is_none()
    );
    assert_eq!(
        err(&with(|c| c["exp"] = Value::Null)),
        TokenError::MissingExpiry
    );
}
