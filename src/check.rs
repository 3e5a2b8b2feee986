//! One check, in order: route, credential, token, requirements, identity.
//!
//! [`Checker`] is built whole from a validated configuration and never changes;
//! a check borrows it for its whole duration. `portcullis explain` runs the
//! same steps with a trace ([`Checker::explain`]).

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{AmbiguousPaths, Config, IdentityHeadersConfig, MetadataConfig, TokenMode};
use crate::credential::{self, Credential, TokenSource};
use crate::decision::{Allow, Decision, Reason, Removals};
use crate::policy::require::{TokenView, TraceLine};
use crate::policy::upstream::{UpstreamRules, is_header_value};
use crate::policy::{Policy, Route, Target, TcpPolicy};
use crate::request::{PathError, PathReadings, Request};
use crate::token::{Claims, Validator, Verified};

/// Everything a check needs, built from one configuration.
#[derive(Debug)]
pub struct Checker {
    policy: Policy,
    tcp: TcpPolicy,
    validator: Validator,
    upstream: UpstreamRules,
    /// Every header portcullis may set, and their underscore spellings.
    owned_headers: Arc<[Arc<str>]>,
    /// By route index: what an allow removes when it sets every header it can
    /// (none when two rules name the same header: counting would not tell).
    full_removals: Vec<Option<FullRemoval>>,
    /// The names of the identity headers, shared by every allow.
    identity_names: IdentityNames,
    ambiguous_paths: AmbiguousPaths,
    token_sources: Vec<TokenSource>,
    /// The `realm` of challenges.
    pub realm: String,
    /// Which answers carry dynamic metadata.
    pub metadata: MetadataConfig,
}

/// What `portcullis explain` prints: each step of a check and its result.
#[derive(Debug, Default)]
pub struct Explanation {
    /// The path as matched, or the readings of an ambiguous one.
    pub path: String,
    /// The route that matched, with its position in the configuration.
    pub route: Option<(String, usize)>,
    /// What became of the credential.
    pub token: String,
    /// Each requirement and whether it held.
    pub requirements: Vec<TraceLine>,
}

impl Checker {
    /// Builds a checker from a validated configuration and the validator of its issuers.
    pub fn new(config: &Config, mut validator: Validator) -> Self {
        let upstream = UpstreamRules::compile(&config.upstream);
        let policy = Policy::compile(config.routes.iter().map(|r| &r.value));
        let payload_read = upstream.sets_headers()
            || policy.routes().any(|route| {
                route.requirement.reads_payload()
                    || route
                        .upstream
                        .as_ref()
                        .is_some_and(UpstreamRules::sets_headers)
            });
        validator.set_payload_read(payload_read);
        let identity_names = IdentityNames::new(&config.identity_headers);
        let owned_headers: Arc<[Arc<str>]> =
            owned_headers(&identity_names, &upstream, &policy).into();
        let full_removals = policy
            .routes()
            .map(|route| {
                let rules = route.upstream.as_ref().unwrap_or(&upstream);
                let set: Vec<&str> = identity_names.all().chain(rules.header_names()).collect();
                let distinct = set.iter().enumerate().all(|(i, n)| !set[..i].contains(n));
                distinct.then(|| FullRemoval {
                    settable: set.len(),
                    names: removals(&owned_headers, &identity_names, rules, |name| {
                        set.contains(&name)
                    })
                    .map(Arc::from)
                    .collect(),
                })
            })
            .collect();
        Self {
            policy,
            tcp: TcpPolicy::compile(&config.tcp),
            validator,
            upstream,
            owned_headers,
            full_removals,
            identity_names,
            ambiguous_paths: config.ambiguous_paths,
            token_sources: config.token_sources.iter().map(|s| s.to_source()).collect(),
            realm: config.realm.clone(),
            metadata: config.metadata,
        }
    }

    /// The compiled routes.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The token validator (and its cache).
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Decides on one request at time `now` (seconds since the epoch).
    pub async fn check(&self, request: &Request<'_>, now: i64) -> Decision<'_> {
        self.run(request, now, None).await
    }

    /// Decides as [`Checker::check`] does, and says how.
    pub async fn explain(&self, request: &Request<'_>, now: i64) -> (Decision<'_>, Explanation) {
        let mut explanation = Explanation::default();
        let decision = self.run(request, now, Some(&mut explanation)).await;
        (decision, explanation)
    }

    async fn run(
        &self,
        request: &Request<'_>,
        now: i64,
        mut explain: Option<&mut Explanation>,
    ) -> Decision<'_> {
        if let Some(e) = explain.as_deref_mut() {
            e.path = describe_path(&request.path);
        }
        let route = match self.route(request) {
            Ok(route) => route,
            Err(reason) => return Decision::deny(None, reason),
        };
        if let Some(e) = explain.as_deref_mut() {
            e.route = Some((route.name.to_string(), route.index));
        }
        let (denial, mut allow) = self.on_route(route, request, now, explain).await;
        match denial {
            None => Decision::Allow(allow),
            Some(reason) if route.dry_run => {
                allow.would_deny = Some(reason);
                Decision::Allow(allow)
            }
            Some(reason) => {
                let mut decision = Decision::deny(Some(route.name.clone()), reason);
                if let Decision::Deny(denial) = &mut decision {
                    denial.overrides = route.deny.clone();
                }
                decision
            }
        }
    }

    /// Decides on a TCP connection check, which has only the caller's identity.
    pub fn check_tcp(&self, principal: &str) -> Decision<'_> {
        match self.tcp.allows(principal) {
            Some(rule) => Decision::Allow(Allow {
                route: rule,
                route_index: None,
                issuer: None,
                subject: None,
                set_headers: Vec::new(),
                remove_headers: Removals::Shared(&[]),
                would_deny: None,
            }),
            None => Decision::deny(None, Reason::NotHttp(crate::request::RequestError::NotHttp)),
        }
    }

    /// The route of a request. A path that servers may read in two ways falls
    /// under a route only if both readings fall on public routes.
    fn route(&self, request: &Request<'_>) -> Result<&Route, Reason> {
        let find = |path: &str| {
            self.policy.route_for(&Target {
                method: &request.method,
                host: &request.host,
                path,
                principal: request.peer_principal,
                context_extensions: request.context_extensions,
            })
        };
        match &request.path {
            Err(e) => Err(Reason::InvalidPath(*e)),
            Ok(PathReadings::One(path)) => find(path).ok_or(Reason::NoRoute),
            Ok(PathReadings::Ambiguous { literal, decoded }) => {
                let ambiguous = Reason::InvalidPath(PathError::Ambiguous);
                if self.ambiguous_paths == AmbiguousPaths::Reject {
                    return Err(ambiguous);
                }
                match (find(literal), find(decoded)) {
                    (Some(a), Some(b))
                        if a.token == TokenMode::Public && b.token == TokenMode::Public =>
                    {
                        Ok(a)
                    }
                    _ => Err(ambiguous),
                }
            }
        }
    }

    /// The denial, if any, and the allow that would be given without it.
    async fn on_route<'c>(
        &'c self,
        route: &'c Route,
        request: &Request<'_>,
        now: i64,
        explain: Option<&mut Explanation>,
    ) -> (Option<Reason>, Allow<'c>) {
        let anonymous = || self.anonymous(route);
        if route.token == TokenMode::Public {
            note(explain, |e| e.token = "not read: public route".into());
            return (None, anonymous());
        }
        let found = credential::find(request.headers, request.raw_path, &self.token_sources);
        let token = match found {
            Ok(Credential::Bearer(token)) => token,
            Ok(Credential::None) if route.token == TokenMode::Optional => {
                note(explain, |e| e.token = "none (optional)".into());
                return (None, anonymous());
            }
            Ok(Credential::None) => {
                note(explain, |e| e.token = "none".into());
                return (Some(Reason::MissingToken), anonymous());
            }
            Err(e) => {
                note(explain, |x| x.token = format!("unreadable: {e}"));
                return (Some(Reason::BadCredential(e)), anonymous());
            }
        };
        let verified = match self.validator.validate(&token, now).await {
            Ok(verified) => verified,
            Err(e) => {
                note(explain, |x| x.token = format!("invalid: {e}"));
                return (Some(Reason::InvalidToken(e)), anonymous());
            }
        };
        let issuer = verified.issuer.name.clone();
        if !route.issuers.is_empty() && !route.issuers.iter().any(|i| **i == *issuer) {
            note(explain, |x| {
                x.token = format!("valid, but issuer {issuer} is not accepted here")
            });
            return (Some(Reason::IssuerNotAllowed), anonymous());
        }
        let view = TokenView {
            claims: &verified.token.claims,
            payload: &verified.token.payload,
        };
        let unmet = match explain {
            Some(x) => {
                x.token = format!(
                    "valid: issuer {issuer}, sub {}",
                    verified.token.claims.sub.as_deref().unwrap_or("(none)")
                );
                route.requirement.evaluate(view, Some(&mut x.requirements))
            }
            None => route.requirement.evaluate(view, None),
        };
        (
            unmet.err().map(Reason::Insufficient),
            self.identified(route, verified),
        )
    }

    /// No identity: every identity header the client sent is removed.
    fn anonymous<'c>(&'c self, route: &'c Route) -> Allow<'c> {
        Allow {
            route: &route.name,
            route_index: Some(route.index),
            issuer: None,
            subject: None,
            set_headers: Vec::new(),
            remove_headers: Removals::Shared(&self.owned_headers),
            would_deny: None,
        }
    }

    /// A validated token: identity headers are set from its claims; those it
    /// lacks are removed, so that no client copy reaches the upstream.
    fn identified<'c>(&'c self, route: &'c Route, verified: Verified<'c>) -> Allow<'c> {
        let Verified { issuer, token } = verified;
        let (claims, payload) = (&token.claims, &token.payload);
        let id = &self.identity_names;
        let values = [
            (&id.subject, claims.sub.as_deref().map(Cow::Borrowed)),
            (
                &id.username,
                claims.preferred_username.as_deref().map(Cow::Borrowed),
            ),
            (&id.realm_roles, realm_roles(claims)),
            (&id.client, claims.azp.as_deref().map(Cow::Borrowed)),
            (&id.issuer, Some(Cow::Borrowed(&*issuer.name))),
        ];
        let rules = route.upstream.as_ref().unwrap_or(&self.upstream);
        let mut set_headers = Vec::with_capacity(values.len() + usize::from(rules.sets_headers()));
        for (name, value) in values {
            if let Some(value) = value.filter(|v| is_header_value(v)) {
                set_headers.push((&**name, value.into_owned()));
            }
        }
        if rules.sets_headers() {
            rules.add_headers(payload, &mut set_headers);
        }
        let remove_headers = match self.full_removals.get(route.index) {
            Some(Some(full)) if set_headers.len() == full.settable => Removals::Shared(&full.names),
            _ => Removals::Picked(
                removals(&self.owned_headers, &self.identity_names, rules, |name| {
                    set_headers.iter().any(|(set, _)| *set == name)
                })
                .collect(),
            ),
        };
        Allow {
            route: &route.name,
            route_index: Some(route.index),
            issuer: Some(&issuer.name),
            subject: claims.sub.clone(),
            set_headers,
            remove_headers,
            would_deny: None,
        }
    }
}

/// Every header portcullis may set (identity headers, claim headers of the
/// global and every route's rules) and the underscore spelling of each
/// (`x_portcullis_subject`), which some upstreams (CGI, WSGI, PHP) read as the
/// same header. All of them are removed from every request portcullis allows,
/// unless it sets them itself.
fn owned_headers(
    identity: &IdentityNames,
    global: &UpstreamRules,
    policy: &Policy,
) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = Vec::new();
    let routes = policy.routes().filter_map(|r| r.upstream.as_ref());
    let mapped = std::iter::once(global)
        .chain(routes)
        .flat_map(UpstreamRules::header_names);
    for name in identity.all().chain(mapped) {
        for spelling in [Arc::from(name), Arc::from(name.replace('-', "_"))] {
            if !names.contains(&spelling) {
                names.push(spelling);
            }
        }
    }
    names
}

/// What an allow removes: every owned header it does not set, and
/// `Authorization` unless the rules forward it.
fn removals<'c>(
    owned: &'c [Arc<str>],
    identity: &'c IdentityNames,
    rules: &UpstreamRules,
    is_set: impl Fn(&str) -> bool,
) -> impl Iterator<Item = &'c str> {
    let kept = owned
        .iter()
        .map(|name| &**name)
        .filter(move |name| !is_set(name));
    let authorization = (!rules.forward_authorization).then_some(&*identity.authorization);
    kept.chain(authorization)
}

/// What an allow on a route removes when it sets all `settable` headers.
#[derive(Debug)]
struct FullRemoval {
    settable: usize,
    names: Vec<Arc<str>>,
}

/// The identity header names as shared strings.
#[derive(Debug)]
struct IdentityNames {
    subject: Arc<str>,
    username: Arc<str>,
    realm_roles: Arc<str>,
    client: Arc<str>,
    issuer: Arc<str>,
    authorization: Arc<str>,
}

impl IdentityNames {
    fn all(&self) -> impl Iterator<Item = &str> {
        [
            &self.subject,
            &self.username,
            &self.realm_roles,
            &self.client,
            &self.issuer,
        ]
        .into_iter()
        .map(|name| &**name)
    }

    fn new(config: &IdentityHeadersConfig) -> Self {
        Self {
            subject: Arc::from(config.subject.as_str()),
            username: Arc::from(config.username.as_str()),
            realm_roles: Arc::from(config.realm_roles.as_str()),
            client: Arc::from(config.client.as_str()),
            issuer: Arc::from(config.issuer.as_str()),
            authorization: Arc::from("authorization"),
        }
    }
}

fn note(explain: Option<&mut Explanation>, f: impl FnOnce(&mut Explanation)) {
    if let Some(e) = explain {
        f(e);
    }
}

fn describe_path(path: &Result<PathReadings, PathError>) -> String {
    match path {
        Ok(PathReadings::One(p)) => p.clone(),
        Ok(PathReadings::Ambiguous { literal, decoded }) => {
            format!("ambiguous: {literal} (escapes kept) or {decoded} (escapes decoded)")
        }
        Err(e) => format!("refused: {e}"),
    }
}

/// Realm roles joined with `,`; roles that contain a comma are left out, since
/// they would read as two roles.
fn realm_roles(claims: &Claims) -> Option<Cow<'_, str>> {
    let roles = &claims.realm_access.as_ref()?.roles;
    let mut joined = String::with_capacity(roles.iter().map(|r| r.len() + 1).sum());
    for role in roles.iter().filter(|r| !r.contains(',')) {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(role);
    }
    Some(Cow::Owned(joined))
}

#[cfg(test)]
mod tests;
