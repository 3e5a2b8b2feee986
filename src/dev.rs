//! Local development tools: **for local use only, never for production**.
//!
//! A development issuer that mints tokens in Keycloak's layout and serves them
//! discovery and JWKS documents, an upstream that echoes what it received, a
//! launcher for a real Envoy with `config/envoy.yaml`, and the stack and demo
//! that put them together with portcullis. The end-to-end tests use the same code.

pub mod demo;
pub mod envoy;
pub mod issuer;
pub mod request;
pub mod stack;
pub mod upstream;

/// Why a development tool failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Key generation or signing failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Envoy could not be started or did not become ready.
    #[error("envoy: {0}")]
    Envoy(String),
    /// portcullis could not be configured or did not become ready.
    #[error("portcullis: {0}")]
    Portcullis(String),
    /// An HTTP request of the demo failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

impl DevError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| DevError::Io { context, source }
    }
}
