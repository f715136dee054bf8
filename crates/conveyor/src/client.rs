//! The CLI as a client of a running `conveyor serve`: the server writes its address and
//! a local admin token into the data dir (`server.json`, mode 0600); commands find it
//! there and send themselves to `POST /admin/command`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use conveyor_commands::{Reply, Request};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `127.0.0.1:7878`
    pub address: String,
    pub token: String,
    pub pid: u32,
}

pub fn server_file(dir: &Path) -> PathBuf {
    dir.join("server.json")
}

/// The running server's details, if its file is there.
pub fn read(dir: &Path) -> Option<ServerInfo> {
    let text = std::fs::read_to_string(server_file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the server's details, readable by the owner only.
pub fn write(dir: &Path, info: &ServerInfo) -> anyhow::Result<()> {
    let path = server_file(dir);
    let text = serde_json::to_string_pretty(info)?;
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(text.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Sends a request to the server. `Ok(None)` when nobody answers at its address (a
/// server that died without cleaning up): the caller then opens the store itself.
pub fn send(info: &ServerInfo, request: &Request, as_json: bool) -> anyhow::Result<Option<Reply>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;
        let response = client
            .post(format!("http://{}/admin/command", info.address))
            .bearer_auth(&info.token)
            .json(&json!({"request": request, "json": as_json}))
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(None),
            Err(e) => return Err(e).context("the server did not answer"),
        };
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // Not our server (a stale file, its port now someone else's).
            return Ok(None);
        }
        let body = response
            .text()
            .await
            .context("the server's answer was cut")?;
        if !status.is_success() {
            anyhow::bail!("the server refused the command ({status}): {body}");
        }
        let reply: Reply =
            serde_json::from_str(&body).context("the server's answer is not a command reply")?;
        Ok(Some(reply))
    })
}
