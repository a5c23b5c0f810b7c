//! netslot-cni: a CNI plugin (ADD, DEL, CHECK, GC, STATUS, VERSION; cniVersion 0.3.0 to
//! 1.1.0) whose slots are made by the `netslot serve` daemon, which coalesces concurrent
//! ADDs into engine batches.
//!
//! The runtime runs this binary once per operation with CNI_* variables and the network
//! configuration on stdin; the result (or a CNI error) goes to stdout. Every operation
//! is one request to the daemon over its Unix socket (`socket` in the configuration,
//! default /run/netslot/netslot.sock). With no daemon, ADD/CHECK/GC fail with code 11
//! ("try again later", the socket path in `msg`, the OS error only in `details`) and
//! STATUS with 50; DEL succeeds (nothing can be left: a daemon
//! removes every leftover of its group when it starts).
//!
//! Attachments are the CNI triple (network `name`, CNI_CONTAINERID, CNI_IFNAME): every
//! request carries the configuration's `name`, so GC of one network never removes
//! another's. Only a container's first netslot interface gets the default route.
//!
//! The configuration's `mtu` and a container-end MAC (`runtimeConfig.mac`, `args.cni.mac`
//! or `MAC=` in CNI_ARGS) are honoured, `dns` is echoed in the result, and capabilities
//! the plugin lacks are refused with code 7 by ADD and CHECK (`netslot::cni::conf`); DEL
//! refuses nothing.
//!
//! With an `ipam` section, ADD, CHECK and DEL first run the IPAM plugin it names (`ipam`):
//! the container end takes the IPv4 address of its ADD result instead of the daemon's
//! /31, the host end its gateway as a /32 with a host route to the container, as the
//! reference `ptp` plugin does (`netslot::cni::ipam`). An ADD that fails after the IPAM
//! ADD runs the IPAM DEL, so no lease is left; DEL removes the attachment, then runs the
//! IPAM DEL.
//!
//! ADD and CHECK first open CNI_NETNS themselves, with the runtime's own permissions: a
//! path that is missing, not permitted or not a network namespace is code 3 before the
//! daemon (which runs as root) is asked, so an error tells the caller only what it could
//! learn by opening the path itself. What an answer of the daemon means (result or error,
//! and never a panic, whatever the bytes) is `netslot::cni::reply`; the result's format per
//! version, which commands each version has, and CHECK's comparison of `prevResult` with
//! the kernel are `netslot::cni::result`.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use netslot::cni;
use netslot::cni::reply::{Asked, CniError, Code, Outcome, SPEC_VERSION};
use netslot::cni::result::{Seen, Version, SUPPORTED};
use netslot::daemon::client::{self, ClientError};
use netslot::daemon::protocol::{
    AttachmentKey, Ipv4Request, Ipv6Request, Operation, DEFAULT_SOCKET,
};

mod ipam;

fn main() -> ExitCode {
    // Run by hand (no CNI_COMMAND), `--version` answers as command-line tools do; runtimes
    // ask with CNI_COMMAND=VERSION, answered below.
    let by_hand = std::env::var_os("CNI_COMMAND").is_none();
    if by_hand
        && std::env::args()
            .nth(1)
            .is_some_and(|a| a == "--version" || a == "-V")
    {
        println!("netslot-cni {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    match run(&command) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}

fn run(command: &str) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        // The runtime writes {"cniVersion": ...} on stdin; read it so its write never
        // meets a closed pipe. Every version gets the same answer.
        let _ = std::io::stdin().read_to_string(&mut String::new());
        return Ok(Some(json!({
            "cniVersion": SPEC_VERSION,
            "supportedVersions": SUPPORTED,
        })));
    }
    let (conf, raw) = read_config()?;
    let version = conf["cniVersion"].as_str().unwrap_or_default().to_owned();
    let Some(spoken) = Version::parse(&version) else {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {version} is not supported"),
        )
        .details(format!("supported: {}", SUPPORTED.join(", "))));
    };
    if !spoken.has_command(command) {
        let since = Version::first_with(command);
        let mut e = CniError::new(
            Code::IncompatibleVersion,
            format!("{command} is a CNI {since} command; cniVersion {version} has no {command}"),
        );
        e.cni_version = version;
        return Err(e);
    }
    let socket = conf["socket"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut out = match command {
        "ADD" => add(&conf, &raw, &socket),
        "DEL" => del(&conf, &raw, &socket),
        "CHECK" => check(&conf, &raw, &socket),
        "GC" => gc(&conf, &socket),
        "STATUS" => status(&socket),
        "" => Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_COMMAND {other} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    };
    if let Err(e) = &mut out {
        e.cni_version = version;
    }
    out
}

/// The configuration on stdin, parsed, and its bytes (which an IPAM plugin gets as they
/// are).
fn read_config() -> Result<(Value, Vec<u8>), CniError> {
    // Bytes, not text: content that is not UTF-8 is "failed to decode" (6), and only a
    // failed read is an I/O failure (5).
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(Code::Io, format!("reading the configuration on stdin: {e}")))?;
    let conf: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("the configuration on stdin is not JSON: {e}"),
        )
    })?;
    if !conf.is_object() {
        return Err(CniError::new(
            Code::InvalidConfig,
            "the configuration is not a JSON object",
        ));
    }
    Ok((conf, bytes))
}

fn env(name: &str) -> Result<String, CniError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(CniError::new(
            Code::InvalidEnv,
            format!("{name} is not set"),
        )),
    }
}

/// The configuration's network name (`name`, required by the spec; empty if absent).
fn network(conf: &Value) -> String {
    conf["name"].as_str().unwrap_or_default().to_owned()
}

fn key(conf: &Value) -> Result<AttachmentKey, CniError> {
    Ok(AttachmentKey {
        network: network(conf),
        container_id: env("CNI_CONTAINERID")?,
        ifname: env("CNI_IFNAME")?,
    })
}

/// One exchange (with `fd` as SCM_RIGHTS, when given); no daemon is "try again later"
/// (`absent` picks the code). The answer comes back unparsed, for `cni::reply::handle`.
fn call(
    socket: &Path,
    op: Operation,
    fd: Option<BorrowedFd<'_>>,
    absent: Code,
) -> Result<Vec<u8>, CniError> {
    client::exchange(socket, op, fd).map_err(|e| match e {
        ClientError::NotRunning { socket, source } => not_running(absent, &socket, &source),
        other => CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
            .details(other.to_string()),
    })
}

/// No daemon at `socket`: plain words and the path in `msg`, which a runtime shows; the
/// OS error only in `details`.
fn not_running(code: Code, socket: &str, source: &std::io::Error) -> CniError {
    let why = match source.kind() {
        std::io::ErrorKind::NotFound => format!("no socket at {socket}"),
        std::io::ErrorKind::ConnectionRefused => format!("nothing listens on {socket}"),
        _ => format!("its socket {socket} cannot be reached"),
    };
    CniError::new(
        code,
        format!("the netslot daemon is not running ({why}); start it with `netslot serve`"),
    )
    .details(format!("connect {socket}: {source}"))
}

/// CNI_NETNS, opened with the caller's own permissions and checked to be a network
/// namespace; anything else is code 3. The open's own error is the caller's to know. The
/// fd is what an attach hands the daemon: it attaches only into a namespace its peer
/// could enter itself.
fn container_netns() -> Result<(String, OwnedFd), CniError> {
    let netns = env("CNI_NETNS")?;
    match netslot::open_network_namespace(Path::new(&netns)) {
        Ok(fd) => Ok((netns, fd)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(CniError::new(
            Code::ContainerUnknown,
            format!("CNI_NETNS {netns} is not a network namespace"),
        )),
        Err(e) => {
            // Plain words in `msg`, which a runtime shows; the OS error in `details`.
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist",
                std::io::ErrorKind::PermissionDenied => "may not be opened by this caller",
                _ => "cannot be opened",
            };
            Err(
                CniError::new(Code::ContainerUnknown, format!("CNI_NETNS {netns} {why}"))
                    .details(format!("open {netns}: {e}")),
            )
        }
    }
}

fn add(conf: &Value, raw: &[u8], socket: &Path) -> Result<Option<Value>, CniError> {
    let wanted = cni::conf::wanted(conf, std::env::var("CNI_ARGS").ok().as_deref())?;
    let key = key(conf)?;
    let (netns, fd) = container_netns()?;
    let Some(plugin) = wanted.ipam.as_deref() else {
        return attach(conf, socket, key, &netns, fd, &wanted, (None, None));
    };
    let result = match ipam::exec(plugin, "ADD", raw) {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => {
            // A result that cannot be read may still hold a lease.
            if e.code == Code::Decode as u32 {
                let _ = ipam::exec(plugin, "DEL", raw);
            }
            return Err(e);
        }
    };
    let out = cni::ipam::lease(plugin, &result).and_then(|leased| {
        // The result's dns: the configuration's when it sets any, else the IPAM
        // plugin's, else a chained prevResult's (as ptp).
        let mut conf = conf.clone();
        if !cni::conf::dns_set(&conf["dns"]) && cni::conf::dns_set(&leased.dns) {
            conf["dns"] = leased.dns;
        }
        attach(
            &conf,
            socket,
            key,
            &netns,
            fd,
            &wanted,
            (leased.ipv4.map(Box::new), leased.ipv6.map(Box::new)),
        )
    });
    if out.is_err() {
        // No lease is left behind by a failed ADD; the ADD's own error is the answer.
        let _ = ipam::exec(plugin, "DEL", raw);
    }
    out
}

/// The `attach` request of an ADD, and its answer as the ADD's result.
fn attach(
    conf: &Value,
    socket: &Path,
    key: AttachmentKey,
    netns: &str,
    fd: OwnedFd,
    wanted: &cni::conf::Wanted,
    (ipv4, ipv6): (Option<Box<Ipv4Request>>, Option<Box<Ipv6Request>>),
) -> Result<Option<Value>, CniError> {
    let answer = call(
        socket,
        Operation::Attach {
            key,
            netns: PathBuf::from(netns),
            netns_fd: true,
            mtu: wanted.mtu,
            mac: wanted.mac.clone(),
            ipv4,
            ipv6,
        },
        Some(fd.as_fd()),
        Code::TryAgainLater,
    )?;
    match cni::reply::handle(Asked::Add { conf, netns }, &answer)? {
        Outcome::Result(v) => Ok(Some(v)),
        _ => Ok(None),
    }
}

fn del(conf: &Value, raw: &[u8], socket: &Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    match client::exchange(socket, Operation::Detach { key }, None) {
        Ok(answer) => {
            cni::reply::handle(Asked::Del, &answer)?;
        }
        // Nothing can be left behind: a starting daemon removes every leftover.
        Err(ClientError::NotRunning { .. }) => {}
        Err(e) => {
            return Err(
                CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
                    .details(e.to_string()),
            )
        }
    }
    // The lease goes once its interface is gone. DEL refuses no configuration: an
    // `ipam` without a usable type has no plugin to run.
    if let Some(plugin) = cni::conf::ipam_plugin(conf) {
        ipam::exec(plugin, "DEL", raw)?;
    }
    Ok(None)
}

fn check(conf: &Value, raw: &[u8], socket: &Path) -> Result<Option<Value>, CniError> {
    // What ADD would refuse, CHECK refuses too.
    let wanted = cni::conf::wanted(conf, std::env::var("CNI_ARGS").ok().as_deref())?;
    let key = key(conf)?;
    let Some(prev) = conf.get("prevResult") else {
        return Err(CniError::new(Code::InvalidConfig, "CHECK needs prevResult"));
    };
    let netns = PathBuf::from(container_netns()?.0);
    if let Some(plugin) = wanted.ipam.as_deref() {
        ipam::exec(plugin, "CHECK", raw)?;
    }
    let answer = call(
        socket,
        Operation::Check { key: key.clone() },
        None,
        Code::TryAgainLater,
    )?;
    let Outcome::Attachment(a) = cni::reply::handle(Asked::Check, &answer)? else {
        return Ok(None);
    };
    // The container side, as the kernel reports it inside CNI_NETNS.
    let ns = netslot::HostNs::open(&netns).map_err(|e| {
        CniError::new(
            Code::ContainerUnknown,
            format!("open {}: {e}", netns.display()),
        )
    })?;
    let link = ns
        .links()
        .map_err(|e| CniError::new(Code::Io, format!("dump links in {}: {e}", netns.display())))?
        .into_iter()
        .find(|l| l.name == key.ifname);
    let Some(link) = link else {
        return Err(CniError::new(
            Code::ContainerUnknown,
            format!("{} has no interface {}", netns.display(), key.ifname),
        ));
    };
    let want = a.address.split('/').next().unwrap_or_default().to_owned();
    let addresses = ns.addresses().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("dump addresses in {}: {e}", netns.display()),
        )
    })?;
    let has = addresses
        .iter()
        .any(|x| x.index == link.index && x.addr.to_string() == want);
    if !has {
        return Err(CniError::new(
            Code::Kernel,
            format!(
                "{} in {} lacks address {}",
                key.ifname,
                netns.display(),
                a.address
            ),
        ));
    }
    // What the runtime was told at ADD (and chained plugins may have added to) must be
    // what the kernel shows.
    let dumped = ns.routes().and_then(|mut v4| {
        v4.extend(ns.routes_ipv6()?);
        Ok(v4)
    });
    let routes = dumped
        .map_err(|e| CniError::new(Code::Io, format!("dump routes in {}: {e}", netns.display())))?;
    let shown = netns.display().to_string();
    cni::result::compare(
        prev,
        Seen {
            netns: &shown,
            link: &link,
            addresses: &addresses,
            routes: &routes,
        },
    )?;
    Ok(None)
}

fn gc(conf: &Value, socket: &Path) -> Result<Option<Value>, CniError> {
    let valid = conf["cni.dev/valid-attachments"]
        .as_array()
        .ok_or_else(|| CniError::new(Code::InvalidConfig, "GC needs cni.dev/valid-attachments"))?
        .iter()
        .map(|a| {
            Some(AttachmentKey {
                network: network(conf),
                container_id: a["containerID"].as_str()?.to_owned(),
                ifname: a["ifname"].as_str()?.to_owned(),
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "each valid attachment needs containerID and ifname",
            )
        })?;
    let op = Operation::Gc {
        network: network(conf),
        valid,
    };
    let answer = call(socket, op, None, Code::TryAgainLater)?;
    cni::reply::handle(Asked::Gc, &answer).map(|_| None)
}

fn status(socket: &Path) -> Result<Option<Value>, CniError> {
    let answer = call(socket, Operation::Status, None, Code::NotAvailable)?;
    cni::reply::handle(Asked::Status, &answer).map(|_| None)
}
