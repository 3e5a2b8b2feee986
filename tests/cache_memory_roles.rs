#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The token cache's byte bound counts the typed claims by their shape: tokens
//! with thousands of tiny realm roles, on a route that reads no payload, grow
//! the resident set by at most the bound plus a constant.

#[path = "memory/flood.rs"]
mod flood;

#[test]
fn a_flood_of_tokens_with_thousands_of_roles_stays_within_the_cache_bound() {
    flood::flood("{ realm_roles: [r1] }", |claims| {
        let roles: Vec<String> = (0..2000).map(|i| format!("r{}", i % 10)).collect();
        claims["realm_access"] = serde_json::json!({ "roles": roles });
    });
}
