//! Hot reload: the configuration file is read again when it changes (checked
//! every two seconds, by content, so a Kubernetes ConfigMap mount that swaps a
//! symlink is seen like an edit) and when asked (SIGHUP). A new configuration
//! is parsed and validated fully, then put in place whole; a bad one is
//! refused, logged and counted, and the running one stays.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::runtime::Runtime;
use crate::config::Config;

/// How often the file is read to see whether it changed.
pub const POLL_PERIOD: Duration = Duration::from_secs(2);

/// Where the configuration comes from, and how a reload is asked for.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The configuration file.
    pub path: PathBuf,
    /// Notified to reload now (the binary wires SIGHUP to it).
    pub trigger: Arc<Notify>,
}

/// The outcome of one reload attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file's content had not changed.
    Unchanged,
    /// The new configuration is in place.
    Applied,
    /// The new configuration was refused; the running one stays.
    Refused(String),
}

/// Watches the file and applies changes, for as long as the task runs.
pub async fn watch(source: ReloadSource, runtime: Arc<Runtime>, initial: &Config) {
    let mut last = read_hash(&source.path);
    let mut running = initial.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_PERIOD) => {}
            () = source.trigger.notified() => {
                tracing::info!(config.path = %source.path.display(), "Reload requested");
                last = None;
            }
        }
        let outcome = reload_once(&source.path, &runtime, &mut running, &mut last);
        match outcome {
            Reloaded::Unchanged => {}
            Reloaded::Applied => {
                runtime.metrics.record_reload(true);
                tracing::info!(config.path = %source.path.display(), "Configuration reloaded");
            }
            Reloaded::Refused(error) => {
                runtime.metrics.record_reload(false);
                tracing::warn!(config.path = %source.path.display(), %error, "Configuration refused; the running one stays");
            }
        }
    }
}

/// Reads the file and, if its content differs from `last`, applies it.
pub fn reload_once(
    path: &std::path::Path,
    runtime: &Runtime,
    running: &mut Config,
    last: &mut Option<u64>,
) -> Reloaded {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Reloaded::Refused(format!("cannot read {}: {e}", path.display())),
    };
    let hash = hash_of(&text);
    if *last == Some(hash) {
        return Reloaded::Unchanged;
    }
    *last = Some(hash);
    let config = match Config::from_yaml(&text, &path.display().to_string()) {
        Ok(config) => config,
        Err(e) => return Reloaded::Refused(e.to_string()),
    };
    for ignored in restart_only_changes(running, &config) {
        tracing::warn!(
            setting = ignored,
            "Changed setting needs a restart; the running value stays"
        );
    }
    if let Err(e) = runtime.apply(&config) {
        return Reloaded::Refused(e.to_string());
    }
    *running = config;
    Reloaded::Applied
}

/// Settings fixed at start: listeners and what is built into them.
fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.listen.grpc != next.listen.grpc {
        changed.push("listen.grpc");
    }
    if running.listen.admin != next.listen.admin {
        changed.push("listen.admin");
    }
    if running.listen.http != next.listen.http {
        changed.push("listen.http");
    }
    if running.http_path_prefix != next.http_path_prefix {
        changed.push("http_path_prefix");
    }
    if running.max_check_request_bytes != next.max_check_request_bytes {
        changed.push("max_check_request_bytes");
    }
    if running.drain_timeout_seconds != next.drain_timeout_seconds {
        changed.push("drain_timeout_seconds");
    }
    changed
}

fn read_hash(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok().map(|t| hash_of(&t))
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
