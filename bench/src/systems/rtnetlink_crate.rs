//! rtnetlink_crate: the rtnetlink crate used as its README and examples teach: a tokio
//! runtime, `new_connection()` spawned on it, builders awaited per request, slots
//! provisioned concurrently (`buffer_unordered`). IPv6 left on.
//!
//! Per slot: `NetworkNamespace::add` (the crate forks a child that unshares and pins the
//! namespace at /run/netns/NAME), veth pair created in the host namespace with the host
//! end in the group and up, the peer moved into the slot (`setns_by_fd`), host address;
//! then a second connection opened inside the slot (a blocking-pool thread enters the
//! namespace to create its socket): rename the peer to eth0 and bring it up, lo up,
//! address, default route. The crate has no in-place veth with a peer namespace and no
//! batching, so this is what idiomatic use looks like.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use futures::stream::{StreamExt, TryStreamExt};
use rtnetlink::{
    new_connection, Handle, LinkUnspec, LinkVeth, NetworkNamespace, RouteMessageBuilder,
};

use super::ns;
use super::{Provision, RunSpec, SlotPlan, System, SystemError};

/// Requests in flight at once (slots provisioned concurrently).
const CONCURRENCY: usize = 32;

/// The runtime, the host connection and the pinned namespaces.
#[derive(Default)]
pub struct RtnetlinkCrate {
    rt: Option<tokio::runtime::Runtime>,
    host: Option<Handle>,
    host_ns: Option<OwnedFd>,
    pinned: Vec<String>,
}

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{what}: {err}")
}

async fn index_of(h: &Handle, name: &str) -> Res<u32> {
    let link = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(e("get link"))?
        .ok_or_else(|| format!("no link {name}"))?;
    Ok(link.header.index)
}

/// A connection whose socket lives in the namespace `ns_path`; its task runs on the
/// runtime.
async fn connect_in(ns_path: String, host_ns: i32) -> Res<Handle> {
    let (conn, handle, _) = tokio::task::spawn_blocking(move || -> Res<_> {
        let f = File::open(&ns_path).map_err(e("open netns"))?;
        ns::enter(f.as_fd()).map_err(e("setns into the slot"))?;
        let made = new_connection().map_err(e("new_connection in the slot"));
        // `host_ns` stays open for the whole provisioning call.
        let back = ns::enter_raw(host_ns).map_err(e("setns back"));
        let made = made?;
        back?;
        Ok(made)
    })
    .await
    .map_err(e("join"))??;
    tokio::spawn(conn);
    Ok(handle)
}

async fn one_slot(host: Handle, spec: RunSpec, id: usize, host_ns: i32) -> Res<f64> {
    let t = Instant::now();
    let p = SlotPlan::new(&spec, id);
    let tmp = format!("{}p", p.name);
    NetworkNamespace::add(&p.name)
        .await
        .map_err(e("netns add"))?;
    let ns_path = format!("/run/netns/{}", p.name);
    let nsfd = File::open(&ns_path).map_err(e("open netns"))?;
    host.link()
        .add(
            LinkVeth::new(&p.name, &tmp)
                .link_group(spec.group)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(e("veth add"))?;
    host.link()
        .set(
            LinkUnspec::new_with_name(&tmp)
                .setns_by_fd(nsfd.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(e("move peer"))?;
    let host_idx = index_of(&host, &p.name).await?;
    host.address()
        .add(host_idx, IpAddr::V4(p.host_ip), 31)
        .execute()
        .await
        .map_err(e("host address"))?;
    let inside = connect_in(ns_path, host_ns).await?;
    let idx = index_of(&inside, &tmp).await?;
    inside
        .link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name("eth0".to_string())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(e("rename eth0 up"))?;
    inside
        .link()
        .set(LinkUnspec::new_with_index(1).up().build())
        .execute()
        .await
        .map_err(e("lo up"))?;
    inside
        .address()
        .add(idx, IpAddr::V4(p.slot_ip), 31)
        .execute()
        .await
        .map_err(e("slot address"))?;
    inside
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(p.host_ip)
                .output_interface(idx)
                .build(),
        )
        .execute()
        .await
        .map_err(e("route"))?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

impl System for RtnetlinkCrate {
    fn setup(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(SystemError::ctx("tokio runtime"))?;
        let host = rt.block_on(async {
            let (conn, handle, _) = new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        });
        self.host = Some(host.map_err(SystemError::ctx("new_connection"))?);
        self.host_ns = Some(ns::current().map_err(SystemError::ctx("open host netns"))?);
        self.rt = Some(rt);
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let rt = self.rt.as_ref().expect("setup ran");
        let host = self.host.clone().expect("setup ran");
        let host_ns = self.host_ns.as_ref().expect("setup ran").as_raw_fd();
        let results: Vec<Res<f64>> = rt.block_on(
            futures::stream::iter(0..spec.n)
                .map(|i| one_slot(host.clone(), spec.clone(), i, host_ns))
                .buffer_unordered(CONCURRENCY)
                .collect(),
        );
        self.pinned = (0..spec.n)
            .map(|i| format!("/run/netns/{}", SlotPlan::new(spec, i).name))
            .collect();
        let mut latencies = Vec::with_capacity(spec.n);
        let mut first_error = None;
        for r in results {
            match r {
                Ok(us) => latencies.push(us),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Ok(Provision {
            ok: latencies.len(),
            failed: spec.n - latencies.len(),
            latencies_us: latencies,
            latency_kind: format!(
                "per slot: its future's first request to last ACK ({CONCURRENCY} in flight)"
            ),
            extra: None,
            first_error,
        })
    }

    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        let mut host = super::nl::Nl::open().map_err(|e| SystemError(e.0))?;
        host.request(super::nl::group_delete(spec.group), 0)
            .map_err(|e| SystemError(e.0))?;
        for p in self.pinned.drain(..) {
            // Missing files belong to slots that failed before their namespace existed.
            let _ = ns::unpin(&p);
        }
        self.host = None;
        self.rt = None;
        Ok(())
    }
}
