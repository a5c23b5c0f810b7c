//! gc: removes what of a pool no live process owns, found in the kernel (see `netslot::ownership::gc`).

use std::process::ExitCode;

use clap::Args;

use crate::error::{CliError, PARTIAL};
use crate::{open_host, PoolArgs};

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    pool: PoolArgs,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(args: GcArgs) -> Result<ExitCode, CliError> {
    crate::require_root()?;
    let pool = &args.pool;
    if pool.group == 0 {
        return Err(CliError::usage(
            "group 0 is every default device; refusing to collect it",
        ));
    }
    let host = open_host(pool)?;
    let report =
        netslot::ownership::gc::collect(&host, &pool.run_dir, &pool.scope(), args.dry_run)?;
    if pool.json {
        crate::output::print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(PARTIAL)
    })
}

/// One line per kind of object, naming at most a few of them.
pub(crate) fn print_human(r: &netslot::ownership::gc::GcReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let record = r.record.map_or("no ownership record".to_owned(), |p| {
        format!("record {p:?}").to_lowercase()
    });
    println!(
        "pool prefix={} group={} ({record}; {}): {verb} {} host end(s){}, {} namespace pin(s), {} stale pin file(s){}; {} complete slot(s) kept",
        r.prefix,
        r.group,
        if r.whole_pool { "whole pool is garbage" } else { "committed: incomplete slots only" },
        r.host_ends.len(),
        if r.by_group_delete { " by one group delete" } else { "" },
        r.namespaces.len(),
        r.stale_files.len(),
        r.bpf_pins.as_ref().map(|d| format!(", XDP pins {d}")).unwrap_or_default(),
        r.kept_slots,
    );
    let sample = |names: Vec<&str>| {
        let more = names.len().saturating_sub(5);
        let mut s = names.into_iter().take(5).collect::<Vec<_>>().join(" ");
        if more > 0 {
            s.push_str(&format!(" … (+{more})"));
        }
        s
    };
    if !r.host_ends.is_empty() {
        println!(
            "  host ends: {}",
            sample(r.host_ends.iter().map(|l| l.name.as_str()).collect())
        );
    }
    if !r.namespaces.is_empty() {
        println!(
            "  namespaces: {}",
            sample(r.namespaces.iter().map(String::as_str).collect())
        );
    }
    if !r.foreign_in_group.is_empty() {
        println!(
            "  left alone (in group {} but not made by this pool): {}",
            r.group,
            r.foreign_in_group.join(" ")
        );
    }
    if !r.not_the_pools.is_empty() {
        println!(
            "  left alone (named like its slots but not made by this pool): {}",
            sample(r.not_the_pools.iter().map(String::as_str).collect())
        );
    }
    for e in &r.errors {
        eprintln!("netslot gc: {e}");
    }
}
