//! The demo: the whole stack on this machine, a handful of requests as
//! different users, one line per request. **For local use only.**

use std::path::Path;

use serde_json::{Value, json};

use super::DevError;
use super::issuer::{self, DevIssuer};
use super::stack::{Stack, StackOptions, unix_now};

/// Which credential a demo request carries.
#[derive(Debug, Clone, Copy)]
enum Token {
    None,
    /// A fresh access token of a built-in user.
    User(&'static str),
    /// An access token that expired ten minutes ago.
    Expired(&'static str),
    /// An ID token (`typ: ID`), signed by the same key.
    Id(&'static str),
    /// An access token for another API (`aud: billing-api`).
    OtherAudience(&'static str),
}

struct Step {
    method: &'static str,
    path: &'static str,
    token: Token,
    /// A forged identity header the client adds.
    forged_subject: bool,
}

const STEPS: &[Step] = &[
    step("GET", "/docs/getting-started", Token::None),
    step("GET", "/orders/1001", Token::None),
    step("GET", "/orders/1001", Token::User("alice")),
    step("GET", "/orders/1001", Token::User("bob")),
    step(
        "POST",
        "/orders",
        Token::User("service-account-billing-batch"),
    ),
    step("POST", "/orders", Token::User("bob")),
    step("GET", "/admin/users", Token::User("alice")),
    step("GET", "/administrator", Token::User("alice")),
    step("GET", "/me", Token::Expired("alice")),
    step("GET", "/me", Token::Id("alice")),
    step("GET", "/me", Token::OtherAudience("alice")),
    Step {
        forged_subject: true,
        ..step("GET", "/me", Token::User("bob"))
    },
];

const fn step(method: &'static str, path: &'static str, token: Token) -> Step {
    Step {
        method,
        path,
        token,
        forged_subject: false,
    }
}

/// Runs the demo with this Envoy binary, printing to standard output.
pub async fn run(envoy_binary: &Path) -> Result<(), DevError> {
    println!("Starting the development issuer, the echo upstream, portcullis and Envoy ...");
    let stack = Stack::start(&StackOptions::demo(envoy_binary)).await?;
    println!(
        "Envoy listens on {}; portcullis on {}; issuer {}",
        stack.envoy.listener,
        stack.authz,
        stack.issuer.issuer()
    );
    println!();
    println!(
        "{:<6} {:<22} {:<42} {:<6} RESULT",
        "METHOD", "PATH", "WHO", "STATUS"
    );
    let result = run_steps(&stack).await;
    stack.stop().await;
    println!();
    println!("Stopped everything the demo started.");
    result
}

async fn run_steps(stack: &Stack) -> Result<(), DevError> {
    let client = reqwest::Client::new();
    for step in STEPS {
        let mut request = client.request(
            step.method.parse().unwrap_or(reqwest::Method::GET),
            stack.url(step.path),
        );
        if let Some(token) = mint(&stack.issuer, step.token)? {
            request = request.bearer_auth(token);
        }
        if step.forged_subject {
            request = request.header("x-portcullis-subject", "forged-admin");
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        println!(
            "{:<6} {:<22} {:<42} {:<6} {}",
            step.method,
            step.path,
            who(step),
            status,
            outcome(status, &body)
        );
    }
    Ok(())
}

fn who(step: &Step) -> String {
    let who = match step.token {
        Token::None => "anonymous".to_owned(),
        Token::User(u) => u.to_owned(),
        Token::Expired(u) => format!("{u} (expired token)"),
        Token::Id(u) => format!("{u} (ID token)"),
        Token::OtherAudience(u) => format!("{u} (token for another API)"),
    };
    if step.forged_subject {
        format!("{who} + forged x-portcullis-subject")
    } else {
        who
    }
}

/// For an allowed request, what the upstream saw; for a denial, portcullis's reason.
fn outcome(status: u16, body: &Value) -> String {
    if status == 200 {
        let header = |name: &str| {
            body["headers"][name]
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .unwrap_or_else(|| "-".to_owned())
        };
        return format!(
            "allowed; upstream saw user={} subject={}",
            header("x-portcullis-username"),
            header("x-portcullis-subject")
        );
    }
    match body["error"].as_str() {
        Some(code) => format!("denied: {code}"),
        None => "denied".to_owned(),
    }
}

fn mint(issuer: &DevIssuer, token: Token) -> Result<Option<String>, DevError> {
    let now = unix_now();
    let claims_of = |name: &str, at: i64| {
        issuer::user(name)
            .map(|u| issuer.access_claims(u, &["orders-api", "account"], at))
            .ok_or_else(|| DevError::Crypto(format!("no built-in user {name}")))
    };
    let claims = match token {
        Token::None => return Ok(None),
        Token::User(name) => claims_of(name, now)?,
        Token::Expired(name) => claims_of(name, now - 900)?,
        Token::Id(name) => {
            let mut claims = claims_of(name, now)?;
            claims["typ"] = json!("ID");
            claims["aud"] = json!("web-frontend");
            claims
        }
        Token::OtherAudience(name) => {
            let mut claims = claims_of(name, now)?;
            claims["aud"] = json!(["billing-api", "account"]);
            claims
        }
    };
    issuer.sign_claims(&claims).map(Some)
}
