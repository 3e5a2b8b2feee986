//! One check, in order: route, credential, token, requirements, identity.
//!
//! [`Checker`] is built whole from a validated configuration and never changes;
//! a check borrows it for its whole duration.

use crate::config::{Config, IdentityHeadersConfig};
use crate::credential::{self, Credential};
use crate::decision::{Allow, Decision, Reason};
use crate::policy::{Access, Policy, Route};
use crate::request::Request;
use crate::token::{Claims, Validator, Verified};

/// Everything a check needs, built from one configuration.
#[derive(Debug)]
pub struct Checker {
    policy: Policy,
    validator: Validator,
    identity: IdentityHeadersConfig,
    /// The `realm` of challenges.
    pub realm: String,
}

impl Checker {
    /// Builds a checker from a validated configuration and the validator of its issuers.
    pub fn new(config: &Config, validator: Validator) -> Self {
        Self {
            policy: Policy::compile(config.routes.iter().map(|r| &r.value)),
            validator,
            identity: config.identity_headers.clone(),
            realm: config.realm.clone(),
        }
    }

    /// The token validator.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Decides on one request at time `now` (seconds since the epoch).
    pub async fn check(&self, request: &Request<'_>, now: i64) -> Decision {
        let path = match &request.path {
            Ok(path) => path,
            Err(e) => return Decision::deny(None, Reason::InvalidPath(*e)),
        };
        let Some(route) = self.policy.route_for(request.method, &request.host, path) else {
            return Decision::deny(None, Reason::NoRoute);
        };
        let requirements = match &route.access {
            Access::Public => return Decision::Allow(self.anonymous(route)),
            Access::Token(requirements) => requirements,
        };
        let deny = |reason| Decision::deny(Some(route.name.clone()), reason);
        let token = match credential::find(request.headers) {
            Ok(Credential::Bearer(token)) => token,
            Ok(Credential::None) => return deny(Reason::MissingToken),
            Err(e) => return deny(Reason::BadCredential(e)),
        };
        let verified = match self.validator.validate(token, now).await {
            Ok(verified) => verified,
            Err(e) => return deny(Reason::InvalidToken(e)),
        };
        if let Err(unmet) = requirements.evaluate(&verified.claims) {
            return deny(Reason::Insufficient(unmet));
        }
        Decision::Allow(self.identified(route, verified))
    }

    /// A public route: no identity, and every identity header the client sent is removed.
    fn anonymous(&self, route: &Route) -> Allow {
        Allow {
            route: route.name.clone(),
            issuer: None,
            subject: None,
            set_headers: Vec::new(),
            remove_headers: self
                .identity
                .names()
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
        }
    }

    /// A validated token: identity headers are set from its claims; those it
    /// lacks are removed, so that no client copy reaches the upstream.
    fn identified(&self, route: &Route, verified: Verified<'_>) -> Allow {
        let Verified { issuer, claims, .. } = verified;
        let id = &self.identity;
        let values = [
            (&id.subject, claims.sub.clone()),
            (&id.username, claims.preferred_username.clone()),
            (&id.realm_roles, realm_roles(&claims)),
            (&id.client, claims.azp.clone()),
            (&id.issuer, Some(issuer.name.to_string())),
        ];
        let mut allow = Allow {
            route: route.name.clone(),
            issuer: Some(issuer.name.clone()),
            subject: claims.sub,
            set_headers: Vec::with_capacity(values.len()),
            remove_headers: Vec::new(),
        };
        for (name, value) in values {
            match value.filter(|v| is_header_value(v)) {
                Some(value) => allow.set_headers.push((name.clone(), value)),
                None => allow.remove_headers.push(name.clone()),
            }
        }
        allow
    }
}

/// Realm roles joined with `,`; roles that contain a comma are left out, since
/// they would read as two roles.
fn realm_roles(claims: &Claims) -> Option<String> {
    let roles = &claims.realm_access.as_ref()?.roles;
    let kept: Vec<&str> = roles
        .iter()
        .map(String::as_str)
        .filter(|r| !r.contains(','))
        .collect();
    Some(kept.join(","))
}

/// A value Envoy accepts in a header: no control characters, no surrounding space.
fn is_header_value(value: &str) -> bool {
    !value.is_empty() && value.trim() == value && !value.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests;
