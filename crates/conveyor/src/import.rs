//! `conveyor process import FILE`: a Corezoid export into Conveyor processes, written
//! as YAML (`--out DIR`) and/or cloned (`--clone`). The mapping is conveyor-corezoid's.

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use conveyor_commands::{Reply, Request};

pub struct ImportArgs<'a> {
    pub file: &'a Path,
    pub out: Option<&'a Path>,
    pub clone: bool,
    pub allow_partial: bool,
    pub json: bool,
}

/// Maps the export; writes and clones what `args` asks. `clone` runs one request
/// (`process clone` of a definition, with its alias) the way the CLI runs it.
pub fn run(
    args: &ImportArgs<'_>,
    mut clone: impl FnMut(Request) -> anyhow::Result<Reply>,
) -> anyhow::Result<Reply> {
    let import = conveyor_corezoid::import_path(args.file)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    let mut reply = Reply::default();
    if !import.unmapped.is_empty() && !args.allow_partial {
        reply.stderr.push_str(&format!(
            "error: {} node(s) cannot be mapped to Conveyor (give --allow-partial to import them as nodes that fail when a task reaches them):\n",
            import.unmapped.len()
        ));
        for u in &import.unmapped {
            reply.stderr.push_str(&format!("  {u}\n"));
        }
        reply.code = 1;
        return Ok(reply);
    }
    if !args.clone && args.out.is_none() {
        anyhow::bail!("give --out DIR to write the processes, --clone to create them, or both");
    }
    let mut written = Vec::new();
    if let Some(dir) = args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for p in &import.processes {
            let path = dir.join(format!("{}.yaml", p.name));
            std::fs::write(&path, &p.yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path.display().to_string());
        }
    }
    let mut cloned = Vec::new();
    if args.clone {
        // Every definition is checked first: nothing is created unless all check.
        for p in &import.processes {
            let checked = conveyor_model::check(&format!("{}.yaml", p.name), &p.yaml);
            let errors: Vec<String> = checked.errors().map(ToString::to_string).collect();
            if !errors.is_empty() {
                reply.stderr.push_str(&format!(
                    "error: the imported process `{}` does not check:\n  {}\n",
                    p.name,
                    errors.join("\n  ")
                ));
                reply.code = 1;
                return Ok(reply);
            }
        }
        for p in &import.processes {
            let answer = clone(Request::ProcessClone {
                source: format!("{} (imported)", p.name),
                definition: p.yaml.clone(),
                alias: Some(p.alias.clone()),
                settings: Default::default(),
            })?;
            if answer.code != 0 {
                reply.stdout.push_str(&answer.stdout);
                reply.stderr.push_str(&answer.stderr);
                reply.code = answer.code;
                return Ok(reply);
            }
            cloned.push(answer.stdout.trim().to_string());
        }
    }
    if args.json {
        let processes: Vec<_> = import
            .processes
            .iter()
            .map(|p| json!({"name": p.name, "alias": p.alias, "corezoid_id": p.corezoid_id}))
            .collect();
        let unmapped: Vec<String> = import.unmapped.iter().map(ToString::to_string).collect();
        reply.line(
            json!({
                "processes": processes,
                "written": written,
                "cloned": cloned,
                "unmapped": unmapped,
                "notes": import.notes,
            })
            .to_string(),
        );
    } else {
        for p in &import.processes {
            let from = p
                .corezoid_id
                .map(|id| format!(" (Corezoid process {id})"))
                .unwrap_or_default();
            reply.line(format!("imported `{}` as @{}{from}", p.name, p.alias));
        }
        for path in &written {
            reply.line(format!("wrote {path}"));
        }
        for line in &cloned {
            reply.line(line);
        }
        for u in &import.unmapped {
            reply.line(format!("warning: fails when reached: {u}"));
        }
        for note in &import.notes {
            reply.line(format!("note: {note}"));
        }
    }
    Ok(reply)
}
