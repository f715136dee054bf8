//! `conveyor store verify | repair | migrate | compact`: commands on the store itself, run
//! by the command layer ([`conveyor_commands::store_command`]). They need it to
//! themselves, so they are refused here while an engine (`serve`, `run`) runs the data
//! dir; the layer waits a moment for a short command that holds it.

use std::process::ExitCode;

use anyhow::bail;
use conveyor_commands::{MigrateTarget, Postgres, Request, StoreKind, StoreRequest};

use crate::commands::{engine_running, key_source, pg_options, place, print};
use crate::{Global, MigrateTo, StoreCommand, StoreKindArg, client};

pub fn run(global: &Global, command: StoreCommand) -> anyhow::Result<ExitCode> {
    let place = place(global)?;
    // PostgreSQL is compacted while engines run: each waits for the table it needs.
    if !(matches!(command, StoreCommand::Compact) && place.postgres.is_some()) {
        refuse_if_engine(&place)?;
    }
    let request = match command {
        StoreCommand::Verify => StoreRequest::Verify {
            key: key_source(&place.dir, global)?,
        },
        StoreCommand::Repair { yes } => StoreRequest::Repair { yes },
        StoreCommand::Migrate { to } => StoreRequest::Migrate {
            to: match to {
                MigrateTo::Kind(StoreKindArg::Log) => MigrateTarget::Kind(StoreKind::Log),
                MigrateTo::Kind(StoreKindArg::Sled) => MigrateTarget::Kind(StoreKind::Sled),
                MigrateTo::Postgres(url) => MigrateTarget::Postgres(Postgres {
                    url,
                    options: pg_options()?,
                }),
            },
        },
        StoreCommand::Compact => StoreRequest::Compact,
        StoreCommand::Stats => bail!("`store stats` is not run here (it is an ordinary command)"),
    };
    let answer = conveyor_commands::store_command(&place, request)?;
    Ok(print(conveyor_commands::render_store(&answer, global.json)))
}

/// Refused while an engine runs the data dir: these commands read or rewrite all of
/// the store, which must not race with an engine's steps.
fn refuse_if_engine(place: &conveyor_commands::Place) -> anyhow::Result<()> {
    if let Some(info) = client::read(&place.dir)
        && client::send(&info, &Request::ApiKeyList, false)?.is_some()
    {
        bail!(
            "a server (pid {}) is running this data dir at {}: stop it first (`conveyor store` needs the store to itself)",
            info.pid,
            info.address
        );
    }
    if engine_running(&place.dir).is_some() {
        return Err(place.locked().into());
    }
    Ok(())
}
