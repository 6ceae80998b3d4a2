//! The UDP flood: the test programs' `trafgen` XDP program run by BPF_PROG_TEST_RUN in
//! live-frames mode, which turns its XDP_TX into a real transmission out of the client's
//! `eth0`. The kernel builds the frames in its own page pool and recycles them, so nothing is
//! allocated or copied per packet on the generating side. One thread per CPU, pinned, each
//! bounded by time and by count.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::{
    maps::Array,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use balancer_tests::netns::in_netns;
use balancer_tests::test_programs::OBJECT;
use etherparse::PacketBuilder;

use super::topology::{CLIENT, CLIENT_MAC, CLIENT_NS, IFACE, LB_MAC, VIP};

/// UDP destination port of the flood; the backends' sink drops these datagrams.
pub const FLOOD_PORT: u16 = 9;
/// First UDP source port; `trafgen` cycles through 1024 ports from here.
const FIRST_PORT: u16 = 10_000;
/// Length of every frame: the Ethernet minimum without FCS, 18 bytes of UDP payload.
const FRAME_LEN: usize = 60;
/// Length of the header `trafgen` rewrites in every frame: Ethernet, IPv4, UDP.
const HEADER_LEN: usize = 14 + 20 + 8;
/// Frames the kernel runs and transmits per batch (its maximum is 256).
const BATCH: u32 = 64;
/// Target duration of one BPF_PROG_TEST_RUN call, so the deadline is kept closely.
const CALL_TIME: Duration = Duration::from_millis(50);
/// Frames in the first call of each thread, before its rate is known.
const FIRST_CALL: u32 = 1 << 12;
/// Bounds of the frames in one call.
const CALL_FRAMES: (u32, u32) = (1 << 10, 1 << 24);
/// The most frames one thread sends per second of flood, a bound besides time.
const MAX_RATE_PER_THREAD: f64 = 50e6;

/// What one flood offered.
pub struct Offered {
    /// Frames the generator transmitted.
    pub packets: u64,
    /// How long the flood ran.
    pub seconds: f64,
}

/// The loaded generator.
pub struct Generator {
    ebpf: Ebpf,
}

impl Generator {
    /// Loads `trafgen` and gives it the flood's header.
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("load the test programs")?;
        let program: &mut Xdp = ebpf
            .program_mut("trafgen")
            .context("trafgen missing from the test programs")?
            .try_into()?;
        program.load()?;
        let mut template: Array<_, [u8; HEADER_LEN]> = Array::try_from(
            ebpf.map_mut("TRAFGEN_TEMPLATE")
                .context("trafgen template")?,
        )?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&frame()[..HEADER_LEN]);
        template.set(0, header, 0)?;
        Ok(Self { ebpf })
    }

    /// Floods the VIP for `duration` from `threads` threads, thread `i` on CPU `i`.
    pub fn flood(&self, threads: usize, duration: Duration) -> Result<Offered> {
        let program: &Xdp = self
            .ebpf
            .program("trafgen")
            .context("trafgen missing")?
            .try_into()?;
        let frame = frame();
        let max_per_thread = (duration.as_secs_f64() * MAX_RATE_PER_THREAD) as u64;
        let start = Instant::now();
        let deadline = start + duration;
        let sent = in_netns(CLIENT_NS, || -> Result<u64> {
            let context = xdp_md(ifindex(IFACE)?);
            let (frame, context) = (&frame, &context);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|cpu| {
                        scope.spawn(move || {
                            pin_to_cpu(cpu);
                            send_until(program, frame, context, deadline, max_per_thread)
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
            packets: sent,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// The flood's frame: client → VIP:[`FLOOD_PORT`] from [`FIRST_PORT`], checksums complete.
fn frame() -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_LEN);
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .udp(FIRST_PORT, FLOOD_PORT)
        .write(&mut frame, &[0u8; FRAME_LEN - HEADER_LEN])
        .expect("frame");
    frame
}

/// The `xdp_md` context of every run: the whole frame is packet data (no metadata), it
/// arrives on rx queue 0 of interface `ifindex`, and XDP_TX sends it out of that interface.
fn xdp_md(ifindex: u32) -> Vec<u8> {
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    [0, FRAME_LEN as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|field: &u32| field.to_ne_bytes())
        .collect()
}

/// Runs `trafgen` on `frame` in calls of about [`CALL_TIME`] until `deadline` or `max`
/// frames; returns how many it sent.
fn send_until(
    program: &Xdp,
    frame: &[u8],
    context: &[u8],
    deadline: Instant,
    max: u64,
) -> Result<u64> {
    let mut sent = 0u64;
    let mut frames = FIRST_CALL;
    loop {
        let started = Instant::now();
        if started >= deadline || sent >= max {
            return Ok(sent);
        }
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(context),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN of trafgen in live-frames mode")?;
        sent += u64::from(frames);
        let rate = f64::from(frames) / started.elapsed().as_secs_f64().max(1e-6);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(CALL_TIME);
        let (least, most) = (f64::from(CALL_FRAMES.0), f64::from(CALL_FRAMES.1));
        frames = (rate * left.as_secs_f64()).clamp(least, most) as u32;
    }
}

/// Index of interface `name` in the calling thread's namespace.
fn ifindex(name: &str) -> Result<u32> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index)
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
