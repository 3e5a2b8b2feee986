//! CheckRequest handling on arbitrary protobuf bytes.
//!
//! Input: bytes decoded as `envoy.service.auth.v3.CheckRequest` (prost), then
//! given to `AuthzService::decide_inbound` as the gRPC service does: a decoded
//! request as `Inbound::Check`, anything else as `Inbound::Undecodable`. The
//! configuration is `portcullis_fuzz::CHECK_CONFIG`, with the trusted issuer's
//! keys loaded.
//!
//! Checks: decide never panics and its answer holds every invariant of
//! `check_response_invariants` (well-formed allow or denial, identity headers
//! always set or removed, no control characters in header values, no allow
//! without a verified token off the open routes); and no token is ever
//! verified, since the keys are generated anew in each process and the input
//! cannot carry a token they signed.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use libfuzzer_sys::fuzz_target;
use portcullis::server::grpc::Inbound;
use portcullis_fuzz::{check_response_invariants, decide_inbound};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let inbound = match CheckRequest::decode(data) {
        Ok(check) => Inbound::Check(Box::new(check)),
        Err(e) => Inbound::Undecodable(e.to_string()),
    };
    let decoded = matches!(inbound, Inbound::Check(_));
    let response = decide_inbound(inbound);
    let outcome = check_response_invariants(&response);
    if !decoded {
        assert!(!outcome.allowed, "an undecodable CheckRequest was allowed");
    }
    assert!(
        outcome.issuer.is_none(),
        "a token was verified that no key of this process signed: {outcome:?}"
    );
});
