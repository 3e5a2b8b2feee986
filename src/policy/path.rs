//! Path matching on the normalized path: exact, prefix on a segment boundary,
//! Istio's forms, and regular expressions.
//!
//! Istio's forms (AuthorizationPolicy `paths`): an exact path; `/api/*`, a
//! string prefix (`/api/` and below, not `/api` itself); `*/status`, a suffix;
//! `*`, anything; and templates where `{*}` stands for exactly one segment and
//! `{**}` for the rest (zero or more segments), which may only come last.

use regex::Regex;

/// How a route matches paths.
#[derive(Debug)]
pub enum PathMatch {
    /// Exactly this path.
    Exact(String),
    /// This prefix on a segment boundary, stored without its trailing slash
    /// (empty for `/`, which matches every path).
    Prefix(String),
    /// Any of these patterns.
    Patterns(Vec<PathPattern>),
    /// The whole path matches this (anchored) expression.
    Regex(Regex),
    /// Every path (a route chosen by other means, such as context extensions).
    Any,
}

/// One of Istio's path forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// An exact path.
    Exact(String),
    /// `/api/*`: the string prefix `/api/`.
    Prefix(String),
    /// `*/status`: the string suffix `/status`.
    Suffix(String),
    /// `*`: every path.
    Any,
    /// A template of segments with `{*}` and a final `{**}`.
    Template(Vec<Segment>),
}

/// A segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// This literal segment.
    Literal(String),
    /// `{*}`: any one non-empty segment.
    One,
    /// `{**}`: the rest, zero or more segments (last only).
    Rest,
}

// === impl PathMatch ===

impl PathMatch {
    /// Whether a normalized path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Patterns(patterns) => patterns.iter().any(|p| p.matches(path)),
            PathMatch::Regex(regex) => regex.is_match(path),
            PathMatch::Any => true,
        }
    }
}

// === impl PathPattern ===

impl PathPattern {
    /// Parses one of Istio's path forms.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern == "*" {
            return Ok(PathPattern::Any);
        }
        if pattern.contains('{') || pattern.contains('}') {
            return Self::template(pattern);
        }
        let stars = pattern.matches('*').count();
        match (stars, pattern.strip_suffix('*'), pattern.strip_prefix('*')) {
            (0, _, _) => {
                plain(pattern)?;
                Ok(PathPattern::Exact(pattern.to_owned()))
            }
            (1, Some(prefix), _) => {
                plain(prefix)?;
                Ok(PathPattern::Prefix(prefix.to_owned()))
            }
            (1, None, Some(suffix)) if suffix.starts_with('/') => {
                Ok(PathPattern::Suffix(suffix.to_owned()))
            }
            _ => Err("`*` may stand only at the start (`*/status`) or the end (`/api/*`)".into()),
        }
    }

    fn template(pattern: &str) -> Result<Self, String> {
        let body = pattern
            .strip_prefix('/')
            .ok_or("a template must start with '/'")?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Rest,
                "{**}" => return Err("`{**}` may only be the last segment".into()),
                p if p.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "segment {p:?}: use `{{*}}` or `{{**}}` as whole segments"
                    ));
                }
                "" => return Err("a template cannot have empty segments".into()),
                p => Segment::Literal(p.to_owned()),
            };
            segments.push(segment);
        }
        Ok(PathPattern::Template(segments))
    }

    /// Whether a normalized path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(exact) => path == exact,
            PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathPattern::Suffix(suffix) => path.ends_with(suffix.as_str()),
            PathPattern::Any => true,
            PathPattern::Template(segments) => template_matches(segments, path),
        }
    }
}

/// A literal part of a pattern must already be normalized, or it could never match.
fn plain(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/' (or be `*`, or start with `*/`)".into());
    }
    match crate::request::normalize_path(path) {
        Ok(normal) if normal == path => Ok(()),
        Ok(normal) => Err(format!("not in normalized form; write {normal:?}")),
        Err(e) => Err(format!("not a plain path ({e})")),
    }
}

fn template_matches(segments: &[Segment], path: &str) -> bool {
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = body.split('/');
    for segment in segments {
        match segment {
            Segment::Rest => return true,
            Segment::One => {
                if parts.next().is_none_or(str::is_empty) {
                    return false;
                }
            }
            Segment::Literal(literal) => {
                if parts.next() != Some(literal.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn istio_forms_match_as_istio_documents_them() {
        let cases = [
            ("/api/*", "/api/x", true),
            ("/api/*", "/api/", true),
            ("/api/*", "/api", false),
            ("/api/*", "/apix", false),
            ("*/status", "/svc/status", true),
            ("*/status", "/status", true),
            ("*/status", "/svc/statusx", false),
            ("*", "/anything/at/all", true),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(matches(pattern, path), want, "{pattern} on {path}");
        }
    }

    #[test]
    fn templates_match_one_segment_or_the_rest() {
        let cases = [
            ("/v1/{*}/items", "/v1/shop/items", true),
            ("/v1/{*}/items", "/v1/shop/x/items", false),
            ("/v1/{*}/items", "/v1//items", false),
            ("/v1/{*}", "/v1/a", true),
            ("/v1/{*}", "/v1/a/b", false),
            ("/v1/{**}", "/v1", true),
            ("/v1/{**}", "/v1/a/b/c", true),
            ("/v1/{**}", "/v2/a", false),
            ("/{*}/admin/{**}", "/t/admin", true),
            ("/{*}/admin/{**}", "/t/admin/users/1", true),
            ("/{*}/admin/{**}", "/admin", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(matches(pattern, path), want, "{pattern} on {path}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for pattern in [
            "/a/*/b",
            "/a*b",
            "**",
            "/v1/{**}/x",
            "/v1/{x}",
            "/v1/a{*}",
            "v1/{*}",
            "/v1//{*}",
            "/a/../b",
            "api/*",
        ] {
            assert!(PathPattern::parse(pattern).is_err(), "{pattern}");
        }
    }

    #[test]
    fn a_prefix_matches_on_a_segment_boundary() {
        let prefix = PathMatch::Prefix("/admin".into());
        assert!(
            prefix.matches("/admin") && prefix.matches("/admin/") && prefix.matches("/admin/x")
        );
        assert!(!prefix.matches("/administrator") && !prefix.matches("/admin-x"));
        assert!(PathMatch::Prefix(String::new()).matches("/anything"));
    }
}
