#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The token cache's byte bound holds for the memory the process really uses,
//! not only for the cache's own estimate: a flood of distinct valid tokens, on
//! a route whose policy reads the payload (so every cached token also holds
//! its claims as a tree), grows the resident set by at most the bound plus a
//! constant.

#[path = "memory/flood.rs"]
mod flood;

#[test]
fn a_flood_of_distinct_tokens_read_by_the_policy_stays_within_the_cache_bound() {
    flood::flood("{ groups: [/staff] }", |_| {});
}
