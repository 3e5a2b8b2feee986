//! Fetching an issuer's keys over HTTP: OIDC discovery (OpenID Connect
//! Discovery 1.0 §4) or a JWKS URL, then the JWKS document; and the refresher
//! task that keeps them current.
//!
//! Fetches are bounded: a connect timeout, a timeout on the whole exchange, a
//! cap on the document size, and redirects only within the same origin. A
//! discovery document whose `issuer` differs from the configured one is refused:
//! its keys would be another issuer's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{FetchOutcome, IssuerKeys, JwksError, KeySet, unix_seconds};
use crate::config::{IssuerConfig, check_fetch_url};

/// The largest discovery or JWKS document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// After a failed fetch, the next attempt comes this much later.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A `Cache-Control: max-age` shorter than this does not shorten the refresh period further.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Where an issuer's keys come from, and how they are fetched.
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
    /// Timeout for connecting.
    pub connect_timeout: Duration,
    /// Timeout for a whole fetch.
    pub fetch_timeout: Duration,
    /// Extra CA certificates (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// Where the last good JWKS is kept, if anywhere.
    pub cache_file: Option<PathBuf>,
    /// Keys older than this are not used, from the cache file either.
    pub max_key_age: Duration,
    /// A file holding a bearer token for the key server, read at each fetch.
    pub bearer_token_file: Option<PathBuf>,
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP exchange failed: connection, timeout, redirect, TLS.
    #[error("GET {url}: {}", error_chain(source))]
    Http {
        /// The URL fetched.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The bearer token file for the key server could not be read.
    #[error("cannot read the fetch bearer token {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
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

/// The whole `source()` chain of an error on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

impl FetchError {
    /// The metric label of this failure.
    pub fn outcome(&self) -> FetchOutcome {
        match self {
            FetchError::Http { .. } | FetchError::TokenFile { .. } => FetchOutcome::HttpError,
            FetchError::Status { .. } => FetchOutcome::BadStatus,
            FetchError::TooLarge { .. } => FetchOutcome::TooLarge,
            FetchError::IssuerMismatch { .. } => FetchOutcome::IssuerMismatch,
            FetchError::BadDiscovery { .. }
            | FetchError::BadJwksUri { .. }
            | FetchError::Jwks { .. } => FetchOutcome::Invalid,
        }
    }
}

/// A fetched key set, with how long its server says it stays fresh.
#[derive(Debug)]
pub struct Fetched {
    /// The keys.
    pub keys: KeySet,
    /// The JWKS document as received, for the cache file.
    pub document: Vec<u8>,
    /// `Cache-Control: max-age` of the JWKS response, if any.
    pub max_age: Option<Duration>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    fetched_at: i64,
    jwks: Box<serde_json::value::RawValue>,
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
            connect_timeout: Duration::from_secs(config.connect_timeout_seconds),
            fetch_timeout: Duration::from_secs(config.fetch_timeout_seconds),
            ca_file: config.ca_file.clone(),
            cache_file: config.cache_file.clone(),
            max_key_age: Duration::from_secs(config.max_key_age_seconds),
            bearer_token_file: config.fetch_bearer_token_file.clone(),
        }
    }

    /// The HTTP client for this source: its timeouts and CA, same-origin redirects only.
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        let mut builder = base_client(self.connect_timeout, self.fetch_timeout);
        if let Some(path) = &self.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| error_chain(&e))
    }

    /// Fetches the current key set once.
    pub async fn fetch(&self, client: &reqwest::Client) -> Result<Fetched, FetchError> {
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
        let bearer = self.bearer_token()?;
        let (document, max_age) = get_bounded(client, &jwks_url, bearer.as_deref()).await?;
        let keys =
            KeySet::from_jwks(&document, SystemTime::now()).map_err(|source| FetchError::Jwks {
                url: jwks_url,
                source,
            })?;
        Ok(Fetched {
            keys,
            document,
            max_age,
        })
    }

    async fn discover(&self, client: &reqwest::Client, url: &str) -> Result<String, FetchError> {
        let bearer = self.bearer_token()?;
        let (body, _) = get_bounded(client, url, bearer.as_deref()).await?;
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

    /// The bearer token for the key server, read now (projected tokens rotate).
    fn bearer_token(&self) -> Result<Option<String>, FetchError> {
        let Some(path) = &self.bearer_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| FetchError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(text.trim().to_owned()))
    }

    /// The next refresh: the configured period, shortened to the response's
    /// `max-age` when that is shorter, never below [`MIN_REFRESH`].
    pub fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        match max_age {
            Some(age) => age.clamp(MIN_REFRESH, self.refresh_interval.max(MIN_REFRESH)),
            None => self.refresh_interval,
        }
    }

    /// Reads the cache file, if configured, present, valid and young enough.
    pub fn read_cache(&self, now: SystemTime) -> Option<KeySet> {
        let path = self.cache_file.as_ref()?;
        let text = std::fs::read(path).ok()?;
        let cache: CacheFile = serde_json::from_slice(&text).ok()?;
        let age = unix_seconds(now).saturating_sub(cache.fetched_at);
        if age < 0 || age.unsigned_abs() > self.max_key_age.as_secs() {
            return None;
        }
        let fetched_at =
            SystemTime::UNIX_EPOCH + Duration::from_secs(cache.fetched_at.unsigned_abs());
        KeySet::from_jwks(cache.jwks.get().as_bytes(), fetched_at).ok()
    }

    /// Writes the cache file, if configured: to a temporary file, then renamed into place.
    pub fn write_cache(&self, fetched: &Fetched) -> Result<(), String> {
        let Some(path) = &self.cache_file else {
            return Ok(());
        };
        let jwks = std::str::from_utf8(&fetched.document)
            .ok()
            .and_then(|t| serde_json::value::RawValue::from_string(t.to_owned()).ok())
            .ok_or("the JWKS document is not UTF-8 JSON")?;
        let cache = CacheFile {
            fetched_at: fetched.keys.fetched_at,
            jwks,
        };
        let text = serde_json::to_vec(&cache).map_err(|e| e.to_string())?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).map_err(|e| format!("{}: {e}", temporary.display()))?;
        std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn base_client(connect: Duration, total: Duration) -> reqwest::ClientBuilder {
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
        .connect_timeout(connect)
        .timeout(total)
        .redirect(same_origin)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
}

/// An HTTP client with the default timeouts (3 s connect, 10 s in all), no extra CA.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    base_client(Duration::from_secs(3), Duration::from_secs(10)).build()
}

/// GET a document, refusing non-200 answers and bodies over [`MAX_DOCUMENT_BYTES`].
async fn get_bounded(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let http = |source| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.map_err(http)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(cache_max_age);
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
    Ok((body, max_age))
}

/// `max-age` of a `Cache-Control` value. `no-cache` and `no-store` give no
/// hint: some identity providers send them on every answer, and refetching
/// at the floor for them would only load the provider.
fn cache_max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        let directive = directive.to_ascii_lowercase();
        let seconds = directive
            .strip_prefix("max-age=")?
            .trim_matches('"')
            .parse()
            .ok()?;
        Some(Duration::from_secs(seconds))
    })
}

/// Keeps an issuer's keys fresh, for as long as the task runs.
///
/// Loads the cache file first, if any; then fetches at once, and again every
/// refresh period, or sooner when a check meets an unknown `kid`. Until the
/// first success it retries every few seconds. A failed refresh keeps the last
/// good key set in use (checks stop using it once it is older than the
/// configured maximum age) and is logged.
pub async fn refresh_forever(source: KeySource, keys: Arc<IssuerKeys>, client: reqwest::Client) {
    if let Some(cached) = source.read_cache(SystemTime::now()) {
        tracing::info!(issuer.name = %source.name, keys.usable = cached.len(), "Signing keys loaded from the cache file");
        keys.store(cached);
    }
    loop {
        keys.fetch_started();
        let wait = match source.fetch(&client).await {
            Ok(fetched) => {
                keys.stats.count_fetch(FetchOutcome::Ok);
                log_loaded(&source, &fetched.keys);
                if let Err(error) = source.write_cache(&fetched) {
                    tracing::warn!(issuer.name = %source.name, %error, "Cannot write the key cache file");
                }
                let wait = source.next_refresh(fetched.max_age);
                keys.fetch_finished(Some(fetched.keys));
                wait
            }
            Err(error) => {
                keys.stats.count_fetch(error.outcome());
                if keys.is_loaded() {
                    tracing::warn!(issuer.name = %source.name, %error, "Key refresh failed; keeping the last good keys");
                } else {
                    tracing::error!(issuer.name = %source.name, %error, "Cannot load signing keys; tokens of this issuer are refused");
                }
                keys.fetch_finished(None);
                RETRY_AFTER_FAILURE.min(source.refresh_interval)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = keys.refetch_requested() => {
                tracing::debug!(issuer.name = %source.name, "Refetching keys for an unknown kid");
            }
        }
    }
}

fn log_loaded(source: &KeySource, set: &KeySet) {
    tracing::info!(
        issuer.name = %source.name,
        keys.usable = set.len(),
        keys.skipped = set.skipped,
        keys.kids = ?set.kids(),
        "Signing keys loaded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            cache_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(cache_max_age("no-cache"), None);
        assert_eq!(cache_max_age("no-cache, max-age=0"), Some(Duration::ZERO));
        assert_eq!(cache_max_age("private"), None);
        assert_eq!(cache_max_age("max-age=abc"), None);
    }

    #[test]
    fn max_age_shortens_the_refresh_period_but_not_below_the_floor() {
        let source = KeySource {
            name: "t".into(),
            issuer: "https://i".into(),
            discovery_url: None,
            jwks_url: Some("https://i/k".into()),
            allow_insecure_http: false,
            refresh_interval: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(3),
            fetch_timeout: Duration::from_secs(10),
            ca_file: None,
            cache_file: None,
            max_key_age: Duration::from_secs(86_400),
            bearer_token_file: None,
        };
        assert_eq!(source.next_refresh(None), Duration::from_secs(300));
        assert_eq!(
            source.next_refresh(Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            source.next_refresh(Some(Duration::from_secs(3600))),
            Duration::from_secs(300)
        );
        assert_eq!(source.next_refresh(Some(Duration::ZERO)), MIN_REFRESH);
    }
}
