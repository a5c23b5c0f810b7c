//! cni_ipam: what `netslot-cni` takes from an IPAM plugin's answers: the IPv4 lease (and
//! an IPv6 one beside it), default route and dns of an ADD result, and a failed call's
//! CNI error.
//! No I/O: finding and running the plugin (CNI_PATH, stdin, environment) is the plugin's.
//!
//! The container end takes the one IPv4 address of the result and its one IPv6 address,
//! either or both (dual stack), each with its gateway, which the host end holds, as the reference
//! `ptp` plugin does (see `SlotSpec::leased`, `SlotSpec::ipv6`). What the slot cannot
//! carry yet is refused with code 7 ("invalid network config") naming it, so that nothing
//! the runtime was told differs from the kernel:
//! - no address, or more than one of a family; an address without a gateway;
//! - a route other than a default route (`0.0.0.0/0`, `::/0`) or an address's own
//!   prefix, or one via another gateway;
//! - a dual-stack result with a default route in one family only.
//!
//! A default route in the result asks for the container's default route via the gateway
//! (the daemon still adds it only to a container's first attachment); none, for none.

use std::net::IpAddr;

use serde_json::Value;

use crate::cni::error::{CniError, Code};
use crate::daemon::protocol::{Ipv4Request, Ipv6Request};
use crate::slot::{Ipv4Lease, Ipv6Lease};

/// What an IPAM ADD result gives the attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The container end's IPv4 address and gateway, and whether a default route was
    /// asked, if the result has one.
    pub ipv4: Option<Ipv4Request>,
    /// The container end's IPv6 address and gateway (and whether a default route was
    /// asked), if the result has one.
    pub ipv6: Option<Ipv6Request>,
    /// The result's `dns` (`{}` when it has none).
    pub dns: Value,
}

fn refused(plugin: &str, what: String) -> CniError {
    CniError::new(
        Code::InvalidConfig,
        format!("the IPAM plugin {plugin} {what}"),
    )
}

/// The lease in `result`, the ADD result of IPAM plugin `plugin` (any version from
/// 0.3.0: `ips` entries with `address` and `gateway`, `routes` with `dst` and `gw`).
pub fn lease(plugin: &str, result: &Value) -> Result<Leased, CniError> {
    let ips = result["ips"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ip in ips {
        let address = ip["address"].as_str().unwrap_or_default();
        match address
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            Some(IpAddr::V4(_)) => v4.push(ip),
            Some(IpAddr::V6(_)) => v6.push(ip),
            None => {
                return Err(refused(
                    plugin,
                    format!("returned {:?}, which is not an address", ip["address"]),
                ))
            }
        }
    }
    let one = |list: &[&Value], family: &str| -> Result<Option<(String, String)>, CniError> {
        let ip = match list {
            [] => return Ok(None),
            [one] => *one,
            more => {
                return Err(refused(
                    plugin,
                    format!(
                        "returned {} {family} addresses: netslot-cni places one per interface",
                        more.len()
                    ),
                ))
            }
        };
        let address = ip["address"].as_str().unwrap_or_default();
        let Some(gateway) = ip["gateway"].as_str() else {
            return Err(refused(
                plugin,
                format!(
                    "returned {address} without a gateway: netslot-cni needs one (the host \
                     end's address); set the IPAM plugin's gateway"
                ),
            ));
        };
        Ok(Some((address.to_owned(), gateway.to_owned())))
    };
    let cannot = |why: String| {
        refused(
            plugin,
            format!("returned a lease netslot cannot place: {why}"),
        )
    };
    let lease = match one(&v4, "IPv4")? {
        Some((a, g)) => Some(Ipv4Lease::parse(&a, &g).map_err(cannot)?),
        None => None,
    };
    let lease6 = match one(&v6, "IPv6")? {
        Some((a, g)) => Some(Ipv6Lease::parse(&a, &g).map_err(cannot)?),
        None => None,
    };
    if lease.is_none() && lease6.is_none() {
        return Err(refused(plugin, "returned no address".into()));
    }
    let (mut default4, mut default6) = (false, false);
    let routes = result["routes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for r in routes {
        let dst = r["dst"].as_str().unwrap_or_default();
        let (net, len) = dst
            .split_once('/')
            .and_then(|(a, l)| Some((a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?)))
            .ok_or_else(|| refused(plugin, format!("returned the route {r}, without a dst")))?;
        // The gateway, address and prefix of the route's family.
        let (gateway, address, prefix_len, default) = match (net, lease, lease6) {
            (IpAddr::V4(_), Some(l4), _) => (
                IpAddr::V4(l4.gateway),
                IpAddr::V4(l4.address),
                l4.prefix_len,
                &mut default4,
            ),
            (IpAddr::V4(_), None, _) => {
                return Err(refused(
                    plugin,
                    format!("returned the IPv4 route {dst} without an IPv4 address"),
                ))
            }
            (IpAddr::V6(_), _, Some(l6)) => (
                IpAddr::V6(l6.gateway),
                IpAddr::V6(l6.address),
                l6.prefix_len,
                &mut default6,
            ),
            (IpAddr::V6(_), _, None) => {
                return Err(refused(
                    plugin,
                    format!("returned the IPv6 route {dst} without an IPv6 address"),
                ))
            }
        };
        let via = r["gw"].as_str();
        if via.is_some_and(|g| g.parse::<IpAddr>().ok() != Some(gateway)) {
            return Err(refused(
                plugin,
                format!(
                    "returned the route {dst} via {}, not via the gateway {gateway}: \
                     netslot-cni routes only via the gateway",
                    via.unwrap_or_default(),
                ),
            ));
        }
        if len == 0 {
            *default = true;
        } else if !(len == prefix_len && masked(address, len) == net) {
            return Err(refused(
                plugin,
                format!(
                    "returned the route {dst}: netslot-cni adds the default route and the \
                     route to the address's own prefix ({}/{prefix_len}), no other yet",
                    masked(address, prefix_len),
                ),
            ));
        }
    }
    if lease.is_some() && lease6.is_some() && default4 != default6 {
        return Err(refused(
            plugin,
            format!(
                "returned a default route for {} only: netslot-cni adds both or neither \
                 for a dual-stack interface",
                if default4 { "IPv4" } else { "IPv6" }
            ),
        ));
    }
    Ok(Leased {
        ipv4: lease.map(|l| {
            let (address, gateway) = l.to_strings();
            Ipv4Request {
                address,
                gateway,
                default_route: default4,
            }
        }),
        ipv6: lease6.map(|l| {
            let (address, gateway) = l.to_strings();
            Ipv6Request {
                address,
                gateway,
                default_route: default6,
            }
        }),
        dns: result
            .get("dns")
            .filter(|d| d.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
    })
}

fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// The CNI error of a failed call of IPAM plugin `plugin` for `command`, from what it
/// printed: its own error passed through (code, `msg` prefixed with the plugin and
/// command, `details`), as the spec asks of a plugin that delegates; else code 7 with the
/// start of its output.
pub fn failed(plugin: &str, command: &str, stdout: &[u8]) -> CniError {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    match parsed.as_ref().and_then(|v| Some((v, v["code"].as_u64()?))) {
        Some((v, code)) => {
            let mut e = CniError::new(
                Code::InvalidConfig,
                format!(
                    "IPAM plugin {plugin} {command}: {}",
                    v["msg"].as_str().unwrap_or_default()
                ),
            )
            .details(v["details"].as_str().unwrap_or_default());
            e.code = u32::try_from(code).unwrap_or(u32::MAX);
            e
        }
        None => {
            let text = String::from_utf8_lossy(stdout);
            let start: String = text.chars().take(256).collect();
            CniError::new(
                Code::InvalidConfig,
                format!("IPAM plugin {plugin} {command} failed without a CNI error"),
            )
            .details(start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(r: Result<Leased, CniError>) -> (u32, String) {
        let e = r.unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn host_local_results_give_the_lease() {
        for (version, ip) in [
            (
                "0.3.1",
                json!({"version": "4", "address": "10.22.0.5/24", "gateway": "10.22.0.1"}),
            ),
            (
                "1.0.0",
                json!({"address": "10.22.0.5/24", "gateway": "10.22.0.1"}),
            ),
        ] {
            let r = json!({"cniVersion": version, "ips": [ip],
                "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.22.0.53"]}});
            let l = lease("host-local", &r).unwrap();
            assert_eq!(l.ipv4.as_ref().unwrap().address, "10.22.0.5/24");
            assert_eq!(l.ipv4.as_ref().unwrap().gateway, "10.22.0.1");
            assert!(l.ipv4.as_ref().unwrap().default_route);
            assert_eq!(l.dns, json!({"nameservers": ["10.22.0.53"]}));
        }
        // No routes: no default route; no dns: {}.
        let r = json!({"ips": [{"address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "10.22.0.0/24", "gw": "10.22.0.1"}]});
        let l = lease("host-local", &r).unwrap();
        assert!(!l.ipv4.as_ref().unwrap().default_route);
        assert_eq!(l.dns, json!({}));
    }

    #[test]
    fn a_dual_stack_result_gives_both_leases() {
        for (version, v6) in [
            (
                "0.4.0",
                json!({"version": "6", "address": "fd00:22::5/64", "gateway": "fd00:22::1"}),
            ),
            (
                "1.0.0",
                json!({"address": "fd00:22::5/64", "gateway": "fd00:22::1"}),
            ),
        ] {
            let r = json!({"cniVersion": version,
                "ips": [{"address": "10.22.0.5/24", "gateway": "10.22.0.1"}, v6],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"},
                    {"dst": "fd00:22::/64", "gw": "fd00:22::1"}]});
            let l = lease("host-local", &r).unwrap();
            assert!(l.ipv4.as_ref().unwrap().default_route);
            assert_eq!(
                l.ipv6,
                Some(Ipv6Request {
                    address: "fd00:22::5/64".into(),
                    gateway: "fd00:22::1".into(),
                    default_route: true,
                })
            );
        }
        // Neither family with a default route is fine too.
        let r = json!({"ips": [{"address": "10.22.0.5/24", "gateway": "10.22.0.1"},
            {"address": "fd00:22::5/64", "gateway": "fd00:22::1"}]});
        let l = lease("host-local", &r).unwrap();
        assert!(!l.ipv4.as_ref().unwrap().default_route && l.ipv6.is_some());
        // IPv6 alone, with its default route.
        let r = json!({"ips": [{"address": "fd00:22::5/64", "gateway": "fd00:22::1"}],
            "routes": [{"dst": "::/0"}]});
        let l = lease("host-local", &r).unwrap();
        assert_eq!(l.ipv4, None);
        assert!(l.ipv6.unwrap().default_route);
    }

    #[test]
    fn what_the_slot_cannot_carry_is_refused() {
        let ip = json!({"address": "10.22.0.5/24", "gateway": "10.22.0.1"});
        let v6 = json!({"address": "fd00::5/64", "gateway": "fd00::1"});
        for (r, says) in [
            (json!({"ips": [ip, v6, v6]}), "2 IPv6 addresses"),
            (
                json!({"ips": [ip, {"address": "fd00::5/64"}]}),
                "fd00::5/64 without a gateway",
            ),
            (
                json!({"ips": [ip, v6], "routes": [{"dst": "0.0.0.0/0"}]}),
                "default route for IPv4 only",
            ),
            (
                json!({"ips": [ip, v6], "routes": [{"dst": "::/0", "gw": "fd00::9"}]}),
                "via fd00::9",
            ),
            (
                json!({"ips": [ip, v6], "routes": [{"dst": "fd01::/64"}]}),
                "route fd01::/64",
            ),
            (json!({"ips": []}), "no address"),
            (
                json!({"ips": [v6], "routes": [{"dst": "0.0.0.0/0"}]}),
                "IPv4 route 0.0.0.0/0 without an IPv4 address",
            ),
            (json!({"ips": [ip, ip]}), "2 IPv4 addresses"),
            (
                json!({"ips": [{"address": "10.22.0.5/24"}]}),
                "without a gateway",
            ),
            (
                json!({"ips": [{"address": "10.22.0.5/24", "gateway": "10.22.0.5"}]}),
                "the address itself",
            ),
            (
                json!({"ips": [ip], "routes": [{"dst": "10.0.0.0/8"}]}),
                "route 10.0.0.0/8",
            ),
            (
                json!({"ips": [ip], "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.9"}]}),
                "via 10.22.0.9",
            ),
            (
                json!({"ips": [ip], "routes": [{"dst": "::/0"}]}),
                "IPv6 route ::/0 without an IPv6 address",
            ),
        ] {
            let (code, msg) = err(lease("static", &r));
            assert_eq!(code, 7, "{msg}");
            assert!(
                msg.contains("IPAM plugin static") && msg.contains(says),
                "{msg}"
            );
        }
    }

    #[test]
    fn an_ipam_error_passes_through() {
        let out = br#"{"cniVersion":"1.0.0","code":999,"msg":"no IP addresses available","details":"range full"}"#;
        let e = failed("host-local", "ADD", out);
        assert_eq!(e.code, 999);
        assert_eq!(
            e.msg,
            "IPAM plugin host-local ADD: no IP addresses available"
        );
        assert_eq!(e.details, "range full");
        let e = failed("host-local", "DEL", b"panic: oops");
        assert_eq!(e.code, 7);
        assert_eq!(e.details, "panic: oops");
    }
}
