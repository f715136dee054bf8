//! LISTEN/NOTIFY: a connection of its own that waits for what other engines announce
//! (`conveyor_work` when a commit left a ready task, a timer or a message;
//! `conveyor_process` with the id of a process that changed) and hands it to the
//! engine's [`Listener`](super::Listener). It reconnects by itself, with a pause that
//! grows to 2 s, and reports [`Change::Reconnected`] once it listens again: what was
//! announced while it was away is lost, so the engine looks at everything once more.

use std::sync::Weak;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::{Change, Inner, describe};

pub(super) async fn listen(inner: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some(config) = inner.upgrade().map(|i| i.config.clone()) else {
            return;
        };
        let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %describe(&e), "LISTEN connection failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (send, mut receive) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(n) = message
                    && send.send(n).is_err()
                {
                    break;
                }
            }
        });
        if client
            .batch_execute("LISTEN conveyor_work; LISTEN conveyor_process")
            .await
            .is_ok()
        {
            pause = Duration::from_millis(100);
            if !first {
                tracing::info!("listening to other engines again");
                if let Some(inner) = inner.upgrade() {
                    inner.notify_listener(Change::Reconnected);
                }
            }
            first = false;
            while let Some(n) = receive.recv().await {
                let Some(inner) = inner.upgrade() else { return };
                let change = match n.channel() {
                    "conveyor_process" => match n.payload().parse() {
                        Ok(id) => Change::Process(id),
                        Err(_) => Change::Reconnected,
                    },
                    _ => Change::Work,
                };
                inner.notify_listener(change);
            }
            tracing::warn!("the LISTEN connection to PostgreSQL was lost; reconnecting");
        }
        driver.abort();
        tokio::time::sleep(pause).await;
    }
}
