//! Per-route policy: which route a request falls under (first match wins), and
//! whether a validated token meets what the route requires.
//!
//! Routes are compiled once from the configuration. Matching uses the
//! normalized host and path of [`crate::request::Request`]; a path prefix
//! matches on a segment boundary only.

use std::sync::Arc;

use crate::config::{MatchConfig, RequireConfig, RouteConfig};
use crate::request::split_port;
use crate::token::Claims;

/// The compiled routes.
#[derive(Debug)]
pub struct Policy {
    routes: Vec<Route>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its configured name.
    pub name: Arc<str>,
    hosts: Vec<HostMatch>,
    path: PathMatch,
    methods: Vec<String>,
    /// What the route needs.
    pub access: Access,
}

/// What a route needs from the request.
#[derive(Debug)]
pub enum Access {
    /// Nothing: no token is read.
    Public,
    /// A valid token that meets these requirements.
    Token(Requirements),
}

/// Claims a token must carry; every item is required.
#[derive(Debug, Default)]
pub struct Requirements {
    realm_roles: Vec<String>,
    client_roles: Vec<(String, Vec<String>)>,
    scopes: Vec<String>,
}

/// The first requirement a token did not meet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    /// A realm role is missing.
    #[error("missing realm role {0:?}")]
    RealmRole(String),
    /// A client role is missing.
    #[error("missing role {role:?} of client {client:?}")]
    ClientRole {
        /// The client.
        client: String,
        /// The role.
        role: String,
    },
    /// A scope is missing.
    #[error("missing scope {0:?}")]
    Scope(String),
}

#[derive(Debug)]
struct HostMatch {
    name: String,
    port: Option<String>,
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    /// Without a trailing slash; `/` alone matches everything.
    Prefix(String),
}

// === impl Policy ===

impl Policy {
    /// Compiles validated route configurations, keeping their order.
    pub fn compile<'a>(routes: impl IntoIterator<Item = &'a RouteConfig>) -> Self {
        Self {
            routes: routes.into_iter().map(Route::compile).collect(),
        }
    }

    /// The first route that matches, if any.
    pub fn route_for(&self, method: &str, host: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, host, path))
    }
}

// === impl Route ===

impl Route {
    fn compile(config: &RouteConfig) -> Self {
        let access = if config.public {
            Access::Public
        } else {
            Access::Token(Requirements::compile(config.require.as_ref()))
        };
        Self {
            name: Arc::from(config.name.as_str()),
            hosts: config
                .matcher
                .hosts
                .iter()
                .map(|h| HostMatch::compile(h))
                .collect(),
            path: PathMatch::compile(&config.matcher),
            methods: config.matcher.methods.clone(),
            access,
        }
    }

    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && self.path.matches(path)
    }
}

impl HostMatch {
    fn compile(host: &str) -> Self {
        let host = crate::request::normalize_host(host);
        let (name, port) = split_port(&host);
        Self {
            name: name.to_owned(),
            port: port.map(str::to_owned),
        }
    }

    /// `host` is already lower-cased and without a trailing dot.
    fn matches(&self, host: &str) -> bool {
        let (name, port) = split_port(host);
        name == self.name && (self.port.is_none() || self.port.as_deref() == port)
    }
}

impl PathMatch {
    fn compile(config: &MatchConfig) -> Self {
        match (&config.path, &config.path_prefix) {
            (Some(exact), _) => PathMatch::Exact(exact.clone()),
            (None, Some(prefix)) => PathMatch::Prefix(prefix.trim_end_matches('/').to_owned()),
            // Validation requires one of the two; match nothing if it ever did not.
            (None, None) => PathMatch::Exact(String::new()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

// === impl Requirements ===

impl Requirements {
    fn compile(config: Option<&RequireConfig>) -> Self {
        let Some(config) = config else {
            return Self::default();
        };
        Self {
            realm_roles: config.realm_roles.clone(),
            client_roles: config
                .client_roles
                .iter()
                .map(|(client, roles)| (client.clone(), roles.clone()))
                .collect(),
            scopes: config.scopes.clone(),
        }
    }

    /// Checks every requirement against the token's claims.
    pub fn evaluate(&self, claims: &Claims) -> Result<(), Unmet> {
        let realm_roles = claims.realm_access.as_ref().map_or(&[][..], |r| &r.roles);
        if let Some(role) = self.realm_roles.iter().find(|r| !realm_roles.contains(r)) {
            return Err(Unmet::RealmRole(role.clone()));
        }
        for (client, roles) in &self.client_roles {
            let held = claims
                .resource_access
                .get(client)
                .map_or(&[][..], |r| &r.roles);
            if let Some(role) = roles.iter().find(|r| !held.contains(r)) {
                return Err(Unmet::ClientRole {
                    client: client.clone(),
                    role: role.clone(),
                });
            }
        }
        let scope = claims.scope.as_deref().unwrap_or("");
        if let Some(missing) = self
            .scopes
            .iter()
            .find(|s| !scope.split(' ').any(|held| held == s.as_str()))
        {
            return Err(Unmet::Scope(missing.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
