//! stats: per-slot packets and bytes from the pinned XDP counters map.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::{open_host, PoolArgs};

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
    /// Id of the counters program (kept under its first name for JSON readers).
    xdp_prog_id: u32,
    /// "xdp" or "tc": which counters program the pool was made with.
    hook: &'static str,
    slots: Vec<SlotStats>,
}

pub(crate) fn run(args: StatsArgs) -> Result<ExitCode, String> {
    crate::require_root()?;
    let pool = &args.pool;
    let dir = pool.bpf_pin_dir();
    let counters = netslot::bpf::PinnedCounters::open(&dir).map_err(|e| {
        format!(
            "no counters pinned for group {} at {} ({e}); were the slots made by `netslot up` without --hold or --no-xdp?",
            pool.group,
            dir.display()
        )
    })?;
    let by_index: HashMap<u32, (u64, u64)> = counters
        .read_all()
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .into_iter()
        .map(|c| (c.ifindex, (c.packets, c.bytes)))
        .collect();
    let host = open_host(pool)?;
    let mut slots: Vec<(u32, SlotStats)> = host
        .links()
        .map_err(|e| format!("link dump failed: {e}"))?
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
        xdp_prog_id: counters.prog_id(),
        hook: match counters.hook() {
            netslot::bpf::Hook::Xdp => "xdp",
            netslot::bpf::Hook::Tc => "tc",
        },
        slots: slots.into_iter().map(|(_, s)| s).collect(),
    };
    if pool.json {
        crate::output::print_json(&report);
    } else {
        println!(
            "pool prefix={} group={}: {} program {} on {} host end(s)",
            report.prefix,
            report.group,
            report.hook,
            report.xdp_prog_id,
            report.slots.len()
        );
        println!("  {:<16} {:>12} {:>14}", "slot", "packets", "bytes");
        for s in &report.slots {
            println!("  {:<16} {:>12} {:>14}", s.name, s.packets, s.bytes);
        }
    }
    Ok(ExitCode::SUCCESS)
}
