//! protocol: the request/response messages of `netslot serve`, version 1 (JSON lines).
//! Types only, shared by the daemon, `netslot-cni` and any other client; see
//! docs/serve.md for the conversation.
//!
//! One request per line, one response line per request, in order, on a Unix stream
//! socket. Every message carries `v` (the protocol version); a daemon answers a request
//! of another version with `unsupported-version`, never by guessing. `id` is the client's
//! and is echoed back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/netslot/netslot.sock";

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version of the client.
    pub v: u32,
    /// Echoed in the response.
    #[serde(default)]
    pub id: u64,
    /// What is asked.
    #[serde(flatten)]
    pub op: Operation,
}

/// Longest container id and network name a request may carry, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest namespace path a request may carry (PATH_MAX, with its NUL).
pub const MAX_PATH: usize = 4095;

/// What the daemon makes of one request line (without its newline) before anything acts
/// on it: `Ok(None)` for a blank line, `Ok(Some(request))` for one it serves, and for one
/// it refuses the answer to send: not UTF-8, not a request, another protocol version, or
/// a field against its rules ([`check_fields`]). Pure; the `request_line` fuzz target of
/// fuzz/ feeds it arbitrary bytes.
pub fn judge_request_line(line: &[u8]) -> Result<Option<Request>, Box<Response>> {
    let text = std::str::from_utf8(line).map_err(|e| {
        Box::new(Response::err(
            0,
            ErrorCode::BadRequest,
            format!(
                "the request line is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        ))
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let req = parse_request_line(line).map_err(|e| {
        Box::new(Response::err(
            0,
            ErrorCode::BadRequest,
            format!("not a request: {e}"),
        ))
    })?;
    if req.v != VERSION {
        return Err(Box::new(Response::err(
            req.id,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not spoken here (this daemon speaks {VERSION})",
                req.v
            ),
        )));
    }
    check_fields(&req.op)
        .map_err(|why| Box::new(Response::err(req.id, ErrorCode::BadRequest, why)))?;
    Ok(Some(req))
}

/// Field rules, checked before anything is queued: CNI's rules for container ids and
/// network names (alphanumerics, `_`, `.` and `-`, starting with an alphanumeric; at most
/// `MAX_NAME` bytes), dev_valid_name for interface names, PATH_MAX for paths.
pub fn check_fields(op: &Operation) -> Result<(), String> {
    match op {
        Operation::Attach {
            key,
            netns,
            mac,
            ipv4,
            ipv6,
            ..
        } => {
            check_key(key, "attach")?;
            if let Some(ip) = ipv6 {
                if ip.address.len() > MAX_NAME || ip.gateway.len() > MAX_NAME {
                    return Err(format!(
                        "container {}: attach: the ipv6 lease's fields are longer than \
                         {MAX_NAME} bytes",
                        key.container_id
                    ));
                }
                crate::slot::Ipv6Lease::parse(&ip.address, &ip.gateway).map_err(|why| {
                    format!("container {}: attach: ipv6 lease: {why}", key.container_id)
                })?;
            }
            if let Some(ip) = ipv4 {
                if ip.address.len() > MAX_NAME || ip.gateway.len() > MAX_NAME {
                    return Err(format!(
                        "container {}: attach: the ipv4 lease's fields are longer than \
                         {MAX_NAME} bytes",
                        key.container_id
                    ));
                }
                crate::slot::Ipv4Lease::parse(&ip.address, &ip.gateway).map_err(|why| {
                    format!("container {}: attach: ipv4 lease: {why}", key.container_id)
                })?;
            }
            if let Some(mac) = mac {
                if !crate::slot::parse_mac(mac).is_some_and(|m| crate::slot::is_unicast_mac(&m)) {
                    return Err(format!(
                        "container {}: attach: MAC {mac:?} is not a unicast MAC",
                        key.container_id
                    ));
                }
            }
            let len = netns.as_os_str().len();
            if len > MAX_PATH {
                return Err(format!(
                    "container {}: attach: the netns path is {len} bytes, longer than {MAX_PATH}",
                    key.container_id
                ));
            }
            Ok(())
        }
        Operation::Detach { key } => check_key(key, "detach"),
        Operation::Check { key } => check_key(key, "check"),
        Operation::Gc { network, valid } => {
            check_name(network, "network name", true).map_err(|why| format!("gc: {why}"))?;
            for k in valid {
                if k.container_id.len() > MAX_NAME || k.ifname.len() > MAX_NAME {
                    return Err(format!(
                        "gc: a valid attachment's container id or ifname is longer than \
                         {MAX_NAME} bytes"
                    ));
                }
            }
            Ok(())
        }
        Operation::Release { name } => {
            crate::config::check_ifname(name).map_err(|e| format!("release: slot name: {e}"))
        }
        Operation::Status | Operation::Stats | Operation::Acquire => Ok(()),
    }
}

fn check_key(key: &AttachmentKey, op: &str) -> Result<(), String> {
    check_name(&key.container_id, "container id", false).map_err(|why| format!("{op}: {why}"))?;
    check_name(&key.network, "network name", true)
        .map_err(|why| format!("container {}: {op}: {why}", key.container_id))?;
    crate::config::check_ifname(&key.ifname)
        .map_err(|e| format!("container {}: {op}: {e}", key.container_id))
}

fn check_name(name: &str, what: &str, may_be_empty: bool) -> Result<(), String> {
    // Echo at most a short prefix of what was sent.
    let shown: String = name.chars().take(64).collect();
    let ellipsis = if shown.len() < name.len() { "..." } else { "" };
    let bad = |why: &str| format!("{what} {shown:?}{ellipsis}: {why}");
    if name.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err(bad("it is empty"))
        };
    }
    if name.len() > MAX_NAME {
        return Err(bad(&format!(
            "it is {} bytes, longer than {MAX_NAME}",
            name.len()
        )));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(bad(
            "only letters, digits, '_', '.' and '-' are allowed, starting with a letter or digit",
        ));
    }
    Ok(())
}

/// Parses one request line as the daemon reads it (without its newline). Only the
/// syntax: the daemon then answers a request whose `v` is not [`VERSION`] with
/// `unsupported-version`. The `request_line` fuzz target of fuzz/ feeds it arbitrary bytes.
pub fn parse_request_line(line: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice(line)
}

impl Request {
    /// A request of this build's version.
    pub fn new(id: u64, op: Operation) -> Self {
        Self { v: VERSION, id, op }
    }
}

/// Who an attachment belongs to: the CNI (network name, container id, interface name)
/// triple. Two networks may each attach the same container; neither's GC touches the
/// other's attachments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    /// The network configuration's `name`. Requests without it (clients from before the
    /// field existed) mean the empty name, and it is left out of a message when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

/// In plain words, for messages a runtime shows: "container C, ifname I, network N"
/// (the network left out when empty).
impl std::fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "container {}, ifname {}", self.container_id, self.ifname)?;
        if !self.network.is_empty() {
            write!(f, ", network {}", self.network)?;
        }
        Ok(())
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// Readiness and versions.
    Status,
    /// Counters, including how many engine batches ran.
    Stats,
    /// Provision a slot into a network namespace (CNI ADD). Coalesced with concurrent
    /// attaches into one engine batch.
    Attach {
        /// Owner of the attachment.
        #[serde(flatten)]
        key: AttachmentKey,
        /// The namespace's path (CNI_NETNS). With `netns_fd` it is only a label, echoed
        /// in the answer and never opened; without it the daemon opens it, for uid 0
        /// peers only (symlinks not followed).
        netns: PathBuf,
        /// The namespace travels as a file descriptor (SCM_RIGHTS) sent with this line;
        /// see [`crate::daemon::client::call_with_fd`]. Required for peers other than uid 0,
        /// which may attach only into namespaces they could enter themselves.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        netns_fd: bool,
        /// MTU of the slot's veth pair (both ends), for this attachment only. Absent: the
        /// daemon's `--mtu`. A value the daemon's slots cannot carry is refused
        /// (`bad_request`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        /// MAC of the container end (`02:00:00:00:00:01`), unicast. Absent: the one the
        /// daemon derives from the slot id. Anything else is refused (`bad_request`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        /// An IPv4 address an IPAM plugin leased for the container end, instead of the
        /// daemon's /31 (see [`Ipv4Request`]). Absent: the daemon's /31. (Boxed: the
        /// daemon queues requests by value, and most attaches have none.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv4: Option<Box<Ipv4Request>>,
        /// An IPv6 address an IPAM plugin leased for the container end, beside `ipv4`
        /// (dual stack) or alone (no IPv4 address at all; see [`Ipv6Request`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv6: Option<Box<Ipv6Request>>,
    },
    /// Remove an attachment (CNI DEL). Unknown attachments succeed: DEL is idempotent.
    Detach {
        /// Owner of the attachment.
        #[serde(flatten)]
        key: AttachmentKey,
    },
    /// Whether an attachment is present, as the kernel reports its host end (CNI CHECK).
    Check {
        /// Owner of the attachment.
        #[serde(flatten)]
        key: AttachmentKey,
    },
    /// Remove every attachment of `network` that is not listed (CNI GC). Attachments of
    /// other networks are left alone.
    Gc {
        /// The network whose attachments are collected (absent: the empty name).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        network: String,
        /// Attachments to keep, matched by container id and interface name; each entry's
        /// own `network` is ignored (they are all `network`'s).
        valid: Vec<AttachmentKey>,
    },
    /// Take a pre-provisioned slot (own namespace, pinned) from the warm pool.
    Acquire,
    /// Give back a slot taken by `acquire`; the daemon destroys it.
    Release {
        /// The slot's name, as `acquire` returned it.
        name: String,
    },
}

/// One response line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version of the daemon.
    pub v: u32,
    /// The request's id.
    pub id: u64,
    /// Whether the request succeeded; `error` says why not.
    pub ok: bool,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// The attachment (attach, check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// A pooled slot (acquire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<PooledSlot>,
    /// Attachments removed (gc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<AttachmentKey>>,
    /// Readiness (status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Counters (stats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

impl Response {
    /// A success with nothing else to say.
    pub fn ok(id: u64) -> Self {
        Self {
            v: VERSION,
            id,
            ok: true,
            ..Default::default()
        }
    }

    /// A failure.
    pub fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            id,
            ok: false,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
            ..Default::default()
        }
    }
}

/// Why a request failed: a stable code and a sentence naming the slot, the operation and
/// the kernel's extended-ACK text where there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable class.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// Error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The line is not a request of this protocol.
    BadRequest,
    /// `v` is not a version this daemon speaks.
    UnsupportedVersion,
    /// The peer may not do this: its uid/gid is not allowed (SO_PEERCRED), the target
    /// namespace is not one it could enter (or is the daemon's own or the host's), the
    /// attachment or slot is another uid's, or a per-uid limit is reached.
    NotAllowed,
    /// No such attachment or slot.
    NotFound,
    /// The attachment already exists.
    Exists,
    /// The namespace cannot be used: the path cannot be opened, or the file (path or fd)
    /// is not a network namespace.
    Netns,
    /// The kernel refused an operation (message has errno and extended ACK).
    Kernel,
    /// The daemon is stopping; try again later.
    ShuttingDown,
    /// The daemon has no room for another connection (every one is busy with a request);
    /// try again later. Sent once on a new connection, which is then closed.
    Busy,
}

/// An attachment: a standard slot provisioned into a caller's namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// Owner.
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// The namespace path given at attach.
    pub netns: PathBuf,
    /// Slot number in the daemon's pool (decides names and addresses).
    pub slot_id: u32,
    /// Host end's name (`<prefix><id>`), in the daemon's host namespace.
    pub host_ifname: String,
    /// ifindex of both ends.
    pub ifindex: u32,
    /// Host end's MAC.
    pub host_mac: String,
    /// Container end's MAC.
    pub mac: String,
    /// Container end's address, `a.b.c.d/31`.
    pub address: String,
    /// Host end's address: the container's default gateway.
    pub gateway: String,
    /// MTU of both ends.
    pub mtu: u32,
    /// Whether the container got a default route via `gateway` with this attachment:
    /// only its first attachment does (later ones get their address only). Absent in
    /// answers of daemons from before the field existed, which always added it.
    #[serde(default = "yes")]
    pub default_route: bool,
    /// The container end's IPv6 address and the host end's (its gateway) of a dual-stack
    /// attachment; the IPv6 default route goes via it when `default_route`. Absent: no
    /// IPv6 address, or an IPv6-only attachment, whose `address` and `gateway` are IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Request>,
}

fn yes() -> bool {
    true
}

/// An attach's IPAM lease: the container end holds `address`, the host end `gateway` as a
/// /32 with a host route to `address` (as the reference CNI `ptp` plugin does), and the
/// container's routes go via `gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Request {
    /// The container end's address, `a.b.c.d/len` (len 1 to 32).
    pub address: String,
    /// The gateway, `a.b.c.d`: the host end's address.
    pub gateway: String,
    /// Whether the container gets a default route via `gateway` (when it is the
    /// container's first attachment, as for every attach). `false` when the lease has no
    /// default route.
    #[serde(default = "yes")]
    pub default_route: bool,
}

/// An attach's IPv6 lease, beside its IPv4 one (dual stack) or alone: the container end
/// holds `address` (without DAD), the host end `gateway` as a /128 with a host route to
/// `address`, laid out as [`Ipv4Request`]'s. Beside an IPv4 lease, the IPv6 default
/// route goes via `gateway` when the IPv4 one does (`default_route` here is not read);
/// alone, when `default_route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Request {
    /// The container end's address, `addr/len` (len 1 to 128).
    pub address: String,
    /// The gateway: the host end's address.
    pub gateway: String,
    /// Whether the container gets a default route via `gateway` (when it is the
    /// container's first attachment); see above.
    #[serde(default = "yes")]
    pub default_route: bool,
}

/// A slot of the warm pool, handed out by `acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PooledSlot {
    /// Name (host end, pinned namespace).
    pub name: String,
    /// Where its namespace is pinned.
    pub netns: PathBuf,
    /// Slot end's address, `a.b.c.d/31`.
    pub address: String,
    /// Host end's address.
    pub gateway: String,
    /// For a microVM slot (`netslot serve --kind microvm`), what its VMM needs: the tap
    /// in `netns`, the guest's MAC, address and gateway, and the body of Firecracker's
    /// `PUT /network-interfaces/eth0`. Absent for a standard slot, and from daemons that
    /// predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microvm: Option<crate::microvm::GuestNetwork>,
}

/// Readiness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Serving requests (not stopping).
    pub ready: bool,
    /// The daemon's package version.
    pub daemon_version: String,
    /// Protocol versions spoken.
    pub protocol_versions: Vec<u32>,
    /// Attachments held.
    pub attachments: usize,
    /// Warm slots ready to hand out.
    pub pooled: usize,
}

/// Counters since the daemon started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Engine batches run for requests (attach, detach, acquire and release calls).
    pub batches: u64,
    /// Of which attach batches.
    pub attach_batches: u64,
    /// Engine batches run to refill the warm pool.
    pub refill_batches: u64,
    /// Wall time spent inside attach batches (`Engine::attach`), in microseconds.
    pub attach_busy_us: u64,
    /// Requests answered.
    pub requests: u64,
    /// Attach requests answered successfully.
    pub attached: u64,
    /// Largest number of requests coalesced into one round.
    pub largest_round: usize,
    /// Attachments held now.
    pub attachments: usize,
    /// Warm slots ready now.
    pub pooled: usize,
    /// Pooled slots handed out and not yet given back.
    pub handed_out: usize,
    /// Leftover devices the daemon's start removed (dead owners' leftovers, see
    /// `ownership`). Its JSON name, `reconciled_removed`, is kept for protocol version 1.
    #[serde(rename = "reconciled_removed")]
    pub removed_at_start: usize,
    /// Released slots that went back to the warm pool (the kernel showed them as made).
    #[serde(default)]
    pub recycled: u64,
    /// Released slots destroyed: a tenant had changed them, `--no-recycle`, or the warm
    /// pool was full.
    #[serde(default)]
    pub destroyed_on_release: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_documented_json_lines() {
        let line = r#"{"v":1,"id":7,"op":"attach","container_id":"c1","ifname":"eth0","netns":"/run/netns/c1"}"#;
        let req: Request = serde_json::from_str(line).unwrap();
        assert_eq!(req.v, 1);
        assert_eq!(req.id, 7);
        let Operation::Attach {
            key,
            netns,
            netns_fd,
            mtu,
            mac,
            ipv4,
            ipv6,
        } = &req.op
        else {
            panic!("not an attach: {req:?}");
        };
        assert_eq!(ipv4, &None, "absent: the daemon's /31");
        assert_eq!(ipv6, &None, "absent: no IPv6");
        assert_eq!(key.container_id, "c1");
        assert_eq!(netns, &PathBuf::from("/run/netns/c1"));
        assert!(!netns_fd, "absent netns_fd means the path form");
        assert_eq!((mtu, mac), (&None, &None), "absent: the daemon's defaults");
        let back: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(line).unwrap()
        );
        let own = r#"{"v":1,"id":8,"op":"attach","container_id":"c1","ifname":"eth0","netns":"/run/netns/c1","mtu":1400,"mac":"0a:00:00:00:00:01"}"#;
        let req: Request = serde_json::from_str(own).unwrap();
        assert!(matches!(
            &req.op,
            Operation::Attach { mtu: Some(1400), mac: Some(m), .. } if m == "0a:00:00:00:00:01"
        ));
        assert!(check_fields(&req.op).is_ok());
        let multicast = own.replace("0a:00", "01:00");
        let req: Request = serde_json::from_str(&multicast).unwrap();
        assert!(check_fields(&req.op)
            .unwrap_err()
            .contains("not a unicast MAC"));
        let gc = r#"{"v":1,"op":"gc","valid":[{"container_id":"a","ifname":"eth0"}]}"#;
        assert!(matches!(
            serde_json::from_str::<Request>(gc).unwrap().op,
            Operation::Gc { .. }
        ));
    }

    #[test]
    fn an_attach_lease_is_parsed_and_checked() {
        let line = r#"{"v":1,"id":7,"op":"attach","container_id":"c1","ifname":"eth0","netns":"/run/netns/c1","ipv4":{"address":"10.22.0.5/24","gateway":"10.22.0.1"}}"#;
        let req: Request = serde_json::from_str(line).unwrap();
        assert!(matches!(
            &req.op,
            Operation::Attach { ipv4: Some(ip), .. } if ip.default_route && ip.address == "10.22.0.5/24"
        ));
        assert!(check_fields(&req.op).is_ok());
        for (from, to, why) in [
            ("10.22.0.1\"", "10.22.0.5\"", "the address itself"),
            ("/24", "", "no prefix length"),
            ("/24", "/0", "1 to 32"),
            ("10.22.0.1\"", "fe80::1\"", "not an IPv4 address"),
        ] {
            let bad = line.replacen(from, to, 1);
            let req: Request = serde_json::from_str(&bad).unwrap();
            let e = check_fields(&req.op).unwrap_err();
            assert!(
                e.contains("container c1: attach: ipv4 lease") && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn an_attach_ipv6_lease_is_parsed_and_checked() {
        let v4 = r#""ipv4":{"address":"10.22.0.5/24","gateway":"10.22.0.1"}"#;
        let v6 = r#""ipv6":{"address":"fd00:22::5/64","gateway":"fd00:22::1"}"#;
        let line = |fields: &str| {
            format!(
                r#"{{"v":1,"id":7,"op":"attach","container_id":"c1","ifname":"eth0","netns":"/run/netns/c1",{fields}}}"#
            )
        };
        let req: Request = serde_json::from_str(&line(&format!("{v4},{v6}"))).unwrap();
        assert!(matches!(
            &req.op,
            Operation::Attach { ipv6: Some(ip), .. } if ip.gateway == "fd00:22::1"
        ));
        assert!(check_fields(&req.op).is_ok());
        let req: Request = serde_json::from_str(&line(v6)).unwrap();
        assert!(check_fields(&req.op).is_ok(), "IPv6 alone");
        let bad = v6.replace("fd00:22::1", "fe80::1");
        let req: Request = serde_json::from_str(&line(&format!("{v4},{bad}"))).unwrap();
        let e = check_fields(&req.op).unwrap_err();
        assert!(
            e.contains("container c1: attach: ipv6 lease: gateway fe80::1"),
            "{e}"
        );
    }

    #[test]
    fn requests_without_a_network_parse_as_the_empty_network() {
        let lines = [
            r#"{"v":1,"id":0,"op":"attach","container_id":"c1","ifname":"eth0","netns":"/n"}"#,
            r#"{"v":1,"id":0,"op":"detach","container_id":"c1","ifname":"eth0"}"#,
            r#"{"v":1,"id":0,"op":"check","container_id":"c1","ifname":"eth0"}"#,
        ];
        for line in lines {
            let req: Request = serde_json::from_str(line).unwrap();
            let key = match &req.op {
                Operation::Attach { key, .. }
                | Operation::Detach { key }
                | Operation::Check { key } => key,
                other => panic!("{line}: parsed as {other:?}"),
            };
            assert_eq!(key.network, "", "{line}");
            assert_eq!(key.container_id, "c1");
            // Written back as it came: an empty network is left out.
            let back = serde_json::to_value(&req).unwrap();
            assert_eq!(
                back,
                serde_json::from_str::<serde_json::Value>(line).unwrap()
            );
        }
        let gc = r#"{"v":1,"op":"gc","valid":[{"container_id":"a","ifname":"eth0"}]}"#;
        let Operation::Gc { network, valid } = serde_json::from_str::<Request>(gc).unwrap().op
        else {
            panic!("not a gc");
        };
        assert_eq!(network, "");
        assert_eq!(valid[0].network, "");
    }

    #[test]
    fn the_network_travels_in_every_keyed_request() {
        let key = AttachmentKey {
            network: "netB".into(),
            container_id: "b1".into(),
            ifname: "eth0".into(),
        };
        let line = serde_json::to_string(&Request::new(2, Operation::Detach { key: key.clone() }))
            .unwrap();
        assert!(line.contains(r#""network":"netB""#), "{line}");
        let Operation::Detach { key: back } = serde_json::from_str::<Request>(&line).unwrap().op
        else {
            panic!("not a detach: {line}");
        };
        assert_eq!(back, key);
        let gc = r#"{"v":1,"op":"gc","network":"netA","valid":[]}"#;
        let Operation::Gc { network, .. } = serde_json::from_str::<Request>(gc).unwrap().op else {
            panic!("not a gc");
        };
        assert_eq!(network, "netA");
    }

    #[test]
    fn an_attachment_from_an_older_daemon_had_the_default_route() {
        let a = r#"{"container_id":"c","ifname":"eth0","netns":"/n","slot_id":0,
            "host_ifname":"nsl0","ifindex":5,"host_mac":"","mac":"","address":"100.64.0.1/31",
            "gateway":"100.64.0.0","mtu":1500}"#;
        let a: Attachment = serde_json::from_str(a).unwrap();
        assert!(a.default_route);
        assert_eq!(a.key.network, "");
    }

    #[test]
    fn an_attach_by_fd_says_so_and_the_path_form_does_not() {
        let by_fd = Request::new(
            1,
            Operation::Attach {
                key: AttachmentKey {
                    network: String::new(),
                    container_id: "c".into(),
                    ifname: "eth0".into(),
                },
                netns: "/proc/7/ns/net".into(),
                netns_fd: true,
                mtu: None,
                mac: None,
                ipv4: None,
                ipv6: None,
            },
        );
        let line = serde_json::to_string(&by_fd).unwrap();
        assert!(line.contains(r#""netns_fd":true"#), "{line}");
        let Operation::Attach { netns_fd, .. } = serde_json::from_str::<Request>(&line).unwrap().op
        else {
            panic!("not an attach: {line}");
        };
        assert!(netns_fd);
        let busy = serde_json::to_value(Response::err(0, ErrorCode::Busy, "full")).unwrap();
        assert_eq!(busy["error"]["code"], "busy");
    }

    #[test]
    fn a_request_line_parses_from_bytes_or_says_why_not() {
        let req = parse_request_line(br#"{"v":1,"id":4,"op":"status"}"#).unwrap();
        assert_eq!((req.v, req.id), (1, 4));
        assert!(matches!(req.op, Operation::Status));
        // Another version still parses: refusing it is the daemon's answer, not an error.
        assert_eq!(parse_request_line(br#"{"v":9,"op":"stats"}"#).unwrap().v, 9);
        for bad in [
            &b""[..],
            b"\xff",
            br#"{"v":1,"op":"attach"}"#,
            br#"{"v":1,"op":"launch"}"#,
            br#"{"v":-1,"op":"status"}"#,
            br#"{"v":1,"op":"release","name":"\xff"}"#,
        ] {
            assert!(parse_request_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_prints_in_plain_words() {
        let mut key = AttachmentKey {
            network: "slots".into(),
            container_id: "c9".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(key.to_string(), "container c9, ifname eth0, network slots");
        key.network.clear();
        assert_eq!(key.to_string(), "container c9, ifname eth0");
    }

    #[test]
    fn names_follow_the_cni_rules() {
        assert!(check_name("ctr-0_a.b", "container id", false).is_ok());
        assert!(check_name("", "network name", true).is_ok());
        assert!(check_name("", "container id", false).is_err());
        assert!(check_name("-x", "container id", false).is_err());
        assert!(check_name("a/b", "container id", false).is_err());
        assert!(check_name(&"a".repeat(MAX_NAME), "container id", false).is_ok());
        let long = check_name(&"a".repeat(MAX_NAME + 1), "container id", false).unwrap_err();
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn a_request_line_is_judged_before_anything_acts_on_it() {
        assert!(judge_request_line(b"  ").unwrap().is_none());
        assert!(judge_request_line(br#"{"v":1,"op":"status"}"#)
            .unwrap()
            .is_some());
        for (bad, code) in [
            (&b"\xff"[..], ErrorCode::BadRequest),
            (b"{", ErrorCode::BadRequest),
            (br#"{"v":9,"op":"status"}"#, ErrorCode::UnsupportedVersion),
            (
                br#"{"v":1,"op":"detach","container_id":"a/b","ifname":"eth0"}"#,
                ErrorCode::BadRequest,
            ),
        ] {
            let r = judge_request_line(bad).unwrap_err();
            assert_eq!(r.error.map(|e| e.code), Some(code), "{bad:?}");
        }
    }

    #[test]
    fn an_acquired_microvm_slot_carries_its_guest_network_and_a_standard_one_does_not() {
        let standard = r#"{"v":1,"id":3,"ok":true,"slot":{"name":"nsl0","netns":"/run/netslot/slots/nsl0","address":"100.65.0.1/31","gateway":"100.65.0.0"}}"#;
        let r: Response = serde_json::from_str(standard).unwrap();
        assert_eq!(
            r.slot.as_ref().unwrap().microvm,
            None,
            "absent: a standard slot"
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::from_str::<serde_json::Value>(standard).unwrap(),
            "written back without a microvm field"
        );

        let guest = crate::microvm::GuestNetwork {
            netns: Some("/run/netslot/slots/nsl7".into()),
            tap: "tap0".into(),
            guest_mac: "0a:1d:b1:00:00:07".into(),
            guest_address: "100.65.0.15/31".into(),
            gateway: std::net::Ipv4Addr::new(100, 65, 0, 14),
            netmask: std::net::Ipv4Addr::new(255, 255, 255, 254),
            mtu: 1500,
            firecracker: crate::microvm::FirecrackerInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: "0a:1d:b1:00:00:07".into(),
            },
        };
        let mut r = Response::ok(4);
        r.slot = Some(PooledSlot {
            name: "nsl7".into(),
            netns: "/run/netslot/slots/nsl7".into(),
            address: "100.65.0.15/31".into(),
            gateway: "100.65.0.14".into(),
            microvm: Some(guest.clone()),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["v"], VERSION, "an added optional field: still version 1");
        assert_eq!(
            v["slot"]["microvm"]["firecracker"],
            serde_json::json!({
                "iface_id": "eth0",
                "host_dev_name": "tap0",
                "guest_mac": "0a:1d:b1:00:00:07",
            })
        );
        assert_eq!(v["slot"]["microvm"]["gateway"], "100.65.0.14");
        assert_eq!(v["slot"]["microvm"]["netmask"], "255.255.255.254");
        // A client reads back exactly what the daemon wrote.
        let line = serde_json::to_string(&r).unwrap();
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back.slot.unwrap().microvm, Some(guest));
    }

    #[test]
    fn errors_carry_a_stable_code() {
        let r = Response::err(3, ErrorCode::NotAllowed, "no");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "not-allowed");
        assert!(v.get("attachment").is_none());
    }
}
