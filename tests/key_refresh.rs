//! Keys over time: rotation, unknown kids, outages, against JWKS servers
//! started here on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use portcullis::config::Config;
use portcullis::dev::issuer::{self, DevIssuer};
use portcullis::dev::stack::unix_now;
use portcullis::keys::IssuerKeys;
use portcullis::keys::fetch::{KeySource, refresh_forever};
use portcullis::token::{TokenError, TrustedIssuer, Validator};
use serde_json::json;

/// A JWKS server for a development issuer that counts its fetches and can be taken down.
struct Provider {
    issuer: Arc<DevIssuer>,
    fetches: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
    validator: Validator,
    keys: Arc<IssuerKeys>,
}

async fn provider(extra: &str) -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = Arc::new(DevIssuer::generate(&format!("http://{addr}"), "r").unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(true));
    let router = Router::new().route(
        "/jwks",
        get({
            let (issuer, fetches, up) = (issuer.clone(), fetches.clone(), up.clone());
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    Ok(axum::Json(issuer.jwks()))
                } else {
                    Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let yaml = format!(
        "issuers:\n  - {{ name: r, issuer: '{}', jwks_url: 'http://{addr}/jwks', audiences: [api]{extra} }}\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }} }}\n",
        issuer.issuer()
    );
    let config = Config::from_yaml(&yaml, "test").unwrap();
    let issuer_config = &config.issuers[0].value;
    let interval = Duration::from_secs(issuer_config.unknown_kid_refetch_interval_seconds);
    let keys = Arc::new(IssuerKeys::new(interval));
    let source = KeySource::from_config(issuer_config);
    tokio::spawn(refresh_forever(
        source.clone(),
        keys.clone(),
        source.http_client().unwrap(),
    ));
    for _ in 0..200 {
        if keys.is_loaded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(keys.is_loaded(), "keys did not load");
    let trusted = TrustedIssuer::from_config(issuer_config, keys.clone());
    Provider {
        validator: Validator::new(vec![trusted], config.max_token_bytes),
        issuer,
        fetches,
        up,
        keys,
    }
}

fn token(issuer: &DevIssuer) -> String {
    issuer
        .access_token(issuer::user("alice").unwrap(), &["api"], unix_now())
        .unwrap()
}

fn token_with_kid(issuer: &DevIssuer, kid: &str) -> String {
    let claims = issuer.access_claims(issuer::user("alice").unwrap(), &["api"], unix_now());
    issuer
        .sign(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
            &claims,
        )
        .unwrap()
}

#[tokio::test]
async fn a_rotated_key_is_accepted_on_the_first_token_it_signs() {
    let p = provider("").await;
    assert!(
        p.validator
            .validate(&token(&p.issuer), unix_now())
            .await
            .is_ok()
    );
    let before = p.fetches.load(Ordering::SeqCst);

    let old = token(&p.issuer);
    p.issuer.rotate().unwrap();
    let new = token(&p.issuer);
    assert!(
        p.validator.validate(&new, unix_now()).await.is_ok(),
        "new key on first use"
    );
    assert_eq!(p.fetches.load(Ordering::SeqCst), before + 1, "one refetch");
    assert!(
        p.validator.validate(&old, unix_now()).await.is_ok(),
        "the passive key still verifies"
    );
}

#[tokio::test]
async fn a_burst_of_unknown_kids_costs_at_most_one_fetch() {
    let p = provider("").await;
    let before = p.fetches.load(Ordering::SeqCst);
    let validator = Arc::new(p.validator);
    let issuer = p.issuer.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (validator, token) = (
            validator.clone(),
            token_with_kid(&issuer, &format!("random-{i}")),
        );
        tasks.spawn(async move { validator.validate(&token, unix_now()).await.map(|_| ()) });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), Err(TokenError::UnknownKey));
    }
    let after_burst = p.fetches.load(Ordering::SeqCst);
    assert!(
        after_burst - before <= 1,
        "{} fetches for 300 unknown kids",
        after_burst - before
    );

    for i in 0..300 {
        let token = token_with_kid(&issuer, &format!("second-{i}"));
        assert_eq!(
            validator.validate(&token, unix_now()).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        after_burst,
        "rate limited: no more fetches"
    );
    let counted: Vec<_> = p.keys.stats.unknown_kid().collect();
    assert!(
        counted
            .iter()
            .any(|(outcome, n)| *outcome == "rate_limited" && *n >= 300),
        "{counted:?}"
    );
}

#[tokio::test]
async fn a_provider_down_after_start_leaves_the_last_good_keys_in_use() {
    let p = provider("").await;
    p.up.store(false, Ordering::SeqCst);
    let before = p.fetches.load(Ordering::SeqCst);
    // An unknown kid forces a fetch now, which fails.
    let unknown = token_with_kid(&p.issuer, "not-there");
    assert_eq!(
        p.validator
            .validate(&unknown, unix_now())
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(p.fetches.load(Ordering::SeqCst), before + 1);
    assert!(
        p.validator
            .validate(&token(&p.issuer), unix_now())
            .await
            .is_ok(),
        "old keys still used"
    );
    let failed: u64 = p
        .keys
        .stats
        .fetches()
        .filter(|(o, _)| o.label() == "bad_status")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn keys_older_than_the_maximum_age_are_not_used() {
    let p = provider(", max_key_age_seconds: 300").await;
    let later = unix_now() + 301;
    let claims = p
        .issuer
        .access_claims(issuer::user("alice").unwrap(), &["api"], later);
    let token = p.issuer.sign_claims(&claims).unwrap();
    let err = p.validator.validate(&token, later).await.unwrap_err();
    assert!(matches!(err, TokenError::KeysUnavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_token_without_kid_is_refused_unless_the_issuer_allows_it() {
    let claims =
        |i: &DevIssuer| i.access_claims(issuer::user("alice").unwrap(), &["api"], unix_now());
    let strict = provider("").await;
    let no_kid = strict
        .issuer
        .sign(&json!({ "alg": "RS256" }), &claims(&strict.issuer))
        .unwrap();
    assert_eq!(
        strict
            .validator
            .validate(&no_kid, unix_now())
            .await
            .unwrap_err(),
        TokenError::MissingKid
    );

    let lenient = provider(", allow_missing_kid: true").await;
    let no_kid = lenient
        .issuer
        .sign(&json!({ "alg": "RS256" }), &claims(&lenient.issuer))
        .unwrap();
    assert!(
        lenient
            .validator
            .validate(&no_kid, unix_now())
            .await
            .is_ok()
    );
}
