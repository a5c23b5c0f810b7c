//! ip_batch: iproute2 in batch mode: one `ip -batch -` for the host side, then one
//! `ip -n NS -batch -` per slot (batch lines cannot switch namespace).
//! IPv6 is left on: iproute2 has no per-device switch at creation.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// Stateless: everything lives in named namespaces under the child's private /run/netns.
pub struct IpBatch;

/// Runs `ip [pre...] -batch -` with `script` on stdin.
pub(crate) fn ip_batch(pre: &[&str], script: &str) -> Result<(), SystemError> {
    let mut child = Command::new("ip")
        .args(pre)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(SystemError::ctx("spawn ip -batch"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(SystemError::ctx("write the batch"))?;
    let status = child.wait().map_err(SystemError::ctx("wait for ip"))?;
    if !status.success() {
        return Err(SystemError(format!("ip {pre:?} -batch: {status}")));
    }
    Ok(())
}

impl System for IpBatch {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let plans: Vec<SlotPlan> = (0..spec.n).map(|i| SlotPlan::new(spec, i)).collect();
        let mut host = String::new();
        for p in &plans {
            host.push_str(&format!(
                "netns add {n}\nlink add name {n} group {g} type veth peer name eth0 netns {n}\n\
                 address add {h}/31 dev {n}\n",
                n = p.name,
                g = spec.group,
                h = p.host_ip
            ));
        }
        host.push_str(&format!("link set group {} up\n", spec.group));
        ip_batch(&[], &host)?;
        let mut latencies = Vec::with_capacity(spec.n);
        for p in &plans {
            let t = Instant::now();
            let slot = format!(
                "link set lo up\nlink set eth0 up\naddress add {s}/31 dev eth0\n\
                 route add default via {h} dev eth0\n",
                s = p.slot_ip,
                h = p.host_ip
            );
            ip_batch(&["-n", &p.name], &slot)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(Provision {
            ok: spec.n,
            failed: 0,
            latencies_us: latencies,
            latency_kind: "slot side only: the slot's `ip -n NS -batch` process, spawn to \
                           exit (the host side is one batch for all slots)"
                .into(),
            extra: None,
            first_error: None,
        })
    }

    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        // Deleting the group removes the host ends and their peers in one request; the
        // namespaces go with the child's mount namespace (their bind mounts vanish).
        let mut script = format!("link delete group {}\n", spec.group);
        for i in 0..spec.n {
            script.push_str(&format!("netns delete {}\n", SlotPlan::new(spec, i).name));
        }
        ip_batch(&[], &script)
    }
}
