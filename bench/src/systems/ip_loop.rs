//! ip_loop: iproute2 one command per step, slot after slot, as a shell script would.
//! Eight `ip` processes per slot; IPv6 left on.

use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// Stateless: named namespaces live under the child's private /run/netns.
pub struct IpLoop;

/// Runs one `ip` command, stdout discarded; an error names the command and its status.
pub(crate) fn ip(args: &[&str]) -> Result<(), SystemError> {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map_err(SystemError::ctx("spawn ip"))?;
    if status.success() {
        Ok(())
    } else {
        Err(SystemError(format!("ip {}: {status}", args.join(" "))))
    }
}

impl System for IpLoop {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let group = spec.group.to_string();
        let mut latencies = Vec::with_capacity(spec.n);
        for i in 0..spec.n {
            let p = SlotPlan::new(spec, i);
            let (n, h, s) = (
                p.name.as_str(),
                format!("{}/31", p.host_ip),
                format!("{}/31", p.slot_ip),
            );
            let gw = p.host_ip.to_string();
            let t = Instant::now();
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", "name", n, "group", &group, "type", "veth", "peer", "name", "eth0",
                "netns", n,
            ])?;
            ip(&["link", "set", n, "up"])?;
            ip(&["address", "add", &h, "dev", n])?;
            ip(&["-n", n, "link", "set", "eth0", "up"])?;
            ip(&["-n", n, "address", "add", &s, "dev", "eth0"])?;
            ip(&[
                "-n", n, "route", "add", "default", "via", &gw, "dev", "eth0",
            ])?;
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

    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        // One group delete, as the other systems; namespaces go with the child.
        ip(&["link", "delete", "group", &spec.group.to_string()])
    }
}
