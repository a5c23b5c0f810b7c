//! down: removes a pool: host ends by group (one request per sub-batch group), then its
//! pinned namespaces.

use std::io;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

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
    errors: Vec<String>,
}

pub(crate) fn run(args: DownArgs) -> Result<ExitCode, String> {
    crate::require_root()?;
    let pool = &args.pool;
    if pool.group == 0 {
        return Err("group 0 is every default device; refusing to delete it".into());
    }
    let host = open_host(pool)?;
    // Claim the pool: refuse while a live process owns it, and mark it as being removed,
    // so that if this process dies halfway `gc` removes the rest.
    let mut lock = netslot::gc::PoolLock::claim(&pool.run_dir, &host, pool.group)
        .map_err(|e| e.to_string())?;
    lock.set_phase(netslot::gc::PoolPhase::Removing)
        .map_err(|e| format!("ownership record {}: write: {e}", lock.path().display()))?;
    let links = host.links().map_err(|e| format!("link dump failed: {e}"))?;
    let before = links
        .iter()
        .filter(|l| netslot::groups::owns(pool.group, l.group))
        .count();
    let mut errors = Vec::new();
    if before > 0 {
        // A group that emptied meanwhile (its namespaces went first) is no error.
        if let Err((g, e)) = host.delete_pool(pool.group, &links) {
            errors.push(format!("delete group {g}: {e}"));
        }
    }
    let pins = netslot::host::pinned(&pool.netns_dir, &pool.prefix)
        .map_err(|e| format!("cannot list {}: {e}", pool.netns_dir.display()))?;
    let mut unpinned = 0;
    for (_, path) in &pins {
        match netslot::host::unpin(path) {
            Ok(()) => unpinned += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("unpin {}: {e}", path.display())),
        }
    }
    // The XDP program left with its devices; its pins go now, then the parent directory
    // if no other pool uses it.
    let bpf_dir = pool.bpf_pin_dir();
    let bpf_unpinned = bpf_dir.exists();
    if bpf_unpinned {
        if let Err(e) = netslot::bpf::unpin(&bpf_dir) {
            errors.push(format!("unpin XDP counters: {e}"));
        }
        match std::fs::remove_dir(&pool.bpf_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(39) => {
                errors.push(format!("remove {}: {e}", pool.bpf_dir.display()));
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        if let Err(e) = lock.remove() {
            errors.push(format!("ownership record: unlink: {e}"));
        }
    }
    let report = DownReport {
        prefix: pool.prefix.clone(),
        group: pool.group,
        host_ends_deleted: before,
        namespaces_unpinned: unpinned,
        xdp_counters_unpinned: bpf_unpinned,
        errors,
    };
    if pool.json {
        crate::output::print_json(&report);
    } else {
        println!(
            "pool prefix={} group={}: deleted {} host end(s) by group, unpinned {} namespace(s)",
            report.prefix, report.group, report.host_ends_deleted, report.namespaces_unpinned
        );
        for e in &report.errors {
            eprintln!("netslot down: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
