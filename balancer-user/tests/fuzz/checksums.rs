//! Checksums the program updates incrementally, checked by recomputation: a checksum is
//! named by its field and the bytes it covers (pseudo-header included), and what those
//! bytes sum to (etherparse's one's complement sum) must be the same before and after the
//! rewrite. A valid checksum stays valid that way, and a frame that came with a wrong one
//! (a mutated frame) leaves exactly as wrong: the rewrite neither repairs nor breaks it.

use std::ops::Range;

use etherparse::checksum::Sum16BitWords;

/// Bytes a checksum covers.
#[derive(Clone, Debug)]
pub enum Part {
    /// Bytes of the frame (cut at its end).
    Frame(Range<usize>),
    /// Bytes of a pseudo-header that are in no header (a length, the protocol).
    Fixed(Vec<u8>),
}

/// One checksum field and what it covers.
#[derive(Clone, Debug)]
pub struct Sum {
    /// What it is, for messages.
    pub name: &'static str,
    /// Offset of the 16-bit field in the frame.
    pub field: usize,
    /// What it covers, the field included.
    pub parts: Vec<Part>,
    /// UDP: a field of 0 means "no checksum" and stays 0.
    pub none_when_zero: bool,
    /// UDP: a computed checksum of 0 is sent as all ones, never as 0.
    pub never_zero: bool,
}

impl Sum {
    /// A checksum of `name` at `field` over `parts`, 0 an ordinary value.
    pub fn new(name: &'static str, field: usize, parts: Vec<Part>) -> Self {
        Self {
            name,
            field,
            parts,
            none_when_zero: false,
            never_zero: false,
        }
    }

    /// The one's complement of what the covered bytes of `frame` sum to: 0 (or its other
    /// form, 0xffff) for a right checksum. (In native byte order: only compared.)
    pub fn residual(&self, frame: &[u8]) -> u16 {
        let sum = self
            .parts
            .iter()
            .fold(Sum16BitWords::new(), |sum, part| match part {
                Part::Frame(range) => {
                    let end = range.end.min(frame.len());
                    sum.add_slice(&frame[range.start.min(end)..end])
                }
                Part::Fixed(bytes) => sum.add_slice(bytes),
            });
        sum.ones_complement()
    }

    /// Whether the field in `after` is the incremental update of the one in `before`: the
    /// same residual (0 and 0xffff being the same number), the UDP rules kept.
    pub fn check(&self, before: &[u8], after: &[u8]) -> Result<(), String> {
        let field = |frame: &[u8]| {
            frame
                .get(self.field..self.field + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (Some(old), Some(new)) = (field(before), field(after)) else {
            return Err(format!(
                "{}: field at {} out of the frame",
                self.name, self.field
            ));
        };
        if self.none_when_zero && old == 0 {
            return match new {
                0 => Ok(()),
                _ => Err(format!("{}: none (0) became {new:#06x}", self.name)),
            };
        }
        if self.never_zero && new == 0 {
            return Err(format!("{}: 0, which means none", self.name));
        }
        let (was, is) = (
            self.residual(before) % 0xffff,
            self.residual(after) % 0xffff,
        );
        if was != is {
            return Err(format!(
                "{}: {old:#06x} became {new:#06x}, which sums to {is:#06x} where the frame \
                 came summing to {was:#06x} (0 is right)",
                self.name
            ));
        }
        Ok(())
    }
}

/// The header checksum of the IPv4 header at `l3`, `len` bytes long.
pub fn ipv4_header(name: &'static str, l3: usize, len: usize) -> Sum {
    Sum::new(name, l3 + 10, vec![Part::Frame(l3..l3 + len)])
}

/// The checksum of the TCP or UDP (`udp`) segment at `l4`, `len` bytes long, of the IP
/// header at `l3` (IPv6 with `v6`): over the pseudo-header and the segment.
pub fn transport(
    name: &'static str,
    (l3, v6): (usize, bool),
    l4: usize,
    udp: bool,
    len: usize,
) -> Sum {
    let proto = if udp { 17 } else { 6 };
    let mut parts = if v6 {
        vec![
            Part::Frame(l3 + 8..l3 + 40),
            Part::Fixed((len as u32).to_be_bytes().to_vec()),
            Part::Fixed(vec![0, 0, 0, proto]),
        ]
    } else {
        vec![
            Part::Frame(l3 + 12..l3 + 20),
            Part::Fixed(vec![0, proto]),
            Part::Fixed((len as u16).to_be_bytes().to_vec()),
        ]
    };
    parts.push(Part::Frame(l4..l4 + len));
    let field = l4 + if udp { 6 } else { 16 };
    Sum {
        none_when_zero: udp && !v6,
        never_zero: udp,
        ..Sum::new(name, field, parts)
    }
}

/// The checksum of the ICMP (or, with `v6`, ICMPv6: with its pseudo-header) message at
/// `icmp`, of the IP header at `l3`, `len` bytes long.
pub fn icmp(name: &'static str, (l3, v6): (usize, bool), icmp: usize, len: usize) -> Sum {
    let mut parts = Vec::new();
    if v6 {
        parts.push(Part::Frame(l3 + 8..l3 + 40));
        parts.push(Part::Fixed((len as u32).to_be_bytes().to_vec()));
        parts.push(Part::Fixed(vec![0, 0, 0, 58]));
    }
    parts.push(Part::Frame(icmp..icmp + len));
    Sum::new(name, icmp + 2, parts)
}

/// The checksum a correct sender writes over `bytes` (the field zero within them), as a
/// big-endian value. (etherparse sums the words in native byte order: its result is the
/// field's bytes in native order.)
pub fn compute(bytes: &[u8]) -> u16 {
    let native = Sum16BitWords::new().add_slice(bytes).ones_complement();
    u16::from_be_bytes(native.to_ne_bytes())
}

/// The check takes a checksum recomputed for rewritten addresses and ports, and refuses one
/// off by a bit, or a UDP "none" that became a value.
#[test]
fn the_check_tells_a_right_update_from_a_wrong_one() {
    use crate::support::packet::{Flow, Transport};

    for transport in [Transport::Tcp, Transport::Udp] {
        let before = Flow::new(transport, "203.0.113.7", 40_000, "198.19.0.1", 80).frame();
        let after = Flow::new(transport, "203.0.113.7", 40_000, "198.18.210.3", 8080).frame();
        let udp = transport == Transport::Udp;
        let len = before.len() - 34;
        let sums = [ipv4_header("IPv4", 14, 20), transport_sum(udp, len)];
        for sum in &sums {
            sum.check(&before, &after).expect("recomputed");
            let mut wrong = after.clone();
            wrong[sum.field + 1] ^= 1;
            assert!(
                sum.check(&before, &wrong).is_err(),
                "{} off by a bit",
                sum.name
            );
        }
    }
    let mut none = Flow::new(Transport::Udp, "203.0.113.7", 1, "198.19.0.1", 53).frame();
    none[40..42].copy_from_slice(&[0, 0]);
    let sum = transport_sum(true, none.len() - 34);
    sum.check(&none, &none).expect("none stays none");
    let mut some = none.clone();
    some[41] = 1;
    assert!(sum.check(&none, &some).is_err(), "none became a value");
}

/// The TCP or UDP checksum of an untagged IPv4 frame's `len`-byte segment.
fn transport_sum(udp: bool, len: usize) -> Sum {
    transport("L4", (14, false), 34, udp, len)
}
