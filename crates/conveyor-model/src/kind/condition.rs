//! `condition`: branches of checks over the task's data, and `else`.

use super::prelude::*;

/// Branches of checks over the task's data: the first branch whose checks all hold
/// sends the task on, else `otherwise`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub branches: Vec<Branch>,
    pub otherwise: String,
    pub on_error: Option<String>,
}

impl Kind for Condition {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        for (i, branch) in self.branches.iter().enumerate() {
            let label = branch
                .label
                .clone()
                .unwrap_or_else(|| format!("branch {}", i + 1));
            edges.push(Edge::new(
                label,
                format!("branches[{i}].next"),
                &branch.next,
            ));
        }
        edges.push(Edge::new("else", "else", &self.otherwise));
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        for check in self.branches.iter().flat_map(|b| &b.when) {
            visit(&check.value);
        }
    }

    fn look(&self) -> Look {
        Look::named(
            "condition",
            Shape::Hexagon,
            None,
            Palette::of("#e0e7ff", "#4f46e5", "#312e81"),
        )
    }
}

/// One branch of a condition: all checks must hold.
#[derive(Debug, Clone)]
pub struct Branch {
    pub label: Option<String>,
    pub when: Vec<Check>,
    pub next: String,
}

/// `param` `op` `value`, compared as `cast`.
#[derive(Debug, Clone)]
pub struct Check {
    /// The task key (a path) whose value is tested.
    pub param: Path,
    pub op: CompareOp,
    /// The value compared with (a template).
    pub value: Template,
    /// For `regexp` with a literal pattern: compiled once when the file is loaded.
    pub regex: Option<Regex>,
    pub cast: Cast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    More,
    Less,
    MoreOrEq,
    LessOrEq,
    Regexp,
}

impl CompareOp {
    pub const ALL: [(&'static str, CompareOp); 7] = [
        ("eq", CompareOp::Eq),
        ("not_eq", CompareOp::NotEq),
        ("more", CompareOp::More),
        ("less", CompareOp::Less),
        ("more_or_eq", CompareOp::MoreOrEq),
        ("less_or_eq", CompareOp::LessOrEq),
        ("regexp", CompareOp::Regexp),
    ];
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    branches: Vec<RawBranch>,
    #[serde(rename = "else")]
    otherwise: Option<String>,
    on_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    label: Option<String>,
    when: Vec<RawCheck>,
    next: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    param: String,
    #[serde(rename = "fn", alias = "fun")]
    op: String,
    #[serde(default)]
    value: Value,
    cast: Option<String>,
}

pub(super) fn load(
    loader: &mut Loader<'_>,
    id: &str,
    rest: serde_yaml::Value,
) -> Option<Condition> {
    let node = Some(id);
    let raw: RawCondition = loader.read(node, "", rest)?;
    let mut ok = true;
    if raw.branches.is_empty() {
        loader.error(
            node,
            Some("branches"),
            "a condition needs at least one branch".into(),
        );
        ok = false;
    }
    if raw.otherwise.is_none() {
        loader.error(
            node,
            None,
            "missing `else:`, the node a task goes to when no branch matches".into(),
        );
        ok = false;
    }
    let mut branches = Vec::new();
    for (b, branch) in raw.branches.into_iter().enumerate() {
        if branch.when.is_empty() {
            loader.error(
                node,
                Some(&format!("branches[{b}].when")),
                "a branch needs at least one check".into(),
            );
            ok = false;
        }
        let mut checks = Vec::new();
        for (c, check) in branch.when.into_iter().enumerate() {
            match load_check(loader, id, &format!("branches[{b}].when[{c}]"), check) {
                Some(check) => checks.push(check),
                None => ok = false,
            }
        }
        branches.push(Branch {
            label: branch.label,
            when: checks,
            next: branch.next,
        });
    }
    ok.then_some(Condition {
        branches,
        otherwise: raw.otherwise?,
        on_error: raw.on_error,
    })
}

fn load_check(loader: &mut Loader<'_>, id: &str, field: &str, raw: RawCheck) -> Option<Check> {
    let node = Some(id);
    let param = match Path::parse(&raw.param) {
        Ok(p) => Some(p),
        Err(e) => {
            loader.error(
                node,
                Some(&format!("{field}.param")),
                format!("bad param path `{}`: {}", raw.param, e.message),
            );
            None
        }
    };
    let op = CompareOp::ALL
        .iter()
        .find(|(n, _)| *n == raw.op)
        .map(|(_, o)| *o);
    if op.is_none() {
        let names = CompareOp::ALL.map(|(n, _)| n);
        let hint = did_you_mean(&raw.op, names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        loader.error(
            node,
            Some(&format!("{field}.fn")),
            format!(
                "unknown function `{}`{hint}; one of {}",
                raw.op,
                names.join(", ")
            ),
        );
    }
    let cast = match &raw.cast {
        None => Some(Cast::String),
        Some(name) => {
            let cast = cast_named(name);
            if cast.is_none() {
                loader.error(node, Some(&format!("{field}.cast")), unknown_cast(name));
            }
            cast
        }
    };
    let value_field = format!("{field}.value");
    let value = match scalar_text(&raw.value) {
        Some(text) => loader.template(node, &value_field, &text),
        None => match &raw.value {
            // An object or array to compare with, as JSON text.
            v @ (Value::Object(_) | Value::Array(_)) => Some(Template::literal(v.to_string())),
            _ => None,
        },
    };
    let (op, cast, value, param) = (op?, cast?, value?, param?);
    let mut regex = None;
    if op == CompareOp::Regexp
        && let Some(pattern) = value.as_literal()
    {
        regex = Some(loader.regex(node, &value_field, pattern)?);
    }
    if matches!(
        op,
        CompareOp::More | CompareOp::Less | CompareOp::MoreOrEq | CompareOp::LessOrEq
    ) && cast == Cast::Number
        && let Some(text) = value.as_literal()
        && text.trim().parse::<f64>().is_err()
    {
        loader.error(
            node,
            Some(&value_field),
            format!(
                "`{text}` is not a number, and `{}` compares numbers",
                raw.op
            ),
        );
        return None;
    }
    Some(Check {
        param,
        op,
        value,
        regex,
        cast,
    })
}
