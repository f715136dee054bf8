//! Checks of the process as a whole: one start, targets that exist, every node reachable,
//! no cycle a task could spin in, and templates that read keys nobody declares.

use std::collections::{BTreeSet, HashSet};

use conveyor_template::Template;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, EdgeRef};

use crate::diagnostic::{Severity, did_you_mean};
use crate::kind::NodeKind;
use crate::load::{Loaded, Loader};
use crate::model::*;

pub(crate) fn validate(loader: &mut Loader<'_>, loaded: &mut Loaded) {
    let process = &mut loaded.process;
    let ids: HashSet<&str> = loaded.ids.iter().map(String::as_str).collect();

    // Exactly one start.
    let starts: Vec<&str> = process
        .nodes
        .values()
        .filter(|n| matches!(n.kind, NodeKind::Start { .. }))
        .map(|n| n.id.as_str())
        .collect();
    match starts.as_slice() {
        [] if loaded.complete => loader.error(
            None,
            Some("nodes"),
            "no start node: exactly one node has `type: start`".into(),
        ),
        [] => {}
        [one] => process.start = one.to_string(),
        [first, rest @ ..] => {
            for other in rest {
                loader.error(Some(other), Some("type"), format!("a second start node; `{first}` is already the start (a process has exactly one)"));
            }
        }
    }

    // Every target exists.
    let mut dangling = false;
    for node in process.nodes.values() {
        for edge in node.edges() {
            if !ids.contains(edge.target) {
                dangling = true;
                let hint = did_you_mean(edge.target, ids.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                loader.error(
                    Some(&node.id),
                    Some(&edge.field),
                    format!("no node `{}` in this process{hint}", edge.target),
                );
            } else if edge.target == node.id && edge.field == "timeout" {
                loader.error(
                    Some(&node.id),
                    Some("timeout"),
                    "a time limit must lead to another node".into(),
                );
            }
            if process
                .nodes
                .get(edge.target)
                .is_some_and(|t| matches!(t.kind, NodeKind::Start { .. }))
            {
                loader.error(Some(&node.id), Some(&edge.field), format!("leads back to the start node `{}`; tasks enter a process only at its start", edge.target));
            }
        }
    }

    if loaded.complete && !dangling && starts.len() == 1 {
        graph_checks(loader, process);
    }
    param_warnings(loader, process);
}

fn graph_checks(loader: &mut Loader<'_>, process: &Process) {
    let mut graph = DiGraph::<&str, ()>::new();
    let index: indexmap::IndexMap<&str, NodeIndex> = process
        .nodes
        .keys()
        .map(|id| (id.as_str(), graph.add_node(id.as_str())))
        .collect();
    for node in process.nodes.values() {
        for edge in node.edges() {
            graph.add_edge(index[node.id.as_str()], index[edge.target], ());
        }
    }

    // Reachability from start.
    let mut reached = HashSet::new();
    let mut bfs = Bfs::new(&graph, index[process.start.as_str()]);
    while let Some(n) = bfs.next(&graph) {
        reached.insert(n);
    }
    for (id, n) in &index {
        if !reached.contains(n) {
            loader.error(
                Some(id),
                None,
                format!("cannot be reached from the start node `{}`", process.start),
            );
        }
    }

    // Cycles with no node that waits: a task in them would spin.
    for component in tarjan_scc(&graph) {
        let cyclic = component.len() > 1
            || graph
                .edges(component[0])
                .any(|e| e.target() == component[0]);
        if !cyclic {
            continue;
        }
        let waits = component.iter().any(|n| {
            let node = &process.nodes[graph[*n]];
            node.kind.waits() || node.time_limit.is_some()
        });
        if !waits {
            // Name the nodes in file order, so the message is stable.
            let members: HashSet<&str> = component.iter().map(|n| graph[*n]).collect();
            let ordered: Vec<&str> = process
                .nodes
                .keys()
                .map(String::as_str)
                .filter(|id| members.contains(id))
                .collect();
            let first = ordered[0];
            loader.error(
                Some(first),
                None,
                format!(
                    "the cycle {} → {first} has no node that waits (delay, wait_callback, call_process, escalation, queue, or a time limit): a task in it would spin",
                    ordered.join(" → ")
                ),
            );
        }
    }
}

/// Warns about templates that read task keys nobody declares or produces. Only a
/// warning: API replies and callbacks may add keys that the file cannot know of. A
/// `call_process` reply adds the keys the called process replies with, which this file
/// cannot know: nodes a task reaches after one are not warned about.
fn param_warnings(loader: &mut Loader<'_>, process: &Process) {
    let after_reply = reached_after_replies(process);
    let mut known: HashSet<&str> = process.params.keys().map(String::as_str).collect();
    known.extend(process.secrets.iter().map(String::as_str));
    if process.settings.rate_limit.is_some() {
        // A summary task of folded tasks carries these (see the runtime's `fold.rs`).
        known.extend(["folded", "folded_count"]);
    }
    for node in process.nodes.values() {
        let kind = node.kind.as_kind();
        kind.visit_written_keys(&mut |key| {
            known.insert(key);
        });
        known.extend(kind.fixed_keys());
    }
    for node in process.nodes.values() {
        if after_reply.contains(node.id.as_str()) {
            continue;
        }
        let mut unknown = BTreeSet::new();
        visit_task_templates(node, &mut |template| {
            for key in template.task_keys() {
                if !known.contains(key) && !key.starts_with("__conveyor_") {
                    unknown.insert(key.to_string());
                }
            }
        });
        for key in unknown {
            let hint = did_you_mean(&key, known.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            loader.report(
                Severity::Warning,
                Some(&node.id),
                None,
                format!("reads `{key}`, which no param declares and no node sets{hint}"),
            );
        }
    }
}

/// Every template of a node that renders against the task: its time limit's, and those
/// its kind names.
fn visit_task_templates<'a>(node: &'a Node, visit: &mut dyn FnMut(&'a Template)) {
    if let Some(TimeLimit {
        when: LimitAt::After(crate::DurationSpec::Template(t)) | LimitAt::Until(t),
        ..
    }) = &node.time_limit
    {
        visit(t);
    }
    node.kind.as_kind().visit_task_templates(visit);
}

/// The nodes a task can reach after a `call_process` has merged a reply into it.
fn reached_after_replies(process: &Process) -> HashSet<&str> {
    let mut reached = HashSet::new();
    let mut queue: Vec<&str> = process
        .nodes
        .values()
        .filter_map(|node| node.kind.as_kind().after_reply())
        .collect();
    while let Some(id) = queue.pop() {
        if !reached.insert(id) {
            continue;
        }
        if let Some(node) = process.nodes.get(id) {
            queue.extend(node.edges().iter().map(|e| e.target));
        }
    }
    reached
}
