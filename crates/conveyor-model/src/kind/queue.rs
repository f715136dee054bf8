//! `queue`: tasks wait until a `get_task` node takes them.

use super::prelude::*;

/// Tasks wait here until a `get_task` node takes them (Corezoid's Queue, `api_queue`);
/// a taken task goes on to `next`.
#[derive(Debug, Clone)]
pub struct Queue {
    pub next: String,
    pub on_error: Option<String>,
    /// Keys added to what a `get_task` takes (`__queue_task_data__`), rendered over the
    /// queued task's data when it is taken.
    pub data: Option<ValueTemplate>,
    /// At most this many tasks wait here; one more goes to `on_error`
    /// (`queue_capacity_exceeded`).
    pub capacity: Option<u64>,
}

impl Kind for Queue {
    fn waits(&self) -> bool {
        true
    }

    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        if let Some(data) = &self.data {
            data.visit_templates(visit);
        }
    }

    fn look(&self) -> Look {
        Look::named("queue", Shape::Wait, None, Palette::WAITING)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    next: String,
    on_error: Option<String>,
    data: Option<Value>,
    capacity: Option<u64>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Queue> {
    let raw: RawQueue = loader.read(Some(id), "", rest)?;
    let data = match raw.data {
        Some(data @ Value::Object(_)) => Some(loader.value_template(Some(id), "data", &data)?),
        Some(_) => {
            loader.error(
                Some(id),
                Some("data"),
                "a queue's `data` is a mapping of keys to values (templates)".into(),
            );
            return None;
        }
        None => None,
    };
    if raw.capacity == Some(0) {
        loader.error(
            Some(id),
            Some("capacity"),
            "a queue's `capacity` is at least 1 (leave it out for no limit)".into(),
        );
        return None;
    }
    Some(Queue {
        next: raw.next,
        on_error: raw.on_error,
        data,
        capacity: raw.capacity,
    })
}

#[cfg(test)]
mod tests {
    fn errors(yaml: &str) -> Vec<String> {
        crate::check("t", yaml)
            .errors()
            .map(|d| d.to_string())
            .collect()
    }

    const QUEUE: &str = "process: q\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: queue, next: done, ALERT }\n  take: { type: get_task, process: \"@q\", node: wait, ORDER next: done, on_error: done }\n  done: { type: final }\n";

    fn queue(alert: &str, order: &str) -> String {
        QUEUE.replace("ALERT", alert).replace("ORDER", order)
    }

    #[test]
    fn a_queue_an_alert_and_a_get_task_load_and_bad_ones_are_named() {
        // `take` is not reachable from the start: only that is said of the good file.
        let good = errors(&queue("alert: 3 -> done", "order: newest,"));
        assert!(
            good.iter()
                .all(|e| e.contains("take") && e.contains("reach")),
            "{good:?}"
        );
        let bad = errors(&queue("alert: lots -> done", ""));
        assert!(
            bad.iter()
                .any(|e| e.contains("alert") && e.contains("TASKS -> NODE")),
            "{bad:?}"
        );
        let zero = errors(&queue("alert: { at_least: 0, to: done }", ""));
        assert!(zero.iter().any(|e| e.contains("alert")), "{zero:?}");
        let nowhere = errors(&queue("alert: 2 -> nowhere", ""));
        assert!(nowhere.iter().any(|e| e.contains("nowhere")), "{nowhere:?}");
        let order = errors(&queue("alert: 2 -> done", "order: random,"));
        assert!(
            order.iter().any(|e| e.contains("unknown order `random`")),
            "{order:?}"
        );
    }

    #[test]
    fn a_queues_capacity_of_0_and_data_that_is_not_a_mapping_are_refused_by_name() {
        let good = errors(&queue("capacity: 2, data: { label: \"{{n}}\" }", ""));
        assert!(
            good.iter()
                .all(|e| e.contains("take") && e.contains("reach")),
            "{good:?}"
        );
        let zero = errors(&queue("capacity: 0", ""));
        assert!(
            zero.iter()
                .any(|e| e.contains("wait") && e.contains("capacity") && e.contains("at least 1")),
            "{zero:?}"
        );
        for data in ["data: [1, 2]", "data: just text", "data: 3"] {
            let bad = errors(&queue(data, ""));
            assert!(
                bad.iter()
                    .any(|e| e.contains("wait") && e.contains("`data` is a mapping")),
                "{data}: {bad:?}"
            );
        }
        let negative = errors(&queue("capacity: -1", ""));
        assert!(
            negative.iter().any(|e| e.contains("capacity")),
            "{negative:?}"
        );
    }
}
