//! status: the slots of a pool as the kernel reports them (links, addresses, pins),
//! judged by `netslot::ownership`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::error::{CliError, Kind};
use crate::{open_host_for_reading, PoolArgs};

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
    /// What the pool's ownership record says (None: there is none).
    pub record: Option<netslot::ownership::record::PoolPhase>,
    pub slots: Vec<SlotState>,
    /// Devices in the pool's groups that the pool did not make.
    pub foreign_in_group: Vec<String>,
    /// Devices and pins named like the pool's slots that the pool did not make.
    pub not_the_pools: Vec<String>,
}

/// Reads the pool back from the kernel through `netslot::ownership`: only what the kernel
/// proves the pool made counts as its slots. Needs no privilege in the caller's own
/// namespace (link and address dumps, the pin directory, the mount table, the record);
/// what the kernel or the file modes still refuse is named in the error.
pub(crate) fn read_pool(pool: &PoolArgs) -> Result<PoolState, CliError> {
    let host = open_host_for_reading(pool).map_err(needs_root)?;
    let paths = netslot::ownership::record::RecordPaths::of(&pool.run_dir, &host, pool.group)
        .map_err(CliError::io("cannot read the host namespace's id"))?;
    let record =
        netslot::ownership::record::read_record(&paths.record).map_err(|e| needs_root(e.into()))?;
    let census = netslot::ownership::Census::read(&host, &pool.scope(), record)
        .map_err(|e| needs_root(netslot::ownership::gc::GcError::from(e).into()))?;
    let addrs = host
        .addresses()
        .map_err(CliError::io("address dump failed"))?;
    let mut slots: BTreeMap<u32, SlotState> = BTreeMap::new();
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
    for (&id, l) in &census.host_ends {
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
    for (&id, path) in census.pins.iter().chain(&census.stale_pins) {
        slots.entry(id).or_insert_with(|| blank(id)).pinned = Some(path.display().to_string());
    }
    let not_the_pools = census
        .strangers_pinned
        .iter()
        .map(|p| p.display().to_string())
        .chain(
            census
                .strangers_named_like_slots
                .iter()
                .map(|l| l.name.clone()),
        )
        .collect();
    Ok(PoolState {
        prefix: pool.prefix.clone(),
        group: pool.group,
        record: census.record.as_ref().map(|r| r.phase),
        slots: slots.into_values().collect(),
        foreign_in_group: census
            .strangers_in_groups
            .iter()
            .map(|l| l.name.clone())
            .collect(),
        not_the_pools,
    })
}

/// Says that what was refused for want of privilege needs root.
fn needs_root(e: CliError) -> CliError {
    match e.kind {
        Kind::Permission => CliError::new(
            Kind::Permission,
            format!("{}; reading it needs root", e.message),
        ),
        _ => e,
    }
}

/// Read-only: runs without root where the kernel allows (see [`read_pool`]).
pub(crate) fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
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
            "  devices in group {} that this pool did not make: {}",
            state.group,
            state.foreign_in_group.join(", ")
        );
    }
    if !state.not_the_pools.is_empty() {
        println!(
            "  named like its slots but not made by this pool: {}",
            state.not_the_pools.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
