//! An upstream that answers every request with what it received, as JSON.
//! **For local use only.** Tests read it to see exactly which headers Envoy forwarded.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

/// The echo routes: any method, any path.
pub fn router() -> axum::Router {
    axum::Router::new().fallback(echo)
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> axum::Json<Value> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        seen.entry(name.as_str().to_owned())
            .or_default()
            .push(value);
    }
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": seen,
    }))
}
