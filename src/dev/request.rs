//! CheckRequests as Envoy's gRPC filter sends them, for tests, benchmarks and
//! fuzzing. **For local use only.**

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

/// A CheckRequest with an HTTP request and map-shaped headers.
pub fn check_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    host: host.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A `GET` on `a.test` with the token, if any, as `Authorization: Bearer`.
pub fn get_with_token(path: &str, token: Option<&str>) -> CheckRequest {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .collect();
    check_request("GET", "a.test", path, &headers)
}

/// The HTTP request inside a CheckRequest, to change it.
pub fn http_mut(check: &mut CheckRequest) -> Option<&mut HttpRequest> {
    check.attributes.as_mut()?.request.as_mut()?.http.as_mut()
}
