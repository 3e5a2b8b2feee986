//! Configuration parsing: `Config::from_yaml` on arbitrary text.
//!
//! Checks: parsing and validation never panic; a configuration that loads also
//! builds a runtime (`Runtime::new`: policy, validator, metrics) without
//! panicking, and its summary, warnings, shadowed routes, route lookups for a
//! few requests and a TCP check run without panicking too.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, summary, warnings};
use portcullis::policy::Target;
use portcullis::server::Runtime;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_yaml(text, "fuzz") else {
        return;
    };
    let _ = summary(&config, "fuzz");
    let _ = warnings(&config);
    let runtime = Runtime::new(&config);
    let snapshot = runtime.snapshot();
    let policy = snapshot.checker.policy();
    let _ = policy.shadowed();
    let empty = HashMap::new();
    let context = HashMap::from([("policy".to_owned(), "orders".to_owned())]);
    for (method, host, path, principal, ctx) in [
        ("GET", "api.example.test", "/", "", &empty),
        (
            "POST",
            "api.example.test:8443",
            "/orders/1",
            "spiffe://cluster.local/ns/shop/sa/cart",
            &context,
        ),
        (
            "DELETE",
            "[::1]:80",
            "/admin/users",
            "cluster.local/ns/billing/sa/x",
            &empty,
        ),
    ] {
        let _ = policy.route_for(&Target {
            method,
            host,
            path,
            principal,
            context_extensions: ctx,
        });
    }
    let _ = snapshot
        .checker
        .check_tcp("spiffe://cluster.local/ns/shop/sa/cart");
    let _ = runtime.missing_issuers(0);
});
