//! The UDP flood: one thread per CPU, pinned, in the client's namespace, each sending the
//! same [`FLOWS`] prepared frames (one per source port) over and over out of the client's
//! `eth0` through an AF_PACKET socket ([`RawSender`], qdisc bypassed) in batches of
//! `sendmmsg`. The client's kernel transmits them through the veth into the LB's `eth0`,
//! as a host's stack would. Each thread is bounded by time and by count.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use balancer_tests::netns::in_netns;
use balancer_tests::traffic::{Qdisc, RawSender};
use etherparse::PacketBuilder;

use super::topology::IFACE;

/// UDP destination port of the flood; the backends' sink drops these datagrams.
pub const FLOOD_PORT: u16 = 9;
/// First UDP source port of the flood.
const FIRST_PORT: u16 = 10_000;
/// Distinct UDP source ports (flows) the flood cycles through, from [`FIRST_PORT`] on.
pub const FLOWS: u16 = 1024;
/// Length of every frame: the Ethernet minimum without FCS.
pub const FRAME_LEN: usize = 60;
/// Length of the headers of every frame: Ethernet, IPv4, UDP.
const HEADER_LEN: usize = 14 + 20 + 8;
/// The most frames one thread sends per second of flood, a bound besides time.
const MAX_RATE_PER_THREAD: f64 = 50e6;

/// What one flood offered.
pub struct Offered {
    /// Frames the client's kernel took from the generator.
    pub packets: u64,
    /// How long the flood ran.
    pub seconds: f64,
}

/// Where the flood leaves from and what its frames are addressed to.
#[derive(Clone, Debug)]
pub struct Wire {
    /// The client's namespace: the flood leaves its [`IFACE`].
    pub ns: String,
    /// The frames' source MAC, the client's.
    pub src_mac: [u8; 6],
    /// The frames' destination MAC, the client's next hop's.
    pub dst_mac: [u8; 6],
    /// The client's address.
    pub src: Ipv4Addr,
    /// The VIP.
    pub dst: Ipv4Addr,
}

/// The generator: the flood's frames, built once.
pub struct Generator {
    ns: String,
    frames: Vec<Vec<u8>>,
}

impl Generator {
    /// Builds the [`FLOWS`] frames of the flood on `wire`.
    pub fn new(wire: &Wire) -> Self {
        Self {
            ns: wire.ns.clone(),
            frames: (0..FLOWS)
                .map(|flow| frame(wire, FIRST_PORT + flow))
                .collect(),
        }
    }

    /// Floods the VIP for `duration` from `threads` threads, thread `i` on CPU `i`.
    pub fn flood(&self, threads: usize, duration: Duration) -> Result<Offered> {
        let max_per_thread = (duration.as_secs_f64() * MAX_RATE_PER_THREAD) as u64;
        let times = max_per_thread.div_ceil(self.frames.len() as u64);
        let frames = &self.frames;
        let start = Instant::now();
        let deadline = start + duration;
        let packets = in_netns(&self.ns, || -> Result<u64> {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|cpu| {
                        scope.spawn(move || -> Result<u64> {
                            pin_to_cpu(cpu);
                            let sender = RawSender::open(IFACE, Qdisc::Bypass)?;
                            sender.send_until(frames, times, Some(deadline))
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("generator thread panicked"))
                    .sum::<Result<u64>>()
            })
        })??;
        Ok(Offered {
            packets,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// One frame of the flood on `wire`: client → VIP:[`FLOOD_PORT`] from UDP port `source`,
/// IPv4 and UDP checksums complete.
fn frame(wire: &Wire, source: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_LEN);
    PacketBuilder::ethernet2(wire.src_mac, wire.dst_mac)
        .ipv4(wire.src.octets(), wire.dst.octets(), 64)
        .udp(source, FLOOD_PORT)
        .write(&mut frame, &[0u8; FRAME_LEN - HEADER_LEN])
        .expect("frame");
    frame
}

/// Runs the calling thread on CPU `cpu` only (best effort: the flood runs anyway).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set; plain syscall on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

    use super::*;

    #[test]
    fn frames_are_one_per_source_port_with_valid_checksums() {
        let generator = Generator::new(&crate::end_to_end::topology::wire());
        assert_eq!(generator.frames.len(), usize::from(FLOWS));
        for (flow, frame) in (0..FLOWS).zip(&generator.frames) {
            assert_eq!(frame.len(), FRAME_LEN);
            let headers = PacketHeaders::from_ethernet_slice(frame).expect("parse");
            let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
                panic!("not IPv4");
            };
            let Some(TransportHeader::Udp(udp)) = &headers.transport else {
                panic!("not UDP");
            };
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            let payload = headers.payload.slice();
            assert_eq!(udp.checksum, udp.calc_checksum_ipv4(ip, payload).unwrap());
            assert_eq!(
                (udp.source_port, udp.destination_port),
                (FIRST_PORT + flow, FLOOD_PORT)
            );
        }
    }
}
