//! `set_param`: keys set from templates (`set`) or handlebars bodies (`render`), with casts.

use super::prelude::*;

/// A `set_param` value and the type it is stored as (`None`: as rendered).
#[derive(Debug, Clone)]
pub struct SetValue {
    pub value: ValueTemplate,
    pub cast: Option<Cast>,
}

/// A `set_param` `render` value: a handlebars template (a message body) rendered over
/// the task's data, with `with`'s values (Corezoid templates, rendered first) added.
#[derive(Debug, Clone)]
pub struct RenderValue {
    pub template: conveyor_template::body::BodyTemplate,
    pub with: IndexMap<String, ValueTemplate>,
    pub cast: Option<Cast>,
}

/// Keys set from templates (`set`) and handlebars bodies (`render`, after `set`'s).
#[derive(Debug, Clone)]
pub struct SetParam {
    pub set: IndexMap<String, SetValue>,
    /// Keys set from handlebars templates (`render`), after `set`'s.
    pub render: IndexMap<String, RenderValue>,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for SetParam {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        self.set
            .values()
            .for_each(|v| v.value.visit_templates(visit));
        self.render
            .values()
            .flat_map(|r| r.with.values())
            .for_each(|t| t.visit_templates(visit));
    }

    fn visit_written_keys<'a>(&'a self, visit: &mut dyn FnMut(&'a str)) {
        self.set.keys().for_each(|k| visit(k));
        self.render.keys().for_each(|k| visit(k));
    }

    fn look(&self) -> Look {
        Look::named(
            "set_param",
            Shape::Box,
            None,
            Palette::of("#f1f5f9", "#475569", "#1e293b"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRender {
    handlebars: String,
    escape: Option<String>,
    #[serde(default)]
    with: IndexMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetParam {
    #[serde(default)]
    set: IndexMap<String, Value>,
    #[serde(default)]
    render: IndexMap<String, RawRender>,
    #[serde(default)]
    cast: IndexMap<String, String>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<SetParam> {
    let node = Some(id);
    let raw: RawSetParam = loader.read(node, "", rest)?;
    let mut ok = true;
    let mut set = IndexMap::new();
    for (key, value) in &raw.set {
        let field = format!("set.{key}");
        let cast = match raw.cast.get(key) {
            None => None,
            Some(name) => match cast_named(name) {
                Some(c) => Some(c),
                None => {
                    loader.error(node, Some(&format!("cast.{key}")), unknown_cast(name));
                    ok = false;
                    None
                }
            },
        };
        match loader.value_template(node, &field, value) {
            Some(value) => {
                set.insert(key.clone(), SetValue { value, cast });
            }
            None => ok = false,
        }
    }
    let mut render = IndexMap::new();
    for (key, raw_render) in &raw.render {
        let field = format!("render.{key}");
        if raw.set.contains_key(key) {
            loader.error(
                node,
                Some(&field),
                format!("`{key}` is set by both `set` and `render`"),
            );
            ok = false;
            continue;
        }
        let escape = match raw_render.escape.as_deref() {
            None => Some(Escape::Html),
            Some(name) => Escape::named(name).or_else(|| {
                loader.error(
                    node,
                    Some(&format!("{field}.escape")),
                    format!("unknown escape `{name}` (one of html, none)"),
                );
                None
            }),
        };
        let template = escape.and_then(|escape| {
            BodyTemplate::compile(&raw_render.handlebars, escape)
                .map_err(|e| {
                    loader.error(node, Some(&format!("{field}.handlebars")), e.to_string())
                })
                .ok()
        });
        let mut with = IndexMap::new();
        for (name, value) in &raw_render.with {
            match loader.value_template(node, &format!("{field}.with.{name}"), value) {
                Some(t) => {
                    with.insert(name.clone(), t);
                }
                None => ok = false,
            }
        }
        let cast = match raw.cast.get(key) {
            None => None,
            Some(name) => match cast_named(name) {
                Some(c) => Some(c),
                None => {
                    loader.error(node, Some(&format!("cast.{key}")), unknown_cast(name));
                    ok = false;
                    None
                }
            },
        };
        match template {
            Some(template) => {
                render.insert(
                    key.clone(),
                    RenderValue {
                        template,
                        with,
                        cast,
                    },
                );
            }
            None => ok = false,
        }
    }
    if raw.set.is_empty() && raw.render.is_empty() {
        loader.error(
            node,
            Some("set"),
            "a set_param sets nothing: give `set` or `render`".into(),
        );
        ok = false;
    }
    for key in raw.cast.keys() {
        if !raw.set.contains_key(key) && !raw.render.contains_key(key) {
            loader.error(
                node,
                Some(&format!("cast.{key}")),
                format!("`{key}` is not set by this node"),
            );
            ok = false;
        }
    }
    ok.then_some(SetParam {
        set,
        render,
        next: raw.next,
        on_error: raw.on_error,
    })
}
