//! Where each key of a YAML document is, so that problems found after parsing can name a
//! line and column. serde_yaml gives positions only for syntax errors; this walks the
//! document once more with yaml-rust2's event parser and records every key's position.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions of keys, by path (`["nodes", "get_token", "next"]`; sequence items by index).
#[derive(Debug, Default)]
pub struct Positions {
    keys: HashMap<Vec<String>, (usize, usize)>,
    /// Where the document first nests past `MAX_NESTING` levels, if it does.
    pub too_deep: Option<(usize, usize)>,
}

/// Deepest nesting of maps and lists a file may have (serde_yaml's own limit). Checked
/// here, before serde_yaml reads the text: libyaml's scanner takes time quadratic in the
/// depth of flow mappings, so a hostile `{k: {k: …` took minutes before it got refused.
pub const MAX_NESTING: usize = 128;

impl Positions {
    pub fn of(source: &str) -> Positions {
        let mut recorder = Recorder::default();
        // A document serde_yaml accepted parses here too; if not, we just know less.
        // Events are pulled one by one: the parser's own `load` recurses once per level
        // of nesting, and a hostile file nested a few thousand deep overflowed the stack.
        let mut parser = Parser::new_from_str(source);
        let mut too_deep = None;
        loop {
            match parser.next_token() {
                Ok((Event::DocumentEnd | Event::StreamEnd, _)) => break,
                Ok((event, mark)) => {
                    recorder.on_event(event, mark);
                    if recorder.stack.len() > MAX_NESTING {
                        too_deep = Some((mark.line(), mark.col() + 1));
                        break;
                    }
                }
                // yaml-rust2 stops at 255 levels of flow nesting with this error.
                Err(e) if e.info() == "recursion limit exceeded" => {
                    too_deep = Some((e.marker().line(), e.marker().col() + 1));
                    break;
                }
                Err(_) => break,
            }
        }
        Positions {
            keys: recorder.keys,
            too_deep,
        }
    }

    /// The position of the key at `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &[&str]) -> Option<(usize, usize)> {
        let mut path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        while !path.is_empty() {
            if let Some(position) = self.keys.get(&path) {
                return Some(*position);
            }
            path.pop();
        }
        None
    }
}

/// Keys nested deeper than this get no position (serde_yaml refuses a document nested
/// past 128 anyway); it keeps the paths short, so a deep file costs linear time.
const MAX_DEPTH: usize = 64;

enum Frame {
    /// Past `MAX_DEPTH`: nothing inside is recorded.
    Deep,
    Map {
        path: Vec<String>,
        key: Option<String>,
    },
    Seq {
        path: Vec<String>,
        index: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    keys: HashMap<Vec<String>, (usize, usize)>,
}

impl Recorder {
    /// The path a new value at the current place gets, and advances the parent.
    fn child_path(&mut self, mark: Marker) -> Option<Vec<String>> {
        match self.stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Deep) => None,
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(p)
                }
                // A mapping used as a key: not something process files contain.
                None => None,
            },
            Some(Frame::Seq { path, index }) => {
                let mut p = path.clone();
                p.push(index.to_string());
                self.keys
                    .entry(p.clone())
                    .or_insert((mark.line(), mark.col() + 1));
                *index += 1;
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map { path, key }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let mut p = path.clone();
                    p.push(text.clone());
                    self.keys.entry(p).or_insert((mark.line(), mark.col() + 1));
                    *key = Some(text);
                    return;
                }
                self.child_path(mark);
            }
            Event::Alias(_) => {
                self.child_path(mark);
            }
            Event::MappingStart(..) | Event::SequenceStart(..)
                if self.stack.len() >= MAX_DEPTH
                    || matches!(self.stack.last(), Some(Frame::Deep)) =>
            {
                self.child_path(mark);
                self.stack.push(Frame::Deep);
            }
            Event::MappingStart(..) => {
                let path = self.child_path(mark).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.child_path(mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_block_and_flow_style() {
        let source = "process: p\nnodes:\n  start: { type: start, next: end }\n  end:\n    type: final\n    list:\n      - a\n      - { b: 1 }\n";
        let p = Positions::of(source);
        assert_eq!(p.find(&["process"]), Some((1, 1)));
        assert_eq!(p.find(&["nodes", "start"]), Some((3, 3)));
        assert_eq!(p.find(&["nodes", "start", "next"]), Some((3, 25)));
        assert_eq!(p.find(&["nodes", "end", "type"]), Some((5, 5)));
        assert_eq!(p.find(&["nodes", "end", "list", "1", "b"]), Some((8, 11)));
        assert_eq!(p.find(&["nodes", "end", "nope"]), Some((4, 3)));
    }
}
