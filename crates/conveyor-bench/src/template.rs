//! `template`: parse a template once, render it many times against a small task.

use std::hint::black_box;
use std::time::{Duration, Instant};

use conveyor_template::{MapEnv, ProcessId, Template};
use serde_json::{Value, json};

/// Templates a process really renders, from simple to busy.
const TEMPLATES: [(&str, &str); 5] = [
    ("literal", "https://oauth.bitrix.info/oauth/token/"),
    ("url with 1 param", "{{oauth_server}}/oauth/token/"),
    (
        "api_call url (param + conv ref)",
        "https://{{portal}}.bitrix24.ru/rest/crm.deal.list?auth={{conv[@bitrix].ref[token].access_token}}",
    ),
    ("whole value (typed)", "{{expires}}"),
    ("$.math over 2 params", "$.math({{expires}} - {{now}} + 60)"),
];

pub fn run(iterations: u32, as_json: bool) -> anyhow::Result<()> {
    let data = json!({
        "portal": "corezoid",
        "oauth_server": "https://oauth.bitrix.info",
        "client_id": "local.55d32b338a90f0.23817",
        "expires": 1_764_349_200,
        "now": 1_764_345_600,
        "scope": "crm",
    });
    let env = MapEnv::default().with_task(
        ProcessId::Alias("bitrix".into()),
        "token",
        json!({"access_token": "717e2d6700", "refresh_token": "61fd2d67", "expires": 1_764_349_200}),
    );
    let mut rows = Vec::new();
    for (name, text) in TEMPLATES {
        let started = Instant::now();
        let parsed = Template::parse(text)?;
        let parse_time = started.elapsed();
        // Warm up, then time the renders.
        for _ in 0..1000 {
            black_box(parsed.render(&data, &env)?);
        }
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(parsed.render(black_box(&data), &env)?);
        }
        let per_render = started.elapsed() / iterations;
        rows.push((name, parse_time, per_render));
    }
    if as_json {
        let figures: Vec<Value> = rows
            .iter()
            .map(|(name, parse, render)| {
                json!({"template": name, "parse_ns": parse.as_nanos() as u64, "render_ns": render.as_nanos() as u64})
            })
            .collect();
        println!(
            "{}",
            json!({"scenario": "template", "iterations": iterations, "results": figures})
        );
    } else {
        println!("{:<34} {:>12} {:>12}", "template", "parse", "render");
        for (name, parse, render) in rows {
            println!("{name:<34} {:>12} {:>12}", nanos(parse), nanos(render));
        }
    }
    Ok(())
}

fn nanos(d: Duration) -> String {
    format!("{} ns", d.as_nanos())
}
