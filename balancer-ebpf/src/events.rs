//! Rare data-plane events worth an operator's attention, reported through aya-log: the
//! daemon forwards them into its own log.
//!
//! Both happen only on the drop path of a new VIP flow, never for an established or a
//! non-VIP packet. Each kind is rate-limited here in the kernel, to one message per second
//! per CPU, so a flood of such packets cannot fill the log ring or the daemon's log. The
//! formatting writes straight into the ring and needs stack of its own, so each report is a
//! separate BPF subprogram (`inline(never)`), called only on its drop path: the stack and
//! the instructions of the hot path stay as they were.

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, macros::map, maps::PerCpuArray};
use aya_log_ebpf::warn;
use balancer_common::{FlowKey, FAMILY_V4, PROTO_TCP};

/// Event kind: a packet to a VIP that no backend can take (no group for its split cell,
/// or a ring slot without a backend).
const EVENT_NO_BACKEND: u32 = 0;
/// Event kind: the live tables name a backend index whose entry is cleared. The daemon
/// writes a backend before any table that names it and clears it only after no live
/// table does, so this is a bug signal.
const EVENT_EMPTY_SLOT: u32 = 1;
/// Number of event kinds.
const EVENT_KINDS: u32 = 2;

/// At most one message per kind and CPU within this interval.
const LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// The log target of these messages in the daemon's log.
const TARGET: &str = "balancer::xdp";

/// Event kind -> coarse-clock time of this CPU's last message of that kind (0: never).
/// Not pinned: it only paces the messages of this program instance.
#[map]
static EVENT_LOGGED: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_KINDS, 0);

/// Reports a VIP packet of `key` to `service` that no backend can take (rate-limited).
#[inline(never)]
pub fn no_backend(service: u32, key: &FlowKey) {
    if !due(EVENT_NO_BACKEND) {
        return;
    }
    let port = u16::from_be(key.dport_be);
    let proto = if key.proto == PROTO_TCP { "tcp" } else { "udp" };
    if key.family == FAMILY_V4 {
        let vip = core::net::Ipv4Addr::new(key.dst[0], key.dst[1], key.dst[2], key.dst[3]);
        warn!(
            &(),
            target: TARGET,
            "service {} (VIP {:i}:{}/{}): no backend can take a new flow; packet dropped",
            service,
            vip,
            port,
            proto
        );
    } else {
        let vip = core::net::Ipv6Addr::from(key.dst);
        warn!(
            &(),
            target: TARGET,
            "service {} (VIP [{:i}]:{}/{}): no backend can take a new flow; packet dropped",
            service,
            vip,
            port,
            proto
        );
    }
}

/// Reports that ring `group` of `service`'s table generation `generation` names backend
/// index `index`, whose entry is cleared (rate-limited).
#[inline(never)]
pub fn empty_slot(service: u32, generation: u32, group: u32, index: u32) {
    if !due(EVENT_EMPTY_SLOT) {
        return;
    }
    warn!(
        &(),
        target: TARGET,
        "service {} table generation {} group {}: ring slot names backend index {}, which is not set; packet dropped",
        service,
        generation,
        group,
        index
    );
}

/// Whether a message of `kind` may be sent now on this CPU; if so, records it as sent.
#[inline(always)]
fn due(kind: u32) -> bool {
    let Some(last) = EVENT_LOGGED.get_ptr_mut(kind) else {
        return false;
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < LOG_INTERVAL_NS {
            return false;
        }
        *last = now;
    }
    true
}
