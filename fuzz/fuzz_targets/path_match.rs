//! Path matching: Istio's path forms (`PathPattern`) and prefix matching on
//! paths normalized from the input.
//!
//! Checks: `PathPattern::parse` and `matches` never panic; a parsed pattern
//! matches a path built from it (an exact path itself; a prefix `/api/*` the
//! path `/api/x`; a suffix `*/status` the path `/a/status`; a template with `x`
//! for `{*}` and nothing for `{**}`); any normalized path without `*`, `{` or
//! `}` parses as an exact pattern of itself; a path prefix matches on a
//! segment boundary only.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::{PathMatch, PathPattern, Segment};
use portcullis::request::normalize_path;

#[derive(Debug, Arbitrary)]
struct Input {
    pattern: String,
    path: String,
    prefix: String,
}

fn example(pattern: &PathPattern) -> String {
    match pattern {
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Prefix(p) => format!("{p}x"),
        PathPattern::Suffix(s) => format!("/a{s}"),
        PathPattern::Any => "/anything".to_owned(),
        PathPattern::Template(segments) => {
            let mut out = String::new();
            for s in segments {
                match s {
                    Segment::Literal(l) => {
                        out.push('/');
                        out.push_str(l);
                    }
                    Segment::One => out.push_str("/x"),
                    Segment::Rest => {}
                }
            }
            if out.is_empty() { "/".to_owned() } else { out }
        }
    }
}

fuzz_target!(|input: Input| {
    let normalized = normalize_path(&input.path).ok();
    if let Ok(pattern) = PathPattern::parse(&input.pattern) {
        let sample = example(&pattern);
        assert!(
            pattern.matches(&sample),
            "{:?} parsed as {pattern:?} does not match {sample:?}",
            input.pattern
        );
        if let Some(path) = &normalized {
            let _ = pattern.matches(path);
        }
        let _ = PathMatch::Patterns(vec![pattern]).matches(&input.path);
    }
    if let Some(path) = &normalized {
        if !path.contains(['*', '{', '}']) {
            assert_eq!(
                PathPattern::parse(path),
                Ok(PathPattern::Exact(path.clone())),
                "the normalized path {path:?} (from {:?}) is not a valid exact pattern",
                input.path
            );
        }
        let _ = PathMatch::Exact(path.clone()).matches(&input.prefix);
    }
    if let Ok(prefix) = normalize_path(&input.prefix) {
        let stored = prefix.trim_end_matches('/').to_owned();
        let m = PathMatch::Prefix(stored.clone());
        assert!(m.matches(&format!("{stored}/")) && m.matches(&format!("{stored}/x")));
        if !stored.is_empty() {
            assert!(m.matches(&stored));
            assert!(
                !m.matches(&format!("{stored}x")),
                "prefix {stored:?} matched off a segment boundary"
            );
        }
        if let Some(path) = &normalized {
            let hit = m.matches(path);
            let boundary = stored.is_empty()
                || path == &stored
                || path
                    .strip_prefix(stored.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            assert_eq!(hit, boundary, "prefix {stored:?} on {path:?}");
        }
    }
});
