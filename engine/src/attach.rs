//! attach: slots provisioned into namespaces the caller owns (a CNI runtime's
//! CNI_NETNS), and slots given back one by one (detach, release).

use crate::call::Call;
use crate::drive::NsSource;
use crate::engine::Engine;
use crate::netns;
use crate::plan::SlotRoute;
use crate::result::{EngineError, ProvisionReport, SlotError};
use crate::slot::{Slot, SlotSpec};

impl Engine {
    /// Provisions one standard slot INTO each caller-given namespace (a CNI runtime's
    /// CNI_NETNS): the veth pair is created in place from a socket inside that namespace,
    /// named `ifname` there and `<prefix><id>` in the host namespace, with `lo` up, the
    /// slot address and (unless the target says `default_route: false`) the default
    /// route, exactly as in a pooled slot. One short-lived helper thread opens all the
    /// sockets (setns into each in turn): RTM_NEWADDR and RTM_NEWROUTE act in the sending
    /// socket's namespace only (docs/serve.md), so the namespace side cannot be sent from
    /// the host socket.
    ///
    /// The engine keeps nothing of the caller's namespaces: their sockets are closed before
    /// this returns, and the slots are given back by [`Engine::detach`].
    pub fn attach(&mut self, targets: Vec<AttachTarget>) -> Result<Attached, EngineError> {
        for t in &targets {
            crate::config::check_ifname(&t.ifname)?;
            if let Some(mtu) = t.mtu {
                self.config.check_slot_mtu(mtu)?;
            }
            if let Some(mac) = t.mac.filter(|m| !crate::slot::is_unicast_mac(m)) {
                return Err(EngineError::Config(crate::ConfigError::SlotMac(
                    crate::slot::mac_to_string(&mac),
                )));
            }
        }
        let ids = self.take_ids(targets.len())?;
        let specs: Vec<SlotSpec> = ids
            .iter()
            .zip(&targets)
            .map(|(&id, t)| {
                let mut spec = SlotSpec::derive(&self.config, id, self.ifindex_base);
                // A caller's namespace gets the standard slot end: the microVM kind (a tap
                // made by the pool thread) is for the pool's own namespaces.
                spec.tap = None;
                spec.slot_ifname = t.ifname.clone();
                if let Some(mtu) = t.mtu {
                    spec.mtu = mtu;
                }
                if let Some(mac) = t.mac {
                    spec.slot_mac = mac;
                }
                spec.leases(t.ipv4, t.ipv6);
                spec
            })
            .collect();
        let routes: Vec<SlotRoute> = targets
            .iter()
            .map(|t| {
                if t.default_route {
                    SlotRoute::Default
                } else {
                    SlotRoute::None
                }
            })
            .collect();
        let fds: Vec<_> = targets.into_iter().map(|t| t.netns).collect();
        let opened = netns::sockets_in(fds).map_err(EngineError::io(
            "open sockets in the target namespaces (helper thread)",
        ))?;
        let out = self.run(
            specs,
            routes,
            NsSource::Given(opened.into_iter()),
            None,
            &mut |_, _| {},
        )?;
        let mut freed = Vec::new();
        let slots = out
            .slots
            .into_iter()
            .map(|r| match r {
                Ok(slot) => Ok(slot.spec),
                Err(e) => {
                    freed.push(e.id);
                    Err(e)
                }
            })
            .collect();
        self.free_ids.extend(freed);
        Ok(Attached {
            slots,
            report: out.report,
        })
    }

    /// Deletes the host end of each slot (the kernel takes the other end with it), all in
    /// as few sends as fit, and gives their ids back. A slot whose device is already gone
    /// (ENODEV: its namespace was destroyed) counts as detached, so this is idempotent.
    pub fn detach(
        &mut self,
        specs: &[SlotSpec],
    ) -> Result<Vec<Result<(), SlotError>>, EngineError> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let choices = self.choices(false);
        let kept = self.kept.take().expect("no call is running");
        let mut call = Call::detach(specs.to_vec(), choices, kept, &mut self.host.seqs());
        let driven = self.drive(
            &mut call,
            &mut Vec::new(),
            &mut NsSource::None,
            None,
            &mut |_, _| {},
        );
        let finished = call.finish();
        self.kept = Some(finished.kept);
        driven?;
        let out: Vec<Result<(), SlotError>> = finished
            .slots
            .errors
            .into_iter()
            .map(|e| e.map_or(Ok(()), Err))
            .collect();
        for (spec, r) in specs.iter().zip(&out) {
            if r.is_ok() {
                let kept = self.kept.as_mut().expect("no call is running");
                kept.host_ends = kept.host_ends.saturating_sub(1);
                self.free_ids.insert(spec.id);
                // The next slot of this id gets the same ifindex: it starts at zero.
                if let Err(e) = self.forget_counters(spec.ifindex) {
                    tracing::warn!(slot = %spec.name, "detach: {e}");
                }
            }
        }
        Ok(out)
    }

    /// Gives pooled slots back one by one (unlike [`Engine::teardown`], which takes the
    /// whole group): their host ends deleted in one batch, pins removed, namespaces closed.
    pub fn release_slots(
        &mut self,
        slots: Vec<Slot>,
    ) -> Result<Vec<Result<(), SlotError>>, EngineError> {
        let specs: Vec<SlotSpec> = slots.iter().map(|s| s.spec.clone()).collect();
        let out = self.detach(&specs)?;
        let unpinned = self.unpin_slots(&slots);
        drop(slots);
        unpinned.map(|()| out)
    }
}

/// One caller-given namespace to provision a slot into (see [`Engine::attach`]).
#[derive(Debug)]
pub struct AttachTarget {
    /// An fd of the namespace (e.g. opened from CNI_NETNS); closed by the engine.
    pub netns: std::os::fd::OwnedFd,
    /// Name of the slot end inside it (CNI_IFNAME), at most 15 bytes.
    pub ifname: String,
    /// Whether the slot adds the default route via its host end inside the namespace.
    /// `false` for a second slot in a namespace that already has one (a second
    /// default route would fail with EEXIST): that slot gets its address only, and its
    /// host end is reached through the /31's connected route.
    pub default_route: bool,
    /// MTU of this slot's veth pair (both ends), instead of the configuration's `mtu`.
    /// It must pass [`crate::EngineConfig::check_slot_mtu`]. `None`: the configuration's.
    pub mtu: Option<u32>,
    /// MAC of the slot end (inside `netns`), instead of the one derived from the slot id.
    /// It must be a unicast address ([`crate::is_unicast_mac`]). `None`: the derived one.
    pub mac: Option<[u8; 6]>,
    /// An IPAM lease to use instead of the pool's /31 (see [`SlotSpec::leased`]); the
    /// default route, when `default_route`, goes via its gateway. `None`: the pool's /31.
    pub ipv4: Option<crate::slot::Ipv4Lease>,
    /// An IPv6 lease beside `ipv4` (dual stack; see [`SlotSpec::ipv6`]), or alone (no IPv4
    /// address at all: [`SlotSpec::ipv6_only`]): the slot end's IPv6 address, routes via
    /// its gateway and, when `default_route`, the IPv6 default route too; the host end
    /// keeps IPv6 on.
    pub ipv6: Option<crate::slot::Ipv6Lease>,
}

/// What [`Engine::attach`] hands back: per target, in order, the slot's facts or why it
/// failed (everything of a failed slot rolled back), and the call's report.
#[derive(Debug)]
pub struct Attached {
    /// One entry per target.
    pub slots: Vec<Result<SlotSpec, SlotError>>,
    /// Counts and timings of the call.
    pub report: ProvisionReport,
}
