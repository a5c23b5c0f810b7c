//! down: removes a pool: every object the kernel proves is its own (see
//! `netslot::ownership`), host ends by group where a group holds nothing else, then its
//! pinned namespaces, its counters pins and its record. Strangers are reported, never
//! touched.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::error::{CliError, PARTIAL};
use crate::{open_host, PoolArgs};

#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Serialize)]
struct DownReport {
    prefix: String,
    group: u32,
    host_ends_deleted: usize,
    namespaces_unpinned: usize,
    xdp_counters_unpinned: bool,
    /// Devices in the pool's groups and pins named like its slots that it did not make.
    left_alone: Vec<String>,
    errors: Vec<String>,
}

pub(crate) fn run(args: DownArgs) -> Result<ExitCode, CliError> {
    crate::require_root()?;
    let pool = &args.pool;
    if pool.group == 0 {
        return Err(CliError::usage(
            "group 0 is every default device; refusing to delete it",
        ));
    }
    let host = open_host(pool)?;
    let r = netslot::ownership::gc::remove_pool(&host, &pool.run_dir, &pool.scope())?;
    let report = DownReport {
        prefix: r.prefix,
        group: r.group,
        host_ends_deleted: r.host_ends.len(),
        namespaces_unpinned: r.namespaces.len() + r.stale_files.len(),
        xdp_counters_unpinned: r.bpf_pins.is_some(),
        left_alone: r
            .foreign_in_group
            .into_iter()
            .chain(r.not_the_pools)
            .collect(),
        errors: r.errors,
    };
    if pool.json {
        crate::output::print_json(&report);
    } else {
        println!(
            "pool prefix={} group={}: deleted {} host end(s), unpinned {} namespace(s){}",
            report.prefix,
            report.group,
            report.host_ends_deleted,
            report.namespaces_unpinned,
            if report.xdp_counters_unpinned {
                ", removed the counters pins"
            } else {
                ""
            }
        );
        if !report.left_alone.is_empty() {
            println!(
                "  left alone (not made by this pool): {}",
                report.left_alone.join(" ")
            );
        }
        for e in &report.errors {
            eprintln!("netslot down: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(PARTIAL)
    })
}
