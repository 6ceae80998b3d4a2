//! What a measured packet must come back as. Before a row is timed, its packet is run once
//! and checked against the path the row names: a mismatch fails the bench.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use anyhow::{bail, Context, Result};
use balancer_user::dataplane::TestRun;
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

use super::SECTION;

/// XDP_DROP.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;
/// XDP_REDIRECT.
pub const XDP_REDIRECT: u32 = 4;

/// An XDP action's name.
pub fn action_name(action: u32) -> String {
    match action {
        0 => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("XDP action {other}"),
    }
}

/// The path a row of the balancer names.
pub enum Expect<'a> {
    /// Handed to the kernel untouched: XDP_PASS.
    Pass,
    /// Sent to a backend on L2: XDP_TX (or XDP_REDIRECT), addressed to one of these MACs.
    Forward(&'a BTreeSet<[u8; 6]>),
    /// Routed by the kernel's tables: XDP_TX or XDP_REDIRECT to this next hop's MAC, the
    /// IP packet in this shape.
    Routed([u8; 6], Shape),
}

/// What a routed packet's (outer) IP packet must look like.
pub enum Shape {
    /// IP in IP to one of these backends.
    Ipip(Vec<IpAddr>),
    /// GUE (UDP to this port) to one of these backends.
    Gue(Vec<IpAddr>, u16),
    /// Destination rewritten to one of these backends, at this port.
    Nat(Vec<IpAddr>, u16),
    /// A backend's reply, its source rewritten to this VIP.
    Reply(SocketAddr),
}

impl Expect<'_> {
    /// Fails, naming `row`, unless `run` took this path.
    pub fn check(&self, row: &str, run: &TestRun) -> Result<()> {
        let sent = matches!(run.action, XDP_TX | XDP_REDIRECT);
        match self {
            Expect::Pass if run.action == XDP_PASS => Ok(()),
            Expect::Pass => bail!(
                "{SECTION}: row \"{row}\" returned {}, expected XDP_PASS",
                action_name(run.action)
            ),
            _ if !sent => bail!(
                "{SECTION}: row \"{row}\" returned {}, expected XDP_TX or XDP_REDIRECT",
                action_name(run.action)
            ),
            Expect::Forward(macs) => {
                let dst = run.packet.get(..6).unwrap_or_default();
                if !macs.iter().any(|mac| mac == dst) {
                    bail!("{SECTION}: row \"{row}\" forwarded to MAC {dst:02x?}, not a backend's");
                }
                Ok(())
            }
            Expect::Routed(next_hop, shape) => {
                let dst = run.packet.get(..6).unwrap_or_default();
                if dst != next_hop {
                    bail!(
                        "{SECTION}: row \"{row}\" sent to MAC {dst:02x?}, not the next hop's \
                         {next_hop:02x?}"
                    );
                }
                shape
                    .check(&run.packet)
                    .with_context(|| format!("{SECTION}: row \"{row}\""))
            }
        }
    }
}

impl Shape {
    /// Fails unless `frame` carries an IP packet of this shape.
    fn check(&self, frame: &[u8]) -> Result<()> {
        let ip = Outer::of(frame)?;
        let to = |backends: &[IpAddr]| {
            if !backends.contains(&ip.dst) {
                bail!("sent to {}, not a backend", ip.dst);
            }
            Ok(())
        };
        match self {
            Shape::Ipip(backends) => {
                to(backends)?;
                if !matches!(ip.protocol, 4 | 41) {
                    bail!("outer protocol {}, not IP in IP", ip.protocol);
                }
            }
            Shape::Gue(backends, port) => {
                to(backends)?;
                if ip.protocol != 17 || ip.ports.map(|p| p.1) != Some(*port) {
                    bail!("not UDP to port {port}: {ip:?}");
                }
            }
            Shape::Nat(backends, port) => {
                to(backends)?;
                if ip.ports.map(|p| p.1) != Some(*port) {
                    bail!("not rewritten to port {port}: {ip:?}");
                }
            }
            Shape::Reply(vip) => {
                if (ip.src, ip.ports.map(|p| p.0)) != (vip.ip(), Some(vip.port())) {
                    bail!("not rewritten to come from {vip}: {ip:?}");
                }
            }
        }
        Ok(())
    }
}

/// The addresses, protocol and transport ports of a frame's outer IP packet.
#[derive(Debug)]
pub struct Outer {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol / next header.
    pub protocol: u8,
    /// TCP or UDP source and destination ports.
    pub ports: Option<(u16, u16)>,
}

impl Outer {
    /// Parses `frame` (Ethernet, IP, maybe TCP or UDP).
    pub fn of(frame: &[u8]) -> Result<Outer> {
        let headers = PacketHeaders::from_ethernet_slice(frame).context("unparsable frame")?;
        let (src, dst, protocol) = match headers.net {
            Some(NetHeaders::Ipv4(ip, _)) => (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                ip.protocol.0,
            ),
            Some(NetHeaders::Ipv6(ip, _)) => (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                ip.next_header.0,
            ),
            None => bail!("no IP packet"),
        };
        let ports = match headers.transport {
            Some(TransportHeader::Tcp(tcp)) => Some((tcp.source_port, tcp.destination_port)),
            Some(TransportHeader::Udp(udp)) => Some((udp.source_port, udp.destination_port)),
            _ => None,
        };
        Ok(Outer {
            src,
            dst,
            protocol,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{IpNumber, PacketBuilder};

    use super::*;
    use crate::frames::{tcp, Segment};

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn endpoint(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// An Ethernet + IPv4 frame from `src` to `dst` carrying `payload` as protocol
    /// `protocol`.
    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .write(&mut frame, IpNumber(protocol), payload)
            .unwrap();
        frame
    }

    #[test]
    fn a_rewritten_packet_must_go_to_a_backend_at_its_port() {
        let backends = vec![addr("198.18.221.5"), addr("198.18.221.6")];
        let shape = Shape::Nat(backends, 8080);
        let client = endpoint("198.18.200.1:40000");
        let rewritten = tcp(client, endpoint("198.18.221.6:8080"), Segment::Ack);
        assert!(shape.check(&rewritten).is_ok());
        let other_port = tcp(client, endpoint("198.18.221.6:80"), Segment::Ack);
        assert!(shape.check(&other_port).is_err());
        let untouched = tcp(client, endpoint("198.19.0.4:8080"), Segment::Ack);
        assert!(shape.check(&untouched).is_err());
    }

    #[test]
    fn a_reply_must_come_from_the_vip() {
        let shape = Shape::Reply(endpoint("[2001:db8:ffff::4]:80"));
        let client = endpoint("[2001:db8:2::1]:40000");
        let seen = tcp(endpoint("[2001:db8:ffff::4]:80"), client, Segment::Ack);
        assert!(shape.check(&seen).is_ok());
        let unchanged = tcp(endpoint("[2001:db8:221::5]:8080"), client, Segment::Ack);
        assert!(shape.check(&unchanged).is_err());
    }

    #[test]
    fn a_tunnel_must_carry_its_protocol_to_a_backend() {
        let backend = [198, 18, 221, 1];
        let inner = &tcp(
            endpoint("198.18.200.1:40000"),
            endpoint("198.19.0.2:80"),
            Segment::Ack,
        )[14..];
        let ipip = ipv4([198, 18, 220, 1], backend, 4, inner);
        let backends = vec![IpAddr::from(backend)];
        assert!(Shape::Ipip(backends.clone()).check(&ipip).is_ok());
        assert!(Shape::Ipip(vec![addr("198.18.221.2")])
            .check(&ipip)
            .is_err());
        assert!(Shape::Gue(backends.clone(), 6080).check(&ipip).is_err());

        let mut gue = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 220, 1], backend, 64)
            .udp(49_152, 6080)
            .write(&mut gue, inner)
            .unwrap();
        assert!(Shape::Gue(backends.clone(), 6080).check(&gue).is_ok());
        assert!(Shape::Gue(backends.clone(), 7000).check(&gue).is_err());
        assert!(Shape::Ipip(backends).check(&gue).is_err());
    }

    #[test]
    fn a_routed_run_must_be_sent_to_the_next_hop() {
        let next_hop = [2, 0xbe, 0, 0, 0xdc, 0x0a];
        let mut packet = tcp(
            endpoint("198.18.200.1:40000"),
            endpoint("198.18.221.5:8080"),
            Segment::Ack,
        );
        packet[..6].copy_from_slice(&next_hop);
        let run = |action, packet: &[u8]| TestRun {
            action,
            packet: packet.to_vec(),
            duration: std::time::Duration::ZERO,
        };
        let expect = Expect::Routed(next_hop, Shape::Nat(vec![addr("198.18.221.5")], 8080));
        assert!(expect.check("row", &run(XDP_REDIRECT, &packet)).is_ok());
        assert!(expect.check("row", &run(XDP_TX, &packet)).is_ok());
        let passed = expect.check("row", &run(XDP_PASS, &packet)).unwrap_err();
        assert!(passed.to_string().contains("XDP_PASS"), "{passed}");
        packet[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert!(expect.check("row", &run(XDP_REDIRECT, &packet)).is_err());
    }
}
