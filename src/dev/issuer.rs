//! A development token issuer in Keycloak's layout. **For local use only.**
//!
//! It generates fresh RSA keys at start, publishes a JWKS whose first key is a
//! decoy RSA-OAEP encryption key (as a default Keycloak realm does), serves
//! discovery and JWKS at Keycloak's paths, and mints access tokens for a few
//! built-in users at Keycloak's token endpoint, with no password check.

use std::sync::{Arc, RwLock};

use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::DevError;

/// Keycloak's default access token lifetime, in seconds.
pub const TOKEN_LIFETIME_SECONDS: i64 = 300;

/// A development issuer: one realm with its own keys.
pub struct DevIssuer {
    base_url: String,
    realm: String,
    keys: RwLock<RealmKeys>,
}

/// The active signing key and the published JWKS (which keeps rotated-out keys).
struct RealmKeys {
    signing: Arc<RsaKeyPair>,
    kid: String,
    jwks: Value,
}

/// A built-in user of the development issuer.
#[derive(Debug, Clone)]
pub struct DevUser {
    /// `preferred_username`.
    pub username: &'static str,
    /// `sub`.
    pub sub: &'static str,
    /// `realm_access.roles`.
    pub realm_roles: &'static [&'static str],
    /// `resource_access.<client>.roles`.
    pub client_roles: &'static [(&'static str, &'static [&'static str])],
    /// `scope`.
    pub scope: &'static str,
    /// `azp`, the client that asked for the token.
    pub azp: &'static str,
}

/// The built-in users: `alice` reads and writes orders, `bob` only signs in,
/// `service-account-billing-batch` is a client-credentials client.
pub const USERS: &[DevUser] = &[
    DevUser {
        username: "alice",
        sub: "6f1c2c4e-3b0a-4c8e-9a57-4d2f1a9e0a11",
        realm_roles: &["default-roles-demo", "offline_access", "orders-reader"],
        client_roles: &[
            ("orders-api", &["orders-writer"]),
            ("account", &["view-profile"]),
        ],
        scope: "openid profile email orders:read",
        azp: "web-frontend",
    },
    DevUser {
        username: "bob",
        sub: "0b7d4f52-8e15-4a53-b1f2-73c9e5d2c6b4",
        realm_roles: &["default-roles-demo", "offline_access"],
        client_roles: &[("account", &["view-profile"])],
        scope: "openid profile email",
        azp: "web-frontend",
    },
    DevUser {
        username: "service-account-billing-batch",
        sub: "d2a5e0c1-7f0e-4f3b-8a8b-2a4b9f6c1e33",
        realm_roles: &["default-roles-demo"],
        client_roles: &[("orders-api", &["orders-writer"])],
        scope: "profile email",
        azp: "billing-batch",
    },
];

/// Looks up a built-in user by name.
pub fn user(username: &str) -> Option<&'static DevUser> {
    USERS.iter().find(|u| u.username == username)
}

impl DevIssuer {
    /// Generates keys for a realm served under `base_url` (e.g. `http://127.0.0.1:8180`).
    pub fn generate(base_url: &str, realm: &str) -> Result<Self, DevError> {
        let signing = generate_rsa()?;
        let decoy = generate_rsa()?;
        let kid = key_id(&signing);
        let decoy_kid = key_id(&decoy);
        let mut enc_jwk = rsa_jwk(&decoy, &decoy_kid);
        enc_jwk["use"] = json!("enc");
        enc_jwk["alg"] = json!("RSA-OAEP");
        let keys = RealmKeys {
            jwks: json!({ "keys": [enc_jwk, signing_jwk(&signing, &kid)] }),
            signing: Arc::new(signing),
            kid,
        };
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            realm: realm.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// Rotates the realm key as Keycloak does when a new key provider gets a
    /// higher priority: the new key signs from now on, the old one stays
    /// published (passive) so tokens it signed still verify. Returns the new `kid`.
    pub fn rotate(&self) -> Result<String, DevError> {
        let signing = generate_rsa()?;
        let kid = key_id(&signing);
        let mut keys = self
            .keys
            .write()
            .map_err(|_| DevError::Crypto("key lock poisoned".into()))?;
        if let Some(list) = keys.jwks["keys"].as_array_mut() {
            list.push(signing_jwk(&signing, &kid));
        }
        keys.signing = Arc::new(signing);
        keys.kid = kid.clone();
        Ok(kid)
    }

    /// The `iss` of its tokens: `<base>/realms/<realm>`.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{}", self.base_url, self.realm)
    }

    /// The `kid` of the active signing key.
    pub fn kid(&self) -> String {
        self.keys.read().map(|k| k.kid.clone()).unwrap_or_default()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        self.keys
            .read()
            .map(|k| k.jwks.clone())
            .unwrap_or(Value::Null)
    }

    /// The discovery document, with Keycloak's endpoint paths.
    pub fn discovery(&self) -> Value {
        let issuer = self.issuer();
        let oidc = format!("{issuer}/protocol/openid-connect");
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{oidc}/auth"),
            "token_endpoint": format!("{oidc}/token"),
            "introspection_endpoint": format!("{oidc}/token/introspect"),
            "userinfo_endpoint": format!("{oidc}/userinfo"),
            "end_session_endpoint": format!("{oidc}/logout"),
            "jwks_uri": format!("{oidc}/certs"),
            "grant_types_supported": ["authorization_code", "client_credentials", "password"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// Keycloak-shaped access token claims for `user`, issued at `now`.
    pub fn access_claims(&self, user: &DevUser, audience: &[&str], now: i64) -> Value {
        let resource_access: serde_json::Map<String, Value> = user
            .client_roles
            .iter()
            .map(|(client, roles)| ((*client).to_owned(), json!({ "roles": roles })))
            .collect();
        json!({
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "iat": now,
            "jti": format!("onrtac:{}", uuid_like(now, user.sub)),
            "iss": self.issuer(),
            "aud": audience,
            "sub": user.sub,
            "typ": "Bearer",
            "azp": user.azp,
            "sid": uuid_like(now + 1, user.sub),
            "acr": "1",
            "allowed-origins": ["http://localhost:3000"],
            "realm_access": { "roles": user.realm_roles },
            "resource_access": resource_access,
            "scope": user.scope,
            "email_verified": true,
            "preferred_username": user.username,
        })
    }

    /// Signs claims with the realm key, with Keycloak's header.
    pub fn sign_claims(&self, claims: &Value) -> Result<String, DevError> {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid() });
        self.sign(&header, claims)
    }

    /// Signs any header and claims with the realm key (RS256), whatever the header says.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, DevError> {
        self.sign_raw(header, &claims.to_string())
    }

    /// Signs a header and a payload given as raw JSON text, which may be
    /// anything, even malformed: for tests of what a validator does with it.
    pub fn sign_raw(&self, header: &Value, payload: &str) -> Result<String, DevError> {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let claims = URL_SAFE_NO_PAD.encode(payload);
        let input = format!("{header}.{claims}");
        let signing = self
            .keys
            .read()
            .map(|k| k.signing.clone())
            .map_err(|_| DevError::Crypto("key lock poisoned".into()))?;
        let mut signature = vec![0; signing.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        signing
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
            .map_err(|e| DevError::Crypto(format!("signing failed: {e}")))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// An access token for a built-in user.
    pub fn access_token(
        &self,
        user: &DevUser,
        audience: &[&str],
        now: i64,
    ) -> Result<String, DevError> {
        self.sign_claims(&self.access_claims(user, audience, now))
    }

    /// The HTTP routes: discovery, JWKS and a token endpoint, at Keycloak's paths.
    pub fn router(self: Arc<Self>) -> axum::Router {
        use axum::routing::{get, post};
        let realm = format!("/realms/{}", self.realm);
        axum::Router::new()
            .route(
                &format!("{realm}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(
                &format!("{realm}/protocol/openid-connect/certs"),
                get(certs),
            )
            .route(
                &format!("{realm}/protocol/openid-connect/token"),
                post(token),
            )
            .with_state(self)
    }
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

type Shared = axum::extract::State<Arc<DevIssuer>>;

async fn discovery(axum::extract::State(issuer): Shared) -> axum::Json<Value> {
    axum::Json(issuer.discovery())
}

async fn certs(axum::extract::State(issuer): Shared) -> axum::Json<Value> {
    axum::Json(issuer.jwks())
}

/// `grant_type=password&username=alice` or `grant_type=client_credentials&client_id=billing-batch`.
async fn token(
    axum::extract::State(issuer): Shared,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => form
            .get("client_id")
            .map(|c| format!("service-account-{c}")),
        _ => form.get("username").cloned(),
    };
    let Some(user) = name.as_deref().and_then(user) else {
        let body = json!({ "error": "invalid_grant", "error_description": "unknown user" });
        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let audience = form.get("audience").map_or("orders-api", String::as_str);
    match issuer.access_token(user, &[audience, "account"], super::stack::unix_now()) {
        Ok(token) => axum::Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
        }))
        .into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn generate_rsa() -> Result<RsaKeyPair, DevError> {
    RsaKeyPair::generate(KeySize::Rsa2048)
        .map_err(|e| DevError::Crypto(format!("RSA key generation failed: {e}")))
}

fn signing_jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let mut jwk = rsa_jwk(key, kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("RS256");
    jwk
}

fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let public = key.public_key();
    json!({
        "kid": kid,
        "kty": "RSA",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    })
}

/// A 43-character base64url `kid` from the SHA-256 of the modulus, like Keycloak's.
fn key_id(key: &RsaKeyPair) -> String {
    let modulus = key.public_key().modulus();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        modulus.big_endian_without_leading_zero(),
    );
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn uuid_like(seed: i64, salt: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{seed}{salt}").as_bytes(),
    );
    let h: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
