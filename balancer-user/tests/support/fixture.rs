//! A test data plane together with the desired state it serves, the images last written
//! for each service, and the selection model the kernel's choices are checked against.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use balancer_common::{
    flow_hash,
    packet_events::{FIN_CLOSE, NEW_FLOW, RESET, SYN_RETRANSMIT},
    pending_check, pending_hash, pending_slots, Backend, BackendStats, FlowKey, FlowState,
    PendingSlot, NONE, NO_GROUP, SPLIT_CELLS,
};
use balancer_user::{
    basis_points::BasisPoints,
    compile::compile,
    dataplane::{GlobalCounters, ServiceImage, TestRun},
    state::{Affinity, BackendEntry, Service, State},
    vip::Protocol,
};
use ipnet::IpNet;

use super::{
    packet::{Flow, Transport},
    plane::{
        assert_forwarded, assert_untouched, TestPlane, CONNTRACK_ENTRIES, INGRESS_IFINDEX,
        XDP_PASS, XDP_TX,
    },
    tracking::{Entry, Step, Tracking},
    verdict::{self, classify, martian, Verdict},
};

/// Seed of the flow hash in the tests (any fixed value; the model uses the same).
pub const SEED: u64 = 0x5eed_0fda_7a91_a4e0;

/// A data plane, the state written to it, and what was written.
pub struct Fixture {
    /// The loaded data plane.
    pub plane: TestPlane,
    /// The desired state the tables were compiled from.
    pub state: State,
    images: BTreeMap<String, ServiceImage>,
    backends: BTreeMap<u32, Backend>,
    /// The connection-tracking model, fed by [`Fixture::send_tracked`].
    pub tracking: Tracking,
    /// (port, protocol) of VIPs withdrawn with [`Fixture::withdraw_vip`]: the data plane's
    /// pre-filter keeps them until the daemon finds them idle.
    former_ports: BTreeSet<(u16, Protocol)>,
    /// Services whose VIP was withdrawn with [`Fixture::withdraw_vip`].
    withdrawn: BTreeSet<String>,
}

impl Fixture {
    /// An empty state and a freshly loaded data plane for the test `test`.
    pub fn new(test: &str) -> Self {
        Self::with_conntrack(test, CONNTRACK_ENTRIES)
    }

    /// [`Fixture::new`] with `conntrack` connection-tracking entries (the pending table
    /// gets `pending_slots` of it).
    pub fn with_conntrack(test: &str, conntrack: u32) -> Self {
        Self::on(TestPlane::load_sized(test, conntrack), conntrack)
    }

    /// An empty state on `plane`, loaded with `conntrack` connection-tracking entries.
    pub fn on(plane: TestPlane, conntrack: u32) -> Self {
        Self {
            plane,
            state: State::default(),
            images: BTreeMap::new(),
            backends: BTreeMap::new(),
            tracking: Tracking::new(pending_slots(conntrack)),
            former_ports: BTreeSet::new(),
            withdrawn: BTreeSet::new(),
        }
    }

    /// Adds a service (not yet published).
    pub fn add_service(&mut self, name: &str, vip: &str, affinity: Affinity) {
        let vip = vip.parse().expect("VIP");
        self.state
            .add_service(name, vip, affinity, None)
            .expect("add service");
    }

    /// Adds a backend reached through the ingress interface (XDP_TX) to the state and
    /// writes its forwarding entry; returns its index. Publish the service afterwards.
    pub fn add_backend(&mut self, service: &str, addr: &str, group: &str, weight: u16) -> u32 {
        self.add_backend_via(service, addr, group, weight, INGRESS_IFINDEX)
    }

    /// [`Fixture::add_backend`] with the backend behind interface `ifindex`.
    pub fn add_backend_via(
        &mut self,
        service: &str,
        addr: &str,
        group: &str,
        weight: u16,
        ifindex: u32,
    ) -> u32 {
        let addr: IpAddr = addr.parse().expect("backend address");
        self.state
            .add_backend(service, addr, group, weight)
            .expect("add backend");
        let entry = self.entry(service, addr);
        let backend = fake_backend(entry.epoch, ifindex);
        self.plane
            .set_backend(entry.index, &backend, true)
            .expect("set backend");
        self.backends.insert(entry.index, backend);
        entry.index
    }

    /// Adds `addrs` to `service`, the first half in group "blue", the rest in "green", all
    /// with weight 100, splits new flows 50/50 between the groups and publishes.
    pub fn add_two_groups(&mut self, service: &str, addrs: &[&str]) {
        let half = addrs.len() / 2;
        for (i, addr) in addrs.iter().enumerate() {
            let group = if i < half { "blue" } else { "green" };
            self.add_backend(service, addr, group, 100);
        }
        self.set_split(service, &[("blue", 5000), ("green", 5000)]);
        self.publish(service);
    }

    /// Sets the split (basis points per group name); publish afterwards.
    pub fn set_split(&mut self, service: &str, shares: &[(&str, u16)]) {
        let shares: Vec<(String, BasisPoints)> = shares
            .iter()
            .map(|(g, s)| (g.to_string(), BasisPoints::new(*s).expect("at most 100%")))
            .collect();
        self.state.set_split(service, &shares).expect("set split");
    }

    /// Changes a backend's weight in the state; publish afterwards.
    pub fn set_weight(&mut self, service: &str, addr: IpAddr, weight: u16) {
        self.state
            .set_weight(service, addr, weight)
            .expect("set weight");
    }

    /// Removes a backend from the state, cutting its flows (it does not retire); publish,
    /// then [`Fixture::clear_backend`].
    pub fn remove_backend(&mut self, service: &str, addr: IpAddr) -> BackendEntry {
        let entry = *self
            .service(service)
            .backends()
            .find(|(_, b)| b.addr == addr)
            .expect("a backend of the service")
            .1;
        self.state
            .remove_backend(service, addr, true, 0)
            .expect("remove backend");
        entry
    }

    /// Frees a backend index in the data plane.
    pub fn clear_backend(&mut self, index: u32) {
        self.plane.clear_backend(index).expect("clear backend");
        self.backends.remove(&index);
    }

    /// Compiles `service` and writes it (a new tables map swapped in, VIP).
    pub fn publish(&mut self, service: &str) {
        let svc = self.service(service).clone();
        let compiled = compile(&svc, SEED, &Default::default()).expect("compile");
        self.plane
            .write_service(svc.slot, svc.vip.key(), &compiled.image)
            .expect("write service");
        self.images.insert(service.to_string(), compiled.image);
    }

    /// The service as the state has it.
    pub fn service(&self, name: &str) -> &Service {
        self.state.service(name).expect("service")
    }

    /// The image last published for `service`.
    pub fn image(&self, service: &str) -> &ServiceImage {
        &self.images[service]
    }

    /// The state's entry of backend `addr` of `service`.
    pub fn entry(&self, service: &str, addr: IpAddr) -> BackendEntry {
        *self
            .service(service)
            .backends()
            .map(|(_, b)| b)
            .find(|b| b.addr == addr)
            .expect("backend in state")
    }

    /// The forwarding entry written for backend index `index`.
    pub fn backend(&self, index: u32) -> Backend {
        self.backends[&index]
    }

    /// Makes backend `index` forward by `forward` (`FORWARD_*`), in the data plane and the
    /// model, as the daemon does after the routed entry (tunnel, rewrite) it names, which is
    /// the caller's to write first.
    pub fn set_forward(&mut self, index: u32, forward: u32) {
        let mut entry = self.backends[&index];
        entry.forward = forward;
        self.plane
            .set_backend(index, &entry, false)
            .expect("write the backend");
        self.backends.insert(index, entry);
    }

    /// Pins clients in `cidr` of `service` to `group`; publish afterwards.
    pub fn add_pin(&mut self, service: &str, cidr: &str, group: &str) {
        let cidr: IpNet = cidr.parse().expect("pin prefix");
        self.state
            .add_pin(service, cidr, group)
            .unwrap_or_else(|e| panic!("pin {cidr} to {group}: {e}"));
    }

    /// Removes the pin of exactly `cidr` from `service`; publish afterwards.
    pub fn remove_pin(&mut self, service: &str, cidr: &str) {
        let cidr: IpNet = cidr.parse().expect("pin prefix");
        self.state
            .remove_pin(service, cidr)
            .unwrap_or_else(|e| panic!("unpin {cidr}: {e}"));
    }

    /// The backend index the model selects for a new flow of `service`.
    pub fn expected(&self, service: &str, flow: &Flow) -> Option<u32> {
        let svc = self.service(service);
        model_backend(
            self.image(service),
            svc.affinity,
            svc.table_size,
            &flow.key(),
            model_pin(svc, flow.src),
        )
    }

    /// Name of the group of backend index `index` in `service`.
    pub fn group_of(&self, service: &str, index: u32) -> &str {
        let svc = self.service(service);
        svc.groups
            .iter()
            .find(|g| g.backends.iter().any(|b| b.index == index))
            .map(|g| g.name.as_str())
            .unwrap_or_else(|| panic!("backend index {index} in no group of {service}"))
    }

    /// [`Fixture::expected`], failing the test when the model selects nothing.
    pub fn expected_backend(&self, service: &str, flow: &Flow) -> u32 {
        self.expected(service, flow)
            .unwrap_or_else(|| panic!("the model selects no backend for {flow:?}"))
    }

    /// Runs the program once on `frame`.
    pub fn send(&mut self, frame: &[u8]) -> TestRun {
        self.plane.test_run(frame, 1).expect("BPF_PROG_TEST_RUN")
    }

    /// Summed counters of backend index `index`.
    pub fn counters(&self, index: u32) -> BackendStats {
        self.plane
            .backend_counters(index)
            .expect("backend counters")
    }

    /// What the program should do with `frame`, from the parser rules of
    /// [`super::verdict`], the VIPs of the state and the selection model; a new flow is
    /// assumed (nothing tracked for it).
    pub fn outcome(&self, frame: &[u8]) -> Outcome {
        let flow = match classify(frame) {
            Verdict::Other => return Outcome::Pass(Counter::Passed),
            Verdict::Malformed => return Outcome::Pass(Counter::Malformed),
            Verdict::Unbalanceable => return Outcome::Pass(Counter::Unbalanceable),
            Verdict::Flow(flow) => flow,
        };
        let protocol = protocol_of(&flow);
        let vip = SocketAddr::new(flow.dst, flow.dport);
        let Some((name, _)) = self.state.services.iter().find(|(name, s)| {
            s.vip.addr == vip && s.vip.protocol == protocol && !self.withdrawn.contains(*name)
        }) else {
            return Outcome::Pass(Counter::Passed);
        };
        if martian(flow.src) {
            return Outcome::Drop(Counter::Martian);
        }
        match self.expected(name, &flow) {
            Some(index) => Outcome::Forward(index),
            None => Outcome::Drop(Counter::Dropped),
        }
    }

    /// The keys in connection tracking (established flows).
    pub fn tracked_flows(&self) -> Vec<FlowKey> {
        self.entries("CONNTRACK").into_keys().collect()
    }

    /// The keys of pending flows (only their first packet seen).
    pub fn pending_flows(&self) -> Vec<FlowKey> {
        self.entries("PENDING").into_keys().collect()
    }

    /// Every flow of `CONNTRACK` (established) or `PENDING` (the slots that hold a flow
    /// whole), read through the maps' pins.
    pub fn entries(&self, name: &str) -> HashMap<FlowKey, FlowState> {
        match name {
            "CONNTRACK" => self
                .conntrack()
                .iter()
                .collect::<Result<_, _>>()
                .expect("read CONNTRACK"),
            "PENDING" => {
                let pending = self.pending();
                (0..pending.len())
                    .map(|i| pending.get(&i, 0).expect("read PENDING"))
                    .filter(|slot| {
                        slot.check != 0
                            && slot.check == pending_check(pending_hash(&slot.key), &slot.state)
                    })
                    .map(|slot| (slot.key, slot.state))
                    .collect()
            }
            other => panic!("no connection-tracking map {other}"),
        }
    }

    /// Writes `state` for `key` into `CONNTRACK`, or a whole slot into `PENDING`: an entry
    /// no packet made.
    pub fn plant(&self, name: &str, key: FlowKey, state: FlowState) {
        match name {
            "CONNTRACK" => self.conntrack().insert(key, state, 0).expect("plant"),
            _ => {
                let hash = pending_hash(&key);
                let slot = PendingSlot {
                    key,
                    state,
                    check: pending_check(hash, &state),
                    written: 1,
                };
                let mut pending = self.pending();
                let index = hash as u32 & (pending.len() - 1);
                pending.set(index, slot, 0).expect("plant");
            }
        }
    }

    /// Removes what [`Fixture::plant`] wrote for `key`.
    pub fn unplant(&self, name: &str, key: FlowKey) {
        match name {
            "CONNTRACK" => self.conntrack().remove(&key).expect("unplant"),
            _ => {
                let mut pending = self.pending();
                let index = pending_hash(&key) as u32 & (pending.len() - 1);
                pending
                    .set(index, PendingSlot::default(), 0)
                    .expect("unplant");
            }
        }
    }

    /// `CONNTRACK`, opened from its pin.
    fn conntrack(&self) -> BpfHashMap<MapData, FlowKey, FlowState> {
        let path = self.plane.maps_dir().join("CONNTRACK");
        let map = Map::LruHashMap(MapData::from_pin(&path).expect("open CONNTRACK"));
        map.try_into().expect("CONNTRACK is an LRU hash map")
    }

    /// `PENDING`, opened from its pin.
    fn pending(&self) -> Array<MapData, PendingSlot> {
        let path = self.plane.maps_dir().join("PENDING");
        let map = Map::Array(MapData::from_pin(&path).expect("open PENDING"));
        map.try_into().expect("PENDING is an array")
    }

    /// Withdraws the VIP of `service` from the data plane (as when a service is given another
    /// VIP); its port stays in the pre-filter.
    pub fn withdraw_vip(&mut self, service: &str) {
        let vip = self.service(service).vip;
        self.plane.remove_vip(&vip.key()).expect("remove the VIP");
        self.former_ports.insert((vip.addr.port(), vip.protocol));
        self.withdrawn.insert(service.to_string());
    }

    /// Forgets the former VIP ports the data plane closed (see
    /// `DataPlane::close_idle_vip_ports`).
    pub fn vip_ports_closed(&mut self, closed: &[(u16, u8)]) {
        self.former_ports
            .retain(|(port, protocol)| !closed.contains(&(*port, protocol_number(*protocol))));
    }

    /// Whether the pre-filter lets `flow`'s packets reach connection tracking: a VIP of the
    /// state, or a former one, serves its destination port and protocol.
    pub fn vip_port(&self, flow: &Flow) -> bool {
        let protocol = protocol_of(flow);
        self.former_ports.contains(&(flow.dport, protocol))
            || self.state.services.iter().any(|(name, s)| {
                s.vip.addr.port() == flow.dport
                    && s.vip.protocol == protocol
                    && !self.withdrawn.contains(name)
            })
    }

    /// Sends one default frame of `flow` with `tcp_flags` (ignored for UDP) and checks it
    /// against the connection-tracking model and the selection model: forwarded to the
    /// backend they name (counted in `tally`, as a new flow when the tables chose it), or
    /// passed untouched; then the two maps must hold exactly the model's flows. Returns the
    /// backend forwarded to.
    pub fn send_tracked(&mut self, flow: &Flow, tcp_flags: u8, tally: &mut Tally) -> Option<u32> {
        let frame = match flow.transport {
            Transport::Tcp => flow.frame_with(tcp_flags),
            Transport::Udp => flow.frame(),
        };
        self.send_frame_tracked(flow, &frame, tally)
    }

    /// Like [`Fixture::send_tracked`], with the frame of `flow` given.
    pub fn send_frame_tracked(
        &mut self,
        flow: &Flow,
        frame: &[u8],
        tally: &mut Tally,
    ) -> Option<u32> {
        let frame = frame.to_vec();
        // What the program sees: the flags and sequence number as the frame carries them.
        let flags = verdict::tcp_header(&frame);
        let what = format!("{flow:?} flags and sequence number {flags:?}");
        let backends = self.backends.clone();
        let live = |i: u32, e: u32| e != 0 && backends.get(&i).is_some_and(|b| b.epoch == e);
        let vip_port = self.vip_port(flow);
        let step = self.tracking.packet(flow.key(), flags, vip_port, live);
        let (expected, events) = match step {
            Step::Filtered => (None, 0),
            Step::Follow { backend, events } => (Some(backend), events),
            Step::Choose => match self.outcome(&frame) {
                Outcome::Forward(index) => {
                    let epoch = backends[&index].epoch;
                    let events = self.tracking.record(flow.key(), flags, index, epoch, live);
                    (Some(index), events)
                }
                Outcome::Pass(_) => (None, 0),
                other => panic!("{what}: the model expects {other:?}"),
            },
        };
        let run = self.send(&frame);
        match expected {
            Some(index) => {
                assert_forwarded(&run, &frame, &self.backend(index), XDP_TX, &what);
                tally.counted(index, frame.len(), events);
            }
            None => assert_untouched(&run, &frame, XDP_PASS, &what),
        }
        self.assert_tracking(&what);
        expected
    }

    /// Asserts that the data plane's two connection-tracking maps hold exactly the model's
    /// flows (see [`Fixture::tracking_differs`]).
    pub fn assert_tracking(&self, what: &str) {
        if let Err(difference) = self.tracking_differs() {
            panic!("{what}: {difference}");
        }
    }

    /// Whether the data plane's two connection-tracking maps hold exactly the model's
    /// flows, each on the model's backend and epoch with the model's FIN and RST marks (and
    /// a close time exactly when marked — but for the opening SYN's stamp of a pending
    /// flow of a `nat` or `fullnat` backend) and opening SYN's sequence number; the first
    /// difference if not.
    pub fn tracking_differs(&self) -> Result<(), String> {
        let stamped = |state: &FlowState, pending: bool| {
            pending
                && state.syn_seq != 0
                && self
                    .backends
                    .get(&state.backend)
                    .is_some_and(|b| b.translated())
        };
        let as_entries = |map: HashMap<FlowKey, FlowState>,
                          pending: bool|
         -> Result<HashMap<FlowKey, Entry>, String> {
            map.into_iter()
                .map(|(key, state)| {
                    let closed = state.closed_by != 0;
                    let timed = (state.closed_ns != 0) != closed;
                    if timed && (closed || !stamped(&state, pending)) {
                        return Err(format!("close time and marks of {key:?}: {state:?}"));
                    }
                    if state.last_seen_ns == 0 {
                        return Err(format!("no last-seen time: {key:?}"));
                    }
                    if state.closed_by & !3 != 0 {
                        return Err(format!("unknown close marks: {key:?}: {state:?}"));
                    }
                    let entry = Entry {
                        backend: state.backend,
                        epoch: state.epoch,
                        fin: state.closed_by & 1 != 0,
                        rst: state.closed_by & 2 != 0,
                        syn_seq: state.syn_seq,
                    };
                    Ok((key, entry))
                })
                .collect()
        };
        let tables = [
            (
                "CONNTRACK",
                "established",
                &self.tracking.established,
                false,
            ),
            ("PENDING", "pending", &self.tracking.pending, true),
        ];
        for (map, kind, model, pending) in tables {
            let held = as_entries(self.entries(map), pending)?;
            if held != *model {
                let extra = held.iter().find(|(k, e)| model.get(k) != Some(e));
                let missing = model.iter().find(|(k, e)| held.get(k) != Some(e));
                return Err(format!(
                    "{kind} flows: {map} holds {} flows, the model {}; first held but not \
                     modelled: {extra:?}; first modelled but not held: {missing:?}",
                    held.len(),
                    model.len()
                ));
            }
        }
        Ok(())
    }

    /// Forgets the tracked flows of every backend, in the data plane and in the model;
    /// returns how many the data plane forgot, which must be the model's count.
    pub fn forget_all(&mut self) -> u64 {
        let all: HashSet<(u32, u32)> = self.backends.iter().map(|(&i, b)| (i, b.epoch)).collect();
        let forgotten = self.plane.forget_flows(&all).expect("forget every flow");
        let modelled = self.tracking.established.len() + self.tracking.pending.len();
        assert_eq!(forgotten, modelled as u64, "flows forgotten");
        self.tracking.clear();
        forgotten
    }

    /// Tracked flows per (index, epoch), however long idle (one hour is far beyond a test).
    pub fn active_flows(&self) -> HashMap<(u32, u32), u64> {
        self.plane
            .active_flows(Duration::from_secs(3600))
            .expect("active flows")
    }
}

/// The protocol of a flow, as services name it.
fn protocol_of(flow: &Flow) -> Protocol {
    match flow.transport {
        Transport::Tcp => Protocol::Tcp,
        Transport::Udp => Protocol::Udp,
    }
}

/// IANA number of a service protocol.
fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// What the program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// XDP_PASS with the frame untouched, counted under this global counter.
    Pass(Counter),
    /// XDP_DROP with the frame untouched, counted under this global counter.
    Drop(Counter),
    /// Forwarded to this backend index (counted under the backend), and tracked.
    Forward(u32),
}

/// One of the global counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not a VIP packet, passed.
    Passed,
    /// A VIP packet no backend can take, dropped.
    Dropped,
    /// Malformed, passed.
    Malformed,
    /// A fragment or an IPv6 packet with extension headers, passed.
    Unbalanceable,
    /// A VIP packet from a martian source, dropped.
    Martian,
}

impl Counter {
    /// `counters` with one more packet under this counter.
    pub fn plus_one(self, mut counters: GlobalCounters) -> GlobalCounters {
        let field = match self {
            Counter::Passed => &mut counters.passed,
            Counter::Dropped => &mut counters.dropped,
            Counter::Malformed => &mut counters.malformed,
            Counter::Unbalanceable => &mut counters.unbalanceable,
            Counter::Martian => &mut counters.martian,
        };
        *field += 1;
        counters
    }
}

/// A forwarding entry with MACs unique to the backend's epoch (epochs are never reused):
/// destination 02:be:<epoch>, source 02:5c:<epoch>.
pub fn fake_backend(epoch: u32, ifindex: u32) -> Backend {
    let e = epoch.to_be_bytes();
    Backend {
        dst_mac: [0x02, 0xbe, e[0], e[1], e[2], e[3]],
        src_mac: [0x02, 0x5c, e[0], e[1], e[2], e[3]],
        ifindex,
        epoch,
        forward: balancer_common::FORWARD_DSR,
    }
}

/// The group index a client pin of `svc` gives client `client`, computed from the state
/// alone: among the service's pins covering the client whose group has a backend of
/// weight above 0, the longest prefix wins; `None` means the split decides.
pub fn model_pin(svc: &Service, client: IpAddr) -> Option<usize> {
    svc.pins
        .iter()
        .filter(|pin| pin.cidr.contains(&client))
        .filter_map(|pin| {
            let g = svc.groups.iter().position(|g| g.name == pin.group)?;
            let serving = svc.groups[g].backends.iter().any(|b| b.weight > 0);
            serving.then_some((pin.cidr.prefix_len(), g))
        })
        .max_by_key(|&(len, _)| len)
        .map(|(_, g)| g)
}

/// The selection of a new flow, computed from the written image the way the design
/// describes it: flow hash (of the client address alone under client affinity) → group
/// (`pinned` if given, else the split cell's) → Maglev slot → backend index. Takes the
/// affinity, table size and pin from the state and the seed from the tests, not from the
/// compiled tables.
pub fn model_backend(
    image: &ServiceImage,
    affinity: Affinity,
    table_size: u32,
    key: &FlowKey,
    pinned: Option<usize>,
) -> Option<u32> {
    let hash = match affinity {
        Affinity::Connection => flow_hash(key, SEED),
        Affinity::Client => flow_hash(&key.client_only(), SEED),
    };
    let group = match pinned {
        Some(group) => group,
        None => {
            let cell = hash.cell(SPLIT_CELLS as u32)?;
            let group = image.cells[cell as usize];
            if group == NO_GROUP {
                return None;
            }
            usize::from(group)
        }
    };
    let slot = hash.slot(table_size)?;
    let index = image.rings[group][slot as usize];
    (index != NONE).then_some(index)
}

/// Counts `events` (`packet_events` bits) into `counters`.
pub fn add_events(counters: &mut BackendStats, events: u32) {
    counters.new_flows += u64::from(events & NEW_FLOW != 0);
    counters.fin_closes += u64::from(events & FIN_CLOSE != 0);
    counters.resets += u64::from(events & RESET != 0);
    counters.syn_retransmits += u64::from(events & SYN_RETRANSMIT != 0);
}

/// Expected per-backend counters, tallied as packets are sent.
#[derive(Default)]
pub struct Tally {
    counters: BTreeMap<u32, BackendStats>,
}

impl Tally {
    /// Records one packet of `bytes` forwarded to `index`, the first of its flow or not
    /// (and neither a close nor a SYN).
    pub fn forwarded(&mut self, index: u32, bytes: usize, new_flow: bool) {
        self.counted(index, bytes, if new_flow { NEW_FLOW } else { 0 });
    }

    /// Records one packet of `bytes` forwarded to `index` that did `events`
    /// (`packet_events` bits).
    pub fn counted(&mut self, index: u32, bytes: usize, events: u32) {
        let c = self.counters.entry(index).or_default();
        c.packets += 1;
        c.bytes += bytes as u64;
        add_events(c, events);
    }

    /// The expected counters of `index` (zero if nothing was sent to it).
    pub fn of(&self, index: u32) -> BackendStats {
        self.counters.get(&index).copied().unwrap_or_default()
    }

    /// Asserts that the data plane's counters of every backend of `service` match.
    pub fn assert_matches(&self, fixture: &Fixture, service: &str) {
        for (_, b) in fixture.service(service).backends() {
            assert_eq!(
                fixture.counters(b.index),
                self.of(b.index),
                "counters of backend {} (index {})",
                b.addr,
                b.index
            );
        }
    }
}
