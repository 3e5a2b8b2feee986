//! What the servers run on: the current configuration snapshot, the issuers
//! with their keys and refresher tasks, and the metrics; and how a new
//! configuration replaces the snapshot.
//!
//! A snapshot is built whole from a validated configuration and swapped in
//! with one store; a check loads it once and keeps it to the end, so checks in
//! flight during a reload finish on the snapshot they started with. Issuers
//! whose configuration did not change keep their keys and refresher across a
//! reload; removed issuers stop fetching.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;

use crate::check::Checker;
use crate::config::{Config, DecisionLogConfig, IssuerConfig};
use crate::keys::IssuerKeys;
use crate::keys::fetch::{self, KeySource};
use crate::telemetry::metrics::{IssuerList, Metrics};
use crate::token::cache::{CacheLimits, CacheStats};
use crate::token::{TrustedIssuer, Validator};
use prometheus_client::metrics::counter::Counter;

/// Everything a check reads, from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The checker.
    pub checker: Checker,
    /// Log levels of decision lines.
    pub decision_log: DecisionLogConfig,
    /// Every issuer of this configuration.
    pub issuers: Vec<Arc<IssuerRuntime>>,
    /// By route index: the count of the route's allows, resolved once so
    /// that counting an allow is one atomic add.
    pub allowed: Vec<Counter>,
}

/// One configured issuer at run time.
#[derive(Debug)]
pub struct IssuerRuntime {
    /// Its configured name.
    pub name: Arc<str>,
    /// Its configuration, to tell whether a reload changed it.
    pub config: IssuerConfig,
    /// Where its keys come from.
    pub source: KeySource,
    /// Its keys.
    pub keys: Arc<IssuerKeys>,
    refresher: Mutex<Option<AbortHandle>>,
}

/// Why a configuration could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An issuer's HTTP client could not be built (TLS, CA file).
    #[error("issuer {issuer}: cannot build the HTTP client for key fetches: {reason}")]
    HttpClient {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
}

/// The running state.
#[derive(Debug)]
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    cache_stats: Arc<CacheStats>,
    metric_issuers: IssuerList,
    /// The metrics.
    pub metrics: Metrics,
}

impl Runtime {
    /// A runtime for a validated configuration; keys are empty until
    /// [`Runtime::start_refreshers`] runs in an async context.
    pub fn new(config: &Config) -> Self {
        let cache_stats = Arc::new(CacheStats::default());
        let metric_issuers = IssuerList::default();
        let metrics = Metrics::new(metric_issuers.clone(), cache_stats.clone(), super::unix_now);
        let snapshot = build(config, &[], &cache_stats, &metrics);
        metric_issuers.store(Arc::new(metric_list(&snapshot)));
        Self {
            metrics,
            metric_issuers,
            cache_stats,
            snapshot: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Starts a refresher for every issuer that has none yet.
    pub fn start_refreshers(&self) -> Result<(), ApplyError> {
        for issuer in &self.snapshot.load().issuers {
            issuer.start_refresher()?;
        }
        Ok(())
    }

    /// Puts a new validated configuration in place. Issuers whose settings
    /// did not change keep their keys; new ones start fetching; the snapshot
    /// is swapped whole.
    pub fn apply(&self, config: &Config) -> Result<(), ApplyError> {
        let current = self.snapshot.load_full();
        let next = build(config, &current.issuers, &self.cache_stats, &self.metrics);
        for issuer in &next.issuers {
            issuer.start_refresher()?;
        }
        self.metric_issuers.store(Arc::new(metric_list(&next)));
        self.snapshot.store(Arc::new(next));
        Ok(())
    }

    /// Stops every issuer's refresher (at shutdown).
    pub fn stop_refreshers(&self) {
        for issuer in &self.snapshot.load().issuers {
            issuer.stop_refresher();
        }
    }

    /// The required issuers without usable keys at `now`; empty when ready.
    pub fn missing_issuers(&self, now: i64) -> Vec<Arc<str>> {
        self.snapshot
            .load()
            .issuers
            .iter()
            .filter(|i| i.config.required && !i.has_usable_keys(now))
            .map(|i| i.name.clone())
            .collect()
    }
}

/// Builds a snapshot, reusing the issuers of `previous` whose configuration is unchanged.
fn build(
    config: &Config,
    previous: &[Arc<IssuerRuntime>],
    cache_stats: &Arc<CacheStats>,
    metrics: &Metrics,
) -> Snapshot {
    let mut trusted = Vec::new();
    let mut issuers = Vec::new();
    for issuer in config.issuers.iter().map(|i| &i.value) {
        let runtime = previous
            .iter()
            .find(|p| p.config == *issuer)
            .cloned()
            .unwrap_or_else(|| Arc::new(IssuerRuntime::new(issuer)));
        trusted.push(TrustedIssuer::from_config(issuer, runtime.keys.clone()));
        issuers.push(runtime);
    }
    let limits = CacheLimits {
        max_entries: config.token_cache.max_entries,
        max_bytes: config.token_cache.max_bytes,
    };
    let validator =
        Validator::with_cache(trusted, config.max_token_bytes, limits, cache_stats.clone());
    let checker = Checker::new(config, validator);
    let allowed = checker
        .policy()
        .routes()
        .map(|route| metrics.allow_counter(&route.name))
        .collect();
    Snapshot {
        checker,
        decision_log: config.decision_log,
        issuers,
        allowed,
    }
}

fn metric_list(snapshot: &Snapshot) -> Vec<(Arc<str>, Arc<IssuerKeys>)> {
    snapshot
        .issuers
        .iter()
        .map(|i| (i.name.clone(), i.keys.clone()))
        .collect()
}

// === impl IssuerRuntime ===

impl IssuerRuntime {
    fn new(config: &IssuerConfig) -> Self {
        let interval = Duration::from_secs(config.unknown_kid_refetch_interval_seconds);
        Self {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            source: KeySource::from_config(config),
            keys: Arc::new(IssuerKeys::new(interval)),
            refresher: Mutex::new(None),
        }
    }

    fn start_refresher(&self) -> Result<(), ApplyError> {
        let Ok(mut refresher) = self.refresher.lock() else {
            return Ok(());
        };
        if refresher.is_some() {
            return Ok(());
        }
        let client = self
            .source
            .http_client()
            .map_err(|reason| ApplyError::HttpClient {
                issuer: self.config.name.clone(),
                reason,
            })?;
        let task = fetch::refresh_forever(self.source.clone(), self.keys.clone(), client);
        *refresher = Some(tokio::spawn(task).abort_handle());
        Ok(())
    }

    /// Whether its keys are loaded and not older than the maximum age.
    pub fn has_usable_keys(&self, now: i64) -> bool {
        let max_age = i64::try_from(self.config.max_key_age_seconds).unwrap_or(i64::MAX);
        self.keys
            .load()
            .is_some_and(|set| set.age_seconds(now) <= max_age)
    }
}

impl IssuerRuntime {
    fn stop_refresher(&self) {
        if let Ok(mut refresher) = self.refresher.lock()
            && let Some(task) = refresher.take()
        {
            task.abort();
        }
    }
}

impl Drop for IssuerRuntime {
    /// An issuer that no snapshot uses any more stops fetching.
    fn drop(&mut self) {
        self.stop_refresher();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const CONFIG: &str = "issuers:\n  - { name: acme, issuer: 'https://sso.example.test', jwks_url: 'https://sso.example.test/k', audiences: [api] }\nroutes:\n  - { name: docs, match: { path_prefix: /docs }, token: public }\n  - { name: api, match: { path_prefix: / } }\n";

    #[test]
    fn every_route_has_an_allow_series_at_zero_once_loaded() {
        let runtime = Runtime::new(&Config::from_yaml(CONFIG, "test").unwrap());
        let text = runtime.metrics.encode();
        for route in ["docs", "api"] {
            let series = format!(
                "portcullis_checks_total{{route=\"{route}\",decision=\"allow\",reason=\"ok\"}} 0"
            );
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
        let snapshot = runtime.snapshot();
        assert_eq!(snapshot.allowed.len(), 2);
        snapshot.allowed[1].inc();
        assert!(
            runtime.metrics.encode().contains(
                "portcullis_checks_total{route=\"api\",decision=\"allow\",reason=\"ok\"} 1"
            )
        );
    }
}
