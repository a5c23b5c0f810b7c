//! claim: what an engine does before it makes anything: claim its pool, judge it once,
//! refuse every collision with what others made, remove a dead owner's leftovers, and
//! write the record that names what it is about to make.
//! The order is the rule: a live owner refuses first, then collisions (nothing touched
//! yet), then only proven leftovers go. The steps themselves are `record`, `ownership`
//! and `gc`'s; no netlink of its own.
//!
//! Adoption (`EngineConfig::adopt`, the daemon's): the attachments the record lists are
//! not leftovers while they still serve a container. One is kept when the record is this
//! pool's (same prefix and address range), the kernel shows its host end as the pool's
//! (veth, pool group, name `<prefix><id>`, the pool's MAC for the id) at the recorded
//! ifindex, and its container's namespace lives: the recorded path still opens to a
//! network namespace with the recorded id (a veth's peer goes with its namespace, so the
//! host end of a dead container is at most being destroyed). Everything else of the pool
//! is removed as without adoption, and the new record lists the kept ones.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;

use crate::config::EngineConfig;
use crate::host::{HostNs, LinkRecord};
use crate::ownership::gc::{self, GcReport};
use crate::ownership::record::{self, AttachmentRecord, PoolLock, PoolRecord};
use crate::ownership::Garbage;
use crate::ownership::{Census, Scope};
use crate::result::EngineError;

/// What the claim leaves the engine.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The flock on the pool's record (with `run_dir`), held for the engine's life.
    pub lock: Option<PoolLock>,
    /// What a dead owner left and was removed, if anything.
    pub reclaimed: Option<GcReport>,
    /// Names a new slot must not take: others' devices and pins named like slots.
    pub names_taken: BTreeMap<String, String>,
    /// The host namespace's devices once the leftovers are gone.
    pub links: Vec<LinkRecord>,
    /// The recorded attachments kept in place (with `EngineConfig::adopt`).
    pub adopted: Vec<AttachmentRecord>,
}

/// The pool's scope as the engine will use it.
pub(crate) fn scope(config: &EngineConfig) -> Scope {
    Scope {
        prefix: config.prefix.clone(),
        group: config.group,
        netns_dir: config.pin_dir.clone(),
        bpf_pin_dir: config.bpf_pin_dir.clone(),
    }
}

/// Claims and judges the pool of `config` in `host`. A refusal leaves the record as it
/// was found (and no lock file the claim itself made).
pub(crate) fn claim(config: &EngineConfig, host: &HostNs) -> Result<Claimed, EngineError> {
    let mut lock = match &config.run_dir {
        Some(dir) => Some(gc::claim_checked(dir, host, &scope(config))?),
        None => None,
    };
    let found = lock.as_ref().and_then(|l| l.found().cloned());
    match judge(config, host, lock.as_mut(), found.as_ref()) {
        Ok((reclaimed, names_taken, links, adopted)) => Ok(Claimed {
            lock,
            reclaimed,
            names_taken,
            links,
            adopted,
        }),
        Err(e) => {
            if let Some(l) = lock.as_mut().filter(|_| found.is_none()) {
                let _ = l.remove();
            }
            Err(e)
        }
    }
}

type Judged = (
    Option<GcReport>,
    BTreeMap<String, String>,
    Vec<LinkRecord>,
    Vec<AttachmentRecord>,
);

fn judge(
    config: &EngineConfig,
    host: &HostNs,
    lock: Option<&mut PoolLock>,
    found: Option<&PoolRecord>,
) -> Result<Judged, EngineError> {
    let scope = scope(config);
    let census = Census::read(host, &scope, found.cloned()).map_err(gc::GcError::from)?;
    refuse_collisions(config, host, &census, lock.is_some())?;
    let Some(lock) = lock else {
        return Ok((None, census.names_taken(), census.links.clone(), Vec::new()));
    };
    let adopted = if config.adopt {
        adoptable(config, &census, found)
    } else {
        Vec::new()
    };
    let garbage = if adopted.is_empty() {
        census.garbage()
    } else {
        all_but(&census, &adopted)
    };
    let mut reclaimed = None;
    if !garbage.is_empty() {
        let mut report = gc::report(&census, &garbage, false);
        report.errors = gc::apply(
            host,
            &census,
            &garbage,
            lock,
            &mut report,
            gc::Removal::Reclaim,
        );
        if !report.errors.is_empty() {
            return Err(EngineError::Leftovers {
                group: config.group,
                errors: report.errors,
            });
        }
        reclaimed = Some(report);
    }
    let mut rec = PoolRecord::new(&config.prefix, config.group);
    rec.cidr = Some(config.ipv4_pool.to_string());
    rec.netns_dir = census
        .netns_dir
        .clone()
        .filter(|_| config.pin_dir.is_some());
    rec.bpf_pin_dir = config.bpf_pin_dir.clone();
    rec.attachments = adopted.clone();
    lock.write(rec).map_err(gc::GcError::from)?;
    let links = if reclaimed.is_some() {
        host.links()
            .map_err(EngineError::io("dump links of the host namespace"))?
    } else {
        census.links.clone()
    };
    Ok((reclaimed, census.names_taken(), links, adopted))
}

/// The attachments of `found` that are kept in place: see the module's doc.
fn adoptable(
    config: &EngineConfig,
    census: &Census,
    found: Option<&PoolRecord>,
) -> Vec<AttachmentRecord> {
    let Some(found) = found else {
        return Vec::new();
    };
    let cidr = config.ipv4_pool.to_string();
    if census.committed() || found.prefix != config.prefix || found.cidr.as_deref() != Some(&cidr) {
        return Vec::new();
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for a in &found.attachments {
        let key = (a.network.clone(), a.container_id.clone(), a.ifname.clone());
        let host_end = config.check(a.slot_id, 1).is_ok()
            && census
                .host_ends
                .get(&a.slot_id)
                .is_some_and(|l| l.index == a.ifindex && l.name == a.host_ifname);
        let alive = host_end && namespace_lives(a);
        if alive && !ids.contains(&a.slot_id) && !keys.contains(&key) {
            ids.insert(a.slot_id);
            keys.insert(key);
            out.push(a.clone());
        } else {
            tracing::warn!(
                network = %a.network,
                container = %a.container_id,
                ifname = %a.ifname,
                host_end = %a.host_ifname,
                netns = %a.netns.display(),
                "start: not adopted: {}",
                if !host_end {
                    "its host end is gone"
                } else if !alive {
                    "its container's namespace is gone"
                } else {
                    "listed twice"
                }
            );
        }
    }
    out
}

/// Whether the namespace an attachment was made in still lives: its recorded path opens
/// (as an attach target would: never through a final symlink, never a FIFO's or a
/// device's open) to a network namespace with the recorded id. A path of the form
/// `/proc/<pid>/ns/net`, a magic link that only ever leads to a namespace, is followed:
/// while that process lives it is the namespace (the id tells a reused pid).
fn namespace_lives(a: &AttachmentRecord) -> bool {
    use crate::daemon::target::NetnsTarget;
    let target = NetnsTarget::open_path(&a.netns).or_else(|e| {
        if !is_proc_netns_link(&a.netns) {
            return Err(e);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&a.netns)
            .map_err(|source| crate::daemon::target::TargetError::Kernel {
                step: "open",
                source,
            })?;
        NetnsTarget::from_fd(file.into())
    });
    target.is_ok_and(|t| t.id() == a.netns_id)
}

/// Whether `path` is exactly `/proc/<pid>/ns/net`.
fn is_proc_netns_link(path: &std::path::Path) -> bool {
    let parts: Vec<_> = path.components().collect();
    matches!(
        parts.as_slice(),
        [std::path::Component::RootDir, p, pid, ns, net]
            if p.as_os_str() == "proc"
                && pid.as_os_str().to_str().is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                && ns.as_os_str() == "ns"
                && net.as_os_str() == "net"
    )
}

/// All of the pool but the host ends of `kept`: what a start that adopts removes.
fn all_but(census: &Census, kept: &[AttachmentRecord]) -> Garbage {
    let ids: std::collections::BTreeSet<u32> = kept.iter().map(|a| a.slot_id).collect();
    let mut g = census.everything();
    g.whole_pool = false;
    g.host_ends.retain(|l| {
        crate::ownership::host_end_id(l, &census.prefix, census.group)
            .is_none_or(|id| !ids.contains(&id))
    });
    g.kept_slots = ids.len();
    g
}

/// Everything that would make the new pool act on, or look like, what others made.
fn refuse_collisions(
    config: &EngineConfig,
    host: &HostNs,
    census: &Census,
    claimed: bool,
) -> Result<(), EngineError> {
    // A group change acts on every device of its group: a stranger there would be
    // brought up and given the program, so the group is not the pool's to use.
    let in_group = if claimed {
        census.strangers_in_groups.clone()
    } else {
        // Without a record nothing tells a dead owner's host ends from a live one's: the
        // caller answers for the group, and any device in it is in the way.
        census
            .strangers_in_groups
            .iter()
            .chain(census.host_ends.values())
            .cloned()
            .collect()
    };
    if let Some(first) = in_group.first() {
        return Err(EngineError::GroupInUse {
            group: config.group,
            count: in_group.len(),
            first: first.name.clone(),
        });
    }
    if census.committed() && census.holds_anything() {
        return Err(EngineError::PoolInUse {
            prefix: config.prefix.clone(),
            group: config.group,
            slots: census.host_ends.len().max(census.pins.len()),
        });
    }
    if let Some(dir) = &census.bpf_not_ours {
        return Err(EngineError::Taken {
            what: format!(
                "counters pin directory {} exists and this pool's record does not name it",
                dir.display()
            ),
        });
    }
    let mut clashes = Vec::new();
    if let Some(run_dir) = &config.run_dir {
        let others = record::other_pools(run_dir, host, config.group).map_err(EngineError::io(
            format!("list pool records in {}", run_dir.display()),
        ))?;
        for (g, r) in others {
            let theirs: Option<crate::Ipv4Cidr> = r.cidr.as_deref().and_then(|c| c.parse().ok());
            if let Some(theirs) = theirs {
                let (net, len) = theirs.network_and_len();
                if config.ipv4_pool.overlaps(net, len) {
                    clashes.push(format!("pool {}/group {g} (range {theirs})", r.prefix));
                }
            }
        }
    }
    clashes.extend(
        census
            .address_clashes(host, config.ipv4_pool)
            .map_err(EngineError::io(
                "dump addresses and routes of the host namespace",
            ))?,
    );
    if !clashes.is_empty() {
        return Err(EngineError::Taken {
            what: format!(
                "range {} overlaps {}; choose another --cidr",
                config.ipv4_pool,
                clashes.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_proc_netns_link;
    use std::path::Path;

    #[test]
    fn only_a_pids_netns_link_is_followed() {
        assert!(is_proc_netns_link(Path::new("/proc/42/ns/net")));
        for p in [
            "/proc/self/ns/net",
            "/proc/42/ns/mnt",
            "/proc/42/root/run/fifo",
            "/proc/42/ns/net/x",
            "/run/netns/c0",
            "proc/42/ns/net",
        ] {
            assert!(!is_proc_netns_link(Path::new(p)), "{p}");
        }
    }
}
