//! serve: the `netslot serve` daemon: a Unix socket speaking the JSON-lines protocol of
//! `netslot::daemon::protocol`, one thread per connection (`conn`, under the cap of `conns`), and
//! one engine thread that coalesces concurrent requests into engine batches (`rounds`).
//! See docs/serve.md, "Security model" for who may do what and every limit.

mod activation;
mod conn;
mod conns;
mod metrics;
mod peer;
mod rounds;
mod warm;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use netslot::daemon::protocol::{ErrorCode, Response, DEFAULT_SOCKET};
use netslot::{Engine, EngineConfig, Ipv4Cidr};

use crate::signals::Blocked;
use conn::Context;
use conns::Conns;
use rounds::{RoundConfig, Rounds, Work};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Unix socket to listen on (its directory is created).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also serve peers whose uid or (primary or supplementary) group is this gid; uid 0
    /// is always served. The socket file is given this group.
    #[arg(long)]
    allow_gid: Option<u32>,
    /// Permission bits of the socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// How long the first request of a round waits for others to join its engine batch,
    /// in microseconds.
    #[arg(long, default_value_t = 200)]
    window_us: u64,
    /// Most requests coalesced into one round (one engine batch per kind).
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// Refill the warm pool (pre-provisioned slots for `acquire`) below this many…
    #[arg(long, default_value_t = 0)]
    pool_low: usize,
    /// …up to this many.
    #[arg(long, default_value_t = 0)]
    pool_high: usize,
    /// Destroy every released slot instead of giving it back to the warm pool. By
    /// default a released slot is recycled when the kernel shows it exactly as the pool
    /// made it (devices, addresses, routes, rules, neighbour entries; no process still
    /// inside its namespace, no other mount of it): its counters are read and reset and
    /// the next `acquire` gets it without any kernel work (up to `--pool-high` slots are
    /// kept; past it they are destroyed). A slot a tenant changed is
    /// destroyed and replaced. Choose this where tenants may keep an fd of the
    /// namespace or mount it in another mount namespace, which the check cannot see.
    #[arg(long)]
    no_recycle: bool,
    /// Directory where warm-pool slots' namespaces are pinned.
    #[arg(long, default_value = "/run/netslot/slots")]
    pool_dir: PathBuf,
    /// Name prefix of host ends: slot k's host end is <prefix><k>.
    #[arg(long, default_value = "nsl")]
    prefix: String,
    /// Base device group of the host ends (1..=65535); its sub-batch groups are
    /// GROUP + k * 65536. The default differs from `netslot up`'s, so the daemon and the
    /// CLI never share a pool. The daemon holds the pool's ownership record for its whole
    /// life (so `netslot gc`, `netslot down` and a second daemon refuse to touch it) and
    /// lists its attachments there; on start it adopts the recorded attachments whose
    /// container namespace still lives, and removes only what else the kernel proves an
    /// earlier run of the same pool left (see `netslot gc --help`).
    #[arg(long, default_value_t = netslot::config::DEFAULT_DAEMON_GROUP)]
    group: u32,
    /// Directory of pool ownership records (see `netslot gc --help`).
    #[arg(long, default_value = netslot::ownership::record::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Longest RTNL hold (ms) one batch's group change may cause; host ends are split
    /// into sub-batches that fit it (see `netslot up --help`). `unbounded`: one group
    /// change per batch.
    #[arg(long, default_value = "5", value_parser = crate::hold_arg::parse_hold)]
    max_rtnl_hold: crate::hold_arg::HoldBudgetArg,
    /// IPv4 pool: slot k gets the k-th /31 (host end even, container end odd). The default
    /// differs from `netslot up`'s; a range that overlaps another pool's, or an address or
    /// route already on the host, is refused at start.
    #[arg(long, default_value = netslot::config::DEFAULT_DAEMON_IPV4_POOL)]
    cidr: Ipv4Cidr,
    /// MTU of both veth ends.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Do not attach the XDP packet/byte counters to the host ends.
    #[arg(long)]
    no_xdp: bool,
    /// On SIGTERM/SIGINT leave every slot in place: the next start of the same pool
    /// adopts the attachments (as it adopts a killed run's) and removes the warm pool.
    #[arg(long)]
    keep_on_exit: bool,
    /// Most connections open at once. Over it, a new connection replaces the one idle
    /// the longest; if every connection is busy with a request, it gets one `busy`
    /// answer and is closed.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// A connection that sends no complete request line for this long (from its start or
    /// its last answer) is closed; also the longest an answer may wait to be read.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,
    /// Most attachments one uid other than 0 may hold at once (uid 0 is exempt).
    #[arg(long, default_value_t = 256)]
    max_attachments_per_uid: usize,
    /// Most warm-pool slots one uid other than 0 may hold (acquired, not yet released;
    /// uid 0 is exempt).
    #[arg(long, default_value_t = 16)]
    max_acquired_per_uid: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477): requests and
    /// engine batches by kind, request latency histograms, round sizes, the warm pool's
    /// level, errors by operation and code, slot failures by step and errno, and the
    /// estimated RTNL hold of the engine's group changes. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    // `--kind microvm`: every warm-pool slot holds a tap for a microVM guest, and each
    // `acquire` answer carries the slot's guest network (`microvm`, with the body of
    // Firecracker's `PUT /network-interfaces/eth0`). Attach requests are refused: a
    // container's namespace holds no tap.
    #[command(flatten)]
    kind: crate::kind_arg::KindArgs,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 660"))
}

pub(crate) fn run(args: ServeArgs) -> Result<ExitCode, String> {
    crate::require_root()?;
    // Before any thread exists: it edits the environment.
    let activated = activation::listener();
    let signals = Blocked::termination();
    let config = EngineConfig {
        prefix: args.prefix.clone(),
        group: args.group,
        ipv4_pool: args.cidr,
        mtu: args.mtu,
        xdp_counters: !args.no_xdp,
        pin_dir: Some(args.pool_dir.clone()),
        max_rtnl_hold: args.max_rtnl_hold.0,
        run_dir: Some(args.run_dir.clone()),
        adopt: true,
        kind: args.kind.slot_kind()?,
        ..Default::default()
    };
    let microvm = config.kind.tap().is_some();
    config.check(0, 1).map_err(|e| e.to_string())?;
    // Claims the pool for the daemon's life; adopts the attachments an earlier run
    // recorded that still serve a live container, and removes the rest of what it left.
    let engine = Engine::new(config).map_err(|e| format!("start the engine: {e}"))?;
    let removed = engine.reclaimed().map_or(0, |r| r.host_ends.len());
    if let Some(r) = engine.reclaimed() {
        tracing::warn!(
            host_ends = r.host_ends.len(),
            namespaces = r.namespaces.len(),
            group = r.group,
            "removed what an earlier run of this pool left and no live attachment uses"
        );
    }
    // Socket activation (packaging/systemd/netslot.socket): systemd owns the file.
    let (listener, own_socket) = match activated {
        Some(l) => (l, false),
        None => (bind(&args)?, true),
    };

    let (tx, rx) = mpsc::channel::<Work>();
    let warm = Arc::new(warm::Warm::new(args.max_acquired_per_uid));
    let rounds = Rounds::new(
        engine,
        RoundConfig {
            window: Duration::from_micros(args.window_us),
            max_round: args.max_batch.max(1),
            pool_low: args.pool_low,
            pool_high: args.pool_high.max(args.pool_low),
            keep_on_exit: args.keep_on_exit,
            recycle: !args.no_recycle,
            max_attachments_per_uid: args.max_attachments_per_uid,
        },
        warm.clone(),
        removed,
    );
    let adopted = rounds.attachment_count();
    if adopted > 0 {
        tracing::info!(
            attachments = adopted,
            "adopted the attachments an earlier run of this pool left"
        );
    }
    if let Some(addr) = args.metrics {
        let bound = metrics::serve(addr).map_err(|e| format!("serve metrics on {addr}: {e}"))?;
        tracing::info!(%bound, "metrics at http://{bound}/metrics");
    }
    raise_fd_limit(args.max_connections);
    let ctx = Arc::new(Context {
        allow_gid: args.allow_gid,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        forbidden: forbidden_targets(),
        warm,
        pool_low: args.pool_low,
        microvm,
    });
    let conns = Conns::new(args.max_connections);
    let engine_thread = std::thread::Builder::new()
        .name("netslot-engine".into())
        .spawn(move || rounds.serve(rx))
        .map_err(|e| format!("start the engine thread: {e}"))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let listener_handle = listener
        .try_clone()
        .map_err(|e| format!("duplicate the listening socket: {e}"))?;
    let acceptor = {
        let tx = tx.clone();
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("netslot-accept".into())
            .spawn(move || accept_loop(listener, tx, stopping, ctx, conns))
            .map_err(|e| format!("start the accept thread: {e}"))?
    };
    tracing::info!(socket = %args.socket.display(), removed, adopted, "serving");
    eprintln!("netslot serve: listening on {}", args.socket.display());

    let sig = signals.wait();
    tracing::info!(
        sig,
        "stopping: answering queued requests, then tearing down"
    );
    stopping.store(true, Ordering::SeqCst);
    // Wake the accept loop so it sees the flag.
    if let Err(e) = peer::stop_accepting(&listener_handle) {
        tracing::warn!("shutdown of the listening socket: {e}");
    }
    let _ = acceptor.join();
    let _ = tx.send(Work::Shutdown);
    drop(tx);
    let _ = engine_thread.join();
    if own_socket {
        let _ = std::fs::remove_file(&args.socket);
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds the socket: removes a stale file (nobody listening), refuses a live one, and
/// sets the mode and group.
fn bind(args: &ServeArgs) -> Result<UnixListener, String> {
    let path = &args.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use: another daemon is serving",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(args.socket_mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(gid) = args.allow_gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("chgrp {} {gid}: {e}", path.display()))?;
    }
    Ok(listener)
}

/// The namespaces that are never attach targets: the daemon's own network namespace
/// (where the host ends live) and the host's (PID 1's), by id.
fn forbidden_targets() -> Vec<(u64, &'static str)> {
    let mut ids = Vec::new();
    for (path, what) in [
        ("/proc/self/ns/net", "the daemon's own network namespace"),
        ("/proc/1/ns/net", "the host's network namespace (PID 1's)"),
    ] {
        match netslot::daemon::target::netns_id_at(Path::new(path)) {
            Ok(id) => ids.push((id, what)),
            Err(e) => tracing::warn!("{path}: {e}: it cannot be refused as a target"),
        }
    }
    ids
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: each connection holds an fd, and
/// systemd's default soft limit (1024) is near the connection cap's needs.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum && lim.maximum.is_some() {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("raise RLIMIT_NOFILE: {e}");
        }
    }
    let have = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Each connection holds one fd, and an attach briefly one more; the engine ~64.
    if have < (2 * max_connections as u64) + 64 {
        tracing::warn!(
            nofile = have,
            max_connections,
            "RLIMIT_NOFILE is low for --max-connections"
        );
    }
}

fn accept_loop(
    listener: UnixListener,
    tx: Sender<Work>,
    stopping: Arc<AtomicBool>,
    ctx: Arc<Context>,
    conns: Arc<Conns>,
) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            // EMFILE and friends: back off instead of spinning.
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = match peer::credentials(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("SO_PEERCRED: {e}");
                continue;
            }
        };
        let stream = Arc::new(stream);
        let Some(admitted) = conns.admit(stream.clone(), peer.uid) else {
            refuse_busy(&stream, conns.len());
            continue;
        };
        if let Some(uid) = admitted.evicted {
            tracing::info!(uid, "closed the longest-idle connection to make room");
        }
        let (tx, ctx) = (tx.clone(), ctx.clone());
        let slot = admitted.slot;
        let spawned = std::thread::Builder::new()
            .name("netslot-conn".into())
            .spawn(move || conn::serve(stream, slot, peer, ctx, tx));
        if let Err(e) = spawned {
            tracing::error!("cannot start a connection thread: {e}");
        }
    }
}

/// One `busy` answer, written without ever blocking the accept loop, then the close.
fn refuse_busy(stream: &UnixStream, live: usize) {
    tracing::warn!(live, "refused a connection: every connection is busy");
    let r = Response::err(
        0,
        ErrorCode::Busy,
        format!("all {live} connections are busy with requests; try again later"),
    );
    let mut line = serde_json::to_string(&r).expect("responses serialize");
    line.push('\n');
    if stream.set_nonblocking(true).is_ok() {
        let mut out = stream;
        let _ = out.write_all(line.as_bytes());
    }
}
