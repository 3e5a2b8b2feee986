//! The configuration file: its YAML shape, its defaults, and its validation.
//!
//! Loading is two steps. The YAML is parsed into the `*Config` types below
//! (unknown keys are refused, with the line at fault). Then [`Config::validate`]
//! checks what the types cannot say (URLs, paths, algorithms, references) and
//! names the field at fault, for example `routes[2] "admin" (line 40): match.path_prefix`.
//!
//! Every field is documented in `config/portcullis.yaml`, which is tested to load.

pub mod answer;
pub mod route;

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use answer::{ClaimHeader, DenyConfig, HeaderFormat, TcpConfig, TcpRule, UpstreamConfig};
pub use route::{
    AmbiguousPaths, ClaimCondition, ClaimPath, MatchConfig, RequireConfig, RouteConfig, TokenMode,
};

/// A configuration that could not be used, with the place at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the line and column.
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Where in the document, e.g. `routes[1] "orders" (line 30): match.methods[0]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the servers listen.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The `realm` parameter of `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// What to do with paths that servers may read in two ways.
    #[serde(default)]
    pub ambiguous_paths: AmbiguousPaths,
    /// CheckRequests larger than this are denied (400) without being decoded.
    #[serde(default = "default_max_check_request_bytes")]
    pub max_check_request_bytes: usize,
    /// Tokens longer than this are refused before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Where a bearer token may be. A token found in two places is refused.
    #[serde(default = "default_token_sources")]
    pub token_sources: Vec<TokenSourceConfig>,
    /// Names of the identity headers set on allowed requests.
    #[serde(default)]
    pub identity_headers: IdentityHeadersConfig,
    /// More upstream headers from claims, for routes without their own `upstream`.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Rules for TCP connection checks; without them every TCP check is denied.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// The path prefix Envoy's `http_service` puts before each path (HTTP mode).
    #[serde(default)]
    pub http_path_prefix: String,
    /// The log level of the one line logged per decision.
    #[serde(default)]
    pub decision_log: DecisionLogConfig,
    /// Which answers carry Envoy dynamic metadata.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// Limits of the verified-token cache.
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// On SIGTERM, in-flight checks get this long to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_seconds: u64,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<Spanned<IssuerConfig>>,
    /// Routes, first match wins. A request that matches none is denied.
    pub routes: Vec<Spanned<RouteConfig>>,
}

/// Limits of the verified-token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// At most this many tokens; 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// At most about this many bytes.
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: usize,
}

fn default_cache_entries() -> usize {
    100_000
}
fn default_cache_bytes() -> usize {
    64 * 1024 * 1024
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
        }
    }
}

/// One place a bearer token may be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSourceConfig {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// A header holding the token, with or without `Bearer `.
    Header(String),
    /// A cookie holding the token.
    Cookie(String),
    /// A query parameter holding the token.
    Query(String),
}

fn default_token_sources() -> Vec<TokenSourceConfig> {
    vec![TokenSourceConfig::Authorization]
}

impl TokenSourceConfig {
    /// The source as the credential finder uses it.
    pub fn to_source(&self) -> crate::credential::TokenSource {
        use crate::credential::TokenSource;
        match self {
            TokenSourceConfig::Authorization => TokenSource::Authorization,
            TokenSourceConfig::Header(h) => TokenSource::Header(h.clone()),
            TokenSourceConfig::Cookie(c) => TokenSource::Cookie(c.clone()),
            TokenSourceConfig::Query(q) => TokenSource::Query(q.clone()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            TokenSourceConfig::Authorization => Ok(()),
            TokenSourceConfig::Header(name) => {
                if name == "authorization" {
                    return Err("use `authorization` for the Authorization header".into());
                }
                if is_header_name(name) {
                    Ok(())
                } else {
                    Err("a lower-case header name".into())
                }
            }
            TokenSourceConfig::Cookie(name) | TokenSourceConfig::Query(name) => {
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if ok {
                    Ok(())
                } else {
                    Err("a name of letters, digits, '-', '_', '.'".into())
                }
            }
        }
    }
}

/// Log levels of decision lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// Allowed requests. Default: debug.
    #[serde(default = "default_allowed_level")]
    pub allowed: LogLevel,
    /// Denied requests (and dry-run would-be denials). Default: info.
    #[serde(default = "default_denied_level")]
    pub denied: LogLevel,
}

/// Which answers carry Envoy dynamic metadata (`envoy.filters.http.ext_authz`:
/// `decision`, `route`, `reason` or `issuer` and `sub`, `would_deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Allows. Default: false: Envoy pays for every metadata field on every
    /// request, and the identity headers already reach the access log
    /// (`%REQ(x-portcullis-subject)%`). Allows of dry-run routes that would
    /// have been denied count as denials.
    #[serde(default)]
    pub allowed: bool,
    /// Denials. Default: true.
    #[serde(default = "default_true")]
    pub denied: bool,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            allowed: false,
            denied: true,
        }
    }
}

/// A log level, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Not logged.
    Off,
    /// `error`.
    Error,
    /// `warn`.
    Warn,
    /// `info`.
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

fn default_allowed_level() -> LogLevel {
    LogLevel::Debug
}
fn default_denied_level() -> LogLevel {
    LogLevel::Info
}
fn default_drain_timeout() -> u64 {
    10
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            allowed: default_allowed_level(),
            denied: default_denied_level(),
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// The gRPC server: `envoy.service.auth.v3.Authorization` and `grpc.health.v1.Health`.
    #[serde(default = "default_grpc_addr")]
    pub grpc: SocketAddr,
    /// The admin HTTP server: `/metrics`, `/livez`, `/readyz`.
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
    /// The HTTP ext_authz server (Envoy `http_service`, Istio
    /// `envoyExtAuthzHttp`). Absent: not served.
    pub http: Option<SocketAddr>,
}

/// Upstream header names for the caller's identity on allowed requests.
///
/// Every one of them is removed from the client's request when portcullis
/// allows it, whether or not portcullis sets it, so clients cannot forge them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersConfig {
    /// The token's `sub`.
    #[serde(default = "default_subject_header")]
    pub subject: String,
    /// The token's `preferred_username`.
    #[serde(default = "default_username_header")]
    pub username: String,
    /// The token's `realm_access.roles`, joined with `,`.
    #[serde(default = "default_realm_roles_header")]
    pub realm_roles: String,
    /// The token's `azp`: the client the token was issued to.
    #[serde(default = "default_client_header")]
    pub client: String,
    /// The configured name of the issuer that signed the token.
    #[serde(default = "default_issuer_header")]
    pub issuer: String,
}

/// A trusted token issuer, such as a Keycloak realm.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for logs and metrics.
    pub name: String,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// OIDC discovery document to read `jwks_uri` from. Its `issuer` must equal `issuer`.
    pub discovery_url: Option<String>,
    /// The JWKS document itself. Exactly one of `discovery_url` and `jwks_url` is set.
    pub jwks_url: Option<String>,
    /// Accepted `aud` values: a token must name one of them. Empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerance for `exp` and `nbf`, for clocks that disagree.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// How often the keys are fetched again.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_seconds: u64,
    /// Allow `http://` key URLs on hosts other than loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Readiness waits for this issuer's keys.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Accept tokens without `kid`, tried against every key that fits their `alg`.
    #[serde(default)]
    pub allow_missing_kid: bool,
    /// Accepted values of the `typ` claim. Empty: not checked (for issuers
    /// without it, such as Kubernetes service accounts).
    #[serde(default = "default_token_types")]
    pub token_types: Vec<String>,
    /// A file whose content is sent as `Authorization: Bearer` on key fetches,
    /// read at each fetch (e.g. a projected service account token).
    pub fetch_bearer_token_file: Option<std::path::PathBuf>,
    /// At most one refetch for unknown `kid`s per this many seconds.
    #[serde(default = "default_unknown_kid_refetch_interval")]
    pub unknown_kid_refetch_interval_seconds: u64,
    /// How long a check waits for a refetch triggered by an unknown `kid`.
    #[serde(default = "default_unknown_kid_wait")]
    pub unknown_kid_wait_milliseconds: u64,
    /// The last good keys are used at most this long after they were fetched.
    #[serde(default = "default_max_key_age")]
    pub max_key_age_seconds: u64,
    /// Timeout for connecting to the key server.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Timeout for a whole fetch, connection included.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    /// PEM bundle of extra CA certificates for the key server (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Where to keep the last good JWKS, so a restart during an outage still serves.
    pub cache_file: Option<std::path::PathBuf>,
}

/// The algorithms portcullis can verify; HMAC and `none` are never among them.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn default_realm() -> String {
    "portcullis".to_owned()
}
fn default_max_check_request_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9191))
}
fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9192))
}
fn default_subject_header() -> String {
    "x-portcullis-subject".to_owned()
}
fn default_username_header() -> String {
    "x-portcullis-username".to_owned()
}
fn default_realm_roles_header() -> String {
    "x-portcullis-realm-roles".to_owned()
}
fn default_client_header() -> String {
    "x-portcullis-client".to_owned()
}
fn default_issuer_header() -> String {
    "x-portcullis-issuer".to_owned()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_clock_skew() -> u64 {
    30
}
fn default_refresh_interval() -> u64 {
    300
}
fn default_token_types() -> Vec<String> {
    vec!["Bearer".to_owned()]
}
fn default_true() -> bool {
    true
}
fn default_unknown_kid_refetch_interval() -> u64 {
    10
}
fn default_unknown_kid_wait() -> u64 {
    300
}
fn default_max_key_age() -> u64 {
    24 * 3600
}
fn default_connect_timeout() -> u64 {
    3
}
fn default_fetch_timeout() -> u64 {
    10
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            grpc: default_grpc_addr(),
            admin: default_admin_addr(),
            http: None,
        }
    }
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        Self {
            subject: default_subject_header(),
            username: default_username_header(),
            realm_roles: default_realm_roles_header(),
            client: default_client_header(),
            issuer: default_issuer_header(),
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text, &shown)
    }

    /// Parses and validates a configuration document; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().replace("<input>", origin),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks what the types cannot: URLs, paths, names, algorithms, methods.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |field: String, message: &str| ConfigError::Invalid {
            path: origin.to_owned(),
            field,
            message: message.to_owned(),
        };
        self.validate_top().map_err(|(f, m)| fail(f, &m))?;
        for (i, issuer) in self.issuers.iter().enumerate() {
            let at = format!("issuers[{i}] (line {})", issuer.defined.line());
            issuer
                .value
                .validate()
                .map_err(|(f, m)| fail(format!("{at}: {f}"), &m))?;
            let first = self
                .issuers
                .iter()
                .position(|o| o.value.name == issuer.value.name);
            if first != Some(i) {
                return Err(fail(format!("{at}: name"), "another issuer has this name"));
            }
            let same_iss = self
                .issuers
                .iter()
                .position(|o| o.value.issuer == issuer.value.issuer);
            if same_iss != Some(i) {
                return Err(fail(
                    format!("{at}: issuer"),
                    "another issuer has this `iss`",
                ));
            }
        }
        let issuer_names: Vec<&str> = self.issuers.iter().map(|i| i.value.name.as_str()).collect();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!(
                "routes[{i}] \"{}\" (line {})",
                route.value.name,
                route.defined.line()
            );
            route
                .value
                .validate(&issuer_names)
                .map_err(|(f, m)| fail(format!("{at}: {f}"), &m))?;
            if let Some(upstream) = &route.value.upstream {
                let identity = self.identity_headers.names();
                upstream
                    .validate("upstream", &identity)
                    .map_err(|(f, m)| fail(format!("{at}: {f}"), &m))?;
            }
            let first = self
                .routes
                .iter()
                .position(|o| o.value.name == route.value.name);
            if first != Some(i) {
                return Err(fail(format!("{at}: name"), "another route has this name"));
            }
        }
        Ok(())
    }

    fn validate_top(&self) -> Result<(), (String, String)> {
        if self.routes.is_empty() {
            return Err(("routes".into(), "at least one route is needed".into()));
        }
        if self.realm.is_empty() || self.realm.contains(['"', '\\']) || has_control(&self.realm) {
            return Err((
                "realm".into(),
                "must be non-empty, without quotes or controls".into(),
            ));
        }
        if self.listen.admin == self.listen.grpc {
            return Err(("listen.admin".into(), "must differ from listen.grpc".into()));
        }
        if let Some(http) = self.listen.http
            && (http == self.listen.grpc || http == self.listen.admin)
        {
            return Err((
                "listen.http".into(),
                "must differ from listen.grpc and listen.admin".into(),
            ));
        }
        if !self.http_path_prefix.is_empty()
            && (!self.http_path_prefix.starts_with('/') || self.http_path_prefix.ends_with('/'))
        {
            return Err((
                "http_path_prefix".into(),
                "starts with '/' and does not end with one, like /authz".into(),
            ));
        }
        if self.token_cache.max_entries > 10_000_000 {
            return Err(("token_cache.max_entries".into(), "at most 10000000".into()));
        }
        if self.token_cache.max_entries > 0 && self.token_cache.max_bytes < 1024 * 1024 {
            return Err(("token_cache.max_bytes".into(), "at least 1048576".into()));
        }
        if self.token_sources.is_empty() {
            return Err(("token_sources".into(), "at least one source".into()));
        }
        for (i, source) in self.token_sources.iter().enumerate() {
            source
                .validate()
                .map_err(|m| (format!("token_sources[{i}]"), m))?;
            if self.token_sources[..i].contains(source) {
                return Err((format!("token_sources[{i}]"), "listed twice".into()));
            }
        }
        if !(1..=300).contains(&self.drain_timeout_seconds) {
            return Err(("drain_timeout_seconds".into(), "between 1 and 300".into()));
        }
        let identity = self.identity_headers.names();
        self.upstream.validate("upstream", &identity)?;
        self.tcp.validate()?;
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.max_check_request_bytes) {
            return Err((
                "max_check_request_bytes".into(),
                "must be between 65536 and 67108864".into(),
            ));
        }
        if !(256..=1024 * 1024).contains(&self.max_token_bytes) {
            return Err((
                "max_token_bytes".into(),
                "must be between 256 and 1048576".into(),
            ));
        }
        self.identity_headers.validate()
    }
}

// === impl IdentityHeadersConfig ===

impl IdentityHeadersConfig {
    /// The configured names, in a fixed order.
    pub fn names(&self) -> [&str; 5] {
        [
            &self.subject,
            &self.username,
            &self.realm_roles,
            &self.client,
            &self.issuer,
        ]
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fields = ["subject", "username", "realm_roles", "client", "issuer"];
        for (i, (field, name)) in fields.iter().zip(self.names()).enumerate() {
            if self.names()[..i].contains(&name) {
                return Err((
                    format!("identity_headers.{field}"),
                    "another identity header has this name".into(),
                ));
            }
            if !is_header_name(name) {
                return Err((
                    format!("identity_headers.{field}"),
                    "must be a lower-case HTTP header name (a-z, 0-9, '-', '_'), not a pseudo-header"
                        .into(),
                ));
            }
            if RESERVED_HEADERS.contains(&name) {
                return Err((
                    format!("identity_headers.{field}"),
                    "this header is reserved and cannot carry identity".into(),
                ));
            }
        }
        Ok(())
    }
}

const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

// === impl IssuerConfig ===

impl IssuerConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        if self.name.is_empty() || has_control(&self.name) {
            return err("name", "must be non-empty, without control characters");
        }
        let is_url = reqwest::Url::parse(&self.issuer)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        if !is_url || has_control(&self.issuer) {
            return err(
                "issuer",
                "must be the exact `iss` of the tokens: an https:// (or http://) URL",
            );
        }
        let (field, url) = match (&self.discovery_url, &self.jwks_url) {
            (Some(u), None) => ("discovery_url", u),
            (None, Some(u)) => ("jwks_url", u),
            _ => {
                return err(
                    "discovery_url, jwks_url",
                    "set exactly one of `discovery_url` and `jwks_url`",
                );
            }
        };
        if let Err(m) = check_fetch_url(url, self.allow_insecure_http) {
            return err(field, &m);
        }
        if self.algorithms.is_empty() {
            return err("algorithms", "at least one algorithm is needed");
        }
        for (i, alg) in self.algorithms.iter().enumerate() {
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                let m = format!(
                    "unsupported algorithm {alg:?}; supported: {}",
                    SUPPORTED_ALGORITHMS.join(", ")
                );
                return Err((format!("algorithms[{i}]"), m));
            }
        }
        if self.audiences.iter().any(String::is_empty) {
            return err("audiences", "an audience cannot be empty");
        }
        if self.clock_skew_seconds > 300 {
            return err("clock_skew_seconds", "at most 300 seconds");
        }
        if !(10..=86_400).contains(&self.refresh_interval_seconds) {
            return err("refresh_interval_seconds", "between 10 and 86400 seconds");
        }
        if !(1..=3600).contains(&self.unknown_kid_refetch_interval_seconds) {
            return err(
                "unknown_kid_refetch_interval_seconds",
                "between 1 and 3600 seconds",
            );
        }
        if self.unknown_kid_wait_milliseconds > 10_000 {
            return err("unknown_kid_wait_milliseconds", "at most 10000");
        }
        if self.max_key_age_seconds < self.refresh_interval_seconds {
            return err(
                "max_key_age_seconds",
                "must be at least refresh_interval_seconds",
            );
        }
        if !(1..=60).contains(&self.connect_timeout_seconds) {
            return err("connect_timeout_seconds", "between 1 and 60 seconds");
        }
        if !(1..=120).contains(&self.fetch_timeout_seconds) {
            return err("fetch_timeout_seconds", "between 1 and 120 seconds");
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                (
                    "ca_file".to_owned(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => {}
                _ => return err("ca_file", "not a PEM bundle of certificates"),
            }
        }
        Ok(())
    }
}

/// Accepts `https://` URLs, and `http://` ones on loopback or when allowed.
pub fn check_fetch_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err("plain http is only allowed on loopback; use https or set \
                       allow_insecure_http: true"
            .to_owned()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A short human-readable summary of a valid configuration, with warnings.
pub fn summary(config: &Config, origin: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{origin}: valid");
    let _ = writeln!(out, "  listen.grpc: {}", config.listen.grpc);
    let _ = writeln!(out, "  listen.admin: {}", config.listen.admin);
    let _ = writeln!(out, "  issuers: {}", config.issuers.len());
    for issuer in config.issuers.iter().map(|i| &i.value) {
        let source = match (&issuer.discovery_url, &issuer.jwks_url) {
            (Some(url), _) => format!("discovery {url}"),
            (None, Some(url)) => format!("jwks {url}"),
            (None, None) => "no key source".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {}: iss {} ({source}); algorithms {}; audiences {}",
            issuer.name,
            issuer.issuer,
            issuer.algorithms.join(","),
            if issuer.audiences.is_empty() {
                "any".to_owned()
            } else {
                issuer.audiences.join(",")
            }
        );
    }
    let public = config
        .routes
        .iter()
        .filter(|r| r.value.token == TokenMode::Public)
        .count();
    let _ = writeln!(
        out,
        "  routes: {} ({public} public); unmatched requests are denied",
        config.routes.len()
    );
    for warning in warnings(config) {
        let _ = writeln!(out, "  warning: {warning}");
    }
    out
}

/// Settings that are valid but probably not what the author meant.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings: Vec<String> = config
        .issuers
        .iter()
        .filter(|i| i.value.audiences.is_empty())
        .map(|i| {
            format!(
                "issuer {:?} checks no audience: its tokens for any client are accepted",
                i.value.name
            )
        })
        .collect();
    let policy = crate::policy::Policy::compile(config.routes.iter().map(|r| &r.value));
    for (hidden, by) in policy.shadowed() {
        let line = |i: usize| config.routes.get(i).map_or(0, |r| r.defined.line());
        warnings.push(format!(
            "route {:?} (line {}) is never reached: route {:?} (line {}) matches all its requests first",
            hidden.name,
            line(hidden.index),
            by.name,
            line(by.index)
        ));
    }
    warnings
}

#[cfg(test)]
mod tests;
