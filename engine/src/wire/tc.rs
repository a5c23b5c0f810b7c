//! tc: RTM_NEWQDISC (clsact on a shared ingress block) and RTM_NEWTFILTER (cls_bpf on that block).
//! Builds messages only; the engine decides when each is sent (qdiscs per host end, the filter once per pool).
//!
//! netlink-packet-route 0.34 has no variant for TCA_INGRESS_BLOCK (its attribute.rs
//! leaves it as a TODO), so that one attribute goes through the crate's escape hatch,
//! `TcAttribute::Other(DefaultNla)`. Everything else is the crate's own encoding.

use std::os::fd::RawFd;

use netlink_packet_core::DefaultNla;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;

/// TCA_INGRESS_BLOCK (include/uapi/linux/rtnetlink.h), a u32 block index.
const TCA_INGRESS_BLOCK: u16 = 13;
/// ETH_P_ALL (include/uapi/linux/if_ether.h): the filter sees every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// Kind of the clsact qdisc (sch_ingress.c, clsact_qdisc_ops.id).
pub(crate) const CLSACT: &str = "clsact";
/// Kind of the cls_bpf classifier (cls_bpf_ops.kind).
pub(crate) const CLS_BPF: &str = "bpf";
/// Priority and handle of the pool's one filter: fixed, so that NLM_F_EXCL refuses a
/// second one (EEXIST) instead of stacking a duplicate that would count twice.
pub(crate) const FILTER_PRIO: u16 = 1;
pub(crate) const FILTER_HANDLE: u32 = 1;

/// RTM_NEWQDISC of a clsact qdisc on device `index` whose ingress block is the shared
/// block `block` (as `tc qdisc add dev X ingress_block N clsact` sends it).
///
/// tc_modify_qdisc → qdisc_create → qdisc_block_indexes_set stores the index, then
/// clsact_init → tcf_block_get_ext finds the block by index (tcf_block_refcnt_get) and
/// binds to it, creating it for the first device. The egress block stays private.
pub(crate) fn clsact_on_block(index: u32, block: u32) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header = TcHeader {
        index: index as i32,
        handle: TcHandle {
            major: TcHandle::CLSACT.major,
            minor: 0,
        },
        parent: TcHandle::CLSACT,
        ..TcHeader::default()
    };
    msg.attributes = vec![
        TcAttribute::Kind(CLSACT.to_owned()),
        TcAttribute::Other(DefaultNla::new(
            TCA_INGRESS_BLOCK,
            block.to_ne_bytes().to_vec(),
        )),
    ];
    RouteNetlinkMessage::NewQueueDiscipline(msg)
}

/// RTM_NEWTFILTER of a direct-action cls_bpf filter running program `prog_fd`, on the
/// shared block `block` itself rather than on a device: tcm_ifindex is
/// TCM_IFINDEX_MAGIC_BLOCK and tcm_block_index (the union member sharing tcm_parent's
/// place in struct tcmsg) is the block. The block must exist, i.e. some qdisc must
/// already be bound to it (__tcf_block_find: "Block of given index was not found").
pub(crate) fn bpf_filter_on_block(block: u32, prog_fd: RawFd, name: &str) -> RouteNetlinkMessage {
    let mut msg = TcMessage::default();
    msg.header = TcHeader {
        index: TcHeader::TCM_IFINDEX_MAGIC_BLOCK as i32,
        handle: TcHandle::from(FILTER_HANDLE),
        parent: TcHandle::from(block),
        // TC_H_MAKE(prio << 16, protocol), the protocol in network byte order.
        info: u32::from(FILTER_PRIO) << 16 | u32::from(ETH_P_ALL.to_be()),
        ..TcHeader::default()
    };
    msg.attributes = vec![
        TcAttribute::Kind(CLS_BPF.to_owned()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]),
    ];
    RouteNetlinkMessage::NewTrafficFilter(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_request;
    use bytes::BytesMut;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_EXCL};

    fn roundtrip(msg: RouteNetlinkMessage) -> (Vec<u8>, RouteNetlinkMessage) {
        let mut out = BytesMut::new();
        push_request(&mut out, msg, NLM_F_CREATE | NLM_F_EXCL, 3);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
        match parsed.payload {
            NetlinkPayload::InnerMessage(m) => (out.to_vec(), m),
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn clsact_carries_the_block_index_as_tca_ingress_block() {
        let (bytes, RouteNetlinkMessage::NewQueueDiscipline(q)) =
            roundtrip(clsact_on_block(42, 7600))
        else {
            panic!("not RTM_NEWQDISC")
        };
        assert_eq!(q.header.index, 42);
        assert_eq!(u32::from(q.header.parent), 0xffff_fff1); // TC_H_CLSACT
        assert_eq!(u32::from(q.header.handle), 0xffff_0000);
        assert!(q.attributes.contains(&TcAttribute::Kind("clsact".into())));
        // nlmsghdr 16 + tcmsg 20, then TCA_KIND "clsact\0" (4 + 7, padded to 12), then
        // TCA_INGRESS_BLOCK: len 8, type 13, the index.
        let nla = &bytes[16 + 20 + 12..16 + 20 + 20];
        assert_eq!(&nla[..4], &[8, 0, 13, 0]);
        assert_eq!(u32::from_ne_bytes(nla[4..8].try_into().unwrap()), 7600);
    }

    #[test]
    fn filter_names_the_block_not_a_device() {
        let (bytes, RouteNetlinkMessage::NewTrafficFilter(f)) =
            roundtrip(bpf_filter_on_block(7600, 9, "tc_counters"))
        else {
            panic!("not RTM_NEWTFILTER")
        };
        // tcm_ifindex = TCM_IFINDEX_MAGIC_BLOCK, tcm_block_index = 7600.
        assert_eq!(&bytes[16 + 4..16 + 8], &[0xff; 4]);
        assert_eq!(
            u32::from_ne_bytes(bytes[16 + 12..16 + 16].try_into().unwrap()),
            7600
        );
        // TC_H_MAJ(info) = prio 1, TC_H_MIN(info) = htons(ETH_P_ALL).
        assert_eq!(f.header.info >> 16, 1);
        assert_eq!((f.header.info & 0xffff) as u16, 0x0003u16.to_be());
        let opts = f
            .attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Options(o) => Some(o.clone()),
                _ => None,
            })
            .expect("TCA_OPTIONS");
        assert!(opts.contains(&TcOption::Bpf(TcFilterBpfOption::ProgFd(9))));
        assert!(opts.contains(&TcOption::Bpf(TcFilterBpfOption::Flags(
            TcBpfFlags::DirectAction
        ))));
    }
}
