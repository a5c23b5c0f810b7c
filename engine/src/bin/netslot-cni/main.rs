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

mod error;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use netslot::client::{self, ClientError};
use netslot::protocol::{AttachmentKey, ErrorCode, Op, Response, DEFAULT_SOCKET};

use error::{CniError, Code};

/// The spec version this plugin implements.
pub(crate) const SPEC_VERSION: &str = "1.1.0";
/// Versions whose result format this plugin writes.
const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];

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
            println!("{}", serde_json::to_string(&e).expect("errors serialize"));
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

fn read_config() -> Result<Value, CniError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CniError::new(Code::Io, format!("reading the configuration on stdin: {e}")))?;
    let conf: Value = serde_json::from_str(&text).map_err(|e| {
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

/// One exchange; no daemon is "try again later" (`absent` picks the code).
fn call(socket: &std::path::Path, op: Op, absent: Code) -> Result<Response, CniError> {
    client::call(socket, op).map_err(|e| match e {
        ClientError::NotRunning { .. } => {
            CniError::new(absent, "the netslot daemon is not running").details(e.to_string())
        }
        other => CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
            .details(other.to_string()),
    })
}

/// Maps a daemon error to a CNI error.
fn refused(r: Response) -> CniError {
    let body = r.error.expect("a failed response carries an error");
    let code = match body.code {
        ErrorCode::NotFound => Code::ContainerUnknown,
        ErrorCode::Netns => Code::ContainerUnknown,
        ErrorCode::BadRequest | ErrorCode::Exists => Code::InvalidConfig,
        ErrorCode::UnsupportedVersion => Code::IncompatibleVersion,
        ErrorCode::ShuttingDown => Code::TryAgainLater,
        ErrorCode::NotAllowed => Code::Io,
        ErrorCode::Kernel => Code::Kernel,
    };
    CniError::new(code, body.message)
}

fn add(conf: &Value, socket: &std::path::Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    let netns = PathBuf::from(env("CNI_NETNS")?);
    let r = call(
        socket,
        Op::Attach {
            key,
            netns: netns.clone(),
        },
        Code::TryAgainLater,
    )?;
    if !r.ok {
        return Err(refused(r));
    }
    let a = r.attachment.expect("attach answers with the attachment");
    // Chained after other plugins: keep what they reported, ours after it.
    let prev = &conf["prevResult"];
    let mut interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let mut ips = prev["ips"].as_array().cloned().unwrap_or_default();
    let mut routes = prev["routes"].as_array().cloned().unwrap_or_default();
    interfaces.push(json!({ "name": a.host_ifname, "mac": a.host_mac }));
    interfaces.push(json!({
        "name": a.key.ifname,
        "mac": a.mac,
        "mtu": a.mtu,
        "sandbox": netns,
    }));
    ips.push(json!({
        "address": a.address,
        "gateway": a.gateway,
        "interface": interfaces.len() - 1,
    }));
    // A later interface of a container that has its default route already gets none.
    if a.default_route {
        routes.push(json!({ "dst": "0.0.0.0/0", "gw": a.gateway }));
    }
    Ok(Some(json!({
        "cniVersion": conf["cniVersion"],
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": prev.get("dns").cloned().unwrap_or_else(|| json!({})),
    })))
}

fn del(conf: &Value, socket: &std::path::Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    match client::call(socket, Op::Detach { key }) {
        Ok(r) if r.ok => Ok(None),
        Ok(r) => Err(refused(r)),
        // Nothing can be left behind: a starting daemon removes every leftover.
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(
            CniError::new(Code::TryAgainLater, "the netslot daemon did not answer")
                .details(e.to_string()),
        ),
    }
}

fn check(conf: &Value, socket: &std::path::Path) -> Result<Option<Value>, CniError> {
    let key = key(conf)?;
    let netns = PathBuf::from(env("CNI_NETNS")?);
    if conf.get("prevResult").is_none() {
        return Err(CniError::new(Code::InvalidConfig, "CHECK needs prevResult"));
    }
    let r = call(socket, Op::Check { key: key.clone() }, Code::TryAgainLater)?;
    if !r.ok {
        return Err(refused(r));
    }
    let a = r.attachment.expect("check answers with the attachment");
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

fn gc(conf: &Value, socket: &std::path::Path) -> Result<Option<Value>, CniError> {
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
    let r = call(socket, op, Code::TryAgainLater)?;
    if !r.ok {
        return Err(refused(r));
    }
    Ok(None)
}

fn status(socket: &std::path::Path) -> Result<Option<Value>, CniError> {
    let r = call(socket, Op::Status, Code::NotAvailable)?;
    match r.status {
        Some(s) if r.ok && s.ready => Ok(None),
        _ => Err(CniError::new(
            Code::NotAvailable,
            "the netslot daemon is not ready",
        )),
    }
}
