//! `conveyor serve`: the engine and the HTTP API together, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use conveyor_http::{CommandHandler, Config, Limits};
use conveyor_runtime::{RunMode, Runtime, random_token};
use serde_json::{Value, json};

use crate::args::UsageError;
use crate::client::{self, ServerInfo};
use crate::execute::execute;
use crate::request::{Reply, Request};

pub fn run(
    runtime: Arc<Runtime>,
    dir: &Path,
    listen: &str,
    allow_remote: bool,
) -> anyhow::Result<ExitCode> {
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
        let handler_runtime = runtime.clone();
        let handler: CommandHandler = Arc::new(move |value: Value| handle(&handler_runtime, value));
        let config = Config {
            admin_token: token,
            limits: Limits::default(),
            command: Some(handler),
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

/// Runs a client's command in the server.
fn handle(runtime: &Arc<Runtime>, value: Value) -> Value {
    let as_json = value.get("json").and_then(Value::as_bool).unwrap_or(false);
    let reply = match value
        .get("request")
        .cloned()
        .map(serde_json::from_value::<Request>)
    {
        Some(Ok(request)) => {
            if matches!(request, Request::WaitIdle) {
                let before = runtime.metrics().steps();
                tokio::runtime::Handle::current().block_on(runtime.wait_idle());
                let steps = runtime.metrics().steps() - before;
                let mut reply = Reply::default();
                if as_json {
                    reply.line(json!({"steps": steps, "failed_steps": 0}).to_string());
                } else {
                    reply.line(format!("idle after {steps} steps"));
                }
                reply
            } else {
                execute(runtime, request, as_json)
            }
        }
        Some(Err(e)) => Reply::failed(
            2,
            format!("the server does not understand this command: {e}"),
        ),
        None => Reply::failed(2, "no command"),
    };
    serde_json::to_value(&reply)
        .unwrap_or_else(|_| json!({"stdout": "", "stderr": "error: reply", "code": 1}))
}
