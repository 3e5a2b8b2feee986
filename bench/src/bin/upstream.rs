//! A minimal upstream for benchmarks through Envoy: answers `200 ok` to every
//! request, on one thread, so that the upstream costs little and the same in
//! every variant. With `--echo`, it answers like `portcullis dev-upstream`
//! (the method, path and headers it got, as JSON) instead, to see what Envoy
//! forwarded.
//!
//! `upstream [--listen 127.0.0.1:0] [--echo]` prints `listening on ADDR` on
//! standard output once bound, and stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "A minimal HTTP upstream for benchmarks")]
struct Cli {
    /// Where to listen (port 0: any free port, printed on standard output).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Echo the request as JSON (portcullis's dev upstream) instead of `ok`.
    #[arg(long)]
    echo: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstream: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("upstream: {e}");
            return ExitCode::FAILURE;
        }
    }
    let router = if cli.echo {
        portcullis::dev::upstream::router()
    } else {
        axum::Router::new().fallback(|| async { "ok\n" })
    };
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    match axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
