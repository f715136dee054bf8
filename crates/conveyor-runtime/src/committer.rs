//! Group commit: steps hand their batches to one committer thread, which applies
//! everything that is waiting as one store transaction (and, with `flush_each_step`,
//! flushes once for the whole group) before it acknowledges each step.
//!
//! One transaction for many steps costs far less than one each; a step still learns
//! that *its* batch is durable before it schedules what follows from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use conveyor_store::{Batch, Op, Store, StoreError};
use tokio::sync::oneshot;

/// Most steps in one transaction.
const MAX_GROUP: usize = 1024;

pub(crate) struct Request {
    pub batch: Batch,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

pub(crate) struct Committer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(store: Arc<dyn Store>, flush: bool) -> Committer {
        let (sender, receiver) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("conveyor-commit".into())
            .spawn(move || run(store, flush, receiver))
            .ok();
        Committer {
            sender: Some(sender),
            thread,
        }
    }

    pub fn sender(&self) -> Option<mpsc::Sender<Request>> {
        self.sender.clone()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has applied what it holds.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: Arc<dyn Store>, flush: bool, receiver: mpsc::Receiver<Request>) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let results = apply(store.as_ref(), &group);
        let flushed = if flush { store.flush() } else { Ok(()) };
        for (request, result) in group.into_iter().zip(results) {
            let result = match (&result, &flushed) {
                (Ok(()), Err(e)) => Err(StoreError::Io(e.to_string())),
                _ => result,
            };
            let _ = request.done.send(result);
        }
    }
}

/// Applies a group as one transaction; if that fails (one step's ref was taken, say),
/// each batch is applied on its own so only the faulty one fails.
fn apply(store: &dyn Store, group: &[Request]) -> Vec<Result<(), StoreError>> {
    if group.len() == 1 {
        return vec![store.commit(&group[0].batch)];
    }
    let mut merged = Batch::default();
    let mut counts: HashMap<(u64, String), (i64, u64)> = HashMap::new();
    for request in group {
        for op in &request.batch.ops {
            match op {
                // Counter changes add up; one write per node for the whole group.
                Op::Count {
                    process,
                    node,
                    now,
                    total,
                } => {
                    let entry = counts.entry((*process, node.clone())).or_default();
                    entry.0 += now;
                    entry.1 += total;
                }
                other => merged.push(other.clone()),
            }
        }
    }
    for ((process, node), (now, total)) in counts {
        if now != 0 || total != 0 {
            merged.push(Op::Count {
                process,
                node,
                now,
                total,
            });
        }
    }
    match store.commit(&merged) {
        Ok(()) => group.iter().map(|_| Ok(())).collect(),
        Err(_) => group.iter().map(|r| store.commit(&r.batch)).collect(),
    }
}
