//! Kernel test: per-device counting on real veth pairs in private network namespaces.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{ifindex, in_private, ip, privileged, unique_tag, xdp_prog_id, NetnsWorker};
use netslot_bpf::{BpfError, Counters};

/// RFC 2544 benchmarking range: only ever inside these private namespaces.
const HOST_ADDR: &str = "198.18.7.1";
const PEER_ADDR: &str = "198.18.7.2";
/// Nothing listens there: the connect is refused (SYN in, RST out).
const CLOSED_PORT: u16 = 9;

#[test]
fn counts_only_the_device_that_saw_traffic() {
    if !privileged("counts_only_the_device_that_saw_traffic") {
        return;
    }
    in_private(libc::CLONE_NEWNET, || {
        let tag = unique_tag();
        let (h0, p0) = (format!("nbh0{tag}"), format!("nbp0{tag}"));
        let (h1, p1) = (format!("nbh1{tag}"), format!("nbp1{tag}"));
        let peer = NetnsWorker::spawn();
        let peer_ns = peer.tid.to_string();

        // Two pairs, peers created in place in the peer namespace.
        for (h, p) in [(&h0, &p0), (&h1, &p1)] {
            ip(&[
                "link", "add", h, "type", "veth", "peer", "name", p, "netns", &peer_ns,
            ]);
        }
        ip(&["addr", "add", &format!("{HOST_ADDR}/30"), "dev", &h0]);
        ip(&["link", "set", &h0, "up"]);
        ip(&["link", "set", &h1, "up"]);
        let (i0, i1) = (ifindex(&h0), ifindex(&h1));

        let counters = Counters::load().expect("load");
        assert_eq!(xdp_prog_id(&h0), None);
        counters.attach_per_device(i0).expect("attach h0");
        counters.attach_per_device(i1).expect("attach h1");
        assert_eq!(
            xdp_prog_id(&h0),
            Some(counters.prog_id()),
            "kernel reports our prog on h0"
        );
        assert_eq!(
            xdp_prog_id(&h1),
            Some(counters.prog_id()),
            "kernel reports our prog on h1"
        );
        assert_eq!(counters.attached_id(i0).expect("query"), counters.prog_id());

        // A second attach must not silently replace the first.
        match counters.attach_per_device(i0) {
            Err(BpfError::Libbpf { .. }) => {}
            other => panic!("second attach: expected EBUSY, got {other:?}"),
        }

        // Peer p0 up with its address; p1 stays down, so h1 sees nothing.
        let p0c = p0.clone();
        peer.run(move || {
            ip(&["addr", "add", &format!("{PEER_ADDR}/30"), "dev", &p0c]);
            ip(&["link", "set", &p0c, "up"]);
            common::wait_oper_up(&p0c);
        });
        common::wait_oper_up(&h0);

        let before = counters.read_all().expect("read before");
        let base = before
            .iter()
            .find(|c| c.ifindex == i0)
            .map_or((0, 0), |c| (c.packets, c.bytes));

        // SYN from the peer arrives on h0 (counted by XDP); RST goes back: refused.
        let refused = peer.run(|| {
            let to: SocketAddr = format!("{HOST_ADDR}:{CLOSED_PORT}").parse().expect("addr");
            TcpStream::connect_timeout(&to, Duration::from_secs(10))
                .map(|_| ())
                .map_err(|e| e.kind())
        });
        assert_eq!(
            refused,
            Err(ErrorKind::ConnectionRefused),
            "packets flowed both ways"
        );

        let after = counters.read_all().expect("read after");
        let c0 = after.iter().find(|c| c.ifindex == i0).expect("h0 counted");
        eprintln!("h0 (ifindex {i0}) before {base:?}, after {c0:?}; all {after:?}");
        assert!(c0.packets > base.0, "h0 packets rose: {base:?} -> {c0:?}");
        // At least one TCP SYN: Ethernet 14 + IPv4 20 + TCP 20 bytes.
        assert!(
            c0.bytes >= base.1 + 54,
            "h0 bytes rose by a SYN: {base:?} -> {c0:?}"
        );
        for c in &after {
            assert!(
                c.ifindex == i0 || c.ifindex == i1,
                "unexpected ifindex counted: {c:?}"
            );
            if c.ifindex == i1 {
                assert_eq!((c.packets, c.bytes), (0, 0), "h1 saw no traffic");
            }
        }

        counters.forget(i0).expect("forget");
        counters.forget(i0).expect("forget twice is fine");
        assert!(counters
            .read_all()
            .expect("read")
            .iter()
            .all(|c| c.ifindex != i0));

        counters.detach(i0).expect("detach h0");
        counters.detach(i1).expect("detach h1");
        assert_eq!(xdp_prog_id(&h0), None, "kernel reports no prog on h0");
        assert_eq!(xdp_prog_id(&h1), None, "kernel reports no prog on h1");
        match counters.detach(i0) {
            Err(BpfError::NotOurs { found: 0, .. }) => {}
            other => panic!("detach of a bare device: {other:?}"),
        }
        // Explicit cleanup (the namespaces' end would also remove both pairs).
        ip(&["link", "del", &h0]);
        ip(&["link", "del", &h1]);
        drop(peer);
    });
}
