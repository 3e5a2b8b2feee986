//! What portcullis sends with its answers: claims as upstream headers, denial
//! overrides per route, and the rules for TCP connection checks.

use serde::Deserialize;

use super::route::{ClaimPath, MatchConfig};

/// Headers for the upstream of an allowed request, from the token's claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Claims to headers.
    #[serde(default)]
    pub claims: Vec<ClaimHeader>,
    /// A header that carries the whole verified payload, as base64url JSON.
    pub payload_header: Option<String>,
    /// Whether the client's `Authorization` header goes on to the upstream.
    #[serde(default = "default_true")]
    pub forward_authorization: bool,
}

/// One claim to one header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeader {
    /// The claim: a dotted path or a list of names.
    pub claim: ClaimPath,
    /// The header, lower-case.
    pub header: String,
    /// How arrays and objects are written.
    #[serde(default)]
    pub format: HeaderFormat,
}

/// How a claim that is not a scalar is written into a header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderFormat {
    /// Arrays joined with `,` (elements that contain a comma are left out);
    /// objects as JSON.
    #[default]
    Csv,
    /// JSON, always.
    Json,
}

/// How a route answers a denial, in place of the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyConfig {
    /// The HTTP status of every denial of the route (400 to 599).
    pub status: Option<u16>,
    /// The body, in place of the JSON reason.
    pub body: Option<String>,
    /// The content type of `body`. Default: `text/plain; charset=utf-8`.
    pub content_type: Option<String>,
}

/// Rules for TCP connection checks (Envoy's network ext_authz filter, which
/// Istio installs for CUSTOM policies on TCP ports). They have no HTTP part,
/// so only the caller's mTLS identity can decide. Without rules, every TCP
/// check is denied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Callers allowed to connect; each rule matches on identity only.
    #[serde(default)]
    pub allow: Vec<TcpRule>,
}

/// One TCP rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRule {
    /// A name for logs and metrics.
    pub name: String,
    /// SPIFFE IDs, as for routes.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Namespaces of the caller.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `<namespace>/<service account>` of the caller.
    #[serde(default)]
    pub service_accounts: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            claims: Vec::new(),
            payload_header: None,
            forward_authorization: true,
        }
    }
}

type Invalid = (String, String);

/// A header name portcullis may own: lower-case token characters, not reserved.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err("a lower-case HTTP header name (a-z, 0-9, '-', '_')".into());
    }
    if super::RESERVED_HEADERS.contains(&name) {
        return Err("this header is reserved and cannot carry identity".into());
    }
    Ok(())
}

impl UpstreamConfig {
    /// Every header name it sets.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.claims
            .iter()
            .map(|c| c.header.as_str())
            .chain(self.payload_header.as_deref())
    }

    pub(super) fn validate(&self, at: &str, identity: &[&str]) -> Result<(), Invalid> {
        let mut seen: Vec<&str> = Vec::new();
        for (i, mapping) in self.claims.iter().enumerate() {
            let field = format!("{at}.claims[{i}]");
            let names = mapping.claim.names();
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err((format!("{field}.claim"), "needs non-empty names".into()));
            }
            check_header_name(&mapping.header).map_err(|m| (format!("{field}.header"), m))?;
            if seen.contains(&mapping.header.as_str())
                || identity.contains(&mapping.header.as_str())
            {
                return Err((
                    format!("{field}.header"),
                    "another header mapping or identity header has this name".into(),
                ));
            }
            seen.push(&mapping.header);
        }
        if let Some(name) = &self.payload_header {
            check_header_name(name).map_err(|m| (format!("{at}.payload_header"), m))?;
            if seen.contains(&name.as_str()) || identity.contains(&name.as_str()) {
                return Err((
                    format!("{at}.payload_header"),
                    "another header has this name".into(),
                ));
            }
        }
        Ok(())
    }
}

impl DenyConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(("deny.status".into(), "a status from 400 to 599".into()));
        }
        if self.content_type.is_some() && self.body.is_none() {
            return Err(("deny.content_type".into(), "only with `body`".into()));
        }
        let printable = |s: &str| !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
        if self
            .content_type
            .as_deref()
            .is_some_and(|c| !printable(c) || c.contains('\n'))
        {
            return Err(("deny.content_type".into(), "a plain media type".into()));
        }
        Ok(())
    }
}

impl TcpConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        for (i, rule) in self.allow.iter().enumerate() {
            let field = format!("tcp.allow[{i}]");
            if rule.name.is_empty() {
                return Err((format!("{field}.name"), "must be non-empty".into()));
            }
            if rule.principals.is_empty()
                && rule.namespaces.is_empty()
                && rule.service_accounts.is_empty()
            {
                return Err((
                    field,
                    "name at least one principal, namespace or service account".into(),
                ));
            }
            let as_match = MatchConfig {
                path_prefix: Some("/".into()),
                principals: rule.principals.clone(),
                namespaces: rule.namespaces.clone(),
                service_accounts: rule.service_accounts.clone(),
                ..Default::default()
            };
            as_match
                .validate_peers()
                .map_err(|(f, m)| (format!("{field}.{}", f.trim_start_matches("match.")), m))?;
        }
        Ok(())
    }
}
