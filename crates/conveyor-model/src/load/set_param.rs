//! `set_param`: keys set from templates (`set`) or handlebars bodies (`render`), with casts.

use super::*;

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

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
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
    ok.then_some(NodeKind::SetParam {
        set,
        render,
        next: raw.next,
        on_error: raw.on_error,
    })
}
