//! status: the slots of a pool as the kernel reports them (links, addresses, pins).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::{open_host, PoolArgs};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pool: PoolArgs,
}

/// One slot as found in the kernel.
#[derive(Debug, Serialize)]
pub(crate) struct SlotState {
    pub id: u32,
    pub name: String,
    /// Host end ifindex, when the host end exists.
    pub host_ifindex: Option<u32>,
    pub host_up: bool,
    pub host_mac: Option<String>,
    pub host_addrs: Vec<String>,
    pub xdp_prog_id: Option<u32>,
    /// Where the namespace is pinned, when it is.
    pub pinned: Option<String>,
}

/// The pool as found in the kernel.
#[derive(Debug, Serialize)]
pub(crate) struct PoolState {
    pub prefix: String,
    pub group: u32,
    pub slots: Vec<SlotState>,
    /// Devices in the group whose names do not follow the prefix.
    pub foreign_in_group: Vec<String>,
}

/// Reads the pool back from the kernel: host ends by group, namespaces by pin name.
pub(crate) fn read_pool(pool: &PoolArgs) -> Result<PoolState, String> {
    let host = open_host(pool)?;
    let links = host.links().map_err(|e| format!("link dump failed: {e}"))?;
    let addrs = host
        .addresses()
        .map_err(|e| format!("address dump failed: {e}"))?;
    let pins = netslot::host::pinned(&pool.netns_dir, &pool.prefix)
        .map_err(|e| format!("cannot list {}: {e}", pool.netns_dir.display()))?;
    let mut slots: BTreeMap<u32, SlotState> = BTreeMap::new();
    let mut foreign = Vec::new();
    let blank = |id: u32| SlotState {
        id,
        name: format!("{}{id}", pool.prefix),
        host_ifindex: None,
        host_up: false,
        host_mac: None,
        host_addrs: Vec::new(),
        xdp_prog_id: None,
        pinned: None,
    };
    for l in links
        .iter()
        .filter(|l| netslot::groups::owns(pool.group, l.group))
    {
        let Some(id) = netslot::host::slot_number(&l.name, &pool.prefix) else {
            foreign.push(l.name.clone());
            continue;
        };
        let s = slots.entry(id).or_insert_with(|| blank(id));
        s.host_ifindex = Some(l.index);
        s.host_up = l.up;
        s.host_mac.clone_from(&l.mac);
        s.xdp_prog_id = l.xdp_prog_id;
        s.host_addrs = addrs
            .iter()
            .filter(|a| a.index == l.index)
            .map(|a| format!("{}/{}", a.addr, a.prefix_len))
            .collect();
    }
    for (id, path) in pins {
        slots.entry(id).or_insert_with(|| blank(id)).pinned = Some(path.display().to_string());
    }
    Ok(PoolState {
        prefix: pool.prefix.clone(),
        group: pool.group,
        slots: slots.into_values().collect(),
        foreign_in_group: foreign,
    })
}

pub(crate) fn run(args: StatusArgs) -> Result<ExitCode, String> {
    crate::require_root()?;
    let state = read_pool(&args.pool)?;
    if args.pool.json {
        crate::output::print_json(&state);
        return Ok(ExitCode::SUCCESS);
    }
    let up = state.slots.iter().filter(|s| s.host_up).count();
    let pinned = state.slots.iter().filter(|s| s.pinned.is_some()).count();
    println!(
        "pool prefix={} group={}: {} slot(s), {} host end(s) up, {} pinned namespace(s)",
        state.prefix,
        state.group,
        state.slots.len(),
        up,
        pinned
    );
    for s in &state.slots {
        println!(
            "  {:<16} ifindex {:<8} {:<4} {:<18} {}",
            s.name,
            s.host_ifindex.map_or("-".into(), |i| i.to_string()),
            if s.host_up { "up" } else { "down" },
            s.host_addrs.join(","),
            s.pinned.as_deref().unwrap_or("(not pinned)")
        );
    }
    if !state.foreign_in_group.is_empty() {
        println!(
            "  devices in group {} not named {}<n>: {}",
            state.group,
            state.prefix,
            state.foreign_in_group.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
