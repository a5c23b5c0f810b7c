//! up: provisions a pool of slots (standard or microVM), reports speed and where the time
//! went, and for microVM slots what each guest's VMM needs.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use netslot::microvm::GuestNetwork;
use netslot::{CountersAttach, Engine, EngineConfig, Ipv4Cidr, ProvisionReport, SlotError};

use crate::error::{CliError, PARTIAL};
use crate::output::{print_json, Progress};
use crate::PoolArgs;

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// How many slots to provision.
    #[arg(long, short = 'n')]
    slots: usize,
    #[command(flatten)]
    pool: PoolArgs,
    /// IPv4 pool; slot k gets the k-th /31 (host end even, slot end odd).
    #[arg(long, default_value = netslot::config::DEFAULT_IPV4_POOL)]
    cidr: Ipv4Cidr,
    /// MTU of both veth ends.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Keep IPv6 on the slot devices (link-local addresses and their duplicate address
    /// detection). Off by default: both ends get IPv6 address generation turned off.
    #[arg(long)]
    ipv6: bool,
    /// Do not pin: keep the slots only while this process runs, and tear them down on
    /// Ctrl-C or SIGTERM.
    #[arg(long)]
    hold: bool,
    /// Do not attach the packet/byte counters to the host ends (whatever --attach says).
    #[arg(long)]
    no_xdp: bool,
    /// How the packet/byte counters reach the host ends. Costs are RTNL acquisitions (the
    /// kernel's global networking lock), measured on 6.18 (docs/ebpf.md).
    #[arg(long, value_enum, default_value_t = AttachArg::Group)]
    attach: AttachArg,
    /// Slots per io_uring submission.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Longest RTNL hold (ms) one multi-device request may cause. Bringing every host end
    /// up with one group change is 1 acquisition but holds RTNL for all of them at once
    /// (about 1 s for 4000), stalling every other network change on the host. Host ends
    /// are split into sub-batches sized so that no group change is expected to hold RTNL
    /// longer than this, each in a device group of its own (GROUP + k * 65536). Under a
    /// budget, IPv6 goes off on each host end through its disable_ipv6 sysctl first (one
    /// short acquisition per slot; it halves what a group change costs per device).
    /// `unbounded`: one group change per call (fewest acquisitions).
    #[arg(long, default_value = "5", value_parser = crate::hold_arg::parse_hold)]
    max_rtnl_hold: crate::hold_arg::HoldBudgetArg,
    #[command(flatten)]
    kind: crate::kind_arg::KindArgs,
}

/// `--attach`: the library's [`CountersAttach`], with the help text `--help` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AttachArg {
    /// XDP, attached by the group changes that bring the host ends up: no RTNL
    /// acquisition of its own, whatever the number of slots.
    Group,
    /// XDP, one RTM_SETLINK per host end: one RTNL acquisition per slot.
    PerDevice,
    /// tc: a clsact qdisc per host end on one shared ingress block (one RTNL acquisition
    /// per slot) and one cls_bpf filter on that block (one acquisition per pool). For tc
    /// semantics; `netslot stats` reads it the same way.
    TcBlock,
}

impl From<AttachArg> for CountersAttach {
    fn from(a: AttachArg) -> Self {
        match a {
            AttachArg::Group => Self::Group,
            AttachArg::PerDevice => Self::PerDevice,
            AttachArg::TcBlock => Self::TcBlock,
        }
    }
}

#[derive(Debug, Serialize)]
struct SlotLine {
    id: u32,
    name: String,
    netns: Option<String>,
    ifindex: u32,
    host_ip: String,
    slot_ip: String,
    host_mac: String,
    slot_mac: String,
    /// A microVM slot's guest network: tap, guest MAC, address and gateway, and the body
    /// of Firecracker's `PUT /network-interfaces/eth0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    microvm: Option<GuestNetwork>,
}

#[derive(Debug, Serialize)]
struct UpReport {
    report: ProvisionReport,
    slots_per_sec: f64,
    /// Engine calls the slots were made in (more than one when they would not all fit
    /// the open-file limit at once).
    calls: usize,
    /// Most slots per call.
    slots_per_call: usize,
    slots: Vec<SlotLine>,
    errors: Vec<SlotError>,
}

pub(crate) fn run(args: UpArgs) -> Result<ExitCode, CliError> {
    crate::require_root()?;
    // Linux 6.18 or later (Engine::new checks too; `netslot serve` relies on that).
    netslot::features::check().map_err(|e| e.to_string())?;
    let config = EngineConfig {
        prefix: args.pool.prefix.clone(),
        group: args.pool.group,
        ipv4_pool: args.cidr,
        mtu: args.mtu,
        ipv6: args.ipv6,
        host_netns: args.pool.host_netns.clone(),
        pin_dir: (!args.hold).then(|| args.pool.netns_dir.clone()),
        xdp_counters: !args.no_xdp,
        xdp_attach: args.attach.into(),
        bpf_pin_dir: (!args.hold && !args.no_xdp).then(|| args.pool.bpf_pin_dir()),
        chunk: args.chunk,
        max_rtnl_hold: args.max_rtnl_hold.0,
        run_dir: Some(args.pool.run_dir.clone()),
        kind: args.kind.slot_kind()?,
        ..EngineConfig::default()
    };
    // Every input check before the first kernel change.
    config.check(0, args.slots)?;
    let signals = if args.hold {
        Some(crate::signals::Blocked::termination())
    } else {
        None
    };

    // Claims the pool (a live owner refuses), refuses collisions with what others made,
    // and only then removes what the kernel proves a dead owner of this pool left.
    let mut engine = Engine::new(config)?;
    if let Some(r) = engine.reclaimed() {
        if !args.pool.json {
            eprint!("netslot up: first, as `netslot gc` would: ");
            crate::gc::print_human(r);
        }
    }
    engine.check_names(args.slots)?;
    // Pinned slots need no fd once pinned: they go into the kernel in calls that fit the
    // open-file limit, and each call's handles are closed as soon as it returns, so `up`
    // of any N needs a bounded number of fds. `--hold` keeps every slot's fds open (its
    // slots live only in them), so it must fit in one call; the engine refuses it else.
    let per_call = if args.hold {
        args.slots
    } else {
        let files = netslot::limits::OpenFiles::read()
            .map_err(CliError::io("read the open-file limit (/proc/self/limits)"))?;
        files
            .slots_that_fit(engine.fds_per_slot())
            .clamp(1, args.slots)
    };
    let mut progress = Progress::new(args.slots, "provisioning");
    let mut report: Option<ProvisionReport> = None;
    let mut slots = Vec::new();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut calls = 0;
    while calls * per_call < args.slots {
        let done = calls * per_call;
        let n = per_call.min(args.slots - done);
        let out = engine
            .provision_with(n, |d, _| progress.update(done + d))
            .map_err(|e| {
                let mut e = CliError::from(e);
                let made = report.as_ref().map_or(0, |r| r.provisioned);
                if made > 0 {
                    e.message.push_str(&format!(
                        " ({made} slot(s) made by earlier calls are not committed: `netslot gc` removes them)"
                    ));
                }
                e
            })?;
        calls += 1;
        for r in out.slots {
            match r {
                Ok(s) => {
                    lines.push(slot_line(&s));
                    if args.hold {
                        slots.push(s);
                    } // else: pinned; dropping the handle closes its fds only
                }
                Err(e) => errors.push(e),
            }
        }
        match &mut report {
            Some(total) => merge(total, out.report),
            None => report = Some(out.report),
        }
    }
    progress.finish();
    let report = report.expect("at least one call");
    if report.provisioned == 0 {
        // Nothing stands: nothing of the pool is left (no record, no counters pins).
        engine.teardown(Vec::new())?;
    } else if !args.hold {
        // The pins now hold the pool on purpose: gc keeps its complete slots.
        engine.commit()?;
    }
    let report = UpReport {
        slots_per_sec: report.slots_per_sec(),
        calls,
        slots_per_call: per_call,
        slots: lines,
        errors,
        report,
    };
    if args.pool.json {
        print_json(&report);
    } else {
        print_human(&report, args.hold, &args.pool.netns_dir);
    }

    if let Some(signals) = signals {
        if !args.pool.json {
            eprintln!(
                "holding {} slot(s); Ctrl-C or SIGTERM tears them down",
                slots.len()
            );
        }
        let sig = signals.wait();
        tracing::info!(signal = sig, "tearing down");
        engine.teardown(slots)?;
        if !args.pool.json {
            eprintln!("torn down");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(PARTIAL)
    })
}

fn slot_line(s: &netslot::Slot) -> SlotLine {
    let sp = s.spec();
    SlotLine {
        id: sp.id,
        name: sp.name.clone(),
        netns: s.pinned_at().map(|p| p.display().to_string()),
        ifindex: sp.ifindex,
        host_ip: format!("{}/{}", sp.host_ip, sp.prefix_len),
        slot_ip: format!("{}/{}", sp.slot_ip, sp.prefix_len),
        host_mac: netslot::mac_to_string(&sp.host_mac),
        slot_mac: netslot::mac_to_string(&sp.slot_mac),
        microvm: GuestNetwork::of(sp, s.pinned_at()),
    }
}

/// Adds call `r`'s figures to the running total of an `up` made in several calls.
fn merge(total: &mut ProvisionReport, r: ProvisionReport) {
    total.requested += r.requested;
    total.provisioned += r.provisioned;
    total.failed += r.failed;
    total.wall += r.wall;
    total.phases.namespaces += r.phases.namespaces;
    total.phases.pool_wait += r.phases.pool_wait;
    total.phases.links += r.phases.links;
    total.phases.pin += r.phases.pin;
    total.phases.rollback += r.phases.rollback;
    total.namespaces_created += r.namespaces_created;
    total.ring_enters += r.ring_enters;
    total.sendmsgs += r.sendmsgs;
    total.requests += r.requests;
    total.group_changes += r.group_changes;
    total.group_changes_took += r.group_changes_took;
    total.ipv6_sysctl += r.ipv6_sysctl;
    total.ipv6_sysctl_took += r.ipv6_sysctl_took;
    total.recovered_after_overrun += r.recovered_after_overrun;
}

fn print_human(r: &UpReport, hold: bool, dir: &Path) {
    let rep = &r.report;
    let p = &rep.phases;
    println!(
        "provisioned {}/{} slots in {:.3} s: {:.0} slots/s",
        rep.provisioned,
        rep.requested,
        rep.wall.as_secs_f64(),
        r.slots_per_sec
    );
    println!(
        "  phases (s): namespaces {:.3} (pool thread, overlapped)  waiting for pool {:.3}  links {:.3}  pin {:.3}  rollback {:.3}",
        p.namespaces.as_secs_f64(),
        p.pool_wait.as_secs_f64(),
        p.links.as_secs_f64(),
        p.pin.as_secs_f64(),
        p.rollback.as_secs_f64()
    );
    println!(
        "  kernel I/O: {} netlink requests in {} sendmsg, {} io_uring_enter",
        rep.requests, rep.sendmsgs, rep.ring_enters
    );
    println!(
        "  host ends up: {} group change(s), one per sub-batch, {:.1} ms send to reply in all",
        rep.group_changes,
        rep.group_changes_took.as_secs_f64() * 1e3
    );
    if rep.ipv6_sysctl > 0 {
        println!(
            "  IPv6 off on {} host end(s) through disable_ipv6 first, {:.1} ms (io_uring writes)",
            rep.ipv6_sysctl,
            rep.ipv6_sysctl_took.as_secs_f64() * 1e3
        );
    }
    if !hold && rep.provisioned > 0 {
        println!(
            "  namespaces pinned in {}: try `ip netns exec {} ip addr`",
            dir.display(),
            r.slots.first().map_or("", |s| s.name.as_str())
        );
    }
    if let Some((slot, guest)) = r.slots.iter().find_map(|s| Some((s, s.microvm.as_ref()?))) {
        println!(
            "  microVM: tap {} in each slot's namespace; {}'s guest: {} via {}, MAC {} (--json, or `netslot status --json`, lists each slot's Firecracker body)",
            guest.tap, slot.name, guest.guest_address, guest.gateway, guest.guest_mac
        );
    }
    if r.calls > 1 {
        println!(
            "  made in {} calls of at most {} slots each (to stay within the open-file limit)",
            r.calls, r.slots_per_call
        );
    }
    for e in &r.errors {
        println!("  FAILED {e}");
    }
}
