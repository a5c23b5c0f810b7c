//! cni_conf: which keys of a CNI network configuration `netslot-cni` honours, echoes or
//! refuses, and what the honoured ones ask of the attachment.
//!
//! No I/O. Nothing the plugin cannot do is ignored silently: a configuration that asks
//! for it fails with code 7 ("invalid network config") naming the key.
//!
//! - `mtu` (integer): the MTU of the attachment's veth pair, both ends. Its range is the
//!   daemon's to judge (1280..=65535, at most 3506 with XDP counters at the XDP hook); a
//!   value that is not an integer in 1..=65535 is refused here.
//! - `dns`: echoed into the ADD result ([`dns`]), as the reference plugins do.
//! - `ipam`: its `type` names the IPAM plugin the ADD, CHECK and DEL delegate to
//!   ([`Wanted::ipam`]; what its result may hold is `cni_ipam`'s). An empty object (`{}`)
//!   asks for nothing: the daemon assigns the slot's /31.
//! - MAC of the container end, from `runtimeConfig.mac` (the `mac` capability), else
//!   `args.cni.mac`, else `MAC=` in CNI_ARGS: honoured; it must be a unicast MAC.
//! - `runtimeConfig.ips` (static IPs), `args.cni.ips` and `IP=` in CNI_ARGS: the IPAM
//!   plugin's to honour (it reads the same configuration and environment); refused
//!   without an IPAM plugin.
//! - Any other `runtimeConfig` key: refused, naming it, unless the configuration has a
//!   `capabilities` object that does not declare that key (`"key": true`). A runtime
//!   fills `runtimeConfig` only with capabilities the configuration declares, so a key
//!   that was not declared was not asked for by the network, and is ignored.
//! - Other CNI_ARGS keys (a runtime passes its own, such as a pod's name) and other keys
//!   of `args` are ignored, as the spec lets a plugin do.
//!
//! DEL checks none of this: it must succeed whatever the configuration (it runs the
//! IPAM plugin's DEL when [`ipam_plugin`] names one).

use serde_json::Value;

use crate::cni::error::{CniError, Code};
use crate::slot::{is_unicast_mac, parse_mac};

/// What a configuration asks of the attachment beyond the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `mtu`: the veth pair's MTU.
    pub mtu: Option<u32>,
    /// The container end's MAC, as `02:00:00:00:00:01` (lower case).
    pub mac: Option<String>,
    /// `ipam.type`: the IPAM plugin to run (found in CNI_PATH), whose IPv4 lease the
    /// container end takes instead of the daemon's /31.
    pub ipam: Option<String>,
}

/// The `runtimeConfig` keys the plugin understands.
const UNDERSTOOD: &[&str] = &["mac"];

/// The IPAM plugin a configuration names (`ipam.type`), if it has a non-empty `ipam`.
/// For DEL, which refuses nothing: `None` also for an `ipam` without a usable `type`.
pub fn ipam_plugin(conf: &Value) -> Option<&str> {
    conf["ipam"]["type"].as_str().filter(|t| is_plugin_name(t))
}

/// Whether `name` can name a plugin in CNI_PATH: a plain file name, no path.
fn is_plugin_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

/// Judges `conf` (the network configuration) and `cni_args` (CNI_ARGS, `K=V;K=V`) for ADD
/// and CHECK: what the attachment should have, or code 7 naming the first key the plugin
/// refuses.
pub fn wanted(conf: &Value, cni_args: Option<&str>) -> Result<Wanted, CniError> {
    let mut ipam = None;
    if let Some(section) = conf.get("ipam") {
        let empty = section.is_null() || section.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            match section["type"].as_str() {
                Some(t) if is_plugin_name(t) => ipam = Some(t.to_owned()),
                _ => {
                    return Err(invalid(format!(
                        "ipam.type {} does not name an IPAM plugin (a file name in CNI_PATH, \
                         such as host-local)",
                        section["type"]
                    )))
                }
            }
        }
    }
    // Static IPs are the IPAM plugin's to honour; without one, nothing would.
    let static_ips = |what: &str| {
        invalid(format!(
            "{what}: the configuration names no IPAM plugin to give them (an ipam section, \
             e.g. host-local or static); without one, netslot assigns each slot's /31 itself"
        ))
    };
    let mtu = match conf.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|m| u32::try_from(m).ok()) {
            Some(m) if (1..=65535).contains(&m) => Some(m),
            _ => {
                return Err(invalid(format!(
                    "mtu {v} is not an MTU (an integer of 1 to 65535)"
                )))
            }
        },
    };
    let runtime = conf.get("runtimeConfig").and_then(Value::as_object);
    let declared = conf.get("capabilities").and_then(Value::as_object);
    let mut mac = None;
    if let Some(runtime) = runtime {
        for k in runtime.keys() {
            if k == "ips" {
                if ipam.is_none() {
                    return Err(static_ips("runtimeConfig.ips asks for static IPs"));
                }
                continue;
            }
            if UNDERSTOOD.contains(&k.as_str()) {
                continue;
            }
            // Not declared by a configuration that declares its capabilities: the
            // network did not ask for it.
            if declared.is_some_and(|d| d.get(k) != Some(&Value::Bool(true))) {
                continue;
            }
            return Err(invalid(format!(
                "runtimeConfig.{k}: netslot-cni does not support the {k} capability"
            )));
        }
        if let Some(v) = runtime.get("mac") {
            mac = Some(("runtimeConfig.mac", v.clone()));
        }
    }
    let args = &conf["args"]["cni"];
    if !args["ips"].is_null() && ipam.is_none() {
        return Err(static_ips("args.cni.ips asks for static IPs"));
    }
    if mac.is_none() && !args["mac"].is_null() {
        mac = Some(("args.cni.mac", args["mac"].clone()));
    }
    for pair in cni_args.unwrap_or_default().split(';') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "IP" && ipam.is_none() {
            return Err(static_ips("CNI_ARGS IP= asks for a static IP"));
        }
        if k == "MAC" && mac.is_none() {
            mac = Some(("CNI_ARGS MAC", Value::String(v.to_owned())));
        }
    }
    let mac = match mac {
        None => None,
        Some((from, v)) => {
            let text = v.as_str().unwrap_or_default();
            match parse_mac(text) {
                Some(m) if is_unicast_mac(&m) => Some(crate::slot::mac_to_string(&m)),
                _ => {
                    return Err(invalid(format!(
                        "{from} {v} is not a unicast MAC (six hex octets such as \
                         02:00:00:00:00:01, bit 0 of the first octet clear)"
                    )))
                }
            }
        }
    };
    Ok(Wanted { mtu, mac, ipam })
}

/// The ADD result's `dns`: the configuration's `dns` when it sets anything (nameservers,
/// domain, search, options), as the reference plugins do; else the chained
/// `prevResult`'s; else empty.
pub fn dns(conf: &Value) -> Value {
    if dns_set(&conf["dns"]) {
        return conf["dns"].clone();
    }
    conf["prevResult"]
        .get("dns")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}))
}

/// Whether `dns` (a configuration's or a result's) sets anything: nameservers, domain,
/// search or options.
pub fn dns_set(dns: &Value) -> bool {
    dns.as_object().is_some_and(|d| {
        d.values().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(r: Result<Wanted, CniError>) -> (u32, String) {
        let e = r.unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn plain_conf_wants_nothing() {
        let conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "netslot-cni"});
        assert_eq!(wanted(&conf, None).unwrap(), Wanted::default());
        assert_eq!(
            wanted(&conf, Some("K8S_POD_NAME=x;IgnoreUnknown=1")).unwrap(),
            Wanted::default()
        );
    }

    #[test]
    fn mtu_is_honoured_and_checked() {
        let w = wanted(&json!({"mtu": 1400}), None).unwrap();
        assert_eq!(w.mtu, Some(1400));
        for bad in [
            json!(0),
            json!(-1),
            json!(70000),
            json!("1400"),
            json!(1400.5),
        ] {
            let (c, msg) = code(wanted(&json!({ "mtu": bad }), None));
            assert_eq!(c, 7, "{bad}");
            assert!(msg.contains("mtu"), "{msg}");
        }
    }

    #[test]
    fn ipam_names_the_plugin() {
        let conf = json!({"ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}});
        assert_eq!(
            wanted(&conf, None).unwrap().ipam.as_deref(),
            Some("host-local")
        );
        assert_eq!(ipam_plugin(&conf), Some("host-local"));
        assert_eq!(wanted(&json!({"ipam": {}}), None).unwrap().ipam, None);
        for bad in [
            json!({"subnet": "10.9.0.0/24"}),
            json!({"type": "../x"}),
            json!({"type": 7}),
        ] {
            let (c, msg) = code(wanted(&json!({ "ipam": bad }), None));
            assert_eq!(c, 7);
            assert!(msg.contains("ipam.type"), "{msg}");
            assert_eq!(ipam_plugin(&json!({ "ipam": bad })), None);
        }
    }

    #[test]
    fn mac_sources_in_order() {
        let conf = json!({
            "runtimeConfig": {"mac": "0A:00:00:00:00:01"},
            "args": {"cni": {"mac": "0a:00:00:00:00:02"}},
        });
        let w = wanted(&conf, Some("MAC=0a:00:00:00:00:03")).unwrap();
        assert_eq!(w.mac.as_deref(), Some("0a:00:00:00:00:01"));
        let conf = json!({"args": {"cni": {"mac": "0a:00:00:00:00:02"}}});
        let w = wanted(&conf, Some("MAC=0a:00:00:00:00:03")).unwrap();
        assert_eq!(w.mac.as_deref(), Some("0a:00:00:00:00:02"));
        let w = wanted(&json!({}), Some("FOO=1;MAC=0a:00:00:00:00:03")).unwrap();
        assert_eq!(w.mac.as_deref(), Some("0a:00:00:00:00:03"));
    }

    #[test]
    fn bad_macs_are_refused() {
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "0a:00:00:00:00",
            "zz:00:00:00:00:01",
            "0a-00-00-00-00-01",
        ] {
            let (c, msg) = code(wanted(&json!({"runtimeConfig": {"mac": bad}}), None));
            assert_eq!(c, 7, "{bad}");
            assert!(msg.contains("runtimeConfig.mac"), "{msg}");
        }
        let (c, _) = code(wanted(&json!({}), Some("MAC=ff:ff:ff:ff:ff:ff")));
        assert_eq!(c, 7);
    }

    #[test]
    fn static_ips_are_refused() {
        for (conf, args) in [
            (json!({"runtimeConfig": {"ips": ["10.0.0.2/24"]}}), None),
            (json!({"args": {"cni": {"ips": ["10.0.0.2/24"]}}}), None),
            (json!({}), Some("IP=10.0.0.2")),
        ] {
            let (c, msg) = code(wanted(&conf, args));
            assert_eq!(c, 7);
            assert!(msg.contains("IPAM"), "{msg}");
            // With an IPAM plugin they are its to honour.
            let mut conf = conf;
            conf["ipam"] = json!({"type": "static"});
            assert_eq!(wanted(&conf, args).unwrap().ipam.as_deref(), Some("static"));
        }
    }

    #[test]
    fn unknown_capabilities() {
        // Without a capabilities object, or declared there: refused, named.
        let (c, msg) = code(wanted(&json!({"runtimeConfig": {"bandwidth": {}}}), None));
        assert_eq!(c, 7);
        assert!(msg.contains("runtimeConfig.bandwidth"), "{msg}");
        let conf = json!({"capabilities": {"bandwidth": true}, "runtimeConfig": {"bandwidth": {}}});
        assert_eq!(code(wanted(&conf, None)).0, 7);
        // Not declared by a configuration that declares capabilities: ignored.
        let conf = json!({"capabilities": {"mac": true}, "runtimeConfig": {"portMappings": []}});
        assert!(wanted(&conf, None).is_ok());
    }

    #[test]
    fn dns_is_echoed() {
        let d = json!({"nameservers": ["10.0.0.53"], "domain": "example.test",
            "search": ["a.test"], "options": ["ndots:2"]});
        assert_eq!(dns(&json!({ "dns": d })), d);
        let prev = json!({"nameservers": ["1.1.1.1"]});
        assert_eq!(dns(&json!({"dns": {}, "prevResult": {"dns": prev}})), prev);
        assert_eq!(dns(&json!({})), json!({}));
    }
}
