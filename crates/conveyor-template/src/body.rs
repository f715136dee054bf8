//! Message bodies: [handlebars](https://handlebarsjs.com) templates, for the texts and
//! HTML emails a process sends (`set_param`'s `render`).
//!
//! Corezoid's language (the rest of this crate) stays the language of every other field;
//! handlebars is used where a message needs what Corezoid's lacks: conditionals
//! (`{{#if}}`), loops over a list (`{{#each}}`) and HTML escaping.
//!
//! A [`BodyTemplate`] is compiled once, when the process file is checked, and refused
//! there if it is bad, too long, nested too deep, or uses partials or decorators (the only
//! ways a handlebars template can recurse). It renders with the built-in helpers (`if`,
//! `unless`, `each`, `with`, `lookup`, `raw`, `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `and`,
//! `or`, `not`, `len`) and `json`, and without `log` (logs never carry task data); none
//! of them reads a file, the network or the clock. Its output is bounded
//! ([`MAX_OUTPUT`]). A missing value renders as nothing, as in Corezoid's templates.

use std::sync::Arc;

use handlebars::template::TemplateElement;
use handlebars::{Context, Handlebars, Template, handlebars_helper};
use serde_json::Value;

/// The longest template text accepted, in bytes.
pub const MAX_SOURCE: usize = 64 * 1024;
/// The deepest nesting of blocks (`{{#if}}`, `{{#each}}`, …) accepted.
pub const MAX_DEPTH: usize = 16;
/// The longest output a render may produce, in bytes.
pub const MAX_OUTPUT: usize = 1024 * 1024;

const NAME: &str = "body";

/// How the values a template writes are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// HTML: `&`, `<`, `>`, `"`, `'`, `` ` `` and `=` become entities (for HTML bodies).
    Html,
    /// Nothing is escaped (for SMS, Telegram and plain-text email).
    None,
}

impl Escape {
    pub const ALL: [(&'static str, Escape); 2] = [("html", Escape::Html), ("none", Escape::None)];

    /// `html` or `none`.
    pub fn named(name: &str) -> Option<Escape> {
        Escape::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("bad handlebars template: {message}{}", at(*line, *column))]
    Syntax {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("the handlebars template is {0} bytes long; at most {MAX_SOURCE} are allowed")]
    TooLong(usize),
    #[error("the handlebars template nests blocks more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error(
        "the handlebars template uses {0}, which Conveyor does not allow (no partials or decorators)"
    )]
    NotAllowed(&'static str),
}

/// Why a render failed (the node fails with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRenderError {
    #[error("handlebars: {message}{}", at(*line, *column))]
    Render {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("handlebars: the rendered text would be longer than {MAX_OUTPUT} bytes")]
    TooLong,
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (at line {l}, column {c} of the template)"),
        (Some(l), None) => format!(" (at line {l} of the template)"),
        _ => String::new(),
    }
}

handlebars_helper!(json_helper: |value: Json| serde_json::to_string(value).unwrap_or_default());

/// A compiled handlebars template and its escaping.
#[derive(Clone)]
pub struct BodyTemplate {
    registry: Arc<Handlebars<'static>>,
    escape: Escape,
}

impl std::fmt::Debug for BodyTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyTemplate")
            .field("escape", &self.escape)
            .finish_non_exhaustive()
    }
}

impl BodyTemplate {
    /// Compiles `source`.
    pub fn compile(source: &str, escape: Escape) -> Result<BodyTemplate, BodyError> {
        if source.len() > MAX_SOURCE {
            return Err(BodyError::TooLong(source.len()));
        }
        // Checked on the text, before the parser (which recurses) sees it.
        if block_depth(source) > MAX_DEPTH {
            return Err(BodyError::TooDeep);
        }
        let template = Template::compile(source).map_err(|e| {
            let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
            BodyError::Syntax {
                message: e.reason().to_string(),
                line,
                column,
            }
        })?;
        check_elements(&template)?;
        let mut registry = Handlebars::new();
        registry.unregister_helper("log");
        registry.register_helper("json", Box::new(json_helper));
        match escape {
            Escape::Html => registry.register_escape_fn(handlebars::html_escape),
            Escape::None => registry.register_escape_fn(handlebars::no_escape),
        }
        registry.register_template(NAME, template);
        Ok(BodyTemplate {
            registry: Arc::new(registry),
            escape,
        })
    }

    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// Renders the template over `data` (the task's data, with whatever else the caller
    /// put in).
    pub fn render(&self, data: Value) -> Result<String, BodyRenderError> {
        let context = Context::from(data);
        let mut out = Limited::default();
        match self
            .registry
            .render_with_context_to_write(NAME, &context, &mut out)
        {
            Ok(()) => String::from_utf8(out.bytes).map_err(|_| BodyRenderError::Render {
                message: "the output is not UTF-8".into(),
                line: None,
                column: None,
            }),
            Err(_) if out.overflow => Err(BodyRenderError::TooLong),
            Err(e) => Err(BodyRenderError::Render {
                message: e.reason().to_string(),
                line: e.line_no,
                column: e.column_no,
            }),
        }
    }
}

/// Output that refuses to grow past [`MAX_OUTPUT`].
#[derive(Default)]
struct Limited {
    bytes: Vec<u8>,
    overflow: bool,
}

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.overflow = true;
            return Err(std::io::Error::other("output too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The deepest nesting of blocks in `source`, counted on the text: `{{#` and `{{^` open
/// a block, `{{/` closes one (with or without `~`). Text in comments counts too, which
/// only makes the count larger.
fn block_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut rest = source;
    while let Some(i) = rest.find("{{") {
        rest = &rest[i + 2..];
        let tag = rest.trim_start_matches(['{', '~']).trim_start();
        match tag.chars().next() {
            Some('#') | Some('^') => {
                depth += 1;
                max = max.max(depth);
            }
            Some('/') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuses partials and decorators anywhere in the template.
fn check_elements(template: &Template) -> Result<(), BodyError> {
    for element in &template.elements {
        match element {
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err(BodyError::NotAllowed("a partial (`{{> …}}`)"));
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err(BodyError::NotAllowed("a decorator (`{{* …}}`)"));
            }
            TemplateElement::HelperBlock(block) => {
                for inner in [&block.template, &block.inverse].into_iter().flatten() {
                    check_elements(inner)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, escape: Escape, data: Value) -> String {
        BodyTemplate::compile(source, escape)
            .unwrap_or_else(|e| panic!("{e}"))
            .render(data)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn html_bodies_escape_a_hostile_script_and_text_bodies_do_not() {
        let data = json!({"portal": "<script>alert('x')</script>", "n": "a & b"});
        assert_eq!(
            render("<p>{{portal}} {{n}}</p>", Escape::Html, data.clone()),
            "<p>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; a &amp; b</p>"
        );
        assert_eq!(
            render("{{portal}} {{n}}", Escape::None, data),
            "<script>alert('x')</script> a & b"
        );
    }

    #[test]
    fn a_loop_over_a_list_with_conditionals() {
        let data = json!({
            "folded_count": 3,
            "folded": [
                {"portal": "a", "error": "invalid_grant", "time": "10:00"},
                {"portal": "b", "error": "", "text": "plain", "time": "10:01"},
                {"text": "no portal"}
            ]
        });
        let source = "{{folded_count}} more:{{#each folded}}\n• {{#if portal}}portal {{portal}}: {{/if}}{{#if error}}{{error}}{{else}}{{text}}{{/if}}{{#if time}} at {{time}}{{/if}}{{/each}}";
        assert_eq!(
            render(source, Escape::None, data),
            "3 more:\n• portal a: invalid_grant at 10:00\n• portal b: plain at 10:01\n• no portal"
        );
        assert_eq!(
            render(
                "{{#each xs}}[{{@index}}:{{this}}]{{/each}}",
                Escape::None,
                json!({"xs": [1, "two", null]})
            ),
            "[0:1][1:two][2:]"
        );
    }

    #[test]
    fn the_json_helper_writes_compact_json_escaped_in_html_only() {
        let data = json!({"o": {"k": "<v>", "n": [1, 2.5, null, true]}});
        assert_eq!(
            render("{{json o}}", Escape::None, data.clone()),
            r#"{"k":"<v>","n":[1,2.5,null,true]}"#
        );
        assert_eq!(
            render("{{json o}}", Escape::Html, data.clone()),
            "{&quot;k&quot;:&quot;&lt;v&gt;&quot;,&quot;n&quot;:[1,2.5,null,true]}"
        );
        assert_eq!(render("{{json missing}}", Escape::None, data), "null");
    }

    #[test]
    fn the_paths_blocks_and_helpers_the_docs_promise() {
        let data = json!({"xs": ["a", "<b>"], "o": {"k": 1, "l": "m"}, "n": 7});
        assert_eq!(
            render("{{xs.[1]}}|{{{xs.[1]}}}", Escape::Html, data.clone()),
            "&lt;b&gt;|<b>"
        );
        assert_eq!(
            render(
                "{{#each o}}{{@key}}={{this}};{{/each}}",
                Escape::None,
                data.clone()
            ),
            "k=1;l=m;"
        );
        assert_eq!(render("{{o}}", Escape::None, data.clone()), "[object]");
        assert_eq!(
            render(
                "{{#if (gt n 5)}}big{{/if}}{{#unless (eq n 7)}}x{{/unless}} {{len xs}} {{#with o}}{{l}}{{/with}}",
                Escape::None,
                data
            ),
            "big 2 m"
        );
    }

    #[test]
    fn missing_values_render_as_nothing() {
        assert_eq!(
            render("a{{nope}}b{{x.y.z}}c", Escape::Html, json!({})),
            "abc"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_where() {
        let e = BodyTemplate::compile("line one\n{{#each xs}}\n{{/if}}", Escape::None)
            .expect_err("mismatched block");
        let BodyError::Syntax { line, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(line.is_some(), "{e}");
        assert!(
            e.to_string().starts_with("bad handlebars template: "),
            "{e}"
        );
        assert!(BodyTemplate::compile("{{#if x}}", Escape::None).is_err());
        assert!(BodyTemplate::compile("{{", Escape::None).is_err());
        assert_eq!(
            BodyTemplate::compile("{{> other}}", Escape::None).expect_err("partial"),
            BodyError::NotAllowed("a partial (`{{> …}}`)")
        );
        assert!(matches!(
            BodyTemplate::compile(
                "{{#if a}}{{#*inline \"p\"}}x{{/inline}}{{/if}}",
                Escape::None
            ),
            Err(BodyError::NotAllowed(_))
        ));
        let deep = "{{#if a}}".repeat(MAX_DEPTH + 1) + &"{{/if}}".repeat(MAX_DEPTH + 1);
        assert_eq!(
            BodyTemplate::compile(&deep, Escape::None).expect_err("deep"),
            BodyError::TooDeep
        );
        let ok = "{{#if a}}".repeat(MAX_DEPTH) + "x" + &"{{/if}}".repeat(MAX_DEPTH);
        assert!(BodyTemplate::compile(&ok, Escape::None).is_ok());
        let long = "x".repeat(MAX_SOURCE + 1);
        assert!(matches!(
            BodyTemplate::compile(&long, Escape::None),
            Err(BodyError::TooLong(_))
        ));
    }

    #[test]
    fn output_is_bounded_and_log_is_not_a_helper() {
        let xs: Vec<u32> = (0..1000).collect();
        let source = "{{#each xs}}{{#each ../xs}}{{#each ../../xs}}x{{/each}}{{/each}}{{/each}}";
        let template = BodyTemplate::compile(source, Escape::None).expect("compiles");
        assert_eq!(
            template.render(json!({"xs": xs})),
            Err(BodyRenderError::TooLong)
        );
        let template = BodyTemplate::compile("{{log secret}}", Escape::None).expect("compiles");
        assert!(template.render(json!({"secret": "s"})).is_err());
    }
}
