//! What a route requires of a valid token, compiled into a tree of
//! requirements, and its evaluation against the token's claims.
//!
//! Evaluation can record a trace of every requirement and its result; the
//! server does not ask for one, `portcullis explain` does. Both run this code.

use regex::Regex;
use serde_json::{Map, Value};

use crate::config::{ClaimCondition, RequireConfig, route::compile_regex};
use crate::token::{Claims, Payload};

/// A compiled requirement.
#[derive(Debug)]
pub enum Requirement {
    /// Every one of these.
    All(Vec<Requirement>),
    /// At least one of these.
    Any(Vec<Requirement>),
    /// Not this.
    Not(Box<Requirement>),
    /// A role in `realm_access.roles`.
    RealmRole(String),
    /// A role in `resource_access.<client>.roles`.
    ClientRole {
        /// The client.
        client: String,
        /// The role.
        role: String,
    },
    /// A scope in the `scope` claim.
    Scope(String),
    /// A group (full path) in the `groups` claim.
    Group(String),
    /// `azp` is one of these.
    Azp(Vec<String>),
    /// A condition on any claim.
    Claim {
        /// The names along the path to the claim.
        path: Vec<String>,
        /// The test.
        test: ClaimTest,
    },
}

/// A test on one claim.
#[derive(Debug)]
pub enum ClaimTest {
    /// Equal to this value.
    Equals(Value),
    /// Equal to one of these.
    OneOf(Vec<Value>),
    /// An array that contains this value.
    Contains(Value),
    /// A string that matches this (anchored) expression.
    Regex(Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

/// The first requirement a token did not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// A stable reason code.
    pub code: &'static str,
    /// What was missing, for the client and the logs.
    pub description: String,
    /// The missing scope, for the `scope` attribute of the challenge (RFC 6750 §3).
    pub scope: Option<String>,
}

/// One line of an evaluation trace: depth, what was checked, whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Nesting depth, 0 for the top.
    pub depth: usize,
    /// The requirement, as text.
    pub what: String,
    /// Whether it held.
    pub held: bool,
}

/// The token as requirements see it.
#[derive(Debug, Clone, Copy)]
pub struct TokenView<'a> {
    /// The claims portcullis reads itself.
    pub claims: &'a Claims,
    /// Every claim, read on first use.
    pub payload: &'a Payload,
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

// === impl Requirement ===

impl Requirement {
    /// Compiles a validated requirement configuration.
    pub fn compile(config: &RequireConfig) -> Self {
        let mut all = Vec::new();
        all.extend(
            config
                .realm_roles
                .iter()
                .cloned()
                .map(Requirement::RealmRole),
        );
        for (client, roles) in &config.client_roles {
            all.extend(roles.iter().map(|role| Requirement::ClientRole {
                client: client.clone(),
                role: role.clone(),
            }));
        }
        all.extend(config.scopes.iter().cloned().map(Requirement::Scope));
        all.extend(config.groups.iter().cloned().map(Requirement::Group));
        if !config.azp.is_empty() {
            all.push(Requirement::Azp(config.azp.clone()));
        }
        all.extend(config.claims.iter().filter_map(compile_claim));
        all.extend(config.all.iter().map(Requirement::compile));
        if !config.any.is_empty() {
            all.push(Requirement::Any(
                config.any.iter().map(Requirement::compile).collect(),
            ));
        }
        if let Some(not) = &config.not {
            all.push(Requirement::Not(Box::new(Requirement::compile(not))));
        }
        Requirement::All(all)
    }

    /// Checks the requirement; records every step in `trace` when given.
    pub fn evaluate(
        &self,
        token: TokenView<'_>,
        trace: Option<&mut Vec<TraceLine>>,
    ) -> Result<(), Unmet> {
        let mut unmet = None;
        let mut sink = trace;
        match self {
            // The top level lists its items without an "all of:" header.
            Requirement::All(items) if items.is_empty() => {
                record(&mut sink, 0, || "any valid token".into(), true);
            }
            Requirement::All(items) => {
                walk_all(items, token, 0, &mut sink, &mut unmet);
            }
            other => {
                other.walk(token, 0, &mut sink, &mut unmet);
            }
        }
        match unmet {
            None => Ok(()),
            Some(unmet) => Err(unmet),
        }
    }

    /// Evaluates, recording the first leaf that failed where it decides the outcome.
    fn walk(
        &self,
        token: TokenView<'_>,
        depth: usize,
        trace: &mut Option<&mut Vec<TraceLine>>,
        unmet: &mut Option<Unmet>,
    ) -> bool {
        let held = match self {
            Requirement::All(items) => {
                if let [only] = items.as_slice() {
                    return only.walk(token, depth, trace, unmet);
                }
                record(trace, depth, || "all of:".into(), true);
                let all = walk_all(items, token, depth + 1, trace, unmet);
                fix_last(trace, depth, all);
                return all;
            }
            Requirement::Any(items) => {
                record(trace, depth, || "any of:".into(), true);
                let mut scratch = None;
                let mut any = false;
                for item in items {
                    if item.walk(token, depth + 1, trace, &mut scratch) {
                        any = true;
                        if trace.is_none() {
                            break;
                        }
                    }
                }
                fix_last(trace, depth, any);
                if !any && unmet.is_none() {
                    *unmet = Some(Unmet {
                        code: "no_alternative_met",
                        description: "none of the alternatives is met".into(),
                        scope: None,
                    });
                }
                return any;
            }
            Requirement::Not(inner) => {
                record(trace, depth, || "none of:".into(), true);
                let inner_held = inner.walk(token, depth + 1, trace, &mut None);
                fix_last(trace, depth, !inner_held);
                if inner_held && unmet.is_none() {
                    *unmet = Some(Unmet {
                        code: "excluded",
                        description: "the token has something this route excludes".into(),
                        scope: None,
                    });
                }
                return !inner_held;
            }
            leaf => leaf.leaf_holds(token),
        };
        record(trace, depth, || self.describe(), held);
        if !held && unmet.is_none() {
            *unmet = Some(Unmet {
                code: self.code(),
                description: format!("missing {}", self.describe()),
                scope: match self {
                    Requirement::Scope(scope) => Some(scope.clone()),
                    _ => None,
                },
            });
        }
        held
    }

    /// Whether evaluating this reads claims beyond the typed ones (groups,
    /// claim conditions), so that the token's payload is read as a tree.
    pub fn reads_payload(&self) -> bool {
        match self {
            Requirement::All(items) | Requirement::Any(items) => {
                items.iter().any(Requirement::reads_payload)
            }
            Requirement::Not(inner) => inner.reads_payload(),
            Requirement::Group(_) | Requirement::Claim { .. } => true,
            Requirement::RealmRole(_)
            | Requirement::ClientRole { .. }
            | Requirement::Scope(_)
            | Requirement::Azp(_) => false,
        }
    }

    fn leaf_holds(&self, token: TokenView<'_>) -> bool {
        let claims = token.claims;
        match self {
            Requirement::RealmRole(role) => claims
                .realm_access
                .as_ref()
                .is_some_and(|r| r.roles.contains(role)),
            Requirement::ClientRole { client, role } => claims
                .resource_access
                .get(client)
                .is_some_and(|r| r.roles.contains(role)),
            Requirement::Scope(scope) => claims
                .scope
                .as_deref()
                .is_some_and(|s| s.split(' ').any(|held| held == scope)),
            Requirement::Group(group) => match token.payload.object().get("groups") {
                Some(Value::Array(groups)) => groups.iter().any(|g| g.as_str() == Some(group)),
                _ => false,
            },
            Requirement::Azp(clients) => claims.azp.as_ref().is_some_and(|a| clients.contains(a)),
            Requirement::Claim { path, test } => test.holds(lookup(token.payload.object(), path)),
            Requirement::All(_) | Requirement::Any(_) | Requirement::Not(_) => false,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Requirement::RealmRole(_) => "missing_realm_role",
            Requirement::ClientRole { .. } => "missing_client_role",
            Requirement::Scope(_) => "missing_scope",
            Requirement::Group(_) => "missing_group",
            Requirement::Azp(_) => "client_not_allowed",
            Requirement::Claim { .. } => "claim_not_met",
            Requirement::All(_) | Requirement::Any(_) | Requirement::Not(_) => "not_met",
        }
    }

    fn describe(&self) -> String {
        match self {
            Requirement::RealmRole(role) => format!("realm role {role:?}"),
            Requirement::ClientRole { client, role } => {
                format!("role {role:?} of client {client:?}")
            }
            Requirement::Scope(scope) => format!("scope {scope:?}"),
            Requirement::Group(group) => format!("group {group:?}"),
            Requirement::Azp(clients) => format!("azp one of {clients:?}"),
            Requirement::Claim { path, test } => {
                format!("claim {} {}", path.join("."), test.describe())
            }
            Requirement::All(_) => "all of".into(),
            Requirement::Any(_) => "any of".into(),
            Requirement::Not(_) => "none of".into(),
        }
    }
}

/// Walks every item; without a trace, stops at the first that fails.
fn walk_all(
    items: &[Requirement],
    token: TokenView<'_>,
    depth: usize,
    trace: &mut Option<&mut Vec<TraceLine>>,
    unmet: &mut Option<Unmet>,
) -> bool {
    let mut all = true;
    for item in items {
        if !item.walk(token, depth, trace, unmet) {
            all = false;
            if trace.is_none() {
                break;
            }
        }
    }
    all
}

fn compile_claim(condition: &ClaimCondition) -> Option<Requirement> {
    let test = if let Some(v) = &condition.equals {
        ClaimTest::Equals(v.clone())
    } else if let Some(v) = &condition.one_of {
        ClaimTest::OneOf(v.clone())
    } else if let Some(v) = &condition.contains {
        ClaimTest::Contains(v.clone())
    } else if let Some(r) = &condition.regex {
        // Validation compiled it already; a failure here drops nothing silently:
        // the condition becomes one that never holds.
        ClaimTest::Regex(compile_regex(r).unwrap_or_else(|_| never_matches()))
    } else {
        ClaimTest::Present(condition.present?)
    };
    Some(Requirement::Claim {
        path: condition.claim.names(),
        test,
    })
}

#[allow(clippy::expect_used)]
fn never_matches() -> Regex {
    Regex::new("[^\\s\\S]").expect("a constant expression compiles")
}

/// Adds a line to the trace, if there is one; the text is only made for a trace.
fn record(
    trace: &mut Option<&mut Vec<TraceLine>>,
    depth: usize,
    what: impl FnOnce() -> String,
    held: bool,
) {
    if let Some(trace) = trace {
        trace.push(TraceLine {
            depth,
            what: what(),
            held,
        });
    }
}

/// Sets the result of the group header recorded at `depth` once its children are known.
fn fix_last(trace: &mut Option<&mut Vec<TraceLine>>, depth: usize, held: bool) {
    if let Some(trace) = trace
        && let Some(line) = trace
            .iter_mut()
            .rev()
            .find(|l| l.depth == depth && l.what.ends_with(':'))
    {
        line.held = held;
    }
}

/// The value at a path of names inside the claims.
fn lookup<'a>(payload: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = payload.get(first)?;
    for name in rest {
        value = value.as_object()?.get(name)?;
    }
    Some(value)
}

// === impl ClaimTest ===

impl ClaimTest {
    fn holds(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (ClaimTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ClaimTest::Equals(want), Some(v)) => v == want,
            (ClaimTest::OneOf(wants), Some(v)) => wants.contains(v),
            (ClaimTest::Contains(want), Some(Value::Array(items))) => items.contains(want),
            (ClaimTest::Regex(regex), Some(Value::String(s))) => regex.is_match(s),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            ClaimTest::Equals(v) => format!("equals {v}"),
            ClaimTest::OneOf(vs) => format!("one of {}", Value::Array(vs.clone())),
            ClaimTest::Contains(v) => format!("contains {v}"),
            ClaimTest::Regex(r) => format!("matches {:?}", r.as_str()),
            ClaimTest::Present(true) => "is present".into(),
            ClaimTest::Present(false) => "is absent".into(),
        }
    }
}
