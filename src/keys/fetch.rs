//! Fetching an issuer's keys over HTTP: OIDC discovery (OpenID Connect
//! Discovery 1.0 §4) or a JWKS URL, then the JWKS document.
//!
//! Fetches are bounded: a connect timeout, a timeout on the whole exchange, a
//! cap on the document size, and redirects only within the same origin. A
//! discovery document whose `issuer` differs from the configured one is refused:
//! its keys would be another issuer's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{IssuerKeys, JwksError, KeySet};
use crate::config::{IssuerConfig, check_fetch_url};

/// The largest discovery or JWKS document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The issuer's configured name, for logs.
    pub name: String,
    /// The expected `issuer` of a discovery document.
    pub issuer: String,
    /// The discovery document, if keys are found through it.
    pub discovery_url: Option<String>,
    /// The JWKS document, if given directly.
    pub jwks_url: Option<String>,
    /// Whether plain http is allowed beyond loopback (for the discovered `jwks_uri`).
    pub allow_insecure_http: bool,
    /// Time between refreshes.
    pub refresh_interval: Duration,
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP exchange failed: connection, timeout, redirect, TLS.
    #[error("GET {url}: {source}")]
    Http {
        /// The URL fetched.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered with a status other than 200.
    #[error("GET {url}: status {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
    },
    /// The discovery document is not JSON with `issuer` and `jwks_uri`.
    #[error("discovery document at {url} is malformed: {source}")]
    BadDiscovery {
        /// The URL fetched.
        url: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The discovery document names another issuer.
    #[error("discovery document at {url} is for issuer {found:?}, not {expected:?}")]
    IssuerMismatch {
        /// The URL fetched.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The document's issuer.
        found: String,
    },
    /// The discovered `jwks_uri` is not allowed (scheme).
    #[error("discovered jwks_uri {url:?} refused: {reason}")]
    BadJwksUri {
        /// The discovered URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The JWKS document is unusable.
    #[error("JWKS at {url}: {source}")]
    Jwks {
        /// The URL fetched.
        url: String,
        /// The cause.
        source: JwksError,
    },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

// === impl KeySource ===

impl KeySource {
    /// The key source of a configured issuer.
    pub fn from_config(config: &IssuerConfig) -> Self {
        Self {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            discovery_url: config.discovery_url.clone(),
            jwks_url: config.jwks_url.clone(),
            allow_insecure_http: config.allow_insecure_http,
            refresh_interval: Duration::from_secs(config.refresh_interval_seconds),
        }
    }

    /// Fetches the current key set once.
    pub async fn fetch(&self, client: &reqwest::Client) -> Result<KeySet, FetchError> {
        let jwks_url = match (&self.jwks_url, &self.discovery_url) {
            (Some(url), _) => url.clone(),
            (None, Some(discovery)) => self.discover(client, discovery).await?,
            (None, None) => {
                return Err(FetchError::BadJwksUri {
                    url: String::new(),
                    reason: "no key URL configured".into(),
                });
            }
        };
        let body = get_bounded(client, &jwks_url).await?;
        KeySet::from_jwks(&body, SystemTime::now()).map_err(|source| FetchError::Jwks {
            url: jwks_url,
            source,
        })
    }

    async fn discover(&self, client: &reqwest::Client, url: &str) -> Result<String, FetchError> {
        let body = get_bounded(client, url).await?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|source| FetchError::BadDiscovery {
                url: url.to_owned(),
                source,
            })?;
        if doc.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                url: url.to_owned(),
                expected: self.issuer.clone(),
                found: doc.issuer,
            });
        }
        check_fetch_url(&doc.jwks_uri, self.allow_insecure_http).map_err(|reason| {
            FetchError::BadJwksUri {
                url: doc.jwks_uri.clone(),
                reason,
            }
        })?;
        Ok(doc.jwks_uri)
    }
}

/// The HTTP client for key fetches: bounded in time, same-origin redirects only.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    let same_origin = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else if first == Some(attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.error("redirect to another origin")
        }
    });
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .redirect(same_origin)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GET a document, refusing non-200 answers and bodies over [`MAX_DOCUMENT_BYTES`].
async fn get_bounded(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let http = |source| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let mut response = client.get(url).send().await.map_err(http)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
    };
    if response.content_length().unwrap_or(0) > MAX_DOCUMENT_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Keeps an issuer's keys fresh: fetches at once, then every refresh interval.
///
/// Until the first success it retries every few seconds. A failed refresh keeps
/// the last good key set in use and is logged.
pub async fn refresh_forever(source: KeySource, keys: Arc<IssuerKeys>, client: reqwest::Client) {
    loop {
        let wait = match source.fetch(&client).await {
            Ok(set) => {
                tracing::info!(
                    issuer.name = %source.name,
                    keys.usable = set.len(),
                    keys.skipped = set.skipped,
                    keys.kids = ?set.kids(),
                    "Signing keys loaded"
                );
                keys.store(set);
                source.refresh_interval
            }
            Err(error) if keys.is_loaded() => {
                tracing::warn!(issuer.name = %source.name, %error, "Key refresh failed; keeping the last good keys");
                RETRY_AFTER_FAILURE.max(source.refresh_interval / 10)
            }
            Err(error) => {
                tracing::error!(issuer.name = %source.name, %error, "Cannot load signing keys; tokens of this issuer are refused");
                RETRY_AFTER_FAILURE
            }
        };
        tokio::time::sleep(wait).await;
    }
}
