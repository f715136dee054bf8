//! `conveyor serve`: the engine and the HTTP API together, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use conveyor_http::{Config, Limits, Rate};
use conveyor_runtime::{RunMode, Runtime, random_token};

use crate::args::UsageError;
use crate::client::{self, ServerInfo};

/// The HTTP API's limits (defaults in `docs/http-api.md`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Also answer requests for this host name (`Host` header, e.g. conveyor.example.com,
    /// or with a port); for direct URLs published behind a proxy. Repeat for several.
    /// Others than 127.0.0.1, localhost and [::1] with the port are refused (DNS rebinding).
    #[arg(
        long = "public-host",
        value_name = "HOST",
        env = "CONVEYOR_PUBLIC_HOST",
        value_delimiter = ','
    )]
    pub public_hosts: Vec<String>,
    /// Seconds a client has to send a request's headers.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub body_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Connections served at once (more wait to be accepted).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// Requests per second to one process's direct URL (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub direct_rate: f64,
    /// Requests at once to one direct URL above its rate.
    #[arg(long, value_name = "N", default_value_t = 40.0)]
    pub direct_burst: f64,
    /// Requests per second signed by one API key (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 200.0)]
    pub api_key_rate: f64,
    /// Requests at once signed by one API key above its rate.
    #[arg(long, value_name = "N", default_value_t = 400.0)]
    pub api_key_burst: f64,
    /// Seconds a dashboard session lasts unused.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub session_idle: u64,
    /// Seconds a dashboard session lasts at most after its login.
    #[arg(long, value_name = "SECS", default_value_t = 43200)]
    pub session_lifetime: u64,
}

impl ServeOptions {
    fn limits(&self) -> Result<Limits, UsageError> {
        for (flag, value) in [
            ("--direct-rate", self.direct_rate),
            ("--direct-burst", self.direct_burst),
            ("--api-key-rate", self.api_key_rate),
            ("--api-key-burst", self.api_key_burst),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(UsageError(format!(
                    "{flag}: `{value}` is not a number of requests (0 or more)"
                )));
            }
        }
        for (flag, value) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--session-idle", self.session_idle),
            ("--session-lifetime", self.session_lifetime),
        ] {
            if value == 0 {
                return Err(UsageError(format!("{flag}: must be at least 1 second")));
            }
        }
        if self.max_connections == 0 {
            return Err(UsageError("--max-connections: must be at least 1".into()));
        }
        for host in &self.public_hosts {
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(UsageError(format!(
                    "--public-host: `{host}` is not a host name like conveyor.example.com or conveyor.example.com:8443"
                )));
            }
        }
        Ok(Limits {
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: self.max_connections,
            direct_rate: Rate {
                per_second: self.direct_rate,
                burst: self.direct_burst,
            },
            api_key_rate: Rate {
                per_second: self.api_key_rate,
                burst: self.api_key_burst,
            },
            session_idle: Duration::from_secs(self.session_idle),
            session_lifetime: Duration::from_secs(self.session_lifetime),
            ..Limits::default()
        })
    }
}

pub fn run(
    runtime: Arc<Runtime>,
    dir: &Path,
    listen: &str,
    allow_remote: bool,
    options: &ServeOptions,
) -> anyhow::Result<ExitCode> {
    let limits = options.limits()?;
    let address: SocketAddr = listen.parse().map_err(|_| {
        UsageError(format!(
            "--listen: `{listen}` is not an address like 127.0.0.1:7878"
        ))
    })?;
    if !address.ip().is_loopback() {
        if !allow_remote {
            return Err(UsageError(format!(
                "--listen: {address} is reachable from other machines; add --allow-remote if you mean it"
            ))
            .into());
        }
        eprintln!(
            "warning: listening on {address}: anyone who can reach it and knows an API key or a direct URL can use this Conveyor"
        );
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let bound = listener.local_addr()?;
        let token = random_token(24);
        client::write(
            dir,
            &ServerInfo {
                address: bound.to_string(),
                token: token.clone(),
                pid: std::process::id(),
            },
        )?;
        eprintln!(
            "conveyor serving on http://{bound} (data in {})",
            dir.display()
        );
        tracing::info!(%bound, "engine running; stop with Ctrl-C or SIGTERM");

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let config = Config {
            admin_token: token,
            limits,
            admin_commands: true,
            public_hosts: options.public_hosts.clone(),
            signatures_file: Some(dir.join("signatures")),
        };
        let http = tokio::spawn(conveyor_http::serve(
            listener,
            runtime.clone(),
            config,
            stopped(),
        ));
        let engine_runtime = runtime.clone();
        let engine_stop = stopped();
        let engine = tokio::spawn(async move {
            engine_runtime
                .run(RunMode::UntilShutdown(Box::pin(engine_stop)))
                .await
        });
        crate::commands::shutdown_signal().await;
        eprintln!("stopping: finishing the steps in flight");
        let _ = stop_tx.send(true);
        let http_result = http.await;
        let engine_result = engine.await;
        let _ = std::fs::remove_file(client::server_file(dir));
        match engine_result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(anyhow::Error::new(e).context("the engine stopped with an error"));
            }
            Err(e) => anyhow::bail!("the engine task failed: {e}"),
        }
        match http_result {
            Ok(Ok(())) => Ok(ExitCode::SUCCESS),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server failed")),
            Err(e) => anyhow::bail!("the HTTP server task failed: {e}"),
        }
    })
}
