use serde_json::json;

use super::*;
use crate::dev::issuer::DevIssuer;

fn parse(doc: serde_json::Value) -> Result<KeySet, JwksError> {
    KeySet::from_jwks(doc.to_string().as_bytes(), SystemTime::now())
}

fn rsa_jwk() -> serde_json::Value {
    let issuer = DevIssuer::generate("http://127.0.0.1", "k").unwrap();
    issuer.jwks()["keys"][1].clone()
}

#[test]
fn keycloak_jwks_keeps_the_signing_key_and_skips_the_encryption_key() {
    let issuer = DevIssuer::generate("http://127.0.0.1", "k").unwrap();
    let set = parse(issuer.jwks().clone()).unwrap();
    assert_eq!((set.len(), set.skipped), (1, 1));
    assert_eq!(set.kids(), vec![issuer.kid()]);
    assert_eq!(
        set.candidates(Some(issuer.kid().as_str()), Algorithm::RS256)
            .count(),
        1
    );
    assert_eq!(
        set.candidates(Some(issuer.kid().as_str()), Algorithm::ES256)
            .count(),
        0
    );
}

#[test]
fn a_jwks_with_only_an_encryption_key_is_refused() {
    let mut enc = rsa_jwk();
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    assert!(matches!(
        parse(json!({"keys": [enc]})),
        Err(JwksError::NoUsableKey { total: 1 })
    ));
}

#[test]
fn documents_that_are_not_jwks_are_refused() {
    for doc in [&b"not json"[..], b"{}", b"{\"keys\": {}}", b"[]", b""] {
        assert!(matches!(
            KeySet::from_jwks(doc, SystemTime::now()),
            Err(JwksError::NotJwks(_))
        ));
    }
    assert!(matches!(
        parse(json!({"keys": []})),
        Err(JwksError::NoUsableKey { total: 0 })
    ));
}

#[test]
fn symmetric_unknown_and_broken_keys_are_skipped() {
    let good = rsa_jwk();
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "AKP", "kid": "pq", "alg": "ML-DSA-65", "pub": "AAAA"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {"kty": 7},
        "not an object",
        {"kty": "RSA", "kid": "verify-ops-missing", "key_ops": ["encrypt"], "n": good["n"], "e": good["e"]},
        good,
    ]});
    let set = parse(doc).unwrap();
    assert_eq!((set.len(), set.skipped), (1, 7));
}

#[test]
fn a_key_whose_alg_does_not_fit_its_type_is_skipped() {
    let mut key = rsa_jwk();
    key["alg"] = json!("ES256");
    let mut hmac = rsa_jwk();
    hmac["alg"] = json!("HS256");
    assert!(matches!(
        parse(json!({"keys": [key, hmac]})),
        Err(JwksError::NoUsableKey { total: 2 })
    ));
}

#[test]
fn an_rsa_key_without_alg_accepts_rsa_algorithms_only() {
    let mut key = rsa_jwk();
    key.as_object_mut().unwrap().remove("alg");
    let set = parse(json!({"keys": [key.clone()]})).unwrap();
    let kid = key["kid"].as_str().unwrap();
    for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
        assert_eq!(set.candidates(Some(kid), alg).count(), 1, "{alg:?}");
    }
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
        assert_eq!(set.candidates(Some(kid), alg).count(), 0, "{alg:?}");
    }
}

#[test]
fn an_rsa_key_with_alg_accepts_only_that_algorithm() {
    let key = rsa_jwk();
    let set = parse(json!({"keys": [key.clone()]})).unwrap();
    let kid = key["kid"].as_str().unwrap();
    assert_eq!(set.candidates(Some(kid), Algorithm::RS256).count(), 1);
    assert_eq!(set.candidates(Some(kid), Algorithm::PS256).count(), 0);
}

#[test]
fn ec_and_okp_keys_are_read_by_curve() {
    let doc = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    ]});
    let set = parse(doc).unwrap();
    assert_eq!(set.candidates(Some("ec"), Algorithm::ES256).count(), 1);
    assert_eq!(set.candidates(Some("ec"), Algorithm::ES384).count(), 0);
    assert_eq!(set.candidates(Some("ed"), Algorithm::EdDSA).count(), 1);
}

#[test]
fn two_keys_with_one_kid_are_both_candidates() {
    let a = rsa_jwk();
    let mut b = rsa_jwk();
    b["kid"] = a["kid"].clone();
    let set = parse(json!({"keys": [a.clone(), b]})).unwrap();
    assert_eq!(
        set.candidates(a["kid"].as_str(), Algorithm::RS256).count(),
        2
    );
}

#[test]
fn issuer_keys_are_empty_until_stored_and_then_swapped_whole() {
    let holder = IssuerKeys::default();
    assert!(!holder.is_loaded());
    assert!(holder.load().is_none());
    holder.store(parse(json!({"keys": [rsa_jwk()]})).unwrap());
    let first = holder.load().unwrap();
    holder.store(parse(json!({"keys": [rsa_jwk(), rsa_jwk()]})).unwrap());
    assert_eq!(first.len(), 1, "a loaded set never changes");
    assert_eq!(holder.load().unwrap().len(), 2);
}
