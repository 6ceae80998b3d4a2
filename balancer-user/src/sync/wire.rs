//! The datagram of flow records one LB host sends its peers: an 8-byte header (`BSYN`,
//! version 1, a reserved zero byte, the record count, big-endian) and that many 48-byte
//! records (client address, VIP address — IPv4 in the first four bytes, the rest zero —,
//! client port and VIP port as on the wire, protocol, family, `RECORD_*` flags, a reserved
//! zero byte, backend index and epoch, big-endian). At most [`MAX_RECORDS`], so a datagram
//! is at most 1400 bytes and crosses any usual path unfragmented.
//!
//! Decoding takes a datagram whole or not at all: every field is checked (protocol,
//! family, IPv4 padding, flags, reserved bytes, a backend index within the data plane's and
//! a non-zero epoch), and the first fault refuses it in one line.

use balancer_common::{
    FlowKey, FlowRecord, FAMILY_V4, FAMILY_V6, MAX_BACKENDS, PROTO_TCP, PROTO_UDP, RECORD_REOPENED,
};

/// The first bytes of every datagram.
const MAGIC: [u8; 4] = *b"BSYN";
/// The format's version.
const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER: usize = 8;
/// Bytes of one record.
pub const RECORD: usize = 48;
/// Most records in one datagram.
pub const MAX_RECORDS: usize = (1400 - HEADER) / RECORD;

/// Why a datagram was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header.
    #[error("{0} bytes, shorter than a header")]
    Short(usize),
    /// Not a datagram of this format or version.
    #[error("not a flow-record datagram of version {VERSION}")]
    Foreign,
    /// The count is 0 or above [`MAX_RECORDS`], or the length is not the count's.
    #[error("{len} bytes for {count} records")]
    Length {
        /// The datagram's length.
        len: usize,
        /// The count its header gives.
        count: usize,
    },
    /// A record that no data plane would write.
    #[error("record {index}: {why}")]
    Record {
        /// Its position in the datagram.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The datagram of `records` (at most [`MAX_RECORDS`]; the caller splits longer runs).
pub fn encode(records: &[FlowRecord]) -> Vec<u8> {
    debug_assert!(!records.is_empty() && records.len() <= MAX_RECORDS);
    let mut out = Vec::with_capacity(HEADER + RECORD * records.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for record in records {
        let key = &record.key;
        out.extend_from_slice(&key.src);
        out.extend_from_slice(&key.dst);
        out.extend_from_slice(&key.sport_be.to_ne_bytes());
        out.extend_from_slice(&key.dport_be.to_ne_bytes());
        out.push(key.proto);
        out.push(key.family);
        out.push(record.flags as u8);
        out.push(0);
        out.extend_from_slice(&record.backend.to_be_bytes());
        out.extend_from_slice(&record.epoch.to_be_bytes());
    }
    out
}

/// The records of `datagram`, or why it is refused.
pub fn decode(datagram: &[u8]) -> Result<Vec<FlowRecord>, WireError> {
    let len = datagram.len();
    if len < HEADER {
        return Err(WireError::Short(len));
    }
    if datagram[..4] != MAGIC || datagram[4] != VERSION || datagram[5] != 0 {
        return Err(WireError::Foreign);
    }
    let count = usize::from(u16::from_be_bytes([datagram[6], datagram[7]]));
    if count == 0 || count > MAX_RECORDS || len != HEADER + RECORD * count {
        return Err(WireError::Length { len, count });
    }
    datagram[HEADER..]
        .chunks_exact(RECORD)
        .enumerate()
        .map(|(index, bytes)| record(bytes).map_err(|why| WireError::Record { index, why }))
        .collect()
}

/// One record's 48 bytes, checked.
fn record(bytes: &[u8]) -> Result<FlowRecord, &'static str> {
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut key = FlowKey::default();
    key.src.copy_from_slice(&bytes[0..16]);
    key.dst.copy_from_slice(&bytes[16..32]);
    key.sport_be = u16::from_ne_bytes([bytes[32], bytes[33]]);
    key.dport_be = u16::from_ne_bytes([bytes[34], bytes[35]]);
    key.proto = bytes[36];
    key.family = bytes[37];
    let flags = u32::from(bytes[38]);
    let (backend, epoch) = (word(40), word(44));
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return Err("protocol is neither TCP nor UDP");
    }
    match key.family {
        FAMILY_V4 if key.src[4..] != [0; 12] || key.dst[4..] != [0; 12] => {
            return Err("IPv4 address with bytes past its four")
        }
        FAMILY_V4 | FAMILY_V6 => {}
        _ => return Err("family is neither IPv4 nor IPv6"),
    }
    if flags & !RECORD_REOPENED != 0 || bytes[39] != 0 {
        return Err("unknown flags");
    }
    if epoch == 0 {
        return Err("backend epoch 0");
    }
    if backend >= MAX_BACKENDS {
        return Err("backend index out of range");
    }
    Ok(FlowRecord {
        key,
        backend,
        epoch,
        flags,
        reserved: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u8) -> FlowRecord {
        FlowRecord {
            key: FlowKey {
                src: [198, 18, 0, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                dst: [198, 19, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                sport_be: (40_000 + u16::from(i)).to_be(),
                dport_be: 80u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
                reserved: [0; 2],
            },
            backend: u32::from(i) * 7,
            epoch: 3 + u32::from(i),
            flags: 0,
            reserved: 0,
        }
    }

    fn v6() -> FlowRecord {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 7;
        FlowRecord {
            key: FlowKey {
                src,
                dst: [
                    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ],
                sport_be: 5353u16.to_be(),
                dport_be: 53u16.to_be(),
                proto: PROTO_UDP,
                family: FAMILY_V6,
                reserved: [0; 2],
            },
            backend: MAX_BACKENDS - 1,
            epoch: u32::MAX,
            flags: RECORD_REOPENED,
            reserved: 0,
        }
    }

    #[test]
    fn records_round_trip_up_to_a_full_datagram() {
        let one = vec![v6()];
        assert_eq!(decode(&encode(&one)).unwrap(), one);
        let full: Vec<_> = (0..MAX_RECORDS as u8).map(v4).collect();
        let datagram = encode(&full);
        assert_eq!(MAX_RECORDS, 29);
        assert_eq!(datagram.len(), HEADER + 29 * RECORD);
        assert!(datagram.len() <= 1400);
        assert_eq!(decode(&datagram).unwrap(), full);
    }

    /// Every kind of fault is refused with its own one-line reason.
    #[test]
    fn every_malformed_datagram_is_refused_in_one_line() {
        let good = encode(&[v4(1), v6()]);
        let mut cases: Vec<(Vec<u8>, WireError)> = vec![
            (Vec::new(), WireError::Short(0)),
            (good[..7].to_vec(), WireError::Short(7)),
        ];
        let mut edit = |at: usize, value: u8, error: WireError| {
            let mut bad = good.clone();
            bad[at] = value;
            cases.push((bad, error));
        };
        edit(0, b'X', WireError::Foreign);
        edit(4, 2, WireError::Foreign);
        edit(5, 1, WireError::Foreign);
        edit(
            7,
            0,
            WireError::Length {
                len: good.len(),
                count: 0,
            },
        );
        edit(
            7,
            3,
            WireError::Length {
                len: good.len(),
                count: 3,
            },
        );
        let record = |index, why| WireError::Record { index, why };
        edit(HEADER + 36, 1, record(0, "protocol is neither TCP nor UDP"));
        edit(HEADER + 37, 5, record(0, "family is neither IPv4 nor IPv6"));
        edit(
            HEADER + 4,
            1,
            record(0, "IPv4 address with bytes past its four"),
        );
        edit(
            HEADER + 16 + 15,
            1,
            record(0, "IPv4 address with bytes past its four"),
        );
        edit(HEADER + 38, 2, record(0, "unknown flags"));
        edit(HEADER + 39, 1, record(0, "unknown flags"));
        let mut beyond = good.clone();
        beyond[HEADER + 40..HEADER + 44].copy_from_slice(&MAX_BACKENDS.to_be_bytes());
        cases.push((beyond, record(0, "backend index out of range")));
        let mut unborn = good.clone();
        unborn[HEADER + RECORD + 44..].fill(0);
        cases.push((unborn, record(1, "backend epoch 0")));
        // A count above the most a datagram holds, even with the bytes for it.
        let mut long = encode(&(0..MAX_RECORDS as u8).map(v4).collect::<Vec<_>>());
        let first = long[HEADER..HEADER + RECORD].to_vec();
        long.extend_from_slice(&first);
        long[6..8].copy_from_slice(&30u16.to_be_bytes());
        cases.push((
            long.clone(),
            WireError::Length {
                len: long.len(),
                count: 30,
            },
        ));
        // Cut or padded: the length is not the count's.
        cases.push((
            good[..good.len() - 1].to_vec(),
            WireError::Length {
                len: good.len() - 1,
                count: 2,
            },
        ));
        let mut padded = good.clone();
        padded.push(0);
        cases.push((
            padded,
            WireError::Length {
                len: good.len() + 1,
                count: 2,
            },
        ));
        for (datagram, expected) in cases {
            let refused = decode(&datagram).unwrap_err();
            assert_eq!(refused, expected);
            assert_eq!(refused.to_string().lines().count(), 1, "{refused}");
        }
        assert_eq!(decode(&good).unwrap(), vec![v4(1), v6()]);
    }
}
