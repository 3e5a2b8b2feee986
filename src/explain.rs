//! `portcullis explain`: one request, decided by the same code as the server,
//! with each step printed.
//!
//! The request is described on the command line (method, URL, token file,
//! headers, caller identity, context extensions) and turned into the
//! `CheckRequest` Envoy would send. Keys come from JWKS files given with
//! `--jwks NAME=FILE`, or are fetched once from each issuer's configured source.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use crate::check::{Checker, Explanation};
use crate::config::Config;
use crate::decision::Decision;
use crate::keys::fetch::KeySource;
use crate::keys::{IssuerKeys, KeySet};
use crate::request::Request;
use crate::token::{TrustedIssuer, Validator};

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// The HTTP method.
    pub method: String,
    /// The full URL: scheme, host, path and query.
    pub url: String,
    /// The token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Other headers, `name: value`.
    pub headers: Vec<(String, String)>,
    /// The caller's mTLS identity.
    pub peer: Option<String>,
    /// Envoy per-route context extensions.
    pub context_extensions: Vec<(String, String)>,
    /// JWKS files by issuer name, instead of fetching.
    pub jwks_files: Vec<(String, PathBuf)>,
    /// The time to decide at, seconds since the epoch (default: now).
    pub at: Option<i64>,
}

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The URL is not absolute.
    #[error("not an absolute URL: {0}")]
    Url(String),
    /// A JWKS file is missing, unreadable or unusable, or names no issuer.
    #[error("keys of issuer {issuer}: {reason}")]
    Keys {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
}

/// Decides the request and describes how, as text.
pub async fn explain(config: &Config, question: &Question) -> Result<String, ExplainError> {
    let check = check_request(question)?;
    let checker = checker(config, question).await?;
    let request = match Request::from_check(&check) {
        Ok(request) => request,
        Err(e) => return Ok(format!("decision: deny ({e})\n")),
    };
    let now = question
        .at
        .unwrap_or_else(|| crate::keys::unix_seconds(SystemTime::now()));
    let (decision, explanation) = checker.explain(&request, now).await;
    Ok(render(question, &decision, &explanation, config))
}

fn check_request(question: &Question) -> Result<CheckRequest, ExplainError> {
    // Split by hand: a URL parser would resolve dot segments and decode, and
    // the point is to see what portcullis makes of the path as sent.
    let (scheme, rest) = question
        .url
        .split_once("://")
        .ok_or_else(|| ExplainError::Url(question.url.clone()))?;
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if host.is_empty() {
        return Err(ExplainError::Url(question.url.clone()));
    }
    let host = host.to_owned();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &question.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    if let Some(token) = &question.token {
        headers.insert("authorization".into(), format!("Bearer {}", token.trim()));
    }
    headers.insert(":authority".into(), host.clone());
    headers.insert(":path".into(), path.clone());
    headers.insert(":method".into(), question.method.clone());
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: question.peer.clone().unwrap_or_default(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: question.method.clone(),
                    host,
                    path,
                    scheme: scheme.to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: question.context_extensions.iter().cloned().collect(),
            ..Default::default()
        }),
    })
}

/// A checker whose issuers hold keys from the given files or from one fetch each.
async fn checker(config: &Config, question: &Question) -> Result<Checker, ExplainError> {
    for (name, _) in &question.jwks_files {
        if !config.issuers.iter().any(|i| &i.value.name == name) {
            return Err(ExplainError::Keys {
                issuer: name.clone(),
                reason: "no issuer of the configuration has this name".into(),
            });
        }
    }
    let mut trusted = Vec::new();
    for issuer in config.issuers.iter().map(|i| &i.value) {
        let keys = Arc::new(IssuerKeys::new(Duration::from_secs(3600)));
        let fail = |reason: String| ExplainError::Keys {
            issuer: issuer.name.clone(),
            reason,
        };
        let file = question.jwks_files.iter().find(|(n, _)| *n == issuer.name);
        if question.token.is_none() {
            // No token to validate: no keys needed.
            trusted.push(TrustedIssuer::from_config(issuer, keys));
            continue;
        }
        let set = match file {
            Some((_, path)) => {
                let bytes =
                    std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
                KeySet::from_jwks(&bytes, SystemTime::now()).map_err(|e| fail(e.to_string()))
            }
            None => {
                let source = KeySource::from_config(issuer);
                let client = source.http_client().map_err(fail)?;
                source
                    .fetch(&client)
                    .await
                    .map(|f| f.keys)
                    .map_err(|e| fail(e.to_string()))
            }
        };
        match set {
            Ok(set) => keys.store(set),
            // Without keys the issuer's tokens are refused, which the output shows.
            Err(e) => eprintln!("portcullis: warning: {e}"),
        }
        trusted.push(TrustedIssuer::from_config(issuer, keys));
    }
    Ok(Checker::new(
        config,
        Validator::new(trusted, config.max_token_bytes),
    ))
}

fn render(question: &Question, decision: &Decision, e: &Explanation, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request:   {} {}", question.method, question.url);
    let _ = writeln!(out, "path:      {}", e.path);
    match &e.route {
        Some((name, index)) => {
            let line = config.routes.get(*index).map_or(0, |r| r.defined.line());
            let _ = writeln!(out, "route:     {name} (routes[{index}], line {line})");
        }
        None => {
            let _ = writeln!(out, "route:     none");
        }
    }
    if !e.token.is_empty() {
        let _ = writeln!(out, "token:     {}", e.token);
    }
    if !e.requirements.is_empty() {
        let _ = writeln!(out, "requires:");
        for line in &e.requirements {
            let mark = if line.held { "[met]    " } else { "[not met]" };
            let _ = writeln!(out, "  {mark} {}{}", "  ".repeat(line.depth), line.what);
        }
    }
    let verdict = match decision {
        Decision::Allow(a) => match &a.would_deny {
            Some(r) => format!(
                "allow (dry run; would deny {} {}: {})",
                r.answer().status,
                r.answer().code,
                r.description()
            ),
            None => "allow".to_owned(),
        },
        Decision::Deny(d) => format!(
            "deny {} {}: {}",
            d.reason.answer().status,
            d.reason.answer().code,
            d.reason.description()
        ),
    };
    let _ = writeln!(out, "decision:  {verdict}");
    out
}
