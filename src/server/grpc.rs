//! The `envoy.service.auth.v3.Authorization` gRPC service, written out by hand
//! around a lenient decoder.
//!
//! The generated server answers a CheckRequest it cannot decode (invalid UTF-8
//! in a string field, truncated bytes) with a gRPC error, and Envoy may be
//! configured to let requests through on errors. Here such a message still
//! reaches the service, as [`Inbound::Undecodable`], and is denied with an
//! ordinary CheckResponse.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::AuthzService;

/// The path of the Check method.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Messages larger than this are refused by the transport with a gRPC error
/// before they are read; smaller ones over the configured limit are denied.
pub const TRANSPORT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A CheckRequest as it arrived.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed request.
    Check(Box<CheckRequest>),
    /// Bytes that are not a CheckRequest, or too many of them; why.
    Undecodable(String),
}

/// The ext_authz gRPC service around [`AuthzService`].
#[derive(Debug, Clone)]
pub struct AuthorizationService {
    inner: Arc<AuthzService>,
    max_message_bytes: usize,
}

impl AuthorizationService {
    /// Serves `inner`; CheckRequests over `max_message_bytes` are denied.
    pub fn new(inner: AuthzService, max_message_bytes: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            max_message_bytes,
        }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = super::AUTHORIZATION_SERVICE;
}

impl<B> Service<http::Request<B>> for AuthorizationService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(unimplemented()) });
        }
        let method = CheckMethod(self.inner.clone());
        let codec = LenientCodec {
            max_message_bytes: self.max_message_bytes,
        };
        Box::pin(async move {
            let mut grpc = Grpc::new(codec)
                .apply_max_message_size_config(Some(TRANSPORT_MAX_MESSAGE_BYTES), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(
        tonic::Status::GRPC_STATUS,
        http::HeaderValue::from(tonic::Code::Unimplemented as i32),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

struct CheckMethod(Arc<AuthzService>);

impl UnaryService<Inbound> for CheckMethod {
    type Response = Encoded;
    type Future = BoxFuture<tonic::Response<Encoded>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Inbound>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let response = service.answer_inbound(request.into_inner()).await;
            Ok(tonic::Response::new(Encoded(response)))
        })
    }
}

/// A CheckResponse already in wire format ([`crate::respond::encode`]).
#[derive(Debug)]
pub struct Encoded(Vec<u8>);

/// Writes [`Encoded`] messages as they are.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = tonic::Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item.0);
        Ok(())
    }
}

/// Writes encoded CheckResponses; decodes anything into an [`Inbound`].
#[derive(Debug, Clone, Copy)]
struct LenientCodec {
    max_message_bytes: usize,
}

impl Codec for LenientCodec {
    type Encode = Encoded;
    type Decode = Inbound;
    type Encoder = EncodedEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder {
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LenientDecoder {
    max_message_bytes: usize,
}

impl Decoder for LenientDecoder {
    type Item = Inbound;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, tonic::Status> {
        // Take the whole message first, so that a failed decode leaves nothing behind.
        let bytes = buf.copy_to_bytes(buf.remaining());
        if bytes.len() > self.max_message_bytes {
            let why = format!("CheckRequest of {} bytes, over the limit", bytes.len());
            return Ok(Some(Inbound::Undecodable(why)));
        }
        Ok(Some(match CheckRequest::decode(bytes) {
            Ok(check) => Inbound::Check(Box::new(check)),
            Err(e) => Inbound::Undecodable(e.to_string()),
        }))
    }
}
