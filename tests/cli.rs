//! The `portcullis` binary: configuration checks, start-up and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_the_shipped_examples_and_prints_a_summary() {
    for file in ["config/portcullis.yaml", "config/demo.yaml"] {
        let out = portcullis(&["check-config", &repo(file)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("valid") && stdout.contains("routes:"),
            "{stdout}"
        );
    }
}

#[test]
fn check_config_names_the_field_at_fault_and_exits_64() {
    let bad = scratch(
        "bad-route.yaml",
        "issuers:\n  - { name: a, issuer: 'https://i', jwks_url: 'https://k' }\nroutes:\n  - name: r\n    match: { path_prefix: admin }\n",
    );
    let out = portcullis(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0] \"r\" (line 4): match.path_prefix"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_config_before_binding_its_port() {
    // The port is taken: a server that bound first would fail with a bind error, not 64.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let bad = scratch(
        "bad-serve.yaml",
        &format!(
            "listen: {{ grpc: '127.0.0.1:{port}' }}\nroutes:\n  - {{ name: r, match: {{ path: /x }}, token: public, require: {{}} }}\n"
        ),
    );
    let out = portcullis(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("require"));
}

#[test]
fn serve_fails_clearly_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = scratch(
        "taken.yaml",
        &format!(
            "listen: {{ grpc: '127.0.0.1:{port}' }}\nroutes:\n  - {{ name: r, match: {{ path: /x }}, token: public }}\n"
        ),
    );
    let out = portcullis(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn serve_stops_with_exit_0_on_sigterm() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = scratch(
        "sigterm.yaml",
        &format!(
            "listen: {{ grpc: '127.0.0.1:{port}' }}\nroutes:\n  - {{ name: r, match: {{ path: /x }}, token: public }}\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn explain_prints_the_route_the_token_and_each_requirement() {
    use portcullis::dev::issuer::{self, DevIssuer};
    let issuer = DevIssuer::generate("http://127.0.0.1:8180", "demo").unwrap();
    let at = 1_767_225_600;
    let token = issuer
        .access_token(issuer::user("bob").unwrap(), &["orders-api"], at)
        .unwrap();
    let token_file = scratch("bob.token", &token);
    let jwks_file = scratch("demo.jwks.json", &issuer.jwks().to_string());
    let jwks = format!("demo={}", jwks_file.display());
    let out = portcullis(&[
        "explain",
        "--config",
        &repo("config/demo.yaml"),
        "--token",
        token_file.to_str().unwrap(),
        "--jwks",
        &jwks,
        "--at",
        &at.to_string(),
        "GET",
        "https://api.example.test/orders/1?x=1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "path:      /orders/1",
        "route:     orders-read (routes[1], line 23)",
        "token:     valid: issuer demo",
        "[not met] realm role \"orders-reader\"",
        "[not met] scope \"orders:read\"",
        "decision:  deny 403 missing_realm_role",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}

#[test]
fn explain_shows_both_readings_of_an_ambiguous_path() {
    let out = portcullis(&[
        "explain",
        "--config",
        &repo("config/demo.yaml"),
        "GET",
        "http://a/docs/%2e%2e/orders",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("ambiguous: /docs/%2E%2E/orders (escapes kept) or /orders (escapes decoded)"),
        "{stdout}"
    );
    assert!(stdout.contains("deny 400 invalid_path"), "{stdout}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sighup_reloads_the_configuration() {
    let (grpc, admin) = (free_port(), free_port());
    let base = format!(
        "listen: {{ grpc: '127.0.0.1:{grpc}', admin: '127.0.0.1:{admin}' }}\nroutes:\n  - {{ name: r, match: {{ path: /x }}, token: public }}\n"
    );
    let config = scratch("sighup.yaml", &base);
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
        use std::io::{Read, Write};
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics().is_none() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        &config,
        format!("{base}  - {{ name: s, match: {{ path: /y }}, token: public }}\n"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let reloaded = r#"portcullis_config_reloads_total{result="ok"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if metrics().is_some_and(|m| m.lines().any(|l| l == reloaded)) {
            break;
        }
        assert!(Instant::now() < deadline, "no reload counted after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
}
