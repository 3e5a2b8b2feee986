//! Runs a real Envoy with `config/envoy.yaml`, for the demo and the end-to-end
//! tests. **For local use only.**
//!
//! The configuration users copy is used as it is, except for addresses: the
//! listener and the admin interface bind port 0 on loopback, and the
//! `portcullis` and `backend` clusters point at the servers started beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::DevError;

/// `config/envoy.yaml`, as built into this binary.
pub const STANDALONE_CONFIG: &str = include_str!("../../config/envoy.yaml");

/// `config/envoy-http.yaml` (ext_authz over HTTP), as built into this binary.
pub const STANDALONE_HTTP_CONFIG: &str = include_str!("../../config/envoy-http.yaml");

/// The cluster of the ext_authz service in `config/envoy.yaml`.
pub const AUTHZ_CLUSTER: &str = "portcullis";
/// The cluster of the protected upstream in `config/envoy.yaml`.
pub const UPSTREAM_CLUSTER: &str = "backend";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Envoy process; killed when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: tokio::process::Child,
    /// Where its HTTP listener accepts connections.
    pub listener: SocketAddr,
    /// Its admin interface.
    pub admin: SocketAddr,
    dir: PathBuf,
}

/// Finds the Envoy binary: `$PORTCULLIS_ENVOY`, else `.venv/bin/envoy` (where
/// `scripts/install-envoy` puts it), else `envoy` on the `PATH`.
pub fn find_binary() -> Result<PathBuf, DevError> {
    if let Some(path) = std::env::var_os("PORTCULLIS_ENVOY") {
        return Ok(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy");
    if venv.exists() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.exists());
    on_path.ok_or_else(|| {
        DevError::Envoy(
            "no Envoy binary: run scripts/install-envoy, or set PORTCULLIS_ENVOY".to_owned(),
        )
    })
}

/// Parses an Envoy YAML configuration and points it at local servers.
pub fn local_config(
    yaml: &str,
    authz: SocketAddr,
    upstream: SocketAddr,
) -> Result<Value, DevError> {
    let mut config: Value = serde_saphyr::from_str(yaml)
        .map_err(|e| DevError::Envoy(format!("config/envoy.yaml does not parse: {e}")))?;
    let loopback_any = json!({ "address": "127.0.0.1", "port_value": 0 });
    config["admin"]["address"]["socket_address"] = loopback_any.clone();
    let listeners = config["static_resources"]["listeners"]
        .as_array_mut()
        .ok_or_else(|| DevError::Envoy("no static listeners".to_owned()))?;
    for listener in listeners {
        listener["address"]["socket_address"] = loopback_any.clone();
    }
    point_cluster(&mut config, AUTHZ_CLUSTER, authz)?;
    point_cluster(&mut config, UPSTREAM_CLUSTER, upstream)?;
    Ok(config)
}

fn point_cluster(config: &mut Value, name: &str, addr: SocketAddr) -> Result<(), DevError> {
    let missing = || DevError::Envoy(format!("no cluster named {name:?} with endpoints"));
    let cluster = config["static_resources"]["clusters"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name))
        .ok_or_else(missing)?;
    let socket = json!({ "address": addr.ip().to_string(), "port_value": addr.port() });
    let endpoints = cluster["load_assignment"]["endpoints"]
        .as_array_mut()
        .ok_or_else(missing)?;
    for group in endpoints {
        for lb in group["lb_endpoints"].as_array_mut().ok_or_else(missing)? {
            lb["endpoint"]["address"]["socket_address"] = socket.clone();
        }
    }
    Ok(())
}

impl Envoy {
    /// Starts Envoy with this configuration and waits until it is ready.
    pub async fn start(binary: &Path, config: &Value) -> Result<Self, DevError> {
        let dir = scratch_dir()?;
        let config_path = dir.join("envoy.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(DevError::io("write envoy config"))?;
        let admin_path = dir.join("admin-address");
        let log = std::fs::File::create(dir.join("envoy.log"))
            .map_err(DevError::io("create envoy log"))?;
        let log_err = log.try_clone().map_err(DevError::io("clone envoy log"))?;
        let child = tokio::process::Command::new(binary)
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(DevError::io(format!("start {}", binary.display())))?;
        let mut envoy = Self {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        match tokio::time::timeout(START_TIMEOUT, envoy.wait_ready(&admin_path)).await {
            Ok(Ok(())) => Ok(envoy),
            Ok(Err(e)) => Err(envoy.failed(&e.to_string())),
            Err(_) => Err(envoy.failed("not ready in time")),
        }
    }

    async fn wait_ready(&mut self, admin_path: &Path) -> Result<(), DevError> {
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(DevError::io("wait for envoy"))?
            {
                return Err(DevError::Envoy(format!("exited with {status}")));
            }
            if let Some(admin) = read_admin_address(admin_path) {
                self.admin = admin;
                if let Some(listener) = self.bound_listener(&client).await {
                    self.listener = listener;
                    let ready = client.get(format!("http://{admin}/ready")).send().await;
                    if ready.is_ok_and(|r| r.status().is_success()) {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn bound_listener(&self, client: &reqwest::Client) -> Option<SocketAddr> {
        let url = format!("http://{}/listeners?format=json", self.admin);
        let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
        let socket = &body["listener_statuses"][0]["local_address"]["socket_address"];
        let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
        let ip = socket["address"].as_str()?.parse().ok()?;
        (port != 0).then_some(SocketAddr::new(ip, port))
    }

    fn failed(&self, what: &str) -> DevError {
        DevError::Envoy(format!("{what}; its log:\n{}", self.log()))
    }

    /// What Envoy has written to its standard output and error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Stops Envoy and removes its scratch directory.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_admin_address(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn scratch_dir() -> Result<PathBuf, DevError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "portcullis-envoy-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).map_err(DevError::io("create envoy scratch dir"))?;
    Ok(dir)
}
