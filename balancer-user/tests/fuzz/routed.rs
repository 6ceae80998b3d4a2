//! The routed services of the fuzzed data plane — `ipip`, `gue`, `nat` and `fullnat`, each
//! over IPv4 and IPv6 — in a network namespace whose routes the model knows ([`ROUTES`]),
//! and what the program must send their backends ([`Routed::forward`]).
//!
//! Every routed service has four backends of equal weight, one behind each kind of route:
//! a resolved next hop (MTU 1500), a resolved next hop on a route of small MTU (600 for
//! IPv4, 1000 for IPv6: packets too big once encapsulated, or once rewritten, are common),
//! a next hop without a neighbour entry, and a blackhole. The backends are written as the
//! daemon writes them: the `TUNNELS` or `REWRITES` entry, the backend entry naming the
//! mode, the `REPLIES` entry of a `nat`/`fullnat` backend.
//!
//! For a frame the selection model forwards to a routed backend, the model builds the frame
//! the program must send: for `ipip`/`gue` the outer IPv4/IPv6 header (and UDP header) from
//! the configured source to the backend, in front of the client's IP packet unchanged (its
//! VLAN tag dropped, its padding kept), with the route's next-hop MACs; for `nat` the same
//! frame to the backend's address and port; for `fullnat` also from the pool's address and
//! the flow's pool port, read from `TRANSLATIONS` when the flow is new (it must be in the
//! pool's range, the same for every packet of the flow, and no other flow's towards that
//! backend endpoint). Checksums of rewritten packets: by recomputation
//! ([`checksums`](super::checksums)). A next hop without a neighbour: to the kernel (the
//! frame as rewritten, MACs as they came); a blackhole: dropped; too big for the route
//! (once encapsulated, for the tunnels): answered with "fragmentation needed" / "packet too
//! big" from the VIP (built here byte by byte; IPv4 without Don't Fragment is dropped), for
//! `nat`/`fullnat` before anything is rewritten, with the route's MTU (a `fullnat` flow
//! keeps the pool port it was given). Each path adds to its counter of `TUNNEL_STATS` or
//! `NAT_STATS`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::LazyLock,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use balancer_common::{
    flow_hash, Endpoint, FlowKey, Reply, Rewrite, Translation, Tunnel, FAMILY_V4, FAMILY_V6,
    FORWARD_FULLNAT, FORWARD_GUE, FORWARD_IPIP, FORWARD_NAT, REPLY_FULLNAT,
};
use balancer_user::{dataplane::TestRun, state::Affinity};
use ipnet::IpNet;

use crate::{
    checksums::{self, Sum},
    expect::{addr_at, octets, put_addr, put_port, u16_at, Count, Expect},
    support::{
        fixture::Fixture,
        packet::{Flow, Transport},
        plane::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
        routes::{RoutedNetns, NEXT_HOP_MAC, V0_MAC},
    },
};

/// Routes the namespace gets besides those of [`RoutedNetns`] (backends, small MTUs, a
/// blackhole, the generator's clients).
const EXTRA_ROUTES: &str = "route add 198.18.210.0/24 via 198.18.200.10\n\
    route add 198.18.211.0/24 via 198.18.200.11\n\
    route add 198.18.212.0/24 via 198.18.200.10 mtu lock 600\n\
    route add blackhole 198.18.250.0/24\n\
    route add 203.0.113.0/24 via 198.18.200.10\n\
    route add 198.51.100.0/24 via 198.18.200.10\n\
    route add 2001:db8:210::/64 via 2001:db8:200::10\n\
    route add 2001:db8:211::/64 via 2001:db8:200::11\n\
    route add 2001:db8:212::/64 via 2001:db8:200::10 mtu lock 1000\n\
    route add blackhole 2001:db8:250::/64\n\
    route add 2001:db8:d::/64 via 2001:db8:200::10\n";

/// What the namespace's tables answer for a destination (`bpf_fib_lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Out of `v0` to the next hop of MAC [`NEXT_HOP_MAC`], on a route of this MTU.
    Out(usize),
    /// Out of `v0` to a next hop without a neighbour entry, on a route of this MTU.
    Unresolved(usize),
    /// Not forwarded: an address of the namespace, or one it has no route to.
    Local,
    /// A blackhole route.
    Blackhole,
}

/// The namespace's routes, longest prefix first where they nest; an address none covers has
/// no route ([`Route::Local`]: the kernel answers "not forwarded").
const ROUTES: [(&str, Route); 24] = [
    ("198.18.200.1/32", Route::Local),
    ("198.18.200.255/32", Route::Local),
    ("198.18.200.10/32", Route::Out(1500)),
    ("198.18.200.0/24", Route::Unresolved(1500)),
    ("198.18.201.0/24", Route::Out(1500)),
    ("203.0.113.0/24", Route::Out(1500)),
    ("198.51.100.0/24", Route::Out(1500)),
    ("198.18.210.0/24", Route::Out(1500)),
    ("198.18.211.0/24", Route::Unresolved(1500)),
    ("198.18.212.0/24", Route::Out(600)),
    ("198.18.250.0/24", Route::Blackhole),
    ("127.0.0.0/8", Route::Local),
    ("2001:db8:200::1/128", Route::Local),
    ("2001:db8:200::/128", Route::Local),
    ("2001:db8:200::10/128", Route::Out(1500)),
    ("2001:db8:200::/64", Route::Unresolved(1500)),
    ("2001:db8:c::/64", Route::Out(1500)),
    ("2001:db8:d::/64", Route::Out(1500)),
    ("2001:db8:210::/64", Route::Out(1500)),
    ("2001:db8:211::/64", Route::Unresolved(1500)),
    ("2001:db8:212::/64", Route::Out(1000)),
    ("2001:db8:250::/64", Route::Blackhole),
    ("::1/128", Route::Local),
    ("ff00::/8", Route::Local),
];

/// The route of a packet from `src` to `dst`: [`route`] of `dst`, but a packet from a
/// link-local IPv6 source (fe80::/10) is not forwarded.
fn route_from(src: IpAddr, dst: IpAddr) -> Route {
    let link_local = "fe80::/10".parse::<IpNet>().expect("prefix");
    match link_local.contains(&src) {
        true => Route::Local,
        false => route(dst),
    }
}

/// [`ROUTES`], parsed once.
static PARSED: LazyLock<Vec<(IpNet, Route)>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|(prefix, route)| (prefix.parse().expect("prefix"), *route))
        .collect()
});

/// The route of `addr` by [`ROUTES`].
pub fn route(addr: IpAddr) -> Route {
    PARSED
        .iter()
        .filter(|(prefix, _)| prefix.contains(&addr))
        .max_by_key(|(prefix, _)| prefix.prefix_len())
        .map_or(Route::Local, |(_, route)| *route)
}

/// The namespace of the fuzz: [`RoutedNetns`] with [`EXTRA_ROUTES`].
pub fn namespace() -> RoutedNetns {
    let ns = RoutedNetns::new("fuzz");
    let mut ip = Command::new("ip")
        .args(["-n", ns.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    ip.stdin
        .take()
        .expect("stdin")
        .write_all(EXTRA_ROUTES.as_bytes())
        .expect("write the routes");
    assert!(
        ip.wait().expect("wait for ip").success(),
        "the fuzz's routes"
    );
    ns
}

/// A routed forwarding mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// IP in IP.
    Ipip,
    /// IP in UDP (GUE).
    Gue,
    /// Destination translation.
    Nat,
    /// Destination and source translation.
    Fullnat,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::Nat => "nat",
            Mode::Fullnat => "fullnat",
        };
        f.write_str(name)
    }
}

/// The routed services: name, VIP, mode, the backends' port (`nat`/`fullnat`) or GUE's UDP
/// port, and the number that ends their backends' addresses.
const SERVICES: [(&str, &str, Mode, u16, u8); 8] = [
    ("ipip4", "198.19.1.1:80/tcp", Mode::Ipip, 0, 1),
    ("gue4", "198.19.1.2:53/udp", Mode::Gue, 6080, 2),
    ("nat4", "198.19.1.3:80/tcp", Mode::Nat, 8080, 3),
    ("fullnat4", "198.19.1.4:53/udp", Mode::Fullnat, 8053, 4),
    ("ipip6", "[2001:db8:ffff:1::1]:53/udp", Mode::Ipip, 0, 1),
    ("gue6", "[2001:db8:ffff:1::2]:443/tcp", Mode::Gue, 7080, 2),
    ("nat6", "[2001:db8:ffff:1::3]:53/udp", Mode::Nat, 8053, 3),
    (
        "fullnat6",
        "[2001:db8:ffff:1::4]:443/tcp",
        Mode::Fullnat,
        8080,
        4,
    ),
];

/// The subnets of a routed service's four backends (third byte of IPv4, third group of
/// IPv6): resolved, small MTU, unresolved, blackhole.
const SUBNETS: [u8; 4] = [210, 212, 211, 250];

/// The LB's addresses: the tunnels' outer source.
const LB4: &str = "198.18.200.1";
const LB6: &str = "2001:db8:200::1";
/// Full NAT's pools: address and ports.
const POOL4: (&str, [u16; 2]) = ("198.18.202.1", [20_000, 59_999]);
const POOL6: (&str, [u16; 2]) = ("2001:db8:202::1", [1024, 65_535]);

/// A backend of a routed service, as the program must treat it.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    /// Its mode.
    pub mode: Mode,
    /// Its address.
    pub addr: IpAddr,
    /// `nat`/`fullnat`: its port; `gue`: the UDP port; `ipip`: 0.
    pub port: u16,
    /// The service's protocol.
    pub transport: Transport,
    /// The service's VIP.
    pub vip: SocketAddr,
    /// Tunnels: the outer source; `fullnat`: the pool's address.
    pub source: IpAddr,
    /// `fullnat`: the pool's ports (first, last).
    pub ports: [u16; 2],
}

impl Backend {
    /// Whether `port` is one of the pool's.
    fn in_pool(&self, port: u16) -> bool {
        (self.ports[0]..=self.ports[1]).contains(&port)
    }
}

/// The pool port a full-NAT flow holds towards a backend endpoint: (pool address, pool
/// port, backend address, backend port, protocol number).
pub type Held = (IpAddr, u16, IpAddr, u16, u8);

/// The routed backends, and what the model knows of full NAT's translations.
pub struct Routed {
    /// Every routed backend by index.
    pub backends: BTreeMap<u32, Backend>,
    /// `REPLIES`: the backend index of each `nat`/`fullnat` endpoint (address, port,
    /// protocol number).
    pub replies: HashMap<(IpAddr, u16, u8), u32>,
    /// Each full-NAT flow's pool port and backend index.
    pub translations: HashMap<FlowKey, (u16, u32)>,
    /// The flow each pool port in use stands for.
    pub held: HashMap<Held, FlowKey>,
    /// The program's `TRANSLATIONS`, to read a new flow's pool port.
    map: BpfHashMap<MapData, FlowKey, Translation>,
}

/// An address as the maps keep it.
fn map_addr(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = octets(addr);
    out[..bytes.len()].copy_from_slice(&bytes);
    out
}

/// An address's map family.
fn family(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

/// Adds the routed services to `fx` and writes their backends as the daemon does.
pub fn services(fx: &mut Fixture) -> Routed {
    let mut backends = BTreeMap::new();
    let mut replies = HashMap::new();
    for (name, vip, mode, port, n) in SERVICES {
        fx.add_service(name, vip, Affinity::Connection);
        let svc = fx.service(name).vip;
        let vip = svc.addr;
        let transport = match svc.protocol {
            balancer_user::vip::Protocol::Tcp => Transport::Tcp,
            balancer_user::vip::Protocol::Udp => Transport::Udp,
        };
        let v6 = vip.is_ipv6();
        for subnet in SUBNETS {
            let addr = match v6 {
                false => format!("198.18.{subnet}.{n}"),
                true => format!("2001:db8:{subnet}::{n}"),
            };
            let index = fx.add_backend(name, &addr, "blue", 100);
            let addr: IpAddr = addr.parse().expect("backend address");
            let (pool, ports) = if v6 { POOL6 } else { POOL4 };
            let source: IpAddr = match mode {
                Mode::Fullnat => pool.parse(),
                _ => if v6 { LB6 } else { LB4 }.parse(),
            }
            .expect("source address");
            let backend = Backend {
                mode,
                addr,
                port,
                transport,
                vip,
                source,
                ports: if mode == Mode::Fullnat { ports } else { [0; 2] },
            };
            write(fx, index, &backend);
            if matches!(mode, Mode::Nat | Mode::Fullnat) {
                replies.insert((addr, port, transport.number()), index);
            }
            backends.insert(index, backend);
        }
        fx.publish(name);
    }
    let pin = fx.plane.maps_dir().join("TRANSLATIONS");
    let map = Map::HashMap(MapData::from_pin(&pin).expect("open TRANSLATIONS"));
    Routed {
        backends,
        replies,
        translations: HashMap::new(),
        held: HashMap::new(),
        map: map.try_into().expect("TRANSLATIONS is a hash map"),
    }
}

/// Writes backend `index`'s entries: the tunnel or rewrite, the backend entry naming the
/// mode, and for `nat`/`fullnat` the reply entry.
fn write(fx: &mut Fixture, index: u32, b: &Backend) {
    let forward = match b.mode {
        Mode::Ipip | Mode::Gue => {
            let tunnel = Tunnel {
                dst: map_addr(b.addr),
                src: map_addr(b.source),
                family: family(b.addr),
                port_be: b.port.to_be(),
                ..Tunnel::default()
            };
            fx.plane.set_tunnel(index, &tunnel).expect("write TUNNELS");
            if b.mode == Mode::Ipip {
                FORWARD_IPIP
            } else {
                FORWARD_GUE
            }
        }
        Mode::Nat | Mode::Fullnat => {
            let full = b.mode == Mode::Fullnat;
            let rewrite = Rewrite {
                addr: map_addr(b.addr),
                port_be: b.port.to_be(),
                family: family(b.addr),
                ports: b.ports,
                source: if full { map_addr(b.source) } else { [0; 16] },
                ..Rewrite::default()
            };
            fx.plane
                .set_rewrite(index, &rewrite)
                .expect("write REWRITES");
            if full {
                FORWARD_FULLNAT
            } else {
                FORWARD_NAT
            }
        }
    };
    fx.set_forward(index, forward);
    if matches!(b.mode, Mode::Nat | Mode::Fullnat) {
        let endpoint = |addr: IpAddr, port: u16| Endpoint {
            addr: map_addr(addr),
            port_be: port.to_be(),
            proto: b.transport.number(),
            family: family(addr),
        };
        let reply = Reply {
            vip: endpoint(b.vip.ip(), b.vip.port()),
            backend: index,
            flags: if b.mode == Mode::Fullnat {
                REPLY_FULLNAT
            } else {
                0
            },
        };
        fx.plane
            .set_reply(&endpoint(b.addr, b.port), &reply)
            .expect("write REPLIES");
    }
}

/// Where the headers of a well-formed TCP or UDP frame are.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The IP header.
    pub l3: usize,
    /// IPv6.
    pub v6: bool,
    /// The IPv4 header's length.
    pub ihl: usize,
    /// The TCP or UDP header.
    pub l4: usize,
    /// The IP datagram's length (from its header).
    pub len: usize,
    /// UDP rather than TCP.
    pub udp: bool,
}

impl Layout {
    /// The layout of `frame`, which the parser's model found a flow's.
    pub fn of(frame: &[u8]) -> Self {
        let l3 = match u16_at(frame, 12) {
            Some(0x8100 | 0x88a8) => 18,
            _ => 14,
        };
        let v6 = frame[l3] >> 4 == 6;
        let be = |at: usize| usize::from(u16_at(frame, at).expect("in the header"));
        if v6 {
            Self {
                l3,
                v6,
                ihl: 40,
                l4: l3 + 40,
                len: 40 + be(l3 + 4),
                udp: frame[l3 + 6] == 17,
            }
        } else {
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            Self {
                l3,
                v6,
                ihl,
                l4: l3 + ihl,
                len: be(l3 + 2),
                udp: frame[l3 + 9] == 17,
            }
        }
    }

    /// Offset of the source address.
    pub fn src(&self) -> usize {
        self.l3 + if self.v6 { 8 } else { 12 }
    }

    /// Offset of the destination address.
    pub fn dst(&self) -> usize {
        self.l3 + if self.v6 { 24 } else { 16 }
    }

    /// The checksums a translation updates: IPv4's header, and TCP's or UDP's.
    pub fn sums(&self, frame: &[u8]) -> Vec<Sum> {
        let segment = match self.udp {
            true => usize::from(u16_at(frame, self.l4 + 4).expect("UDP length")),
            false => self.len - self.ihl,
        };
        let name = if self.udp {
            "UDP checksum"
        } else {
            "TCP checksum"
        };
        let l4 = checksums::transport(name, (self.l3, self.v6), self.l4, self.udp, segment);
        match self.v6 {
            true => vec![l4],
            false => vec![
                checksums::ipv4_header("IPv4 header checksum", self.l3, self.ihl),
                l4,
            ],
        }
    }
}

/// The frame with its MACs replaced by the route's next hop's and `v0`'s.
fn to_next_hop(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&NEXT_HOP_MAC);
    frame[6..12].copy_from_slice(&V0_MAC);
    frame
}

impl Routed {
    /// What the program must do with `frame` of `flow`, which the selection model forwards
    /// to routed backend `index`; `run` is what it did (a new full-NAT flow's pool port is
    /// read from `TRANSLATIONS` and checked).
    pub fn forward(
        &mut self,
        index: u32,
        frame: &[u8],
        flow: &Flow,
        run: &TestRun,
    ) -> Result<Expect, String> {
        let b = self.backends[&index];
        match b.mode {
            Mode::Ipip | Mode::Gue => Ok(tunnel(&b, frame, flow)),
            Mode::Nat => Ok(nat(&b, frame, None)),
            Mode::Fullnat => {
                let port = self.pool_port(index, &b, flow, run)?;
                Ok(nat(&b, frame, Some(port)))
            }
        }
    }

    /// The pool port of the full-NAT flow `flow` towards backend `index`: the model's, or for
    /// a new flow the one `TRANSLATIONS` gives it, checked (within the pool, held by no other
    /// flow towards the backend endpoint) and remembered.
    fn pool_port(
        &mut self,
        index: u32,
        b: &Backend,
        flow: &Flow,
        run: &TestRun,
    ) -> Result<u16, String> {
        let key = flow.key();
        if let Some(&(port, backend)) = self.translations.get(&key) {
            if backend != index {
                return Err(format!(
                    "full NAT: flow translated towards backend {backend}, now {index}"
                ));
            }
            return Ok(port);
        }
        let Ok(t) = self.map.get(&key, 0) else {
            return Err(format!(
                "full NAT: no translation for a new flow (XDP action {})",
                run.action
            ));
        };
        let port = u16::from_be(t.port_be);
        let wrong = [
            (t.addr != map_addr(b.source), "pool address"),
            (!b.in_pool(port), "pool port out of the pool's range"),
            (t.backend != index, "backend index"),
            (t.backend_addr != map_addr(b.addr), "backend address"),
            (u16::from_be(t.backend_port_be) != b.port, "backend port"),
        ];
        if let Some((_, what)) = wrong.iter().find(|(wrong, _)| *wrong) {
            return Err(format!("full NAT: new flow's translation {t:?}: {what}"));
        }
        let held = (b.source, port, b.addr, b.port, b.transport.number());
        if let Some(other) = self.held.get(&held) {
            return Err(format!(
                "full NAT: pool port {port} towards {}:{} given to a new flow while flow \
                 {other:?} holds it",
                b.addr, b.port
            ));
        }
        self.held.insert(held, key);
        self.translations.insert(key, (port, index));
        Ok(port)
    }

    /// The pool port full-NAT flow `key` holds, if the model knows it.
    pub fn held_by(&self, key: &FlowKey) -> Option<Held> {
        let &(port, index) = self.translations.get(key)?;
        let b = &self.backends[&index];
        Some((b.source, port, b.addr, b.port, b.transport.number()))
    }

    /// Whether the program's `TRANSLATIONS` and `ALLOCATIONS` (`translations`,
    /// `allocations`) hold exactly the model's flows and pool ports.
    pub fn pools_differ(
        &self,
        translations: &[(FlowKey, Translation)],
        allocations: &[(balancer_common::Allocation, FlowKey)],
    ) -> Result<(), String> {
        if translations.len() != self.translations.len() {
            return Err(format!(
                "TRANSLATIONS holds {} flows, the model {}",
                translations.len(),
                self.translations.len()
            ));
        }
        for (key, t) in translations {
            let held = self.translations.get(key).copied();
            if held != Some((u16::from_be(t.port_be), t.backend)) {
                return Err(format!(
                    "TRANSLATIONS has {key:?} → {t:?}, the model {held:?}"
                ));
            }
        }
        if allocations.len() != self.held.len() {
            return Err(format!(
                "ALLOCATIONS holds {} pool ports, the model {}",
                allocations.len(),
                self.held.len()
            ));
        }
        for (a, key) in allocations {
            let Some(index) = self.translations.get(key).map(|&(_, i)| i) else {
                return Err(format!(
                    "ALLOCATIONS has {a:?} for {key:?}, no flow of the model"
                ));
            };
            let b = &self.backends[&index];
            let expected = balancer_common::Allocation {
                pool: map_addr(b.source),
                backend: map_addr(b.addr),
                pool_port_be: self.translations[key].0.to_be(),
                backend_port_be: b.port.to_be(),
                proto: key.proto,
                family: key.family,
                reserved: [0; 2],
            };
            if *a != expected {
                return Err(format!(
                    "ALLOCATIONS has {a:?} for {key:?}, the model {expected:?}"
                ));
            }
        }
        Ok(())
    }
}

/// What the program must do with `frame` to `nat` backend `b` — for `fullnat`, from the
/// pool's address and `pool_port`.
fn nat(b: &Backend, frame: &[u8], pool_port: Option<u16>) -> Expect {
    let mode = b.mode;
    let l = Layout::of(frame);
    let mut out = frame.to_vec();
    put_addr(&mut out, l.dst(), b.addr);
    put_port(&mut out, l.l4 + 2, b.port);
    if let Some(port) = pool_port {
        put_addr(&mut out, l.src(), b.source);
        put_port(&mut out, l.l4, port);
    }
    let source = match pool_port {
        Some(_) => b.source,
        None => addr_at(frame, l.src(), l.v6).expect("the source"),
    };
    let (path, action, frame_out, counts) = match route_from(source, b.addr) {
        Route::Local | Route::Blackhole => {
            let path = format!("{mode}: unroutable");
            return Expect::untouched(path, XDP_DROP, frame, vec![Count::NatUnroutable]);
        }
        // Too big for the route: answered from the VIP before anything is rewritten, with
        // the route's MTU (nothing is added to the packet).
        Route::Out(mtu) | Route::Unresolved(mtu) if l.len > mtu => {
            let path = |what: &str| format!("{mode}: {what}");
            let counts = vec![Count::NatTooBig];
            return match too_big(frame, &l, mtu) {
                Some(answer) => Expect {
                    path: path("too big, answered"),
                    action: XDP_TX,
                    frame: answer,
                    sums: Vec::new(),
                    counts,
                },
                None => Expect::untouched(path("too big, no DF"), XDP_DROP, frame, counts),
            };
        }
        Route::Unresolved(_) => (
            "unresolved, to the kernel",
            XDP_PASS,
            out,
            vec![Count::NatUnresolved],
        ),
        Route::Out(_) => ("out", XDP_REDIRECT, to_next_hop(out), Vec::new()),
    };
    Expect {
        path: format!("{mode}: {path}"),
        action,
        sums: l.sums(frame),
        frame: frame_out,
        counts,
    }
}

/// What the program must do with `frame` of `flow` to tunnelled backend `b`.
fn tunnel(b: &Backend, frame: &[u8], flow: &Flow) -> Expect {
    let mode = b.mode;
    let l = Layout::of(frame);
    let gue = mode == Mode::Gue;
    let outer = if l.v6 { 40 } else { 20 } + if gue { 8 } else { 0 };
    let inner = &frame[l.l3..];
    let total = outer + l.len;
    let path = |what: &str| format!("{mode}: {what}");
    let (macs, action, counts) = match route(b.addr) {
        Route::Local | Route::Blackhole => {
            return Expect::untouched(
                path("unroutable"),
                XDP_DROP,
                frame,
                vec![Count::TunnelUnroutable],
            );
        }
        Route::Out(mtu) | Route::Unresolved(mtu) if total > mtu => {
            let fits = mtu - outer;
            let counts = vec![Count::TunnelTooBig];
            return match too_big(frame, &l, fits) {
                Some(answer) => Expect {
                    path: path("too big, answered"),
                    action: XDP_TX,
                    frame: answer,
                    sums: Vec::new(),
                    counts,
                },
                None => Expect::untouched(path("too big, no DF"), XDP_DROP, frame, counts),
            };
        }
        Route::Unresolved(_) => (
            frame[..12].to_vec(),
            XDP_PASS,
            vec![Count::TunnelUnresolved],
        ),
        Route::Out(_) => ([NEXT_HOP_MAC, V0_MAC].concat(), XDP_REDIRECT, Vec::new()),
    };
    let hash = flow_hash(&flow.key(), 0).0;
    let tos = if l.v6 {
        (inner[0] << 4) | (inner[1] >> 4)
    } else {
        inner[1]
    };
    let mut out = macs;
    let udp_len = if gue { 8 } else { 0 };
    if l.v6 {
        out.extend_from_slice(&[0x86, 0xdd]);
        let label = (hash >> 12) as u32 & 0x000f_ffff;
        let first = (6u32 << 28) | (u32::from(tos) << 20) | label;
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&((udp_len + l.len) as u16).to_be_bytes());
        out.extend_from_slice(&[if gue { 17 } else { 41 }, 64]);
        out.extend_from_slice(&octets(b.source));
        out.extend_from_slice(&octets(b.addr));
    } else {
        out.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, tos];
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, if gue { 17 } else { 4 }, 0, 0]);
        ip.extend_from_slice(&octets(b.source));
        ip.extend_from_slice(&octets(b.addr));
        let sum = checksums::compute(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
    }
    if gue {
        let sport = 0xc000 | (hash as u16 & 0x3fff);
        out.extend_from_slice(&sport.to_be_bytes());
        out.extend_from_slice(&b.port.to_be_bytes());
        out.extend_from_slice(&((8 + l.len) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(inner);
    let what = match action {
        XDP_PASS => "unresolved, to the kernel",
        _ => "out",
    };
    Expect {
        path: path(what),
        action,
        frame: out,
        sums: Vec::new(),
        counts,
    }
}

/// The ICMP error the program answers the client's `frame` with when it is too big once
/// encapsulated, `fits` being the MTU left for it: "fragmentation needed" (IPv4, quoting
/// its header and 8 bytes; none without Don't Fragment) or "packet too big" (IPv6, quoting
/// up to 1232 bytes of the packet), from the address the client sent it to, back to the
/// client with the MACs swapped and a VLAN tag kept.
fn too_big(frame: &[u8], l: &Layout, fits: usize) -> Option<Vec<u8>> {
    let client = &frame[l.l3..];
    let link = [&frame[6..12], &frame[0..6], &frame[12..l.l3]].concat();
    if !l.v6 {
        if client[6] & 0x40 == 0 {
            return None;
        }
        let quote = &client[..l.ihl + 8];
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&(fits as u16).to_be_bytes());
        icmp.extend_from_slice(quote);
        let sum = checksums::compute(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0xc0];
        ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        ip.extend_from_slice(&client[16..20]);
        ip.extend_from_slice(&client[12..16]);
        let sum = checksums::compute(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        return Some([link, ip, icmp].concat());
    }
    let quote = &client[..l.len.min(1232)];
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&(fits as u32).to_be_bytes());
    icmp.extend_from_slice(quote);
    let (src, dst) = (&client[24..40], &client[8..24]);
    let length = (icmp.len() as u32).to_be_bytes();
    let sum = checksums::compute(&[src, dst, &length, &[0, 0, 0, 58], &icmp].concat());
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 64]);
    ip.extend_from_slice(src);
    ip.extend_from_slice(dst);
    Some([link, ip, icmp].concat())
}
