//! stats: per-slot packets and bytes from the pinned counters map (XDP or tc).

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::error::{CliError, Kind};
use crate::{open_host_for_reading, PoolArgs};

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Serialize)]
struct SlotStats {
    name: String,
    ifindex: u32,
    packets: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct StatsReport {
    prefix: String,
    group: u32,
    /// "xdp" or "tc": the hook of the counters program the pool was made with.
    hook: &'static str,
    /// Kernel id of that program (an XDP program, or the tc block's cls_bpf filter's).
    prog_id: u32,
    slots: Vec<SlotStats>,
}

/// Read-only: the link dump needs no privilege; the kernel may reserve bpf(2), which
/// opens and reads the pinned map, to root (kernel.unprivileged_bpf_disabled), and then
/// the error says so.
pub(crate) fn run(args: StatsArgs) -> Result<ExitCode, CliError> {
    let pool = &args.pool;
    let dir = pool.bpf_pin_dir();
    let counters = netslot::bpf::PinnedCounters::open(&dir).map_err(|e| {
        if e.permission_denied() {
            CliError::new(
                Kind::Permission,
                format!(
                    "reading the counters pinned at {} needs root: {}; the kernel refuses bpf(2) to unprivileged users while kernel.unprivileged_bpf_disabled is set ({}), and the pin directory's mode may refuse the path",
                    dir.display(),
                    with_causes(&e),
                    std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                        .map_or_else(|_| "unknown".to_owned(), |v| format!("it is {}", v.trim())),
                ),
            )
        } else if e.not_found() {
            CliError::usage(format!(
                "no counters pinned for group {} at {} ({e}); were the slots made by `netslot up` without --hold or --no-xdp?",
                pool.group,
                dir.display()
            ))
        } else {
            CliError::new(
                Kind::Kernel,
                format!("opening the counters pinned at {}: {e}", dir.display()),
            )
        }
    })?;
    let by_index: HashMap<u32, (u64, u64)> = counters
        .read_all()
        .map_err(|e| {
            let kind = if e.permission_denied() {
                Kind::Permission
            } else {
                Kind::Kernel
            };
            CliError::new(kind, format!("reading {}: {e}", dir.display()))
        })?
        .into_iter()
        .map(|c| (c.ifindex, (c.packets, c.bytes)))
        .collect();
    let host = open_host_for_reading(pool)?;
    let mut slots: Vec<(u32, SlotStats)> = host
        .links()
        .map_err(CliError::io("link dump failed"))?
        .into_iter()
        .filter(|l| netslot::groups::owns(pool.group, l.group))
        .filter_map(|l| {
            let id = netslot::host::slot_number(&l.name, &pool.prefix)?;
            let (packets, bytes) = by_index.get(&l.index).copied().unwrap_or((0, 0));
            Some((
                id,
                SlotStats {
                    name: l.name,
                    ifindex: l.index,
                    packets,
                    bytes,
                },
            ))
        })
        .collect();
    slots.sort_by_key(|(id, _)| *id);
    let report = StatsReport {
        prefix: pool.prefix.clone(),
        group: pool.group,
        hook: match counters.hook() {
            netslot::bpf::Hook::Xdp => "xdp",
            netslot::bpf::Hook::Tc => "tc",
        },
        prog_id: counters.prog_id(),
        slots: slots.into_iter().map(|(_, s)| s).collect(),
    };
    if pool.json {
        crate::output::print_json(&report);
    } else {
        println!(
            "pool prefix={} group={}: counters by {} program id {} (hook {}) on {} host end(s)",
            report.prefix,
            report.group,
            match report.hook {
                "tc" => "tc (cls_bpf)",
                _ => "XDP",
            },
            report.prog_id,
            report.hook,
            report.slots.len()
        );
        println!("  {:<16} {:>12} {:>14}", "slot", "packets", "bytes");
        for s in &report.slots {
            println!("  {:<16} {:>12} {:>14}", s.name, s.packets, s.bytes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes, as one line (the eBPF layer keeps the OS error in a cause).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
