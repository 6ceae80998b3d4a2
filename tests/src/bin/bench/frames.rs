//! Test frames for BPF_PROG_TEST_RUN.

use etherparse::PacketBuilder;

/// Which TCP segment a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A SYN (a new connection): recorded as pending.
    Syn,
    /// An ACK with 32 bytes of data: promotes a pending flow, then follows an established one.
    Ack,
}

/// An Ethernet + IPv4 + TCP SYN frame with 32 bytes of payload.
pub fn frame_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    tcp_v4(src, sport, dst, dport, Segment::Syn)
}

/// An Ethernet + IPv4 + TCP frame of `segment` with 32 bytes of payload.
pub fn tcp_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, segment: Segment) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64_240);
    let builder = match segment {
        Segment::Syn => builder.syn(),
        Segment::Ack => builder.ack(1),
    };
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 32]).expect("frame");
    frame
}

/// An Ethernet + IPv6 + TCP frame of `segment` with 32 bytes of payload.
pub fn tcp_v6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, segment: Segment) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1, 64_240);
    let builder = match segment {
        Segment::Syn => builder.syn(),
        Segment::Ack => builder.ack(1),
    };
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 32]).expect("frame");
    frame
}

/// The IPv4 VIP of the bench services.
pub const VIP4: [u8; 4] = [198, 19, 0, 1];
/// The IPv6 VIP of the bench services.
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
