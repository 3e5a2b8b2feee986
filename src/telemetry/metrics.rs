//! Prometheus metrics: every name and help text is here.
//!
//! Labels are bounded: route and issuer names come from the configuration,
//! decisions and reasons from fixed lists. Nothing from a request (path, host,
//! subject, client id) ever becomes a label.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::keys::IssuerKeys;
use crate::token::cache::CacheStats;

/// The issuers whose keys are reported, swapped whole on a reload.
pub type IssuerList = Arc<arc_swap::ArcSwap<Vec<(Arc<str>, Arc<IssuerKeys>)>>>;

/// The metrics of one running server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_duration: Histogram,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
}

/// Labels of `portcullis_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The route's configured name, or empty when none matched.
    pub route: Name,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The reason code of a denial, `ok` for an allow.
    pub reason: &'static str,
}

/// A configured name as a label value, shared without copying.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Upper bounds of the check duration histogram, in seconds: 10 µs to 1 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 0.25, 1.0,
];

impl Metrics {
    /// Registers every metric; `issuers` are read at each scrape.
    pub fn new(issuers: IssuerList, cache: Arc<CacheStats>, now: fn() -> i64) -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Checks answered, by route, decision and reason",
            checks.clone(),
        );
        let check_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "check_duration",
            "Time to decide a check, from the decoded request to the built answer",
            prometheus_client::registry::Unit::Seconds,
            check_duration.clone(),
        );
        registry.register_collector(Box::new(KeysCollector { issuers, now }));
        registry.register_collector(Box::new(CacheCollector { stats: cache }));
        let reloads = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result: ok, or invalid (the running one stays)",
            reloads.clone(),
        );
        let info = Family::<
            [(&'static str, &'static str); 1],
            prometheus_client::metrics::gauge::Gauge,
        >::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "The running version", info);
        Self {
            registry,
            checks,
            check_duration,
            reloads,
        }
    }

    /// Counts a configuration reload.
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "invalid" };
        self.reloads.get_or_create(&[("result", result)]).inc();
    }

    /// Counts one answered check and its duration.
    pub fn record_check(&self, labels: &CheckLabels, took: Duration) {
        self.checks.get_or_create(labels).inc();
        self.record_duration(took);
    }

    /// Records the duration of a check counted elsewhere.
    pub fn record_duration(&self, took: Duration) {
        self.check_duration.observe(took.as_secs_f64());
    }

    /// The counter of a route's allows (`decision="allow", reason="ok"`), to
    /// keep: the series exists from now on, at 0 until the first allow.
    pub fn allow_counter(&self, route: &Arc<str>) -> Counter {
        let labels = CheckLabels {
            route: Name(route.clone()),
            decision: "allow",
            reason: "ok",
        };
        self.checks.get_or_create(&labels).clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Key-set figures, read from the issuers' holders at scrape time.
#[derive(Debug)]
struct KeysCollector {
    issuers: IssuerList,
    now: fn() -> i64,
}

impl Collector for KeysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = (self.now)();
        let issuers = self.issuers.load_full();
        let issuer = |name: &Arc<str>| Name(name.clone());

        let mut family = encoder.encode_descriptor(
            "key_fetches",
            "Fetches of issuer keys, by issuer and result",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (name, keys) in issuers.iter() {
            for (outcome, count) in keys.stats.fetches() {
                let labels = [("issuer", issuer(name))];
                let result = [("result", outcome.label())];
                ConstCounter::new(count).encode(family.encode_family(&(labels, result))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "unknown_kid",
            "Tokens naming a kid the issuer's keys lack, by what followed: a refetch, \
             a refusal without refetch (rate limited), or a kid remembered as unknown",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (name, keys) in issuers.iter() {
            for (outcome, count) in keys.stats.unknown_kid() {
                let labels = ([("issuer", issuer(name))], [("outcome", outcome)]);
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "key_set_age_seconds",
            "Seconds since the issuer's current keys were fetched (absent before the first)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, keys) in issuers.iter() {
            if let Some(set) = keys.load() {
                let labels = [("issuer", issuer(name))];
                ConstGauge::new(set.age_seconds(now)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "key_set_keys",
            "Usable signing keys in the issuer's current key set",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, keys) in issuers.iter() {
            let count = keys.load().map_or(0, |set| set.len());
            let labels = [("issuer", issuer(name))];
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Verified-token cache figures.
#[derive(Debug)]
struct CacheCollector {
    stats: Arc<CacheStats>,
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let counters = [
            (
                "token_cache_hits",
                "Checks whose token was found verified in the cache",
                &self.stats.hits,
            ),
            (
                "token_cache_misses",
                "Checks whose token was verified anew",
                &self.stats.misses,
            ),
            (
                "token_cache_evictions",
                "Cache entries removed to stay within the limits",
                &self.stats.evictions,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(as_u64(value.load(Relaxed)));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let gauges = [
            (
                "token_cache_entries",
                "Tokens in the cache",
                &self.stats.entries,
            ),
            (
                "token_cache_bytes",
                "Estimated bytes of the cache",
                &self.stats.bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(as_i64(value.load(Relaxed)));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}
