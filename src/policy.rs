//! Per-route policy: which route a request falls under (first match wins), and
//! what that route needs.
//!
//! Routes are compiled once per configuration. Matching reads the normalized
//! host and path of [`crate::request::Request`], its method, the caller's mTLS
//! identity and Envoy's per-route context extensions; nothing else. Headers a
//! client can write (`x-envoy-original-path`, `x-forwarded-*`, method
//! overrides) play no part.

pub mod path;
pub mod require;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{
    DenyConfig, MatchConfig, RouteConfig, TcpConfig, TokenMode, route::compile_regex,
};
use crate::request::split_port;
use path::{PathMatch, PathPattern};
use require::Requirement;
use upstream::UpstreamRules;

/// The compiled routes.
#[derive(Debug)]
pub struct Policy {
    routes: Vec<Route>,
}

/// What a route is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The method.
    pub method: &'a str,
    /// The host, normalized.
    pub host: &'a str,
    /// The path, normalized.
    pub path: &'a str,
    /// The caller's mTLS identity, empty without one.
    pub principal: &'a str,
    /// Envoy's per-route context extensions.
    pub context_extensions: &'a HashMap<String, String>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its configured name.
    pub name: Arc<str>,
    /// Its position in the configuration.
    pub index: usize,
    hosts: Vec<HostMatch>,
    path: PathMatch,
    methods: Vec<String>,
    peers: PeerMatch,
    context_extensions: BTreeMap<String, String>,
    /// Whether and how a token is read.
    pub token: TokenMode,
    /// Issuers (by name) whose tokens the route accepts; empty: any.
    pub issuers: Vec<String>,
    /// What a valid token must carry.
    pub requirement: Requirement,
    /// Denials are reported but not enforced.
    pub dry_run: bool,
    /// Upstream header rules of this route, in place of the global ones.
    pub upstream: Option<UpstreamRules>,
    /// How this route answers denials.
    pub deny: Option<Arc<DenyConfig>>,
}

/// Callers allowed by TCP connection checks.
#[derive(Debug, Default)]
pub struct TcpPolicy {
    rules: Vec<(Arc<str>, PeerMatch)>,
}

#[derive(Debug, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact {
        name: String,
        port: Option<String>,
    },
    /// `*.example.com`, stored as `.example.com`.
    Suffix {
        suffix: String,
        port: Option<String>,
    },
}

/// Conditions on the caller's SPIFFE identity; all given lists must match.
#[derive(Debug, Default)]
struct PeerMatch {
    principals: Vec<String>,
    namespaces: Vec<String>,
    service_accounts: Vec<String>,
}

// === impl Policy ===

impl Policy {
    /// Compiles validated route configurations, keeping their order.
    pub fn compile<'a>(routes: impl IntoIterator<Item = &'a RouteConfig>) -> Self {
        Self {
            routes: routes
                .into_iter()
                .enumerate()
                .map(|(i, r)| Route::compile(i, r))
                .collect(),
        }
    }

    /// The routes, in order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The first route that matches, if any.
    pub fn route_for(&self, target: &Target<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(target))
    }

    /// Pairs `(hidden, by)`: routes that an earlier route always matches first,
    /// as far as can be told without running them (regexes and templates are
    /// not compared).
    pub fn shadowed(&self) -> Vec<(&Route, &Route)> {
        let mut pairs = Vec::new();
        for (i, later) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes[..i].iter().find(|e| e.covers(later)) {
                pairs.push((later, earlier));
            }
        }
        pairs
    }
}

// === impl Route ===

impl Route {
    fn compile(index: usize, config: &RouteConfig) -> Self {
        let requirement = match &config.require {
            Some(require) => Requirement::compile(require),
            None => Requirement::All(Vec::new()),
        };
        let m = &config.matcher;
        Self {
            name: Arc::from(config.name.as_str()),
            index,
            hosts: m.hosts.iter().map(|h| HostMatch::compile(h)).collect(),
            path: compile_path(m),
            methods: m.methods.clone(),
            peers: PeerMatch {
                principals: m
                    .principals
                    .iter()
                    .map(|p| strip_spiffe(p).to_owned())
                    .collect(),
                namespaces: m.namespaces.clone(),
                service_accounts: m.service_accounts.clone(),
            },
            context_extensions: m.context_extensions.clone(),
            token: config.token,
            issuers: config.issuers.clone(),
            requirement,
            dry_run: config.dry_run,
            upstream: config.upstream.as_ref().map(UpstreamRules::compile),
            deny: config.deny.clone().map(Arc::new),
        }
    }

    fn matches(&self, t: &Target<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == t.method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(t.host)))
            && self.path.matches(t.path)
            && self.peers.matches(t.principal)
            && self
                .context_extensions
                .iter()
                .all(|(k, v)| t.context_extensions.get(k) == Some(v))
    }

    /// Whether every request this route could match is matched by `self` first.
    fn covers(&self, other: &Route) -> bool {
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        let hosts = self.hosts.is_empty()
            || (!other.hosts.is_empty() && other.hosts.iter().all(|h| self.hosts.contains(h)));
        let peers = self.peers.is_empty();
        let extensions = self
            .context_extensions
            .iter()
            .all(|(k, v)| other.context_extensions.get(k) == Some(v));
        let path = match (&self.path, &other.path) {
            (PathMatch::Any, _) => true,
            (PathMatch::Prefix(p), PathMatch::Prefix(q)) => {
                PathMatch::Prefix(p.clone()).matches(q) || q.is_empty() && p.is_empty()
            }
            (PathMatch::Prefix(_), PathMatch::Exact(x)) => self.path.matches(x),
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            _ => false,
        };
        methods && hosts && peers && extensions && path
    }
}

fn compile_path(m: &MatchConfig) -> PathMatch {
    if let Some(exact) = &m.path {
        return PathMatch::Exact(exact.clone());
    }
    if let Some(prefix) = &m.path_prefix {
        return PathMatch::Prefix(prefix.trim_end_matches('/').to_owned());
    }
    if !m.paths.is_empty() {
        // Validation parsed each; one that fails here is left out, matching less.
        let patterns = m
            .paths
            .iter()
            .filter_map(|p| PathPattern::parse(p).ok())
            .collect();
        return PathMatch::Patterns(patterns);
    }
    if let Some(regex) = &m.path_regex {
        return match compile_regex(regex) {
            Ok(regex) => PathMatch::Regex(regex),
            Err(_) => PathMatch::Patterns(Vec::new()),
        };
    }
    PathMatch::Any
}

// === impl TcpPolicy ===

impl TcpPolicy {
    /// Compiles validated TCP rules.
    pub fn compile(config: &TcpConfig) -> Self {
        Self {
            rules: config
                .allow
                .iter()
                .map(|rule| {
                    let peers = PeerMatch {
                        principals: rule
                            .principals
                            .iter()
                            .map(|p| strip_spiffe(p).to_owned())
                            .collect(),
                        namespaces: rule.namespaces.clone(),
                        service_accounts: rule.service_accounts.clone(),
                    };
                    (Arc::from(rule.name.as_str()), peers)
                })
                .collect(),
        }
    }

    /// The name of the first rule that allows this caller.
    pub fn allows(&self, principal: &str) -> Option<&Arc<str>> {
        self.rules
            .iter()
            .find(|(_, peers)| peers.matches(principal))
            .map(|(name, _)| name)
    }
}

// === impl HostMatch ===

impl HostMatch {
    fn compile(host: &str) -> Self {
        if host == "*" {
            return HostMatch::Any;
        }
        let host = crate::request::normalize_host(host);
        let (name, port) = split_port(&host);
        let port = port.map(str::to_owned);
        match name.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix {
                suffix: suffix.to_owned(),
                port,
            },
            None => HostMatch::Exact {
                name: name.to_owned(),
                port,
            },
        }
    }

    /// `host` is already lower-cased and without a trailing dot.
    fn matches(&self, host: &str) -> bool {
        let (name, port) = split_port(host);
        let port_fits = |want: &Option<String>| want.is_none() || want.as_deref() == port;
        match self {
            HostMatch::Any => true,
            HostMatch::Exact {
                name: want,
                port: p,
            } => name == want && port_fits(p),
            HostMatch::Suffix { suffix, port: p } => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str()) && port_fits(p)
            }
        }
    }
}

// === impl PeerMatch ===

impl PeerMatch {
    fn is_empty(&self) -> bool {
        self.principals.is_empty() && self.namespaces.is_empty() && self.service_accounts.is_empty()
    }

    fn matches(&self, principal: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        if principal.is_empty() {
            return false;
        }
        let id = strip_spiffe(principal);
        let principal_ok =
            self.principals.is_empty() || self.principals.iter().any(|p| wildcard_matches(p, id));
        let (namespace, account) = spiffe_parts(id);
        let namespace_ok = self.namespaces.is_empty()
            || namespace.is_some_and(|ns| self.namespaces.iter().any(|n| n == ns));
        let account_ok = self.service_accounts.is_empty()
            || namespace.zip(account).is_some_and(|(ns, sa)| {
                self.service_accounts
                    .iter()
                    .any(|want| want.split_once('/') == Some((ns, sa)))
            });
        principal_ok && namespace_ok && account_ok
    }
}

fn strip_spiffe(id: &str) -> &str {
    id.strip_prefix("spiffe://").unwrap_or(id)
}

/// Namespace and service account of `<trust domain>/ns/<ns>/sa/<sa>`.
fn spiffe_parts(id: &str) -> (Option<&str>, Option<&str>) {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        [_, "ns", ns, "sa", sa] if !ns.is_empty() && !sa.is_empty() => (Some(ns), Some(sa)),
        _ => (None, None),
    }
}

/// Istio's principal matching: exact, `*` alone, `prefix*` or `*suffix`.
fn wildcard_matches(pattern: &str, id: &str) -> bool {
    if pattern == "*" {
        return !id.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return id.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return id.ends_with(suffix);
    }
    pattern == id
}

#[cfg(test)]
mod tests;
