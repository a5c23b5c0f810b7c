//! netslot-cni: a CNI 1.1.0 plugin (ADD, DEL, CHECK, GC, STATUS, VERSION) whose slots are
//! made by the `netslot serve` daemon, which coalesces concurrent ADDs into engine batches.
//!
//! The runtime runs this binary once per operation with CNI_* variables and the network
//! configuration on stdin; the result (or a CNI error) goes to stdout. Every operation
//! is one request to the daemon over its Unix socket (`socket` in the configuration,
//! default /run/netslot/netslot.sock). With no daemon, ADD/CHECK/GC fail with code 11
//! ("try again later") and STATUS with 50; DEL succeeds (nothing can be left: a daemon
//! removes every leftover of its group when it starts).
//!
//! Attachments are the CNI triple (network `name`, CNI_CONTAINERID, CNI_IFNAME): every
//! request carries the configuration's `name`, so GC of one network never removes
//! another's. Only a container's first netslot interface gets the default route.
//!
//! ADD and CHECK first open CNI_NETNS themselves, with the runtime's own permissions: a
//! path that is missing, not permitted or not a network namespace is code 3 before the
//! daemon (which runs as root) is asked, so an error tells the caller only what it could
//! learn by opening the path itself. What an answer of the daemon means (result or error,
//! and never a panic, whatever the bytes) is `netslot::cni_reply`.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use netslot::client::{self, ClientError};
use netslot::cni_reply::{self, Asked, CniError, Code, Outcome, SPEC_VERSION};
use netslot::protocol::{AttachmentKey, Op, DEFAULT_SOCKET};

/// Versions whose result format this plugin writes.
const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];
/// The first spec version with GC and STATUS.
const GC_STATUS_SINCE: (u64, u64, u64) = (1, 1, 0);

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
    let conf = read_config()?;
    let version = conf["cniVersion"].as_str().unwrap_or_default().to_owned();
    if !SUPPORTED.contains(&version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {version:?} is not supported"),
        )
        .details(format!("supported: {SUPPORTED:?}")));
    }
    if matches!(command, "GC" | "STATUS") && !version_at_least(&version, GC_STATUS_SINCE) {
        let (a, b, c) = GC_STATUS_SINCE;
        let mut e = CniError::new(
            Code::IncompatibleVersion,
            format!(
                "{command} is a CNI {a}.{b}.{c} command; cniVersion {version} has no {command}"
            ),
        );
        e.cni_version = version;
        return Err(e);
    }
    let socket = conf["socket"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut out = match command {
        "ADD" => add(&conf, &socket),
        "DEL" => del(&conf, &socket),
        "CHECK" => check(&conf, &socket),
        "GC" => gc(&conf, &socket),
        "STATUS" => status(&socket),
        "" => Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    };
    if let Err(e) = &mut out {
        e.cni_version = version;
    }
    out
}

/// Whether `version` ("major.minor.patch") is at least `since`.
fn version_at_least(version: &str, since: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => (a, b, c) >= since,
        _ => false,
    }
}

fn read_config() -> Result<Value, CniError> {
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
    Ok(conf)
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
/// (`absent` picks the code). The answer comes back unparsed, for `cni_reply::handle`.
fn call(
    socket: &Path,
    op: Op,
    fd: Option<BorrowedFd<'_>>,
    absent: Code,
) -> Result<Vec<u8>, CniError> {
    client::exchange(socket, op, fd).map_err(|e| match e {
        ClientError::NotRunning { .. } => {
            CniError::new(absent, "the netslot daemon is not running").details(e.to_string())
        }
        other => CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
            .details(other.to_string()),
    })
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
        Err(e) => Err(CniError::new(
            Code::ContainerUnknown,
            format!("CNI_NETNS {netns} cannot be opened: {e}"),
        )),
    }
}

fn add(conf: &Value, socket: &Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    let (netns, fd) = container_netns()?;
    let answer = call(
        socket,
        Op::Attach {
            key,
            netns: PathBuf::from(&netns),
            netns_fd: true,
        },
        Some(fd.as_fd()),
        Code::TryAgainLater,
    )?;
    match cni_reply::handle(
        Asked::Add {
            conf,
            netns: &netns,
        },
        &answer,
    )? {
        Outcome::Result(v) => Ok(Some(v)),
        _ => Ok(None),
    }
}

fn del(conf: &Value, socket: &Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    match client::exchange(socket, Op::Detach { key }, None) {
        Ok(answer) => cni_reply::handle(Asked::Del, &answer).map(|_| None),
        // Nothing can be left behind: a starting daemon removes every leftover.
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(
            CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
                .details(e.to_string()),
        ),
    }
}

fn check(conf: &Value, socket: &Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    if conf.get("prevResult").is_none() {
        return Err(CniError::new(Code::InvalidConfig, "CHECK needs prevResult"));
    }
    let netns = PathBuf::from(container_netns()?.0);
    let answer = call(
        socket,
        Op::Check { key: key.clone() },
        None,
        Code::TryAgainLater,
    )?;
    let Outcome::Attachment(a) = cni_reply::handle(Asked::Check, &answer)? else {
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
    let has = ns
        .addresses()
        .map_err(|e| {
            CniError::new(
                Code::Io,
                format!("dump addresses in {}: {e}", netns.display()),
            )
        })?
        .into_iter()
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
    let op = Op::Gc {
        network: network(conf),
        valid,
    };
    let answer = call(socket, op, None, Code::TryAgainLater)?;
    cni_reply::handle(Asked::Gc, &answer).map(|_| None)
}

fn status(socket: &Path) -> Result<Option<Value>, CniError> {
    let answer = call(socket, Op::Status, None, Code::NotAvailable)?;
    cni_reply::handle(Asked::Status, &answer).map(|_| None)
}
