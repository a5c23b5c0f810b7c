//! ack: reads NLMSG_ERROR replies (ACKs and NACKs) out of a received netlink buffer.
//! Parses only; matching a reply to its request is reconcile's job.
//!
//! netlink-packet-core parses the error code and keeps the rest of the payload raw. The
//! rest is the echoed request (only its nlmsghdr when NLM_F_CAPPED is set, i.e. the socket
//! has NETLINK_CAP_ACK) followed, when NLM_F_ACK_TLVS is set, by the extended-ACK
//! attributes of netlink_ack (net/netlink/af_netlink.c). The crate does not read those, so
//! this module walks them with the crate's own `NlasIterator`.

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator, NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
};
use netlink_packet_route::RouteNetlinkMessage;

/// Size of struct nlmsghdr.
const NLMSGHDR_LEN: usize = 16;
/// enum nlmsgerr_attrs (include/uapi/linux/netlink.h).
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// One reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// Sequence number of the request this answers.
    pub seq: u32,
    /// 0 for success, otherwise the positive errno.
    pub errno: i32,
    /// The kernel's extended-ACK text (NLMSGERR_ATTR_MSG), when it gave one.
    pub message: Option<String>,
    /// Offset of the offending attribute in the request (NLMSGERR_ATTR_OFFS).
    pub bad_attr_offset: Option<u32>,
}

/// A received buffer that cannot be read as netlink replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AckError {
    /// A header announces more bytes than were received (the reply was cut).
    #[error(
        "reply truncated at byte {offset}: header says {announced} bytes, {available} received"
    )]
    Truncated {
        offset: usize,
        announced: usize,
        available: usize,
    },
    /// The bytes are not a valid netlink message.
    #[error("malformed reply at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
}

/// Parses every message in `buf`; non-error messages (notifications) are skipped.
pub(crate) fn parse(buf: &[u8]) -> Result<Vec<Ack>, AckError> {
    let mut acks = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        if rest.len() < NLMSGHDR_LEN {
            return Err(AckError::Truncated {
                offset,
                announced: NLMSGHDR_LEN,
                available: rest.len(),
            });
        }
        let header = NetlinkBuffer::new(rest);
        let announced = header.length() as usize;
        if announced < NLMSGHDR_LEN {
            return Err(AckError::Malformed {
                offset,
                reason: format!("nlmsg_len {announced} is shorter than a header"),
            });
        }
        if announced > rest.len() {
            return Err(AckError::Truncated {
                offset,
                announced,
                available: rest.len(),
            });
        }
        let flags = header.flags();
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..announced]).map_err(
            |e| AckError::Malformed {
                offset,
                reason: e.to_string(),
            },
        )?;
        if let NetlinkPayload::Error(err) = msg.payload {
            let (message, bad_attr_offset) = extended_ack(&err.header, flags)
                .map_err(|reason| AckError::Malformed { offset, reason })?;
            acks.push(Ack {
                seq: msg.header.sequence_number,
                errno: err.raw_code().checked_neg().unwrap_or(i32::MAX),
                message,
                bad_attr_offset,
            });
        }
        offset += super::nlmsg_align(announced);
    }
    Ok(acks)
}

/// Reads the extended-ACK TLVs that follow the echoed request in an NLMSG_ERROR payload.
fn extended_ack(after_code: &[u8], flags: u16) -> Result<(Option<String>, Option<u32>), String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((None, None));
    }
    if after_code.len() < NLMSGHDR_LEN {
        return Err("error reply too short for the echoed header".into());
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSGHDR_LEN
    } else {
        let len = u32::from_ne_bytes(after_code[..4].try_into().expect("4 bytes")) as usize;
        super::nlmsg_align(len.max(NLMSGHDR_LEN))
    };
    let tlvs = after_code
        .get(echoed..)
        .ok_or_else(|| format!("echoed request of {echoed} bytes passes the reply's end"))?;
    let (mut text, mut offs) = (None, None);
    for nla in NlasIterator::new(tlvs) {
        let nla: NlaBuffer<&[u8]> = nla.map_err(|e| format!("extended ACK attribute: {e}"))?;
        match nla.kind() {
            NLMSGERR_ATTR_MSG => {
                let raw = nla.value();
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                text = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
            }
            NLMSGERR_ATTR_OFFS if nla.value().len() >= 4 => {
                offs = Some(u32::from_ne_bytes(nla.value()[..4].try_into().expect("4")));
            }
            _ => {}
        }
    }
    Ok((text, offs))
}

/// Builds an NLMSG_ERROR reply the way netlink_ack lays it out (for tests, benches and
/// fuzzers: the engine itself only reads replies).
#[cfg(any(test, feature = "internals"))]
pub(crate) fn reply(
    seq: u32,
    code: i32,
    echoed: &[u8],
    capped: bool,
    text: Option<&str>,
) -> Vec<u8> {
    let mut payload = code.to_ne_bytes().to_vec();
    payload.extend_from_slice(echoed);
    let mut flags = 0u16;
    if capped {
        flags |= NLM_F_CAPPED;
    }
    if let Some(t) = text {
        flags |= NLM_F_ACK_TLVS;
        let mut v = t.as_bytes().to_vec();
        v.push(0);
        let len = 4 + v.len();
        payload.extend_from_slice(&(len as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(&v);
        while payload.len() % 4 != 0 {
            payload.push(0);
        }
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_OFFS.to_ne_bytes());
        payload.extend_from_slice(&40u32.to_ne_bytes());
    }
    let total = 16 + payload.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echoed request header (nlmsghdr only) announcing `len` bytes.
    fn echoed_header(len: u32, seq: u32) -> Vec<u8> {
        let mut h = len.to_ne_bytes().to_vec();
        h.extend_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        h.extend_from_slice(&0x605u16.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn success_ack() {
        let buf = reply(7, 0, &echoed_header(16, 7), true, None);
        assert_eq!(
            parse(&buf).unwrap(),
            vec![Ack {
                seq: 7,
                errno: 0,
                message: None,
                bad_attr_offset: None
            }]
        );
    }

    #[test]
    fn capped_nack_with_extended_ack_text() {
        let buf = reply(
            9,
            -17,
            &echoed_header(120, 9),
            true,
            Some("Interface name exists"),
        );
        let acks = parse(&buf).unwrap();
        assert_eq!(acks[0].errno, 17);
        assert_eq!(acks[0].message.as_deref(), Some("Interface name exists"));
        assert_eq!(acks[0].bad_attr_offset, Some(40));
    }

    #[test]
    fn uncapped_nack_skips_the_echoed_request() {
        // Without NETLINK_CAP_ACK the whole request comes back before the TLVs.
        let mut echoed = echoed_header(22, 3);
        echoed.extend_from_slice(&[0xaa; 6]);
        echoed.extend_from_slice(&[0; 2]); // pad to 24
        let buf = reply(3, -22, &echoed, false, Some("bad attribute"));
        let acks = parse(&buf).unwrap();
        assert_eq!(acks[0].errno, 22);
        assert_eq!(acks[0].message.as_deref(), Some("bad attribute"));
    }

    #[test]
    fn several_replies_in_one_buffer() {
        let mut buf = reply(1, -17, &echoed_header(16, 1), true, Some("x"));
        buf.extend(reply(2, 0, &echoed_header(16, 2), true, None));
        let seqs: Vec<u32> = parse(&buf).unwrap().iter().map(|a| a.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn truncated_reply_is_an_error_not_a_success() {
        let buf = reply(
            1,
            -17,
            &echoed_header(16, 1),
            true,
            Some("Interface name exists"),
        );
        for cut in [3, 15, 20, buf.len() - 1] {
            assert!(
                matches!(parse(&buf[..cut]), Err(AckError::Truncated { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_length_is_an_error() {
        let mut buf = reply(1, 0, &echoed_header(16, 1), true, None);
        buf[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(parse(&buf), Err(AckError::Malformed { .. })));
    }

    #[test]
    fn echoed_length_past_the_end_is_an_error() {
        // NLM_F_ACK_TLVS set, not capped, echoed header claims more than is there.
        let buf = reply(1, -22, &echoed_header(4000, 1), false, Some("x"));
        assert!(matches!(parse(&buf), Err(AckError::Malformed { .. })));
    }

    #[test]
    fn empty_buffer_has_no_acks() {
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }
}
