//! cni_ipam: what `netslot-cni` takes from an IPAM plugin's answers: the IPv4 lease,
//! default route and dns of an ADD result, and a failed call's CNI error.
//! No I/O: finding and running the plugin (CNI_PATH, stdin, environment) is the plugin's.
//!
//! The container end takes the one IPv4 address of the result, with its gateway, which the
//! host end holds, as the reference `ptp` plugin does (see `SlotSpec::leased`). What the
//! slot cannot carry yet is refused with code 7 ("invalid network config") naming it, so
//! that nothing the runtime was told differs from the kernel:
//! - an IPv6 address or route (IPv4 only, for now);
//! - no IPv4 address, or more than one; an address without a gateway;
//! - a route other than the default route (`0.0.0.0/0`) or the address's own prefix, or
//!   one via another gateway.
//!
//! A default route in the result asks for the container's default route via the gateway
//! (the daemon still adds it only to a container's first attachment); none, for none.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::cni::error::{CniError, Code};
use crate::daemon::protocol::Ipv4Request;
use crate::slot::Ipv4Lease;

/// What an IPAM ADD result gives the attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The container end's address and gateway, and whether a default route was asked.
    pub ipv4: Ipv4Request,
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
    let mut v4 = Vec::new();
    for ip in ips {
        let address = ip["address"].as_str().unwrap_or_default();
        match address
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            Some(IpAddr::V4(_)) => v4.push(ip),
            Some(IpAddr::V6(_)) => {
                return Err(refused(
                    plugin,
                    format!(
                        "returned the IPv6 address {address}: netslot-cni places IPv4 \
                         addresses only; configure the IPAM plugin for IPv4 only"
                    ),
                ))
            }
            None => {
                return Err(refused(
                    plugin,
                    format!("returned {:?}, which is not an address", ip["address"]),
                ))
            }
        }
    }
    let ip = match v4.as_slice() {
        [one] => *one,
        [] => return Err(refused(plugin, "returned no IPv4 address".into())),
        more => {
            return Err(refused(
                plugin,
                format!(
                    "returned {} IPv4 addresses: netslot-cni places one per interface",
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
    let lease = Ipv4Lease::parse(address, gateway).map_err(|why| {
        refused(
            plugin,
            format!("returned a lease netslot cannot place: {why}"),
        )
    })?;
    let mut default_route = false;
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
        let IpAddr::V4(net) = net else {
            return Err(refused(
                plugin,
                format!("returned the IPv6 route {dst}: netslot-cni places IPv4 only"),
            ));
        };
        let via = r["gw"].as_str();
        if via.is_some_and(|g| g.parse::<Ipv4Addr>().ok() != Some(lease.gateway)) {
            return Err(refused(
                plugin,
                format!(
                    "returned the route {dst} via {}, not via the gateway {}: netslot-cni \
                     routes only via the gateway",
                    via.unwrap_or_default(),
                    lease.gateway
                ),
            ));
        }
        if len == 0 {
            default_route = true;
        } else if !(len == lease.prefix_len && masked(lease.address, len) == net) {
            return Err(refused(
                plugin,
                format!(
                    "returned the route {dst}: netslot-cni adds the default route and the \
                     route to the address's own prefix ({}/{}), no other yet",
                    masked(lease.address, lease.prefix_len),
                    lease.prefix_len
                ),
            ));
        }
    }
    let (address, gateway) = lease.to_strings();
    Ok(Leased {
        ipv4: Ipv4Request {
            address,
            gateway,
            default_route,
        },
        dns: result
            .get("dns")
            .filter(|d| d.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
    })
}

fn masked(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
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
            assert_eq!(l.ipv4.address, "10.22.0.5/24");
            assert_eq!(l.ipv4.gateway, "10.22.0.1");
            assert!(l.ipv4.default_route);
            assert_eq!(l.dns, json!({"nameservers": ["10.22.0.53"]}));
        }
        // No routes: no default route; no dns: {}.
        let r = json!({"ips": [{"address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "10.22.0.0/24", "gw": "10.22.0.1"}]});
        let l = lease("host-local", &r).unwrap();
        assert!(!l.ipv4.default_route);
        assert_eq!(l.dns, json!({}));
    }

    #[test]
    fn what_the_slot_cannot_carry_is_refused() {
        let ip = json!({"address": "10.22.0.5/24", "gateway": "10.22.0.1"});
        let v6 = json!({"address": "fd00::5/64", "gateway": "fd00::1"});
        for (r, says) in [
            (json!({"ips": [ip, v6]}), "IPv6 address fd00::5/64"),
            (json!({"ips": []}), "no IPv4 address"),
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
                "IPv6 route",
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
