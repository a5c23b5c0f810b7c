//! gc: removes what of a pool no live owner holds: the whole pool when its record is not
//! `committed`, only its incomplete slots when it is.
//! Judging ownership is `ownership`'s, claiming the pool and its record `record`'s; this
//! module puts them together for `netslot gc`, `netslot up` and `Engine::new`.
//!
//! A kill at any instant leaves a record from which the next gc removes only what is
//! provably garbage: repairing a committed pool never changes its phase (a gc killed
//! halfway leaves it `committed`, and the next one repairs the rest), and the record's
//! list of pins is rewritten, atomically, only after the pins it drops are gone.

use std::path::Path;

use serde::Serialize;

use crate::host::HostNs;
use crate::ownership::record::{PoolLock, PoolRecord};
use crate::ownership::{Census, CensusError, Garbage};

pub use crate::ownership::record::{PoolPhase, RecordError, DEFAULT_RUN_DIR};
pub use crate::ownership::Scope;

/// Why gc (or a claim on a pool) could not go on; nothing was removed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A live process owns the pool, or its record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The kernel state could not be read.
    #[error(transparent)]
    Census(#[from] CensusError),
    /// The group's record belongs to a pool of another prefix.
    #[error("group {group} is the pool of prefix {:?} (record {path}), not of {:?}: name that pool (--prefix {}) or choose another --group", theirs, ours, theirs)]
    OtherPool {
        /// The group.
        group: u32,
        /// The prefix the record names.
        theirs: String,
        /// The prefix asked for.
        ours: String,
        /// The record file.
        path: String,
    },
    /// The pool pinned its namespaces in another directory than the one given.
    #[error("pool {prefix}/group {group} pinned its namespaces in {recorded}, not in {given}: pass --netns-dir {recorded}")]
    OtherDir {
        /// The prefix.
        prefix: String,
        /// The group.
        group: u32,
        /// Where the record says the pins are.
        recorded: String,
        /// Where the caller looked.
        given: String,
    },
}

/// A host end named in a report.
#[derive(Debug, Clone, Serialize)]
pub struct GarbageLink {
    /// Interface name.
    pub name: String,
    /// ifindex.
    pub index: u32,
}

/// What gc found (and, unless it was a dry run, removed).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// The pool's prefix.
    pub prefix: String,
    /// The pool's group.
    pub group: u32,
    /// What the pool's record said (None: no record).
    pub record: Option<PoolPhase>,
    /// Whether the whole pool was garbage (no committed record) or only incomplete slots.
    pub whole_pool: bool,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Host ends removed (or to remove).
    pub host_ends: Vec<GarbageLink>,
    /// Whether every host end went by group deletes (each group held only the pool's
    /// devices); else some went one by one.
    pub by_group_delete: bool,
    /// Namespace pins (bind mounts) removed.
    pub namespaces: Vec<String>,
    /// Pin files made halfway (named by the record, no mount), removed.
    pub stale_files: Vec<String>,
    /// The counters pin directory, when removed.
    pub bpf_pins: Option<String>,
    /// Complete slots left standing (committed pools only).
    pub kept_slots: usize,
    /// Devices in the pool's groups that the pool did not make: reported, never touched.
    pub foreign_in_group: Vec<String>,
    /// Pin entries named like the pool's slots that the pool did not make: reported,
    /// never touched.
    pub not_the_pools: Vec<String>,
    /// What could not be removed: each names the object, the operation and the error.
    pub errors: Vec<String>,
}

impl GcReport {
    /// Whether anything was (or would be) removed.
    pub fn found_anything(&self) -> bool {
        !self.host_ends.is_empty()
            || !self.namespaces.is_empty()
            || !self.stale_files.is_empty()
            || self.bpf_pins.is_some()
    }
}

/// Refuses a record that belongs to a pool of another prefix, or that pinned elsewhere.
fn check_record(scope: &Scope, record: Option<&PoolRecord>, path: &Path) -> Result<(), GcError> {
    let Some(r) = record else { return Ok(()) };
    if r.prefix != scope.prefix {
        return Err(GcError::OtherPool {
            group: scope.group,
            theirs: r.prefix.clone(),
            ours: scope.prefix.clone(),
            path: path.display().to_string(),
        });
    }
    if let (Some(recorded), Some(given)) = (&r.netns_dir, &scope.netns_dir) {
        let given = crate::ownership::canonical_dir(given).unwrap_or_else(|_| given.clone());
        if !r.pins.is_empty() && *recorded != given {
            return Err(GcError::OtherDir {
                prefix: r.prefix.clone(),
                group: scope.group,
                recorded: recorded.display().to_string(),
                given: given.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Claims the pool in `run_dir`: refused while a live process owns it, or when its record
/// is another pool's (then the lock file the claim itself made is removed again).
pub(crate) fn claim_checked(
    run_dir: &Path,
    host: &HostNs,
    scope: &Scope,
) -> Result<PoolLock, GcError> {
    let mut lock = PoolLock::claim(run_dir, host, scope.group)?;
    let found = lock.found();
    if let Err(e) = check_record(scope, found, &lock.paths().record) {
        if found.is_none() {
            let _ = lock.remove();
        }
        return Err(e);
    }
    Ok(lock)
}

/// Claims the pool (refusing if a live process owns it, or if its record is another
/// pool's), judges it once, and removes what is garbage unless `dry_run`. The record goes
/// when nothing of the pool remains; a committed pool with complete slots stays
/// committed, its record naming the pins that remain.
pub fn collect(
    host: &HostNs,
    run_dir: &Path,
    scope: &Scope,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let mut lock = claim_checked(run_dir, host, scope)?;
    let found = lock.found().cloned();
    let census = Census::read(host, scope, found.clone())?;
    let garbage = census.garbage();
    let mut report = report(&census, &garbage, dry_run);
    if dry_run {
        if found.is_none() {
            let _ = lock.remove(); // the claim made the lock file; leave nothing
        }
        return Ok(report);
    }
    report.errors = apply(host, &census, &garbage, &mut lock, &mut report, Removal::Gc);
    Ok(report)
}

/// Removes the whole pool, live owner refusing: claims it, marks its record `removing`
/// (so that if this process dies halfway, gc removes the rest), then removes every object
/// the kernel proves is the pool's, and the record last. What `netslot down` does.
pub fn remove_pool(host: &HostNs, run_dir: &Path, scope: &Scope) -> Result<GcReport, GcError> {
    let mut lock = claim_checked(run_dir, host, scope)?;
    let census = Census::read(host, scope, lock.found().cloned())?;
    let garbage = census.everything();
    let mut report = report(&census, &garbage, false);
    if !garbage.is_empty() {
        lock.set_phase(&scope.prefix, PoolPhase::Removing)?;
    }
    report.errors = apply(
        host,
        &census,
        &garbage,
        &mut lock,
        &mut report,
        Removal::Down,
    );
    Ok(report)
}

/// Who asks [`apply`] to remove: the words of its log line, and what becomes of the claim
/// once the pool is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// `netslot gc`: then remove the record and the lock file (nobody owns the pool).
    Gc,
    /// `netslot down`: the same.
    Down,
    /// An engine's start, reclaiming what a dead owner left: keep the record and the lock
    /// file, the caller goes on owning the pool and writes a new record. (Unlinking the
    /// lock file under a holder would let a second claimer lock a new file.)
    Reclaim,
}

impl Removal {
    fn message(self) -> &'static str {
        match self {
            Removal::Gc => "gc: removed what no live owner holds",
            Removal::Down => "down: removed the pool",
            Removal::Reclaim => "start: removed what a dead owner of the pool left",
        }
    }
}

/// At most `max` names, then how many more ("-" for none): a log line names what was
/// removed without growing with the pool.
fn some_names<'a>(names: impl IntoIterator<Item = &'a str>, max: usize) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        return "-".into();
    }
    let mut text = names[..names.len().min(max)].join(" ");
    if names.len() > max {
        text.push_str(&format!(" (+{} more)", names.len() - max));
    }
    text
}

/// Removes `garbage` and brings the record in line; returns the errors.
pub(crate) fn apply(
    host: &HostNs,
    census: &Census,
    garbage: &Garbage,
    lock: &mut PoolLock,
    report: &mut GcReport,
    why: Removal,
) -> Vec<String> {
    let removal = census.remove(host, garbage);
    report.by_group_delete = !garbage.host_ends.is_empty() && removal.one_by_one == 0;
    let mut errors = removal.errors;
    if !garbage.is_empty() {
        // Every removal of kernel state is logged at warn, naming what went (the CLI's
        // default level shows it); what could not be removed is in `errors`.
        const NAMES: usize = 16;
        let host_ends = some_names(report.host_ends.iter().map(|l| l.name.as_str()), NAMES);
        let pins = some_names(
            report
                .namespaces
                .iter()
                .chain(&report.stale_files)
                .map(String::as_str),
            NAMES,
        );
        // As str values the lists are quoted: host_ends="ns0 ns1".
        tracing::warn!(
            prefix = %census.prefix,
            group = census.group,
            whole_pool = garbage.whole_pool,
            host_ends = host_ends.as_str(),
            pins = pins.as_str(),
            counters = report.bpf_pins.as_deref().unwrap_or("-"),
            errors = errors.len(),
            "{}",
            why.message()
        );
    }
    let pool_gone = garbage.kept_slots == 0 && errors.is_empty();
    if pool_gone {
        if why != Removal::Reclaim {
            if let Err(e) = lock.remove() {
                errors.push(e.to_string());
            }
        }
    } else if let Some(mut r) = lock.current().cloned() {
        // Drop the pins that are gone from the record, after they are gone.
        let gone: Vec<&str> = garbage
            .pins
            .iter()
            .chain(&garbage.stale_pins)
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        let before = r.pins.len();
        r.pins.retain(|p| !gone.contains(&p.name.as_str()));
        if r.pins.len() != before {
            if let Err(e) = lock.write(r) {
                errors.push(e.to_string());
            }
        }
    }
    errors
}

pub(crate) fn report(census: &Census, garbage: &Garbage, dry_run: bool) -> GcReport {
    let names = |v: &[std::path::PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
    GcReport {
        prefix: census.prefix.clone(),
        group: census.group,
        record: census.record.as_ref().map(|r| r.phase),
        whole_pool: garbage.whole_pool,
        dry_run,
        host_ends: garbage
            .host_ends
            .iter()
            .map(|l| GarbageLink {
                name: l.name.clone(),
                index: l.index,
            })
            .collect(),
        by_group_delete: false,
        namespaces: names(&garbage.pins),
        stale_files: names(&garbage.stale_pins),
        bpf_pins: garbage.bpf_pins.as_ref().map(|p| p.display().to_string()),
        kept_slots: garbage.kept_slots,
        foreign_in_group: census
            .strangers_in_groups
            .iter()
            .map(|l| l.name.clone())
            .collect(),
        not_the_pools: names(&census.strangers_pinned),
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::some_names;

    #[test]
    fn log_lines_name_a_bounded_number_of_objects() {
        assert_eq!(some_names([], 3), "-");
        assert_eq!(some_names(["ns0", "ns1"], 3), "ns0 ns1");
        assert_eq!(some_names(["a", "b", "c", "d", "e"], 3), "a b c (+2 more)");
    }
}
