//! cni: the CNI reference plugins driven per slot as a runtime would: the runtime pins a
//! new namespace at /run/netns/NAME, then execs `loopback` and `ptp` (with `host-local`
//! IPAM) with CNI_COMMAND=ADD. Plugins from /usr/lib/cni (Debian containernetworking-plugins).
//!
//! What differs from S1 (ptp's own design): the host end is named `veth<random>`, has no
//! device group, and carries the gateway address as a /32; the slot gets its address
//! from host-local (100.64.0.0/16) with a default route; IPv6 left on; ipMasq off (no
//! iptables).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::ns;
use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// Where the plugins live.
pub const CNI_PATH: &str = "/usr/lib/cni";
/// Named namespaces (a private tmpfs in the child).
const NETNS_DIR: &str = "/run/netns";
/// host-local's lease files: inside the same private tmpfs.
const IPAM_DIR: &str = "/run/netns/.cni-ipam";

/// The pinned namespaces made so far.
#[derive(Default)]
pub struct Cni {
    host: Option<OwnedFd>,
    pinned: Vec<String>,
}

fn plugin(kind: &str, id: &str, netns: &str, ifname: &str, conf: &str) -> Result<(), SystemError> {
    let mut child = Command::new(format!("{CNI_PATH}/{kind}"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(SystemError::ctx(format!("exec {kind}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.as_bytes())
        .map_err(SystemError::ctx("write plugin config"))?;
    let out = child
        .wait_with_output()
        .map_err(SystemError::ctx(format!("wait for {kind}")))?;
    if !out.status.success() {
        return Err(SystemError(format!(
            "{kind} ADD {id}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(())
}

fn ptp_conf(spec: &RunSpec) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{p}","type":"ptp","ipMasq":false,"mtu":1500,
"ipam":{{"type":"host-local","dataDir":"{IPAM_DIR}","ranges":[[{{"subnet":"100.64.0.0/16"}}]],
"routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
        p = spec.prefix
    )
}

impl System for Cni {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        self.host = Some(ns::current().map_err(SystemError::ctx("open host netns"))?);
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let host = self.host.as_ref().expect("setup ran");
        let lo_conf = r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#;
        let ptp = ptp_conf(spec);
        let mut latencies = Vec::with_capacity(spec.n);
        for i in 0..spec.n {
            let name = SlotPlan::new(spec, i).name;
            let path = format!("{NETNS_DIR}/{name}");
            let t = Instant::now();
            // The runtime's part: a new namespace, pinned, and back to the host.
            ns::unshare_net().map_err(SystemError::ctx("unshare"))?;
            let pinned = ns::pin_current(&path);
            ns::enter(host.as_fd()).map_err(SystemError::ctx("setns back"))?;
            pinned.map_err(SystemError::ctx(format!("pin {path}")))?;
            self.pinned.push(path.clone());
            plugin("loopback", &name, &path, "lo", lo_conf)?;
            plugin("ptp", &name, &path, "eth0", &ptp)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(Provision {
            ok: spec.n,
            failed: 0,
            latencies_us: latencies,
            latency_kind: "per slot: unshare to the ptp plugin's exit".into(),
            extra: None,
            first_error: None,
        })
    }

    fn teardown(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        // No plugin DEL: unpinning destroys each namespace, and its veth pair with it.
        for p in self.pinned.drain(..) {
            ns::unpin(&p).map_err(SystemError::ctx(format!("unpin {p}")))?;
        }
        Ok(())
    }
}
