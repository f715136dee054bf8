//! JSON into an XML request body (`api_call` with `format: xml`, Corezoid's API call
//! with an XML content type), and an XML reply back into JSON (Corezoid converts XML
//! replies and merges them like JSON ones).
//!
//! The body is a mapping. Each key is an element; a key starting with `@` is an
//! attribute of its parent, and `#value` its text; a list repeats its element. A body
//! with one element is that element; a body with several is wrapped in `<root>`.
//! The data comes from tasks, so nothing is trusted: a key that is not an XML name is
//! refused (naming it), text and attribute values are escaped, characters XML 1.0
//! cannot carry are refused, and nesting is bounded.
//!
//! A reply is read by the same convention backwards ([`from_xml`]). It comes from
//! outside, so it is bounded too: its size (the node's `max_response_bytes`, before it
//! is read), its nesting, and its entities (only XML's own and character references;
//! a DTD's entities are never expanded, so a "billion laughs" reply is an error).

use serde_json::{Map, Value};

/// Deeper bodies are refused (a hostile task cannot make the writer recurse for ever).
const MAX_DEPTH: usize = 64;
/// Most attributes of one element of a reply.
const MAX_ATTRIBUTES: usize = 256;

/// Why a body cannot be written as XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum XmlError {
    #[error("the body is not a mapping of elements")]
    NotAMapping,
    #[error(
        "`{0}` is not an XML name (a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`)"
    )]
    BadName(String),
    #[error("`{0}` holds a character XML 1.0 cannot carry (U+{1:04X})")]
    BadChar(String, u32),
    #[error("`{0}`: an attribute or `#value` holds a mapping or a list, not text")]
    NotText(String),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The XML document of `body`.
pub(crate) fn to_xml(body: &Value) -> Result<String, XmlError> {
    let Value::Object(map) = body else {
        return Err(XmlError::NotAMapping);
    };
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let elements: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !k.starts_with('@') && k.as_str() != "#value")
        .collect();
    match elements.as_slice() {
        [(name, value)] if elements.len() == map.len() && !value.is_array() => {
            element(&mut out, name, value, 0)?;
        }
        _ => element(&mut out, "root", body, 0)?,
    }
    Ok(out)
}

fn element(out: &mut String, name: &str, value: &Value, depth: usize) -> Result<(), XmlError> {
    if depth > MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    check_name(name)?;
    match value {
        Value::Array(items) => {
            for item in items {
                // A list inside a list has no name of its own: it repeats this one.
                element(out, name, item, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            out.push('<');
            out.push_str(name);
            attributes(out, map)?;
            let text = map.get("#value");
            let children: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| !k.starts_with('@') && k.as_str() != "#value")
                .collect();
            if text.is_none() && children.is_empty() {
                out.push_str("/>");
                return Ok(());
            }
            out.push('>');
            if let Some(text) = text {
                escaped(out, "#value", &scalar(name, text)?, false)?;
            }
            for (child, value) in children {
                element(out, child, value, depth + 1)?;
            }
            close(out, name);
            Ok(())
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
            Ok(())
        }
        scalar_value => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            escaped(out, name, &scalar(name, scalar_value)?, false)?;
            close(out, name);
            Ok(())
        }
    }
}

fn attributes(out: &mut String, map: &Map<String, Value>) -> Result<(), XmlError> {
    for (key, value) in map {
        let Some(name) = key.strip_prefix('@') else {
            continue;
        };
        check_name(name)?;
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escaped(out, key, &scalar(key, value)?, true)?;
        out.push('"');
    }
    Ok(())
}

fn close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The text of a scalar (strings as they are, numbers and booleans as JSON writes them).
fn scalar(name: &str, value: &Value) -> Result<String, XmlError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Bool(_) | Value::Number(_) => Ok(value.to_string()),
        Value::Array(_) | Value::Object(_) => Err(XmlError::NotText(name.to_string())),
    }
}

fn escaped(out: &mut String, name: &str, text: &str, attribute: bool) -> Result<(), XmlError> {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            // Kept in attributes as they are written, not folded into spaces.
            '\t' | '\n' | '\r' if attribute => out.push_str(&format!("&#{};", c as u32)),
            '\t' | '\n' | '\r' => out.push(c),
            c if allowed(c) => out.push(c),
            c => return Err(XmlError::BadChar(name.to_string(), c as u32)),
        }
    }
    Ok(())
}

/// XML 1.0's `Char` (tab, newline and return are handled by the caller).
fn allowed(c: char) -> bool {
    matches!(c as u32, 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// XML's `Name`, restricted to what needs no escaping: a letter or `_` first, then
/// letters, digits, `-`, `.`, `_` or `:` (a namespace prefix, `soap:Envelope`).
fn check_name(name: &str) -> Result<(), XmlError> {
    let mut chars = name.chars();
    let good_first = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let good_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if good_first && good_rest && !name.ends_with(':') {
        Ok(())
    } else {
        Err(XmlError::BadName(name.to_string()))
    }
}

/// Why an XML reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum XmlReadError {
    #[error("it is not well-formed XML: {0}")]
    Malformed(String),
    #[error("it has no root element")]
    NoRoot,
    #[error("it has a second root element `{0}`")]
    SecondRoot(String),
    #[error("it is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("`{0}` has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes(String),
}

/// An element being read: its name, its attributes and children so far, its text.
struct Open {
    name: String,
    map: Map<String, Value>,
    text: String,
}

/// The JSON of an XML reply: `{root_name: …}`, or the children of a `<root>` element
/// (what [`to_xml`] wraps). An element with neither attributes nor children is its
/// text, exactly; otherwise a mapping, with `@name` for each attribute, its children by
/// name (repeated ones as a list) and its text, trimmed (what lies between children is
/// mostly indentation), if any is left, as `#value`. Every value is a string, as XML
/// has no other. The reply must be UTF-8 (or ASCII): no other encoding is decoded.
pub(crate) fn from_xml(bytes: &[u8]) -> Result<Value, XmlReadError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlReadError::Malformed(e.to_string()))?;
        match event {
            Event::Start(start) => {
                let open = opened(&start, &stack, &root)?;
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = opened(&start, &stack, &root)?;
                closed(open, &mut stack, &mut root);
            }
            Event::End(_) => {
                // The parser has checked that the end tag names the open element.
                let open = stack.pop().ok_or_else(|| {
                    XmlReadError::Malformed("an end tag with no element open".into())
                })?;
                closed(open, &mut stack, &mut root);
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| XmlReadError::Malformed(e.to_string()))?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => {
                        return Err(XmlReadError::Malformed(
                            "text outside the root element".into(),
                        ));
                    }
                }
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data)
                    .map_err(|e| XmlReadError::Malformed(e.to_string()))?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(text),
                    None => {
                        return Err(XmlReadError::Malformed(
                            "CDATA outside the root element".into(),
                        ));
                    }
                }
            }
            Event::Eof => break,
            // The declaration, comments, processing instructions and a DOCTYPE (whose
            // entities are never expanded: a reference to one is an error above).
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlReadError::Malformed(format!(
            "`{}` is not closed",
            open.name
        )));
    }
    match root {
        None => Err(XmlReadError::NoRoot),
        // What the writer wraps: `<root>` stands for the mapping itself.
        Some((name, Value::Object(map))) if name == "root" => Ok(Value::Object(map)),
        Some((name, Value::String(text))) if name == "root" => {
            let mut map = Map::new();
            if !text.trim().is_empty() {
                map.insert("#value".into(), Value::String(text));
            }
            Ok(Value::Object(map))
        }
        Some((name, value)) => {
            let mut map = Map::new();
            map.insert(name, value);
            Ok(Value::Object(map))
        }
    }
}

/// An element just opened: its name and attributes, once its place is checked.
fn opened(
    start: &quick_xml::events::BytesStart<'_>,
    stack: &[Open],
    root: &Option<(String, Value)>,
) -> Result<Open, XmlReadError> {
    let utf8 = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| XmlReadError::Malformed(e.to_string()))
    };
    let name = utf8(start.name().as_ref())?;
    if stack.is_empty() && root.is_some() {
        return Err(XmlReadError::SecondRoot(name));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(XmlReadError::TooDeep);
    }
    let mut map = Map::new();
    // The parser's own duplicate check compares each attribute with every earlier one
    // (quadratic in a hostile reply's thousands of attributes): the map finds them.
    for attribute in start.attributes().with_checks(false) {
        let attribute = attribute.map_err(|e| XmlReadError::Malformed(e.to_string()))?;
        if map.len() >= MAX_ATTRIBUTES {
            return Err(XmlReadError::TooManyAttributes(name));
        }
        let value = attribute
            .unescape_value()
            .map_err(|e| XmlReadError::Malformed(e.to_string()))?;
        let key = format!("@{}", utf8(attribute.key.as_ref())?);
        if map.contains_key(&key) {
            return Err(XmlReadError::Malformed(format!(
                "`{name}` has the attribute `{}` twice",
                &key[1..]
            )));
        }
        map.insert(key, Value::String(value.into_owned()));
    }
    Ok(Open {
        name,
        map,
        text: String::new(),
    })
}

/// An element just closed: its value goes into its parent (or is the root).
fn closed(open: Open, stack: &mut [Open], root: &mut Option<(String, Value)>) {
    let Open {
        name,
        mut map,
        text,
    } = open;
    let value = if map.is_empty() {
        Value::String(text)
    } else {
        let text = text.trim();
        if !text.is_empty() {
            map.insert("#value".into(), Value::String(text.to_string()));
        }
        Value::Object(map)
    };
    match stack.last_mut() {
        Some(parent) => match parent.map.get_mut(&name) {
            // Elements are strings or mappings: a list is only ever a repeated element.
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = std::mem::take(first);
                parent.map.insert(name, Value::Array(vec![first, value]));
            }
            None => {
                parent.map.insert(name, value);
            }
        },
        None => *root = Some((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_is_read_by_the_convention_the_body_is_written_with() {
        let reply = br#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">
  <soap:Body>
    <order id="7" note="a &quot;quoted&quot; &lt;tag&gt;">
      <item sku="x1">Tea &amp; cake</item>
      <item sku="x2">2</item>
      <paid>true</paid>
      <comment/>
      <total>10.5</total>
      <raw><![CDATA[<not> & parsed]]></raw>
      <mixed kind="m">  text &#233;t&#xE9;  </mixed>
    </order>
  </soap:Body>
</soap:Envelope>"#;
        assert_eq!(
            from_xml(reply).unwrap(),
            json!({"soap:Envelope": {
                "@xmlns:soap": "http://www.w3.org/2003/05/soap-envelope",
                "soap:Body": {"order": {
                    "@id": "7", "@note": "a \"quoted\" <tag>",
                    "item": [{"@sku": "x1", "#value": "Tea & cake"}, {"@sku": "x2", "#value": "2"}],
                    "paid": "true", "comment": "", "total": "10.5",
                    "raw": "<not> & parsed",
                    "mixed": {"@kind": "m", "#value": "text été"}
                }}
            }})
        );
        // What the writer wraps in <root> comes back as its keys.
        let written = to_xml(&json!({"a": "1", "b": "<x>"})).unwrap();
        assert_eq!(
            from_xml(written.as_bytes()).unwrap(),
            json!({"a": "1", "b": "<x>"})
        );
    }

    #[test]
    fn hostile_or_broken_replies_are_refused_with_a_reason() {
        // A DTD's entities are never expanded: the "billion laughs" is an error.
        let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
        assert!(
            matches!(from_xml(laughs), Err(XmlReadError::Malformed(_))),
            "{:?}",
            from_xml(laughs)
        );
        let external = br#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>"#;
        assert!(matches!(
            from_xml(external),
            Err(XmlReadError::Malformed(_))
        ));
        let deep = "<d>".repeat(100) + &"</d>".repeat(100);
        assert_eq!(from_xml(deep.as_bytes()), Err(XmlReadError::TooDeep));
        assert_eq!(
            from_xml(b"<a>1</a><b>2</b>"),
            Err(XmlReadError::SecondRoot("b".into()))
        );
        assert_eq!(from_xml(b"  <!-- nothing -->  "), Err(XmlReadError::NoRoot));
        // Thousands of attributes are refused once past the limit, never compared
        // pairwise (the parser's own duplicate check is off; the map finds duplicates).
        let many: String = (0..5000).map(|i| format!(" a{i}=\"\"")).collect();
        assert_eq!(
            from_xml(format!("<x{many}/>").as_bytes()),
            Err(XmlReadError::TooManyAttributes("x".into()))
        );
        assert!(matches!(
            from_xml(br#"<x a="1" a="2"/>"#),
            Err(XmlReadError::Malformed(m)) if m.contains("`x` has the attribute `a` twice")
        ));
        // An empty <root> is the empty mapping, as the writer writes `{}`.
        assert_eq!(
            from_xml(to_xml(&json!({})).unwrap().as_bytes()).unwrap(),
            json!({})
        );
        for broken in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"<a x=1/>",
            b"hello",
            b"<a>\xff</a>",
        ] {
            assert!(
                matches!(from_xml(broken), Err(XmlReadError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(broken),
                from_xml(broken)
            );
        }
    }

    #[test]
    fn elements_attributes_text_and_lists() {
        let body = json!({"order": {
            "@id": "7", "@note": "a \"quoted\" <tag> & 'more'",
            "item": [{"@sku": "x1", "#value": "Tea & cake"}, {"@sku": "x2", "#value": 2}],
            "paid": true, "comment": null, "total": 10.5
        }});
        assert_eq!(
            to_xml(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"7\" note=\"a &quot;quoted&quot; &lt;tag&gt; &amp; &apos;more&apos;\"><item sku=\"x1\">Tea &amp; cake</item><item sku=\"x2\">2</item><paid>true</paid><comment/><total>10.5</total></order>"
        );
        // Several elements at the top: wrapped in <root>.
        assert_eq!(
            to_xml(&json!({"a": 1, "b": "<x>"})).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><root><a>1</a><b>&lt;x&gt;</b></root>"
        );
        assert_eq!(
            to_xml(&json!({"soap:Envelope": {"@xmlns:soap": "http://www.w3.org/2003/05/soap-envelope"}})).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"/>"
        );
    }

    #[test]
    fn hostile_names_and_characters_are_refused_by_name() {
        for bad in ["1abc", "a b", "x><script", "", "-a", "a/", "p:"] {
            assert_eq!(
                to_xml(&json!({ bad: 1 })),
                Err(XmlError::BadName(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            to_xml(&json!({"a": {"@on load": "x"}})),
            Err(XmlError::BadName("on load".into()))
        );
        assert_eq!(
            to_xml(&json!({"a": "bell\u{7}"})),
            Err(XmlError::BadChar("a".into(), 7))
        );
        assert_eq!(
            to_xml(&json!({"a": {"@b": [1]}})),
            Err(XmlError::NotText("@b".into()))
        );
        assert_eq!(to_xml(&json!("text")), Err(XmlError::NotAMapping));
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "d": deep });
        }
        assert_eq!(to_xml(&deep), Err(XmlError::TooDeep));
    }
}
