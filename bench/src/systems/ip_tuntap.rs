//! ip_tuntap: the microVM slot with iproute2, one command per step, slot after slot, as a
//! shell script would: `ip tuntap add` for the tap and `ip link` for the rest. Seven `ip`
//! processes per slot; IPv6 left on; no XDP, as ip-loop attaches none.

use std::time::Instant;

use super::ip_batch::ip_batch;
use super::ip_loop::ip;
use super::{Provision, RunSpec, SlotPlan, System, SystemError, TAP_OWNER};

/// Stateless: named namespaces live under the child's private /run/netns.
pub struct IpTuntap;

/// Where iproute2 pins a named namespace.
pub(crate) fn pin_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

impl System for IpTuntap {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let group = spec.group.to_string();
        let owner = TAP_OWNER.to_string();
        // The host namespace is this process's (the harness child's, private): the veth's
        // peer goes there by pid (IFLA_NET_NS_PID), created in place like the slot end.
        let host = std::process::id().to_string();
        let mut latencies = Vec::with_capacity(spec.n);
        for i in 0..spec.n {
            let p = SlotPlan::new(spec, i);
            let n = p.name.as_str();
            let h = format!("{}/31", p.host_ip);
            let t = Instant::now();
            ip(&["netns", "add", n])?;
            ip(&[
                "-n", n, "tuntap", "add", "tap0", "mode", "tap", "user", &owner, "vnet_hdr",
            ])?;
            // eth0 comes up in the creating message (IFF_UP, as netslot's slot end does);
            // the host end in the run's group, as the other iproute2 baselines put it.
            ip(&[
                "-n", n, "link", "add", "eth0", "up", "type", "veth", "peer", "name", n, "netns",
                &host, "group", &group,
            ])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&["-n", n, "link", "set", "tap0", "up"])?;
            ip(&["address", "add", &h, "dev", n])?;
            ip(&["link", "set", n, "up"])?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(Provision {
            ok: spec.n,
            failed: 0,
            latencies_us: latencies,
            latency_kind: "per slot: first `ip` spawned to the last one's exit".into(),
            extra: None,
            first_error: None,
        })
    }

    fn verify_slots(&mut self, spec: &RunSpec) -> Result<Option<usize>, SystemError> {
        let paths: Vec<String> = (0..spec.n)
            .map(|i| pin_path(&SlotPlan::new(spec, i).name))
            .collect();
        super::common::taps_up(paths.iter().map(std::path::Path::new)).map(Some)
    }

    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        // Deleting a namespace (its pin) is all: its tap, persistent or not, is
        // unregistered with it (tun has rtnl_link_ops and no netns_refund, so
        // default_device_exit_batch destroys it rather than moving it to the initial
        // namespace), and so is eth0, whose peer, the host end, goes too.
        let mut script = String::new();
        for i in 0..spec.n {
            script.push_str(&format!("netns delete {}\n", SlotPlan::new(spec, i).name));
        }
        ip_batch(&[], &script)?;
        let left = (0..spec.n)
            .filter(|&i| std::path::Path::new(&pin_path(&SlotPlan::new(spec, i).name)).exists())
            .count();
        if left > 0 {
            return Err(SystemError(format!(
                "{left} namespace pins left after `ip netns delete`"
            )));
        }
        Ok(())
    }
}
