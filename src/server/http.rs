//! The HTTP front door: Envoy's `http_service` flavour of ext_authz (Istio
//! `envoyExtAuthzHttp`), with the same decisions as gRPC.
//!
//! Envoy sends the client's method and path (behind `http_path_prefix`), Host,
//! Authorization and the headers it is told to include. The request becomes
//! the CheckRequest the gRPC flavour would carry and is decided by the same
//! code. Allowed: 200 (not 202, which Envoy would treat as a denial), with the
//! upstream headers as response headers (Envoy copies those listed in
//! `allowed_upstream_headers`, overwriting) and `x-envoy-auth-headers-to-remove`
//! naming the headers to strip. Denied: the denial's status, headers and body.
//!
//! The HTTP flavour carries no mTLS identity of the caller: routes that match
//! on principals, namespaces or service accounts never match here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use super::AuthzService;

/// The header that asks Envoy to remove request headers before the upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

#[derive(Clone)]
struct State {
    service: Arc<AuthzService>,
    path_prefix: Arc<str>,
}

/// The HTTP ext_authz routes: every method, every path.
pub fn router(service: AuthzService, path_prefix: &str) -> axum::Router {
    let state = State {
        service: Arc::new(service),
        path_prefix: Arc::from(path_prefix),
    };
    axum::Router::new().fallback(check).with_state(state)
}

async fn check(
    axum::extract::State(state): axum::extract::State<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let check = check_request(&method, &uri, &headers, &state.path_prefix);
    let response = state.service.decide(&check).await;
    to_http(&response)
}

/// The CheckRequest the gRPC flavour would carry for this request.
fn check_request(method: &Method, uri: &Uri, headers: &HeaderMap, prefix: &str) -> CheckRequest {
    let full = uri.path_and_query().map_or("/", |p| p.as_str());
    // A path outside the prefix is passed on as is and matched as such.
    let path = match full.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) if rest.is_empty() || rest.starts_with('?') => "/",
        _ => full,
    };
    let mut map: HashMap<String, String> = HashMap::with_capacity(headers.len() + 3);
    for (name, value) in headers {
        // Envoy's own flavour sanitizes bytes that are not UTF-8; so does this one.
        let value = String::from_utf8_lossy(value.as_bytes()).replace('\u{fffd}', "!");
        map.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let host = map.get("host").cloned().unwrap_or_default();
    map.insert(":authority".into(), host.clone());
    map.insert(":path".into(), path.to_owned());
    map.insert(":method".into(), method.as_str().to_owned());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.as_str().to_owned(),
                    host,
                    path: path.to_owned(),
                    headers: map,
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A CheckResponse as Envoy's HTTP flavour expects it.
fn to_http(response: &CheckResponse) -> Response<Body> {
    let allowed = response.status.as_ref().is_some_and(|s| s.code == 0);
    let (status, options, body, remove) = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if allowed => (
            200,
            &ok.headers,
            String::new(),
            ok.headers_to_remove.join(", "),
        ),
        Some(HttpResponse::DeniedResponse(denied)) if !allowed => {
            let status = denied.status.as_ref().map_or(403, |s| s.code);
            (status, &denied.headers, denied.body.clone(), String::new())
        }
        // Not produced by portcullis; deny rather than guess.
        _ => return plain(StatusCode::FORBIDDEN),
    };
    let mut http = Response::new(Body::from(body));
    *http.status_mut() = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    let headers = http.headers_mut();
    for option in options {
        let Some(header) = &option.header else {
            continue;
        };
        let name = HeaderName::from_bytes(header.key.as_bytes());
        let value = HeaderValue::from_str(&header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.insert(name, value);
        }
    }
    if !remove.is_empty()
        && let Ok(value) = HeaderValue::from_str(&remove)
    {
        headers.insert(HEADERS_TO_REMOVE, value);
    }
    http
}

fn plain(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_prefix_is_cut_from_the_checked_path() {
        let headers = HeaderMap::new();
        let cases = [
            ("/authz/orders/1?x=1", "/orders/1?x=1"),
            ("/authz", "/"),
            ("/authz?x", "/"),
            ("/authzx/a", "/authzx/a"),
            ("/other", "/other"),
        ];
        for (uri, want) in cases {
            let uri: Uri = uri.parse().unwrap();
            let check = check_request(&Method::GET, &uri, &headers, "/authz");
            let http = check.attributes.unwrap().request.unwrap().http.unwrap();
            assert_eq!(http.path, want, "{uri}");
        }
    }

    #[test]
    fn repeated_headers_are_joined_as_envoy_joins_them() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("Bearer a"));
        headers.append("authorization", HeaderValue::from_static("Bearer b"));
        let check = check_request(&Method::GET, &"/".parse().unwrap(), &headers, "");
        let http = check.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.headers["authorization"], "Bearer a,Bearer b");
    }
}
