//! netslot: provision, list and remove pools of standard network slots from the shell.
//! Thin over the library: every kernel action goes through `netslot::Engine` / `HostNs`.

mod doctor;
mod down;
mod error;
mod gc;
mod generate;
mod hold_arg;
mod kind_arg;
mod logging;
mod output;
mod serve;
mod signals;
mod stats;
mod status;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

/// Provision thousands of Linux network slots with as few RTNL acquisitions and system
/// calls as the kernel allows.
///
/// A slot is a network namespace with `lo` up, a veth pair created in place (`eth0` inside
/// the slot, `<prefix><id>` in the host namespace, in the pool's device group), a /31
/// address on each end and a default route in the slot via the host end.
///
/// The pool is identified by its prefix and device group. Every command reads it back from
/// the kernel and touches only what the kernel proves the pool made: host ends by their
/// veth kind, device group, name AND the pool's MAC; pinned namespaces by the namespace
/// id the pool's record gave them. A name that merely matches is never enough.
/// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), except the read-only `status` and
/// `stats` (whose bpf map reads the kernel may still reserve to root).
#[derive(Debug, Parser)]
#[command(name = "netslot", version, propagate_version = true, after_help = error::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provision slots. They outlive the process: each namespace is pinned at
    /// <netns-dir>/<name>, so `ip netns exec <name> ...` works. With --hold they are kept
    /// only until the process is interrupted (Ctrl-C / SIGTERM), then torn down.
    Up(up::UpArgs),
    /// Remove every slot of a pool: delete its host ends (by device group where a group
    /// holds nothing else) and unpin its namespaces; the kernel destroys the namespaces in
    /// bulk. Refuses while a live process owns the pool.
    Down(down::DownArgs),
    /// Remove what of a pool no live process owns: everything of a pool whose `up` or `down`
    /// died (no committed record), or the incomplete slots of a committed pool (a pin
    /// without its host end, a host end without its pin, a pin made halfway). Only what
    /// the kernel proves the pool made; devices and pins of others are listed, never
    /// touched.
    /// Refuses while a live process (`up --hold`, `up`, `down`) owns the pool.
    Gc(gc::GcArgs),
    /// List the slots of a pool as the kernel reports them.
    Status(status::StatusArgs),
    /// Per-slot packets and bytes counted by the counters program (XDP, or tc with
    /// `up --attach tc-block`) on each host end (traffic from the slot), read from the
    /// program's map pinned under --bpf-dir by `up`.
    Stats(stats::StatsArgs),
    /// Run the daemon: serve slots over a Unix socket (JSON lines, see docs/serve.md),
    /// coalescing concurrent requests into engine batches; `netslot-cni` talks to it.
    Serve(serve::ServeArgs),
    /// Check the host's kernel limits for N slots (neighbour table, conntrack, open files,
    /// namespaces, bpffs, kernel features): per limit its value, what breaks at N and the
    /// sysctl or setting that fixes it. Read-only. Per-process and per-namespace limits are
    /// those of the process and namespace doctor runs in: run it where `up` will run.
    /// Exit code: 0 when every check is ok, 1 when any is warn or fail; an error that
    /// stops the reading exits as `netslot --help` lists (e.g. 4, a kernel read failed).
    Doctor(doctor::DoctorArgs),
    /// Write the shell completions and man pages (used by `make install`).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// What identifies a pool; shared by every subcommand.
#[derive(Debug, Clone, Args)]
struct PoolArgs {
    /// Name prefix of host ends and pinned namespaces: slots are <prefix>0, <prefix>1, ...
    #[arg(long, default_value = "ns")]
    prefix: String,
    /// Base device group of the pool (1..=65535). The pool owns every device in it and in
    /// its sub-batch groups GROUP + k * 65536: each sub-batch of host ends is a group of
    /// its own, brought up by one group change sized to --max-rtnl-hold.
    #[arg(long, default_value_t = netslot::config::DEFAULT_GROUP)]
    group: u32,
    /// Directory where slot namespaces are pinned (bind mounts), as `ip netns` uses.
    #[arg(long, default_value = "/run/netns")]
    netns_dir: PathBuf,
    /// bpffs directory under which `up` pins the counters (XDP or tc) as <bpf-dir>/<group>.
    #[arg(long, default_value = "/sys/fs/bpf/netslot")]
    bpf_dir: PathBuf,
    /// Directory of pool ownership records: a live owner holds a flock on
    /// <run-dir>/net<netns-inode>-group<group>.lock (see `netslot gc --help`).
    #[arg(long, default_value = netslot::ownership::gc::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Namespace holding the host ends (e.g. /run/netns/NAME); default: the current one.
    #[arg(long)]
    host_netns: Option<PathBuf>,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    signals::default_sigpipe();
    let json = error::json_requested();
    let cli = Cli::try_parse().unwrap_or_else(|e| error::usage_exit(e, json));
    logging::init(matches!(cli.command, Command::Serve(_)));
    let result: Result<ExitCode, CliError> = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Down(args) => down::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Status(args) => status::run(args),
        Command::Stats(args) => stats::run(args),
        // serve reports plain text: its root check is made here to keep its exit code.
        Command::Serve(args) => {
            require_root().and_then(|()| serve::run(args).map_err(CliError::from))
        }
        Command::Generate(args) => generate::run(args).map_err(CliError::from),
        Command::Doctor(args) => doctor::run(args).map_err(CliError::from),
    };
    result.unwrap_or_else(|e| e.report(json))
}

/// Refuses to start without root: every operation needs CAP_NET_ADMIN and CAP_SYS_ADMIN.
fn require_root() -> Result<(), CliError> {
    // std has no euid query; /proc/self/status avoids an unsafe libc call.
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(CliError::io("read /proc/self/status"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .ok_or_else(|| {
            CliError::new(
                error::Kind::Kernel,
                "cannot read the effective uid from /proc/self/status",
            )
        })?;
    if euid != "0" {
        return Err(CliError::new(
            error::Kind::Permission,
            format!(
                "must run as root (effective uid is {euid}): creating namespaces and devices needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
            ),
        ));
    }
    Ok(())
}

impl PoolArgs {
    /// Where this pool's XDP program and counters map are pinned.
    fn bpf_pin_dir(&self) -> PathBuf {
        self.bpf_dir.join(self.group.to_string())
    }
}

impl PoolArgs {
    /// Where this pool's objects live.
    fn scope(&self) -> netslot::ownership::Scope {
        netslot::ownership::Scope {
            prefix: self.prefix.clone(),
            group: self.group,
            netns_dir: Some(self.netns_dir.clone()),
            bpf_pin_dir: Some(self.bpf_pin_dir()),
        }
    }
}

/// Opens the pool's host namespace.
fn open_host(pool: &PoolArgs) -> Result<netslot::HostNs, CliError> {
    match &pool.host_netns {
        Some(p) => netslot::HostNs::open(p).map_err(host_netns_error(p)),
        None => netslot::HostNs::current().map_err(CliError::io("cannot open the host namespace")),
    }
}

/// Opens the pool's host namespace for dumps only (`status`, `stats`): no privilege needed
/// in the caller's own namespace; entering another (--host-netns) needs CAP_SYS_ADMIN.
fn open_host_for_reading(pool: &PoolArgs) -> Result<netslot::HostNs, CliError> {
    match &pool.host_netns {
        Some(p) => netslot::HostNs::open_for_reading(p).map_err(host_netns_error(p)),
        None => netslot::HostNs::current_for_reading()
            .map_err(CliError::io("cannot open the host namespace")),
    }
}

/// A --host-netns that is not there is a usage error; the rest is the kernel's.
fn host_netns_error(p: &std::path::Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |e| {
        let message = format!("cannot open host namespace {}: {e}", p.display());
        match e.kind() {
            std::io::ErrorKind::NotFound => CliError::usage(message),
            _ => CliError::io(format!("cannot open host namespace {}", p.display()))(e),
        }
    }
}
