//! wire: the bytes of every netlink request netslot sends and every ACK it reads.
//! Messages are built and parsed with netlink-packet-route/-core; no sockets, no sequencing policy.
//!
//! One file per kind of kernel object, as rtnetlink groups them: `link` (RTM_*LINK),
//! `addr` (RTM_NEWADDR), `route` (RTM_NEWROUTE), `tc` (RTM_NEWQDISC, RTM_NEWTFILTER);
//! `ack` reads NLMSG_ERROR replies,
//! including the extended-ACK text the crate leaves unparsed.

pub(crate) mod ack;
pub(crate) mod addr;
pub(crate) mod link;
pub(crate) mod route;
pub(crate) mod tc;

use bytes::BytesMut;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;

/// Netlink aligns every message to 4 bytes (NLMSG_ALIGNTO in include/uapi/linux/netlink.h).
pub(crate) const NLMSG_ALIGNTO: usize = 4;

/// Rounds `len` up to the netlink message alignment.
pub(crate) const fn nlmsg_align(len: usize) -> usize {
    (len + NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1)
}

/// Appends one request to `out`, padded to NLMSG_ALIGN so the next message starts aligned.
///
/// `flags` are added to NLM_F_REQUEST. Returns the padded length appended.
pub(crate) fn push_request(
    out: &mut BytesMut,
    message: RouteNetlinkMessage,
    flags: u16,
    seq: u32,
) -> usize {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    push(
        out,
        NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message)),
    )
}

/// Appends an NLMSG_NOOP that asks for an ACK: the end marker of a send.
///
/// netlink_rcv_skb (net/netlink/af_netlink.c) acks a control message carrying NLM_F_ACK
/// with error 0, after every message before it in the same skb has been processed and any
/// error among them acked. So the marker's ACK proves "no error before this point".
pub(crate) fn push_end_marker(out: &mut BytesMut, seq: u32) -> usize {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    push(
        out,
        NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Noop),
    )
}

/// Length of a request once encoded and aligned, without encoding it into a batch.
pub(crate) fn encoded_len(message: &RouteNetlinkMessage) -> usize {
    let msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(message.clone()),
    );
    nlmsg_align(msg.buffer_len())
}

fn push(out: &mut BytesMut, mut msg: NetlinkMessage<RouteNetlinkMessage>) -> usize {
    msg.finalize();
    let len = msg.buffer_len();
    let padded = nlmsg_align(len);
    let start = out.len();
    out.resize(start + padded, 0);
    msg.serialize(&mut out[start..start + len]);
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkBuffer, NLMSG_NOOP};

    #[test]
    fn align_rounds_up_to_four() {
        assert_eq!(nlmsg_align(0), 0);
        assert_eq!(nlmsg_align(1), 4);
        assert_eq!(nlmsg_align(16), 16);
        assert_eq!(nlmsg_align(17), 20);
    }

    #[test]
    fn end_marker_is_a_noop_asking_for_ack() {
        let mut out = BytesMut::new();
        let len = push_end_marker(&mut out, 0xffff_fffe);
        assert_eq!(len, 16);
        let buf = NetlinkBuffer::new_checked(&out[..]).unwrap();
        assert_eq!(buf.message_type(), NLMSG_NOOP);
        assert_eq!(buf.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(buf.sequence_number(), 0xffff_fffe);
        assert_eq!(buf.length(), 16);
    }

    #[test]
    fn pushed_requests_start_aligned() {
        let mut out = BytesMut::new();
        // An interface name of odd length makes the attribute padding matter.
        let a = push_request(&mut out, link::set_up(1), 0, 1);
        let b = push_request(&mut out, link::delete_index(7), 0, 2);
        assert_eq!(a % NLMSG_ALIGNTO, 0);
        assert_eq!(out.len(), a + b);
        let second = NetlinkBuffer::new_checked(&out[a..]).unwrap();
        assert_eq!(second.sequence_number(), 2);
    }
}
