//! status: the slots of a pool as the kernel reports them (links, addresses, pins),
//! judged by `netslot::ownership`; for a microVM slot, the tap its pinned namespace holds
//! and what its guest's VMM needs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
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
    /// For a pinned namespace holding a tap (a microVM slot), its guest's network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microvm: Option<MicrovmState>,
}

/// A microVM slot's guest network as the kernel shows it: the tap device in the slot's
/// pinned namespace and the host end's address (the guest's gateway), plus the guest
/// MAC the pool derives for the slot. The fields are those of `up --json`'s `microvm`
/// (`netslot::microvm::GuestNetwork`) that the kernel holds.
#[derive(Debug, Serialize)]
pub(crate) struct MicrovmState {
    /// The slot's pinned namespace (the jailer's `--netns`).
    pub netns: String,
    /// The tap's name inside it.
    pub tap: String,
    /// The guest interface's MAC.
    pub guest_mac: String,
    /// The guest's address, `a.b.c.d/31`: the other address of the host end's /31 (None
    /// when the host end has no /31).
    pub guest_address: Option<String>,
    /// The guest's default gateway: the host end's address.
    pub gateway: Option<Ipv4Addr>,
    /// The guest's netmask (of the /31), for kernel command lines (`ip=` takes one).
    pub netmask: Option<Ipv4Addr>,
    /// The body of Firecracker's `PUT /network-interfaces/eth0` for this slot.
    pub firecracker: netslot::microvm::FirecrackerInterface,
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
        microvm: None,
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
    // Entering a namespace needs CAP_SYS_ADMIN: without it, no slot shows a tap (and
    // after the first refusal no other namespace is tried).
    for (&id, path) in &census.pins {
        let ns = match netslot::HostNs::open_for_reading(path) {
            Ok(ns) => ns,
            Err(e) => {
                tracing::debug!(pin = %path.display(), "cannot enter: {e}");
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    break;
                }
                continue;
            }
        };
        let s = slots.get_mut(&id).expect("inserted above");
        // The host end's /31 is the guest's link: the host end holds one address, the
        // guest the other.
        let host = addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) if Some(a.index) == s.host_ifindex && a.prefix_len == 31 => Some(v4),
            _ => None,
        });
        s.microvm = microvm_state(&ns, path, pool.group, id, host);
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

/// The guest network of slot `id` if its namespace `ns`, pinned at `pin`, holds the
/// pool's microVM layout: a veth slot end whose ifindex carries
/// `netslot::bpf::SLOT_END_BIT` and a device of kind "tun" at that ifindex without the
/// bit, both with the same XDP program (the tap redirect). A tap a tenant made in a
/// standard slot is not taken for one. None when the namespace holds no such pair, or
/// when its links cannot be read.
fn microvm_state(
    ns: &netslot::HostNs,
    pin: &Path,
    group: u32,
    id: u32,
    host: Option<Ipv4Addr>,
) -> Option<MicrovmState> {
    let links = ns
        .links()
        .inspect_err(|e| tracing::debug!(pin = %pin.display(), "link dump failed: {e}"))
        .ok()?;
    let bit = netslot::bpf::SLOT_END_BIT;
    let end = links
        .iter()
        .find(|l| l.kind.as_deref() == Some("veth") && l.index & bit != 0)?;
    let tap = links.iter().find(|l| {
        l.kind.as_deref() == Some("tun")
            && l.index == end.index & !bit
            && l.xdp_prog_id.is_some()
            && l.xdp_prog_id == end.xdp_prog_id
    })?;
    let guest_mac = netslot::mac_to_string(&netslot::guest_mac(group, id));
    Some(MicrovmState {
        netns: pin.display().to_string(),
        tap: tap.name.clone(),
        guest_mac: guest_mac.clone(),
        guest_address: host.map(|h| format!("{}/31", Ipv4Addr::from(u32::from(h) ^ 1))),
        gateway: host,
        netmask: host.map(|_| Ipv4Addr::new(255, 255, 255, 254)),
        firecracker: netslot::microvm::FirecrackerInterface {
            iface_id: netslot::microvm::FIRECRACKER_IFACE_ID.to_owned(),
            host_dev_name: tap.name.clone(),
            guest_mac,
        },
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
    let taps = state.slots.iter().filter(|s| s.microvm.is_some()).count();
    println!(
        "pool prefix={} group={}: {} slot(s), {} host end(s) up, {} pinned namespace(s){}",
        state.prefix,
        state.group,
        state.slots.len(),
        up,
        pinned,
        if taps > 0 {
            format!(", {taps} microVM tap(s)")
        } else {
            String::new()
        }
    );
    for s in &state.slots {
        println!(
            "  {:<16} ifindex {:<8} {:<4} {:<18} {}{}",
            s.name,
            s.host_ifindex.map_or("-".into(), |i| i.to_string()),
            if s.host_up { "up" } else { "down" },
            s.host_addrs.join(","),
            s.pinned.as_deref().unwrap_or("(not pinned)"),
            s.microvm.as_ref().map_or(String::new(), |m| format!(
                "  tap {} guest {} {}",
                m.tap,
                m.guest_address.as_deref().unwrap_or("-"),
                m.guest_mac
            ))
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
