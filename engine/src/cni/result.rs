//! cni_result: the CNI spec versions `netslot-cni` speaks, its result written in each of
//! them, and CHECK's comparison of a `prevResult` with what the kernel shows.
//!
//! No I/O. The plugin builds its ADD result in the newest format (1.1.0) and
//! [`convert`] writes it down to the configuration's `cniVersion` as the reference
//! converters of the CNI project do: results of 0.3.0, 0.3.1 and 0.4.0 share one format,
//! where each IP carries `version` ("4" or "6", from its address) and interfaces have
//! only `name`, `mac` and `sandbox`; 1.0.0 drops `version`; 1.1.0 adds an interface's
//! `mtu`, `socketPath` and `pciID` and a route's `mtu`, `advmss`, `priority`, `table` and
//! `scope`, which lower versions do not have. Entries of a chained `prevResult` are
//! written the same way, so the whole result is in one version.
//!
//! [`compare`] is CHECK: every IP that `prevResult` puts on the plugin's interface, the
//! interface's name and MAC, and every IPv4 route it lists must be what the kernel
//! reports inside CNI_NETNS; the first difference is a CNI error naming it.

use std::net::IpAddr;

use serde_json::Value;

use crate::cni::error::{CniError, Code};
use crate::host::{AddrRecord, LinkRecord, RouteRecord};

/// Every `cniVersion` the plugin accepts, oldest first (what VERSION lists).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A spec version the plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.3.0.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: CHECK appears.
    V0_4_0,
    /// 1.0.0: IPs lose `version`.
    V1_0_0,
    /// 1.1.0: GC and STATUS appear; interfaces gain `mtu`.
    V1_1_0,
}

impl Version {
    /// The version named `s` exactly, if the plugin speaks it.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "0.3.0" => Self::V0_3_0,
            "0.3.1" => Self::V0_3_1,
            "0.4.0" => Self::V0_4_0,
            "1.0.0" => Self::V1_0_0,
            "1.1.0" => Self::V1_1_0,
            _ => return None,
        })
    }

    /// How it is written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Whether the spec of this version has `command` (ADD, DEL, CHECK, GC, STATUS).
    /// Commands that are in no version are the caller's to refuse.
    pub fn has_command(self, command: &str) -> bool {
        match command {
            "CHECK" => self >= Self::V0_4_0,
            "GC" | "STATUS" => self >= Self::V1_1_0,
            _ => true,
        }
    }

    /// The first version with `command`, for a refusal's message.
    pub fn first_with(command: &str) -> &'static str {
        match command {
            "CHECK" => Self::V0_4_0.as_str(),
            "GC" | "STATUS" => Self::V1_1_0.as_str(),
            _ => Self::V0_3_0.as_str(),
        }
    }
}

/// The object entries of the array `obj[field]` (none when it is not an array).
fn entries<'a>(
    obj: &'a mut serde_json::Map<String, Value>,
    field: &str,
) -> Vec<&'a mut serde_json::Map<String, Value>> {
    obj.get_mut(field)
        .and_then(Value::as_array_mut)
        .map(|a| a.iter_mut().filter_map(Value::as_object_mut).collect())
        .unwrap_or_default()
}

/// Interface fields that exist only from 1.1.0.
const INTERFACE_SINCE_1_1: &[&str] = &["mtu", "socketPath", "pciID"];
/// Route fields that exist only from 1.1.0.
const ROUTE_SINCE_1_1: &[&str] = &["mtu", "advmss", "priority", "table", "scope"];

/// `result` (a 1.1.0 result, or one of any version the plugin speaks) written in
/// `version`: its `cniVersion` set, and each entry of `interfaces`, `ips` and `routes`
/// given or stripped the fields of that version. Entries that are not objects are kept
/// as they are; so is anything that is not an object.
pub fn convert(result: &Value, version: Version) -> Value {
    let mut out = result.clone();
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    obj.insert("cniVersion".into(), version.as_str().into());
    if version < Version::V1_1_0 {
        for i in entries(obj, "interfaces") {
            for f in INTERFACE_SINCE_1_1 {
                i.remove(*f);
            }
        }
        for r in entries(obj, "routes") {
            for f in ROUTE_SINCE_1_1 {
                r.remove(*f);
            }
        }
    }
    for ip in entries(obj, "ips") {
        if version >= Version::V1_0_0 {
            ip.remove("version");
            continue;
        }
        // As the reference converter: "4" for an IPv4 address, "6" otherwise.
        let v4 = ip
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|a| a.is_ipv4());
        ip.insert("version".into(), if v4 { "4" } else { "6" }.into());
    }
    out
}

/// What the kernel shows inside CNI_NETNS, for [`compare`].
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// CNI_NETNS, for messages.
    pub netns: &'a str,
    /// The plugin's interface (CNI_IFNAME) as the link dump shows it.
    pub link: &'a LinkRecord,
    /// Every address of the namespace.
    pub addresses: &'a [AddrRecord],
    /// Every IPv4 and IPv6 route of the namespace.
    pub routes: &'a [RouteRecord],
}

/// The kernel's main routing table, where CNI routes go.
const MAIN_TABLE: u32 = 254;

/// CHECK: `prev` (the configuration's `prevResult`) against `seen`. The plugin's
/// interface in `prev` is the one named like `seen.link` with a `sandbox`; its `mac`,
/// when given, must be the link's, each IP on it must be on the link with its prefix
/// length, and each route of `prev`, IPv4 or IPv6 (`dst`, and `gw` when given), must be
/// in the main table.
pub fn compare(prev: &Value, seen: Seen<'_>) -> Result<(), CniError> {
    let ifname = seen.link.name.as_str();
    let netns = seen.netns;
    let differs = |what: String| {
        CniError::new(
            Code::Kernel,
            format!("prevResult does not match the kernel: {what}"),
        )
    };
    let bad = |what: String| CniError::new(Code::Decode, format!("prevResult: {what}"));
    let interfaces = prev["interfaces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let ours = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        .ok_or_else(|| {
            differs(format!(
                "it lists no interface {ifname} with a sandbox, and {netns} has {ifname}"
            ))
        })?;
    if let Some(mac) = interfaces[ours]["mac"].as_str() {
        let has = seen.link.mac.as_deref().unwrap_or("none");
        if !mac.eq_ignore_ascii_case(has) {
            return Err(differs(format!(
                "{ifname} in {netns} has MAC {has}, not {mac}"
            )));
        }
    }
    let ips = prev["ips"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut any = false;
    for ip in ips {
        if ip["interface"].as_u64() != u64::try_from(ours).ok() {
            continue;
        }
        any = true;
        let text = ip["address"].as_str().unwrap_or_default();
        let (addr, len) = parse_cidr(text)
            .ok_or_else(|| bad(format!("address {text:?} is not an address/length")))?;
        let on_link = seen
            .addresses
            .iter()
            .any(|a| a.index == seen.link.index && a.addr == addr && a.prefix_len == len);
        if !on_link {
            return Err(differs(format!("{ifname} in {netns} lacks address {text}")));
        }
    }
    if !any {
        return Err(differs(format!("it lists no address on {ifname}")));
    }
    let routes = prev["routes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for r in routes {
        let dst_text = r["dst"].as_str().unwrap_or_default();
        let (dst, len) = parse_cidr(dst_text)
            .ok_or_else(|| bad(format!("route dst {dst_text:?} is not a network")))?;
        let gw = match r.get("gw").and_then(Value::as_str) {
            None | Some("") => None,
            Some(g) => match g.parse::<IpAddr>() {
                Ok(g) if g.is_ipv4() == dst.is_ipv4() => Some(g),
                _ => {
                    let family = if dst.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(bad(format!("route gw {g:?} is not an {family} address")));
                }
            },
        };
        let found = seen.routes.iter().any(|k| {
            k.table == MAIN_TABLE
                && k.dst == dst
                && k.dst_len == len
                && gw.is_none_or(|g| k.gateway == Some(g))
        });
        if !found {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(differs(format!("{netns} has no route to {dst_text}{via}")));
        }
    }
    Ok(())
}

/// `a.b.c.d/len` (or an IPv6 one) as address and length.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    /// The plugin's 1.1.0 result for one attachment: host end, container end with MTU,
    /// one IPv4 address, the default route.
    fn newest() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "nsl0", "mac": "02:00:00:00:00:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 1500, "sandbox": "/run/netns/c"}
            ],
            "ips": [{"address": "100.64.0.1/31", "gateway": "100.64.0.0", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.0.0"}],
            "dns": {}
        })
    }

    /// The same result as the spec of each version writes it.
    fn fixture(version: &str) -> Value {
        match version {
            "1.1.0" => newest(),
            "1.0.0" => json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "nsl0", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/c"}
                ],
                "ips": [{"address": "100.64.0.1/31", "gateway": "100.64.0.0", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.0.0"}],
                "dns": {}
            }),
            old => json!({
                "cniVersion": old,
                "interfaces": [
                    {"name": "nsl0", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/c"}
                ],
                "ips": [{"version": "4", "address": "100.64.0.1/31", "gateway": "100.64.0.0",
                         "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "100.64.0.0"}],
                "dns": {}
            }),
        }
    }

    #[test]
    fn each_version_gets_its_own_result_format() {
        for v in SUPPORTED {
            let version = Version::parse(v).unwrap();
            assert_eq!(version.as_str(), *v);
            assert_eq!(convert(&newest(), version), fixture(v), "{v}");
        }
    }

    #[test]
    fn a_result_converts_back_up_without_the_old_fields() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let mut up = convert(&fixture(v), Version::V1_0_0);
            assert_eq!(up, fixture("1.0.0"), "{v}");
            up["cniVersion"] = json!("0.4.0");
            assert_eq!(convert(&up, Version::V0_4_0), fixture("0.4.0"));
        }
    }

    #[test]
    fn old_versions_tell_ipv6_from_ipv4_and_drop_1_1_route_fields() {
        let r = json!({"cniVersion": "1.1.0", "interfaces": [],
            "ips": [{"address": "fd00::2/64"}, {"address": "10.0.0.2/24"}, {"address": "junk"}, 7],
            "routes": [{"dst": "0.0.0.0/0", "mtu": 1400, "table": 100, "scope": 0,
                        "priority": 5, "advmss": 1300}]});
        let old = convert(&r, Version::V0_3_1);
        assert_eq!(old["ips"][0]["version"], "6");
        assert_eq!(old["ips"][1]["version"], "4");
        assert_eq!(old["ips"][2]["version"], "6");
        assert_eq!(old["ips"][3], 7);
        assert_eq!(old["routes"][0], json!({"dst": "0.0.0.0/0"}));
        assert_eq!(convert(&r, Version::V1_1_0)["routes"], r["routes"]);
        assert_eq!(convert(&json!([1]), Version::V0_4_0), json!([1]));
    }

    #[test]
    fn commands_exist_from_their_versions() {
        assert!(!Version::V0_3_1.has_command("CHECK"));
        assert!(Version::V0_4_0.has_command("CHECK"));
        assert!(!Version::V1_0_0.has_command("GC"));
        assert!(Version::V1_1_0.has_command("STATUS"));
        assert!(Version::V0_3_0.has_command("ADD"));
        assert_eq!(Version::first_with("CHECK"), "0.4.0");
        assert_eq!(Version::parse("0.2.0"), None);
        assert_eq!(Version::parse("1.1"), None);
    }

    fn link() -> LinkRecord {
        LinkRecord {
            index: 2,
            name: "eth0".into(),
            group: 0,
            up: true,
            mac: Some("02:00:00:00:00:02".into()),
            kind: Some("veth".into()),
            xdp_prog_id: None,
        }
    }

    fn kernel_check(prev: &Value) -> Result<(), CniError> {
        let link = link();
        let addresses = [AddrRecord {
            index: 2,
            addr: "100.64.0.1".parse().unwrap(),
            prefix_len: 31,
        }];
        let routes = [
            RouteRecord {
                dst: Ipv4Addr::UNSPECIFIED.into(),
                dst_len: 0,
                oif: Some(2),
                table: MAIN_TABLE,
                gateway: Some("100.64.0.0".parse().unwrap()),
            },
            RouteRecord {
                dst: "100.64.0.0".parse().unwrap(),
                dst_len: 31,
                oif: Some(2),
                table: MAIN_TABLE,
                gateway: None,
            },
        ];
        compare(
            prev,
            Seen {
                netns: "/run/netns/c",
                link: &link,
                addresses: &addresses,
                routes: &routes,
            },
        )
    }

    #[test]
    fn a_true_prev_result_checks_at_every_version() {
        for v in SUPPORTED {
            kernel_check(&fixture(v)).unwrap_or_else(|e| panic!("{v}: {e:?}"));
        }
    }

    #[test]
    fn each_difference_is_named() {
        let cases: [(&str, Value, &str); 6] = [
            (
                "/ips/0/address",
                json!("10.1.2.3/24"),
                "lacks address 10.1.2.3/24",
            ),
            (
                "/ips/0/address",
                json!("100.64.0.1/24"),
                "lacks address 100.64.0.1/24",
            ),
            (
                "/interfaces/1/mac",
                json!("02:00:00:00:00:99"),
                "not 02:00:00:00:00:99",
            ),
            ("/interfaces/1/name", json!("eth1"), "no interface eth0"),
            (
                "/routes/0/gw",
                json!("100.64.0.9"),
                "no route to 0.0.0.0/0 via 100.64.0.9",
            ),
            (
                "/routes/0/dst",
                json!("10.9.0.0/16"),
                "no route to 10.9.0.0/16",
            ),
        ];
        for (at, value, named) in cases {
            let mut prev = fixture("1.0.0");
            *prev.pointer_mut(at).unwrap() = value;
            let e = kernel_check(&prev).unwrap_err();
            assert_eq!(e.code, Code::Kernel as u32, "{at}");
            assert!(e.msg.contains(named), "{at}: {}", e.msg);
        }
        // An extra address, on our interface, that the kernel lacks.
        let mut prev = fixture("0.4.0");
        prev["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"version": "4", "address": "10.1.2.3/24", "interface": 1}));
        assert!(kernel_check(&prev).unwrap_err().msg.contains("10.1.2.3/24"));
        // Another plugin's address, on another interface, is not ours to check.
        let mut prev = fixture("1.0.0");
        prev["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.1.2.3/24", "interface": 0}));
        kernel_check(&prev).unwrap();
        // A MAC in capitals is the same MAC.
        let mut prev = fixture("1.0.0");
        prev["interfaces"][1]["mac"] = json!("02:00:00:00:00:02".to_uppercase());
        kernel_check(&prev).unwrap();
        // Undecodable entries are decode errors; nothing panics on odd shapes.
        let mut prev = fixture("1.0.0");
        prev["ips"][0]["address"] = json!("100.64.0.1");
        assert_eq!(kernel_check(&prev).unwrap_err().code, Code::Decode as u32);
        for odd in [json!(null), json!([]), json!({"interfaces": 5, "ips": "x"})] {
            assert!(kernel_check(&odd).is_err());
        }
    }
}
