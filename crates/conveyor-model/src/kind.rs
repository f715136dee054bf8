//! Node kinds: what each kind says about itself ([`Kind`]), and the one list of kinds
//! ([`node_kinds!`]) that [`NodeKind`], the loader's table of `type:` names and the
//! dispatch to each kind are made from.
//!
//! Each kind is one module of `kind/`: its struct (what a checked node of that kind
//! holds), how its fields are read from YAML (`load`), and its [`Kind`] impl (its edges,
//! the templates it renders, the keys it writes, how it is drawn). Validation, the
//! diagrams and the runtime ask the kind through [`NodeKind::as_kind`] instead of
//! matching over kinds themselves.

use conveyor_template::Template;

use crate::load::Loader;
use crate::model::Edge;

mod api_call;
mod call_process;
mod code;
mod condition;
mod copy_task;
mod delay;
mod escalation;
mod final_node;
mod get_task;
mod modify_task;
mod queue;
mod reply;
mod set_param;
mod start;
mod sum;
mod wait_callback;

pub use api_call::{BodyFormat, HttpMethod, Retry, SendSys};
pub use condition::{Branch, Check, CompareOp};
pub use delay::Wait;
pub use final_node::FinalStatus;
pub use set_param::{RenderValue, SetValue};

/// What the kind modules read their fields with.
mod prelude {
    pub(super) use std::time::Duration;

    pub(super) use conveyor_template::{Path, Template, ValueTemplate};
    pub(super) use indexmap::IndexMap;
    pub(super) use serde::Deserialize;
    pub(super) use serde_json::Value;

    pub(super) use conveyor_template::body::{BodyTemplate, Escape};
    pub(super) use regex::Regex;

    pub(super) use super::{Icon, Kind, Look, Palette, Shape, next_edge};
    pub(super) use crate::diagnostic::did_you_mean;
    pub(super) use crate::duration::DurationSpec;
    pub(super) use crate::load::*;
    pub(super) use crate::model::*;
}

/// What a node kind tells validation, the diagrams and the runtime about itself.
///
/// # Contract
///
/// - `edges` lists every node the kind itself can send a task to (`next`, a condition's
///   branches and `else`), in the order they are written, each with the field it is
///   written in; `on_error` is the error route, or `None`. The time limit and the alert
///   are every node's and are not the kind's to list.
/// - `visit_task_templates` visits every template the node renders against the task's
///   data (so that reading an undeclared key is warned about), and no other: an API
///   call's reply mapping reads the reply, not the task.
/// - `visit_written_keys` visits the task keys the file makes the node write;
///   `fixed_keys` are keys the kind writes whatever the file says. Both are known to the
///   undeclared-key warning; only the first keep a modify from outside from changing a
///   key (`Process::writes`).
/// - `waits` is true when a task stays in the node until time passes or something from
///   outside moves it (the cycle check relies on it: a cycle needs a waiting node).
/// - `look` depends only on the kind and what its fields say (a final's status): the
///   diagrams draw it as it is, and a class name is one look's only.
pub trait Kind {
    /// Whether a task stays in a node of this kind until time passes or something
    /// outside moves it.
    fn waits(&self) -> bool {
        false
    }

    /// Where a failure in the node sends the task, if it says.
    fn on_error(&self) -> Option<&str>;

    /// The kind's own edges out, in the order they are written.
    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>);

    /// Every template the node renders against the task's data.
    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template));

    /// The task keys the file makes the node write.
    fn visit_written_keys<'a>(&'a self, _visit: &mut dyn FnMut(&'a str)) {}

    /// Task keys the kind writes whatever the file says.
    fn fixed_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Where a task goes once a reply from another process has been merged into its
    /// data (a `call_process`'s `next`): from there on its keys cannot be known here.
    fn after_reply(&self) -> Option<&str> {
        None
    }

    /// How a node of this kind is drawn.
    fn look(&self) -> Look;
}

/// How a node is drawn in the diagrams (`conveyor-graph` draws it; the kind only says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// The name in SVG `class` attributes, DOT and Mermaid (`final_success`).
    pub class: &'static str,
    /// The kind as shown on the node (`final · success`).
    pub label: &'static str,
    pub shape: Shape,
    /// A sign before the kind's name.
    pub icon: Option<Icon>,
    pub palette: Palette,
}

impl Look {
    /// A look whose class and label are the kind's `type:` name.
    pub const fn named(
        name: &'static str,
        shape: Shape,
        icon: Option<Icon>,
        palette: Palette,
    ) -> Look {
        Look {
            class: name,
            label: name,
            shape,
            icon,
            palette,
        }
    }
}

/// The outline of a node. Kinds that mean much the same share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Round at both ends: where tasks come in (`start`).
    Pill,
    /// A double border: the end of the line (`final`).
    Framed,
    /// A diamond stretched to hold its text, pointed left and right (`condition`).
    Hexagon,
    /// The flowchart "delay": flat left, round right (kinds where a task waits).
    Wait,
    /// A heavy border: a person is needed (`escalation`).
    Alarm,
    /// Two sheets: a copy goes out (`copy_task`).
    Stack,
    /// The flowchart "predefined process": bars inside both sides (`call_process`).
    Subprocess,
    /// Square corners: a change to another task (`modify_task`, `sum`, `get_task`).
    Square,
    /// Well rounded corners (`reply`).
    Rounded,
    /// A plain box: work done in place (`api_call`, `set_param`, `code`).
    Box,
}

/// A sign drawn before the kind's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icon {
    /// A clock: the task waits for time or a callback.
    Clock,
    /// A warning triangle: a person is needed.
    Warning,
}

/// Fill, border and text colour of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    pub fill: &'static str,
    pub stroke: &'static str,
    /// Text colour for the kind line.
    pub ink: &'static str,
}

impl Palette {
    /// Kinds where a task waits.
    pub const WAITING: Palette = Palette::of("#f3e8ff", "#7e22ce", "#581c87");
    /// Kinds that change another task.
    pub const OTHER_TASK: Palette = Palette::of("#cffafe", "#0e7490", "#164e63");

    pub const fn of(fill: &'static str, stroke: &'static str, ink: &'static str) -> Palette {
        Palette { fill, stroke, ink }
    }
}

/// Makes, from one list of `"type name" => Variant(module::Struct)` (`, boxed` for a
/// large struct), the [`NodeKind`] enum, its `name` and `as_kind`, and the loader's
/// `NODE_KINDS` and `load_kind`. Each `module` has `load(loader, id, fields) ->
/// Option<Struct>` and `impl Kind for Struct`.
macro_rules! node_kinds {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($module:ident::$ty:ident $(, $boxed:ident)?), )*) => {
        $( pub use $module::$ty; )*

        /// What a node does: one variant per kind, holding that kind's struct.
        #[derive(Debug, Clone)]
        pub enum NodeKind {
            $( $(#[$doc])* $variant(node_kinds!(@payload $ty $(, $boxed)?)), )*
        }

        impl NodeKind {
            /// The Corezoid-style name of the kind, as written in `type:`.
            pub fn name(&self) -> &'static str {
                match self {
                    $( NodeKind::$variant(_) => $name, )*
                }
            }

            /// The kind's own description of itself.
            pub fn as_kind(&self) -> &dyn Kind {
                match self {
                    $( NodeKind::$variant(kind) => {
                        let kind: &$ty = kind;
                        kind
                    } )*
                }
            }
        }

        /// Every kind's `type:` name, in the order the docs list them.
        pub const NODE_KINDS: &[&str] = &[$( $name ),*];

        /// Reads the fields of a node of kind `name`; `None` (with the problems
        /// reported) when they are wrong, or when no kind has that name.
        pub(crate) fn load_kind(
            loader: &mut Loader<'_>,
            id: &str,
            name: &str,
            fields: serde_yaml::Value,
        ) -> Option<NodeKind> {
            match name {
                $( $name => $module::load(loader, id, fields).map(|k| NodeKind::$variant(k.into())), )*
                _ => None,
            }
        }
    };
    (@payload $ty:ident) => { $ty };
    (@payload $ty:ident, boxed) => { Box<$ty> };
}

node_kinds! {
    "start" => Start(start::Start),
    "final" => Final(final_node::Final),
    "condition" => Condition(condition::Condition),
    "set_param" => SetParam(set_param::SetParam),
    "delay" => Delay(delay::Delay),
    "api_call" => ApiCall(api_call::ApiCall, boxed),
    "escalation" => Escalation(escalation::Escalation),
    "copy_task" => CopyTask(copy_task::CopyTask),
    "modify_task" => ModifyTask(modify_task::ModifyTask),
    "sum" => Sum(sum::Sum),
    "call_process" => CallProcess(call_process::CallProcess),
    "reply" => Reply(reply::Reply),
    "wait_callback" => WaitCallback(wait_callback::WaitCallback),
    "code" => Code(code::Code, boxed),
    "queue" => Queue(queue::Queue),
    "get_task" => GetTask(get_task::GetTask),
}

impl NodeKind {
    /// Whether a task stays in this node until time passes or something outside moves it.
    pub fn waits(&self) -> bool {
        self.as_kind().waits()
    }

    pub fn on_error(&self) -> Option<&str> {
        self.as_kind().on_error()
    }
}

/// `next` and nothing else: the edges of most kinds.
pub(crate) fn next_edge<'a>(next: &'a str, edges: &mut Vec<Edge<'a>>) {
    edges.push(Edge::new("next", "next", next));
}
