//! The `routes` of the configuration: what each matches and what it requires.
//!
//! Every field is documented with an example in `docs/policy.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A route: which requests it matches and what they need.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A name for logs, metrics and denial bodies.
    pub name: String,
    /// Which requests the route covers.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Whether a token is read: `required` (default), `optional` or `public`.
    #[serde(default)]
    pub token: TokenMode,
    /// Issuers (by name) whose tokens this route accepts. Empty: any configured issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// What a valid token must carry. Absent: any valid token.
    pub require: Option<RequireConfig>,
    /// Evaluate and report denials, but allow.
    #[serde(default)]
    pub dry_run: bool,
    /// Upstream headers for this route, in place of the global `upstream`.
    pub upstream: Option<super::answer::UpstreamConfig>,
    /// How this route answers denials, in place of the default.
    pub deny: Option<super::answer::DenyConfig>,
}

/// Whether and how a route reads a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// A valid token is needed.
    #[default]
    Required,
    /// No token is fine; a token that is sent must be valid.
    Optional,
    /// No token is read at all.
    Public,
}

/// What a route matches. All given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Hosts: exact or `*.example.com`, case-insensitive; without a port, any
    /// port matches. Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The exact path.
    pub path: Option<String>,
    /// A path prefix that ends on a segment boundary.
    pub path_prefix: Option<String>,
    /// Paths in Istio's forms: exact, `/api/*`, `*/status`, `*`, and templates
    /// with `{*}` (one segment) and `{**}` (any rest).
    #[serde(default)]
    pub paths: Vec<String>,
    /// A regular expression the whole normalized path must match.
    pub path_regex: Option<String>,
    /// HTTP methods. Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The caller's mTLS identity (`source.principal`): exact SPIFFE IDs, with
    /// or without `spiffe://`, or with a `*` at the start or end. Empty: any caller.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Namespaces of the caller's SPIFFE ID (`…/ns/<namespace>/sa/…`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Service accounts of the caller, as `<namespace>/<service account>`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Envoy per-route `context_extensions` that must all be present with these values.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
}

/// Claims a token must carry. Every listed item is required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// Roles in `realm_access.roles`.
    #[serde(default)]
    pub realm_roles: Vec<String>,
    /// Roles in `resource_access.<client>.roles`, by client.
    #[serde(default)]
    pub client_roles: BTreeMap<String, Vec<String>>,
    /// Scopes in the space-separated `scope` claim.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Keycloak groups (full paths such as `/eng/backend`) in the `groups` claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The client the token was issued to (`azp`): one of these.
    #[serde(default)]
    pub azp: Vec<String>,
    /// Conditions on any claim.
    #[serde(default)]
    pub claims: Vec<ClaimCondition>,
    /// Every one of these.
    #[serde(default)]
    pub all: Vec<RequireConfig>,
    /// At least one of these.
    #[serde(default)]
    pub any: Vec<RequireConfig>,
    /// Not this.
    pub not: Option<Box<RequireConfig>>,
}

/// A condition on one claim; exactly one test is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCondition {
    /// The claim: a dotted path (`address.country`), or a list of names for
    /// names that contain dots or colons (`["https://example.test/tenant", "id"]`).
    pub claim: ClaimPath,
    /// The claim equals this value (string, number or boolean).
    pub equals: Option<serde_json::Value>,
    /// The claim equals one of these values.
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The claim is an array that contains this value.
    pub contains: Option<serde_json::Value>,
    /// The claim is a string that matches this regular expression.
    pub regex: Option<String>,
    /// The claim is present (`true`) or absent (`false`).
    pub present: Option<bool>,
}

/// A claim path as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimPath {
    /// `a.b.c`.
    Dotted(String),
    /// `[a, b.c, "d:e"]`: names taken literally.
    Names(Vec<String>),
}

/// What to do with a path that servers may read in two ways (an encoded
/// slash or backslash, an encoded dot segment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousPaths {
    /// Allowed only when every reading falls on a public route; else 400.
    #[default]
    AllowIfPublic,
    /// Always 400.
    Reject,
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

type Invalid = (String, String);

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    (field.into(), message.into())
}

// === impl ClaimPath ===

impl ClaimPath {
    /// The names along the path.
    pub fn names(&self) -> Vec<String> {
        match self {
            ClaimPath::Dotted(path) => path.split('.').map(str::to_owned).collect(),
            ClaimPath::Names(names) => names.clone(),
        }
    }
}

// === impl RouteConfig ===

impl RouteConfig {
    /// Checks the route; `issuers` are the configured issuer names.
    pub(super) fn validate(&self, issuers: &[&str]) -> Result<(), Invalid> {
        if self.name.is_empty() || self.name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "must be non-empty, without control characters",
            ));
        }
        self.matcher.validate()?;
        match self.token {
            TokenMode::Required => {}
            TokenMode::Public | TokenMode::Optional if self.require.is_some() => {
                return Err(invalid(
                    "require",
                    "only a route whose token is required can require claims",
                ));
            }
            TokenMode::Public if !self.issuers.is_empty() => {
                return Err(invalid("issuers", "a public route reads no token"));
            }
            TokenMode::Public if self.dry_run => {
                return Err(invalid("dry_run", "a public route never denies"));
            }
            TokenMode::Public | TokenMode::Optional => {}
        }
        if self.token != TokenMode::Public && issuers.is_empty() {
            return Err(invalid(
                "token",
                "the route reads tokens but no issuer is configured",
            ));
        }
        for (i, name) in self.issuers.iter().enumerate() {
            if !issuers.contains(&name.as_str()) {
                return Err(invalid(format!("issuers[{i}]"), "no issuer has this name"));
            }
        }
        if let Some(require) = &self.require {
            require.validate("require")?;
        }
        if let Some(deny) = &self.deny {
            deny.validate()?;
        }
        Ok(())
    }
}

// === impl MatchConfig ===

impl MatchConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let forms = [
            self.path.is_some(),
            self.path_prefix.is_some(),
            !self.paths.is_empty(),
            self.path_regex.is_some(),
        ];
        let given = forms.iter().filter(|f| **f).count();
        if given > 1 || (given == 0 && self.context_extensions.is_empty()) {
            return Err(invalid(
                "match.path",
                "set exactly one of `path`, `path_prefix`, `paths` and `path_regex` \
                 (or none with `context_extensions`)",
            ));
        }
        if let Some(path) = &self.path {
            check_config_path(path).map_err(|m| invalid("match.path", m))?;
        }
        if let Some(prefix) = &self.path_prefix {
            check_config_path(prefix).map_err(|m| invalid("match.path_prefix", m))?;
        }
        for (i, pattern) in self.paths.iter().enumerate() {
            crate::policy::path::PathPattern::parse(pattern)
                .map_err(|m| invalid(format!("match.paths[{i}]"), m))?;
        }
        if let Some(regex) = &self.path_regex {
            compile_regex(regex).map_err(|m| invalid("match.path_regex", m))?;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let ok = host == "*"
                || (!name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)));
            if !ok {
                return Err(invalid(
                    format!("match.hosts[{i}]"),
                    "not a host name (optionally `*.` before it, a port after it)",
                ));
            }
        }
        for (i, method) in self.methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                let m = format!("unknown method; one of {}", HTTP_METHODS.join(", "));
                return Err(invalid(format!("match.methods[{i}]"), m));
            }
        }
        self.validate_peers()
    }

    /// Checks the caller-identity conditions.
    pub(super) fn validate_peers(&self) -> Result<(), Invalid> {
        for (i, principal) in self.principals.iter().enumerate() {
            let inner = principal.trim_start_matches('*').trim_end_matches('*');
            if principal.is_empty() || inner.contains('*') {
                return Err(invalid(
                    format!("match.principals[{i}]"),
                    "an identity, with `*` only at its start or end",
                ));
            }
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if ns.is_empty() || ns.contains('/') {
                return Err(invalid(
                    format!("match.namespaces[{i}]"),
                    "a namespace name",
                ));
            }
        }
        for (i, sa) in self.service_accounts.iter().enumerate() {
            let ok = sa.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !ok {
                return Err(invalid(
                    format!("match.service_accounts[{i}]"),
                    "write `<namespace>/<service account>`",
                ));
            }
        }
        Ok(())
    }
}

/// A configured path must already be in normalized form, or it could never match.
fn check_config_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    let normal = crate::request::normalize_path(path)
        .map_err(|e| format!("not a plain path ({e}); write it decoded and without dots"))?;
    if normal != path {
        return Err(format!("not in normalized form; write {normal:?}"));
    }
    Ok(())
}

/// Compiles a configured regex, anchored at both ends.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))
}

// === impl RequireConfig ===

impl RequireConfig {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        let field = |name: &str| format!("{at}.{name}");
        let lists = [
            ("realm_roles", &self.realm_roles),
            ("scopes", &self.scopes),
            ("groups", &self.groups),
            ("azp", &self.azp),
        ];
        for (name, list) in lists {
            if list.iter().any(String::is_empty) {
                return Err(invalid(field(name), "values cannot be empty"));
            }
        }
        if self.scopes.iter().any(|s| s.contains(' ')) {
            return Err(invalid(field("scopes"), "a scope cannot contain a space"));
        }
        if self.groups.iter().any(|g| !g.starts_with('/')) {
            return Err(invalid(
                field("groups"),
                "write groups as full paths, like /eng/backend",
            ));
        }
        for (client, roles) in &self.client_roles {
            if client.is_empty() || roles.is_empty() || roles.iter().any(String::is_empty) {
                let m = "each client needs a non-empty name and at least one non-empty role";
                return Err(invalid(field(&format!("client_roles.{client}")), m));
            }
        }
        for (i, condition) in self.claims.iter().enumerate() {
            condition
                .validate()
                .map_err(|m| invalid(field(&format!("claims[{i}]")), m))?;
        }
        for (i, nested) in self.all.iter().enumerate() {
            nested.validate(&field(&format!("all[{i}]")))?;
        }
        if self.any.len() == 1 {
            return Err(invalid(
                field("any"),
                "`any` with one entry is that entry; write it plainly",
            ));
        }
        for (i, nested) in self.any.iter().enumerate() {
            if nested.is_empty() {
                return Err(invalid(
                    field(&format!("any[{i}]")),
                    "an empty alternative is always met",
                ));
            }
            nested.validate(&field(&format!("any[{i}]")))?;
        }
        if let Some(not) = &self.not {
            if not.is_empty() {
                return Err(invalid(field("not"), "`not` of nothing can never be met"));
            }
            not.validate(&field("not"))?;
        }
        Ok(())
    }

    /// Whether it requires nothing at all.
    pub fn is_empty(&self) -> bool {
        self.realm_roles.is_empty()
            && self.client_roles.is_empty()
            && self.scopes.is_empty()
            && self.groups.is_empty()
            && self.azp.is_empty()
            && self.claims.is_empty()
            && self.all.iter().all(RequireConfig::is_empty)
            && self.any.is_empty()
            && self.not.is_none()
    }
}

impl ClaimCondition {
    fn validate(&self) -> Result<(), String> {
        let names = self.claim.names();
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err("`claim` needs non-empty names".into());
        }
        let tests = [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.contains.is_some(),
            self.regex.is_some(),
            self.present.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err("give exactly one of equals, one_of, contains, regex, present".into());
        }
        let scalar = |v: &serde_json::Value| v.is_string() || v.is_number() || v.is_boolean();
        let values = self.equals.iter().chain(self.contains.iter());
        if values
            .chain(self.one_of.iter().flatten())
            .any(|v| !scalar(v))
        {
            return Err("compare with strings, numbers or booleans".into());
        }
        if self.one_of.as_ref().is_some_and(Vec::is_empty) {
            return Err("`one_of` needs at least one value".into());
        }
        if let Some(regex) = &self.regex {
            compile_regex(regex)?;
        }
        Ok(())
    }
}
