//! `get_task`: takes a task from a `queue` node of a process (Corezoid's Get from
//! Queue): the taken task goes on, and this task gets `__queue_task_id__` and
//! `__queue_task_data__`.

use super::*;

/// At most this many tasks of the queue's process are listed, looking for those waiting
/// in the queue (the store lists a process's tasks in id order).
const SCAN_LIMIT: usize = 100_000;
/// How long a take waits for the step of the task next in line (it is coming into the
/// queue, or leaving it) before it passes over that task. Such steps are short: a queued
/// task's own steps move no data over the network.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What a look down the queue's list found.
enum Next {
    Task(Box<TaskRecord>),
    /// No candidate is free.
    Empty,
    /// The next in line is in a step of its own.
    Busy,
}

/// The taken task's id and data, or a failure's tag and description.
type Taken = std::result::Result<(u64, Map<String, Value>), (&'static str, String)>;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) async fn get_task(&mut self, node: &GetTask) -> Result<()> {
        let GetTask {
            process,
            queue,
            newest,
            next,
            ..
        } = node;
        let newest = *newest;
        match self.take_from_queue(process, queue, newest).await {
            Ok((id, data)) => {
                self.task
                    .data
                    .insert("__queue_task_id__".into(), Value::from(id));
                self.task
                    .data
                    .insert("__queue_task_data__".into(), Value::Object(data));
                self.goto(next, "next");
            }
            Err((tag, message)) => self.fail("get_task", "software", tag, message, None),
        }
        Ok(())
    }

    async fn take_from_queue(&mut self, process: &Template, queue: &str, newest: bool) -> Taken {
        let target = self
            .render_text(process)
            .map_err(|m| ("get_task_wrong_convert_param", m))?;
        let loaded = self.resolve_other(&target, "get_task_wrong_convert_param")?;
        let extra = match loaded.process.nodes.get(queue).map(|n| &n.kind) {
            Some(NodeKind::Queue(q)) => q.data.clone(),
            Some(other) => {
                return Err((
                    "queue_wrong_logic",
                    format!(
                        "node `{queue}` of process {target} is a {}, not a queue",
                        other.name()
                    ),
                ));
            }
            None => {
                return Err((
                    "queue_wrong_logic",
                    format!("process {target} has no node `{queue}`"),
                ));
            }
        };
        let process = loaded.record.id;
        let taken = if self.rt.store.shared() {
            self.take_listing(process, queue, newest)?
        } else {
            self.take_listed(process, queue, newest).await?
        };
        let Some(task) = taken else {
            return Err((
                "not_found_task",
                format!("no task waits in queue node `{queue}` of process {target}"),
            ));
        };
        let took = Took {
            process,
            queue: queue.to_string(),
            entered: task.entered,
            task: task.id,
        };
        // The queue's own `data`, before anything is sent: a failure leaves it queued.
        let data = match self.taken_data(&loaded, &task, extra.as_ref()) {
            Ok(data) => data,
            Err(message) => {
                give_back(self.rt, &took);
                return Err(("get_task_wrong_convert_param", message));
            }
        };
        let seq = match self.rt.store.next_task_id() {
            Ok(seq) => seq,
            Err(e) => {
                give_back(self.rt, &took);
                return Err(("get_task_fatal_error", e.to_string()));
            }
        };
        self.batch.push(Op::Inbox {
            task: task.id,
            seq,
            message: InboxMessage::Dequeue { by: self.task.id },
        });
        self.batch.push(Op::SetReady(task.id));
        self.schedule.push(task.id);
        self.took.push(took);
        Ok((task.id, data))
    }

    /// What the taker gets of `task`: its data and the queue's `data` rendered over it,
    /// with its secret keys masked (as a whole-task `conv[…]` read is) and any secret
    /// value the queue's `data` copied elsewhere cut out.
    fn taken_data(
        &mut self,
        loaded: &LoadedProcess,
        task: &TaskRecord,
        extra: Option<&ValueTemplate>,
    ) -> std::result::Result<Map<String, Value>, String> {
        let mut data = task.data.clone();
        if let Some(extra) = extra {
            let env = self.env();
            let rendered = extra.render(&Value::Object(task.data.clone()), &env);
            let revealed = env.revealed.take();
            drop(env);
            self.revealed.extend(revealed);
            match rendered {
                Ok(Value::Object(map)) => data.extend(map),
                Ok(other) => return Err(format!("the queue's data is not an object: {other}")),
                Err(e) => return Err(format!("the queue's data: {e}")),
            }
        }
        let mut secrets = Vec::new();
        crate::mask::secret_values(&loaded.process, &task.secret_keys, &task.data, &mut secrets);
        let data = crate::mask::mask_data(&loaded.process, &task.secret_keys, &data);
        Ok(
            match crate::mask::mask_value(&Value::Object(data), &secrets) {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        )
    }

    /// The oldest (or newest) task waiting in `queue` that no other step has taken, from
    /// this engine's list of the queue (`queues.rs`): each candidate is read back, and
    /// one that left the queue is dropped from the list. A list with no candidate left
    /// is made again from the store, at most once a second.
    async fn take_listed(
        &mut self,
        process: u64,
        queue: &str,
        newest: bool,
    ) -> std::result::Result<Option<TaskRecord>, (&'static str, String)> {
        let mut listed = false;
        if self.rt.queues.needs_listing(process, queue) {
            list_queue(self.rt, process, queue).await?;
            listed = true;
        }
        // Until when the next in line is waited for while its own step runs: in order,
        // and never "empty" because the one task waiting was just coming in.
        let mut wait_until: Option<std::time::Instant> = None;
        loop {
            let waiting = wait_until.is_none_or(|until| std::time::Instant::now() < until);
            match self.next_listed(process, queue, newest, waiting)? {
                Next::Task(task) => return Ok(Some(*task)),
                Next::Busy => {
                    wait_until.get_or_insert_with(|| std::time::Instant::now() + BUSY_WAIT);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Next::Empty if !listed && self.rt.queues.may_relist(process, queue) => {
                    list_queue(self.rt, process, queue).await?;
                    listed = true;
                }
                Next::Empty => return Ok(None),
            }
        }
    }

    /// The first candidate on the list that is free and still waits in the queue; the
    /// ones passed over that stay in it (this task itself, one another step took and
    /// has not moved on yet, one a `task goto` is about to move) go back on the list.
    /// A candidate in a step of its own stops the look (`Busy`) while `wait_for_busy`,
    /// and is passed over after.
    fn next_listed(
        &mut self,
        process: u64,
        queue: &str,
        newest: bool,
        wait_for_busy: bool,
    ) -> std::result::Result<Next, (&'static str, String)> {
        let queues = &self.rt.queues;
        let mut passed = Vec::new();
        let taken = loop {
            let Some(candidate) = queues.next(process, queue, newest) else {
                break Ok(Next::Empty);
            };
            let id = candidate.1;
            let free = match self.rt.taken.lock() {
                Ok(mut taken) => id != self.task.id && taken.insert(id),
                Err(_) => {
                    passed.push(candidate);
                    break Err(("get_task_fatal_error", "the claims lock is poisoned".into()));
                }
            };
            if !free {
                passed.push(candidate);
                continue;
            }
            if !self.hold_its_steps(id) {
                passed.push(candidate);
                if wait_for_busy {
                    break Ok(Next::Busy);
                }
                continue;
            }
            match self.rt.store.task(id) {
                Ok(Some(task))
                    if task.process == process
                        && task.node == queue
                        && task.status == TaskStatus::Waiting =>
                {
                    match self.rt.store.inbox(id) {
                        Ok(messages) if moving(&messages) => {
                            self.untake(id);
                            passed.push(candidate);
                        }
                        Ok(_) => break Ok(Next::Task(Box::new(task))),
                        Err(e) => {
                            self.untake(id);
                            passed.push(candidate);
                            break Err(("get_task_fatal_error", e.to_string()));
                        }
                    }
                }
                // It left the queue: off the list.
                Ok(_) => self.untake(id),
                Err(e) => {
                    self.untake(id);
                    passed.push(candidate);
                    break Err(("get_task_fatal_error", e.to_string()));
                }
            }
        };
        for candidate in passed {
            queues.put_back(process, queue, candidate);
        }
        taken
    }

    /// The oldest (or newest) task waiting in `queue` that no other step or engine has
    /// taken, from a listing of the queue (a store shared by several engines, whose
    /// steps this engine does not see).
    fn take_listing(
        &mut self,
        process: u64,
        queue: &str,
        newest: bool,
    ) -> std::result::Result<Option<TaskRecord>, (&'static str, String)> {
        let mut waiting: Vec<TaskRecord> = self
            .rt
            .store
            .tasks(process, Some(queue), SCAN_LIMIT)
            .map_err(|e| ("get_task_fatal_error", e.to_string()))?
            .into_iter()
            .filter(|t| t.status == TaskStatus::Waiting && t.id != self.task.id)
            .collect();
        // Oldest first: by when they entered the queue, then by id.
        waiting.sort_by_key(|t| (t.entered, t.id));
        if newest {
            waiting.reverse();
        }
        self.take_one(waiting, queue)
    }

    /// The first of `waiting` no other step has taken. This engine's steps are kept
    /// apart by `Runtime::taken`; on a shared store the task is also claimed from
    /// every other engine (held until this step's batch, which sends it on, is
    /// committed), and read again under the claim: it may have left the queue since
    /// the scan.
    fn take_one(
        &mut self,
        waiting: Vec<TaskRecord>,
        queue: &str,
    ) -> std::result::Result<Option<TaskRecord>, (&'static str, String)> {
        let fatal = |e: conveyor_store::StoreError| ("get_task_fatal_error", e.to_string());
        let shared = self.rt.store.shared();
        for candidate in waiting {
            {
                let mut taken =
                    self.rt.taken.lock().map_err(|_| {
                        ("get_task_fatal_error", "the claims lock is poisoned".into())
                    })?;
                if !taken.insert(candidate.id) {
                    continue;
                }
            }
            if !self.hold_its_steps(candidate.id) {
                continue;
            }
            if !shared {
                return Ok(Some(candidate));
            }
            let claimed = match self.rt.store.claim(&[candidate.id]) {
                Ok(claimed) => claimed.contains(&candidate.id),
                Err(e) => {
                    self.untake(candidate.id);
                    return Err(fatal(e));
                }
            };
            if !claimed {
                // Another engine holds it (its own step, or another engine's get_task).
                self.untake(candidate.id);
                continue;
            }
            self.claimed.push(candidate.id);
            // Taken by a step of another engine whose message the task has not read yet?
            let pending = match self.rt.store.inbox(candidate.id) {
                Ok(messages) => moving(&messages),
                Err(e) => {
                    self.untake(candidate.id);
                    return Err(fatal(e));
                }
            };
            match self.rt.store.task(candidate.id) {
                Ok(Some(now))
                    if !pending && now.node == queue && now.status == TaskStatus::Waiting =>
                {
                    return Ok(Some(now));
                }
                Ok(_) => self.untake(candidate.id),
                Err(e) => {
                    self.untake(candidate.id);
                    return Err(fatal(e));
                }
            }
        }
        Ok(None)
    }

    /// Keeps this engine from starting a step of `task`, which this step is taking,
    /// until the take is committed or given back (`Taken`). `false`, with the take
    /// undone, when a step of it runs now (its time limit, a `task goto`): it may be
    /// leaving the queue, and a take of it would reach it too late. Without this, both
    /// steps committed: the taker had the task's data and the task had gone elsewhere,
    /// with a `late_dequeue` in its history.
    fn hold_its_steps(&self, task: u64) -> bool {
        if self.rt.hold(task) {
            return true;
        }
        unhold(self.rt, task);
        false
    }

    /// Undoes a take that held the task (`hold_its_steps`), before it became a `Took`.
    fn untake(&self, task: u64) {
        unhold(self.rt, task);
        self.rt.unhold(task);
    }
}

/// Whether a task's unread messages will move it out of its queue: a taker's (another
/// step took it) or a `task goto`/`retry` (its step reads that first, and a take would
/// reach it too late: `late_dequeue`).
fn moving(messages: &[(u64, InboxMessage)]) -> bool {
    messages.iter().any(|(_, m)| {
        matches!(
            m,
            InboxMessage::Dequeue { .. } | InboxMessage::Recover { .. }
        )
    })
}

/// Lists the queue from the store into this engine's list. One take lists it at a
/// time; those that come meanwhile wait for it without holding their worker, and
/// use its list. The listing itself (it reads every task of the process) lets the
/// tokio worker's other tasks go to another worker (`block_in_place`, where the
/// runtime has more than one thread).
async fn list_queue(
    rt: &Runtime,
    process: u64,
    queue: &str,
) -> std::result::Result<(), (&'static str, String)> {
    let queues = &rt.queues;
    let (lock, seen) = queues.listing_lock(process, queue);
    let _listing = lock.lock().await;
    if queues.listed_since(process, queue, seen) {
        return Ok(());
    }
    blocking(|| {
        let found = rt
            .store
            .tasks(process, Some(queue), SCAN_LIMIT)
            .map_err(|e| ("get_task_fatal_error", e.to_string()))?;
        let complete = found.len() < SCAN_LIMIT;
        // Tasks taken and not moved on yet are left out: they leave the queue, or
        // come back to the list if their take is not committed (`Taken`) or came
        // too late (`note_queued`).
        let held = rt.taken.lock().map(|t| t.clone()).unwrap_or_default();
        queues.listed(
            process,
            queue,
            found
                .iter()
                .filter(|t| t.status == TaskStatus::Waiting && !held.contains(&t.id))
                .map(|t| (t.entered, t.id)),
            complete,
        );
        Ok(())
    })
}

/// Runs `f`, which blocks (reads the store at length), letting the
/// tokio worker's other tasks move to another worker meanwhile where the runtime has
/// more than one (`block_in_place` is refused on a single-threaded runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = r#"
process: orders
nodes:
  start: { type: start, next: waiting }
  waiting: { type: queue, next: shipped }
  shipped: { type: final }
"#;

    const TAKER: &str = r#"
process: taker
nodes:
  start: { type: start, next: take }
  take: { type: get_task, process: "@orders", node: waiting, next: got, on_error: empty }
  got: { type: final }
  empty: { type: final, status: error }
"#;

    const NEWEST: &str = r#"
process: newest
nodes:
  start: { type: start, next: take }
  take: { type: get_task, process: "@orders", node: waiting, order: newest, next: got, on_error: empty }
  got: { type: final }
  empty: { type: final, status: error }
"#;

    /// A task whose own step is running (its time limit, a `task goto`: held here as
    /// such a step holds it) is waited for a moment and then passed over by a take, and
    /// taken once that step is over; a taken task's steps are held until the take is
    /// committed, and free after. A step that ends soon is waited for: the take stays in
    /// order. A task a `task goto` is about to move is passed over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_whose_own_step_runs_is_not_taken_from_its_queue() {
        for kind in [
            conveyor_store::StoreKind::Log,
            conveyor_store::StoreKind::Sled,
        ] {
            let (_dir, rt) = super::super::tests::runtime_on(kind);
            for (yaml, alias) in [(ORDERS, "orders"), (TAKER, "taker"), (NEWEST, "newest")] {
                rt.clone_process("p.yaml", yaml, Some(alias), Map::new())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let add = |process: &str, reference: &str| {
                rt.add_task(process, Some(reference), Map::new())
                    .unwrap_or_else(|e| panic!("{e}"))
                    .id
            };
            let step = |id: u64| {
                let rt = &rt;
                async move {
                    super::super::run(rt, id)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            };
            let (o1, o2) = (add("@orders", "o1"), add("@orders", "o2"));
            step(o1).await;
            step(o2).await;
            // o1, the oldest, is in a step of its own that does not end.
            assert!(rt.hold(o1));
            let t1 = add("@taker", "t1");
            let started = std::time::Instant::now();
            step(t1).await;
            assert!(
                started.elapsed() >= BUSY_WAIT,
                "{kind:?}: o1 was waited for"
            );
            let got = |t: u64| {
                let task = rt
                    .store
                    .task(t)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("{t}"));
                assert_eq!(task.node, "got", "{kind:?}: {task:?}");
                task.data.get("__queue_task_id__").and_then(Value::as_u64)
            };
            assert_eq!(got(t1), Some(o2), "{kind:?}: o1 was passed over");
            // The take is committed: o2's steps are free, and the one that reads the
            // take's message moves it on.
            assert!(!rt.is_running(o2), "{kind:?}");
            step(o2).await;
            let node = |id: u64| rt.store.task(id).ok().flatten().map(|t| t.node);
            assert_eq!(node(o2).as_deref(), Some("shipped"));
            assert_eq!(node(o1).as_deref(), Some("waiting"));
            assert!(
                rt.store
                    .history(o1)
                    .unwrap_or_default()
                    .iter()
                    .all(|e| !matches!(e.kind, EventKind::Error { .. })),
                "{kind:?}: nothing reached o1"
            );
            // Its step is over: the next take gets it.
            rt.unhold(o1);
            let t2 = add("@taker", "t2");
            step(t2).await;
            assert_eq!(got(t2), Some(o1), "{kind:?}");
            assert!(!rt.is_running(o1), "{kind:?}");
            // o4, the newest, is still in the step that brought it into the queue; it
            // ends in a moment: a take of the newest waits for it rather than take o3.
            let (o3, o4) = (add("@orders", "o3"), add("@orders", "o4"));
            step(o3).await;
            step(o4).await;
            assert!(rt.hold(o4));
            let releases = {
                let rt = Arc::clone(&rt);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    rt.unhold(o4);
                })
            };
            let t3 = add("@newest", "t3");
            step(t3).await;
            assert!(releases.await.is_ok());
            assert_eq!(got(t3), Some(o4), "{kind:?}: the newest, waited for");
            // A `task goto` sent to o3 and not read yet: o3 is passed over.
            let seq = rt.store.next_task_id().unwrap_or_else(|e| panic!("{e}"));
            let mut batch = conveyor_store::Batch::default();
            batch.push(Op::Inbox {
                task: o3,
                seq,
                message: InboxMessage::Recover {
                    to: Some("shipped".into()),
                    data: Map::new(),
                    source: "test".into(),
                    action: None,
                },
            });
            rt.store.commit(&batch).unwrap_or_else(|e| panic!("{e}"));
            let t4 = add("@taker", "t4");
            step(t4).await;
            let t4 = rt.store.task(t4).ok().flatten().map(|t| t.node);
            assert_eq!(t4.as_deref(), Some("empty"), "{kind:?}");
        }
    }
}
