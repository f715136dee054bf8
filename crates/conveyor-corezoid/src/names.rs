//! Names from titles: node ids (1–64 of letters, digits, `_`, `-`) and aliases, unique
//! within their process or import.

use std::collections::HashSet;

/// `"Call Stripe API!"` → `call_stripe_api`; empty → `fallback`.
pub fn slug(title: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let mut out = out.trim_end_matches('_').to_string();
    out.truncate(48);
    let out = out.trim_end_matches('_').to_string();
    if out.is_empty() || out.chars().all(|c| c.is_ascii_digit()) {
        fallback.to_string()
    } else {
        out
    }
}

/// Hands out names, each once: a taken name gets `_2`, `_3`, ….
#[derive(Default)]
pub(crate) struct Names {
    taken: HashSet<String>,
}

impl Names {
    pub(crate) fn unique(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_string();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{wanted}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}
