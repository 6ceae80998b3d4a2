//! Test frames for BPF_PROG_TEST_RUN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// An Ethernet + IP + TCP frame of `segment` from `src` to `dst` with 32 bytes of payload;
/// an IPv4 address with an IPv6 one is taken as IPv4-mapped.
pub fn tcp(src: SocketAddr, dst: SocketAddr, segment: Segment) -> Vec<u8> {
    match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            tcp_v4(s.octets(), src.port(), d.octets(), dst.port(), segment)
        }
        (s, d) => tcp_v6(v6(s), src.port(), v6(d), dst.port(), segment),
    }
}

fn v6(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Distinct TCP flows to one service, numbered: flow `i` comes from its own client address
/// and port (see [`Flows::client`]).
#[derive(Clone, Copy, Debug)]
pub struct Flows {
    /// The service's address.
    pub vip: SocketAddr,
}

impl Flows {
    /// Flow `i`'s client: 198.18.x.y (IPv4 VIPs) or 2001:db8:2::x:y (IPv6), the low 16
    /// bits of `i` in x.y, from port 1024 + the rest. Different `i` are different 5-tuples.
    pub fn client(&self, i: u32) -> SocketAddr {
        let port = 1024 + (i >> 16) as u16;
        let addr = match self.vip {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8)),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                2,
                0,
                0,
                0,
                (i >> 8) as u8 as u16,
                i as u8 as u16,
            )),
        };
        SocketAddr::new(addr, port)
    }

    /// The `segment` of flow `i`.
    pub fn frame(&self, i: u32, segment: Segment) -> Vec<u8> {
        tcp(self.client(i), self.vip, segment)
    }
}

/// The IPv4 VIP of the bench services.
pub const VIP4: [u8; 4] = [198, 19, 0, 1];
/// The IPv6 VIP of the bench services.
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn numbered_flows_are_distinct_clients_of_the_vips_family() {
        for vip in ["198.19.0.1:80", "[2001:db8:ffff::1]:80"] {
            let flows = Flows {
                vip: vip.parse().unwrap(),
            };
            let clients: BTreeSet<SocketAddr> =
                (0..70_000).step_by(7).map(|i| flows.client(i)).collect();
            assert_eq!(clients.len(), 10_000, "{vip}");
            assert!(clients.iter().all(|c| c.is_ipv6() == flows.vip.is_ipv6()));
        }
        // IPv4 flows are those the bench always used: 198.18.x.y from port 1024 up.
        let flows = Flows {
            vip: "198.19.0.1:80".parse().unwrap(),
        };
        assert_eq!(
            flows.client(0x1_0203),
            "198.18.2.3:1025".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            flows.frame(5, Segment::Syn),
            tcp_v4([198, 18, 0, 5], 1024, VIP4, 80, Segment::Syn)
        );
    }
}
