//! portcullis: external authorization for Envoy and Istio.
//!
//! Envoy asks, over gRPC (`envoy.service.auth.v3.Authorization/Check`), whether
//! a request may pass; portcullis validates the request's bearer token (a JWT
//! from a Keycloak realm or another OIDC issuer) and matches the request against
//! per-route policy. The modules follow the path of one check, and data flows
//! one way along it:
//!
//! 1. [`server`]: the gRPC front door (ext_authz and health).
//! 2. [`request`]: the `CheckRequest` read as the project's own [`request::Request`].
//! 3. [`check`]: one check, in order, calling the steps below.
//! 4. [`credential`]: finding the bearer token.
//! 5. [`keys`]: signing keys per issuer, fetched and refreshed.
//! 6. [`token`]: validating the token against those keys.
//! 7. [`policy`]: the route that matches and what it requires.
//! 8. [`decision`]: the outcome, and the one place a reason becomes a status.
//! 9. [`respond`]: the outcome as a `CheckResponse`.
//!
//! Beside the path: [`config`] (the file, validated before anything binds),
//! [`telemetry`] (logs and metrics), [`explain`] (one request decided by the
//! same code, step by step), and [`dev`] (local-only tools for the demo and tests).

pub mod config;
pub mod telemetry;

pub mod check;
pub mod credential;
pub mod decision;
pub mod keys;
pub mod policy;
pub mod request;
pub mod respond;
pub mod server;
pub mod token;

pub mod explain;

pub mod dev;
