//! The rows of the forwarding modes that route (`ipip`, `gue`, `nat`), next to direct
//! server return measured the same way: a data plane of its own with one service per mode
//! and family, two backends each, its entries written as the daemon writes them (the
//! tunnel or rewrite, the reply entry, then the backend entry naming the mode), run on a
//! thread inside the bench's namespace of known routes ([`Routes`]), so every routed
//! packet goes to that namespace's next hop.
//!
//! Every row is timed one run per call on a fresh copy of its frame, less the per-call
//! overhead: a routed packet leaves the program rewritten or encapsulated, and
//! BPF_PROG_TEST_RUN's repetitions would run the next time on what the previous run left.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context, Result};
use balancer_common::{Backend, Reply, Rewrite, Tunnel, GUE_PORT, REPLY_FULLNAT};
use balancer_user::{
    dataplane::{
        fullnat::{Ending, Pool},
        DataPlane,
    },
    state::{BackendEntry, Forward, Mode, Service},
    vip::{addr_bytes, family},
};

use super::{
    expect::{Expect, Outer, Shape},
    routes::{Routes, LB4, LB6, NEXT_HOP4, NEXT_HOP6, NEXT_HOP_MAC},
    runs::{single_calls, single_rounds, single_rounds_reset, Fresh, Single},
};
use crate::{
    frames::{tcp, Flows, Segment},
    plane::{dsr_backend, Plane},
    report::{Bar, Chart, Report},
    stats::Spread,
    Plan,
};

/// The port `nat` backends take their packets on (the VIPs' is 80).
const BACKEND_PORT: u16 = 8080;

/// A service of the routed data plane.
struct Routed {
    /// Its name in the desired state.
    name: &'static str,
    mode: Mode,
    vip: SocketAddr,
    backends: [IpAddr; 2],
}

impl Routed {
    /// The services: dsr (the reference) and nat over IPv4 and IPv6, ipip and gue over
    /// IPv4.
    fn all() -> [Routed; 8] {
        let ip = |text: &str| text.parse::<IpAddr>().expect("address");
        let vip = |text: &str| text.parse::<SocketAddr>().expect("VIP");
        [
            Routed {
                name: "dsr",
                mode: Mode::Dsr,
                vip: vip("198.19.0.5:80"),
                backends: [ip("198.18.221.7"), ip("198.18.221.8")],
            },
            Routed {
                name: "dsr6",
                mode: Mode::Dsr,
                vip: vip("[2001:db8:ffff::5]:80"),
                backends: [ip("2001:db8:221::7"), ip("2001:db8:221::8")],
            },
            Routed {
                name: "ipip",
                mode: Mode::Ipip,
                vip: vip("198.19.0.2:80"),
                backends: [ip("198.18.221.1"), ip("198.18.221.2")],
            },
            Routed {
                name: "gue",
                mode: Mode::Gue,
                vip: vip("198.19.0.3:80"),
                backends: [ip("198.18.221.3"), ip("198.18.221.4")],
            },
            Routed {
                name: "nat",
                mode: Mode::Nat,
                vip: vip("198.19.0.4:80"),
                backends: [ip("198.18.221.5"), ip("198.18.221.6")],
            },
            Routed {
                name: "nat6",
                mode: Mode::Nat,
                vip: vip("[2001:db8:ffff::4]:80"),
                backends: [ip("2001:db8:221::5"), ip("2001:db8:221::6")],
            },
            Routed {
                name: "fullnat",
                mode: Mode::Fullnat,
                vip: vip("198.19.0.6:80"),
                backends: [ip("198.18.221.9"), ip("198.18.221.10")],
            },
            Routed {
                name: "fullnat6",
                mode: Mode::Fullnat,
                vip: vip("[2001:db8:ffff::6]:80"),
                backends: [ip("2001:db8:221::9"), ip("2001:db8:221::a")],
            },
        ]
    }

    fn v6(&self) -> bool {
        self.vip.is_ipv6()
    }

    /// The service's forwarding in the desired state.
    fn forward(&self) -> Forward {
        let source = match self.v6() {
            true => IpAddr::V6(LB6),
            false => IpAddr::V4(LB4),
        };
        Forward {
            mode: self.mode,
            source: self.mode.sourced().then_some(source),
            port: None,
            backend_port: self.mode.translated().then_some(BACKEND_PORT),
            source_ports: None,
        }
    }

    /// The path a client's packet to the service must take: to one of the direct-server-
    /// return backends' `macs`, or routed in the mode's shape.
    fn expect<'a>(&self, macs: &'a BTreeSet<[u8; 6]>) -> Expect<'a> {
        let backends = self.backends.to_vec();
        let routed = |shape| Expect::Routed(NEXT_HOP_MAC, shape);
        match self.mode {
            Mode::Dsr => Expect::Forward(macs),
            Mode::Ipip => routed(Shape::Ipip(backends)),
            Mode::Gue => routed(Shape::Gue(backends, GUE_PORT)),
            Mode::Nat | Mode::Fullnat => routed(Shape::Nat(backends, BACKEND_PORT)),
        }
    }
}

/// Frees every pool port of the full-NAT flows, as the daemon's sweep would once they
/// ended.
fn free_ports(pool: &mut Pool) -> Result<()> {
    let ended = Ending {
        udp_idle: std::time::Duration::ZERO,
    };
    pool.sweep_at(ended, u64::MAX)?;
    Ok(())
}

/// One measured row.
pub struct Row {
    /// The mode, e.g. `gue`.
    pub mode: String,
    /// Whether the service is IPv6.
    pub v6: bool,
    /// The path measured.
    pub path: &'static str,
    /// ns per packet.
    pub cost: Spread,
}

/// The path of a service's established flow.
pub const ESTABLISHED: &str = "established flow";
/// The path of a new flow's SYN.
pub const NEW_FLOW: &str = "new flow (SYN)¹";
/// The path of a `nat` backend's reply.
pub const REPLY: &str = "backend's reply (established)";

/// Measures every row inside the namespace of known routes, removed again on return or
/// failure; every row subtracts the per-call `overhead`.
pub fn measure(plan: &Plan, overhead: f64) -> Result<Vec<Row>> {
    let routes = Routes::build()?;
    routes.enter(|| {
        let (mut plane, macs) = load(plan.conntrack_fill)?;
        let mut pool = Pool::open(&plane.layout().maps())?;
        rows(plane.dp(), &mut pool, &macs, plan, overhead)
    })?
}

/// The data plane with every service of [`Routed::all`], and the MACs of its
/// direct-server-return backends.
fn load(conntrack: u32) -> Result<(Plane, BTreeSet<[u8; 6]>)> {
    let mut plane = Plane::load("routed", conntrack)?;
    for service in Routed::all() {
        let vip = match service.vip {
            SocketAddr::V4(v4) => format!("{v4}/tcp"),
            SocketAddr::V6(v6) => format!("{v6}/tcp"),
        };
        plane.add_service(service.name, &vip, service.forward(), &service.backends)?;
    }
    let mut macs = BTreeSet::new();
    plane.publish(|dp, service, backend| {
        if service.forward.mode == Mode::Dsr {
            let entry = dsr_backend(backend);
            macs.insert(entry.dst_mac);
            return Ok(dp.set_backend(backend.index, &entry, true)?);
        }
        place(dp, service, backend)
    })?;
    Ok((plane, macs))
}

/// Writes a routed backend as the daemon does: its tunnel or its rewrite and reply entry,
/// then the entry naming the mode.
fn place(dp: &mut DataPlane, service: &Service, backend: &BackendEntry) -> Result<()> {
    let forward = service.forward;
    let addr = backend.addr;
    match forward.mode {
        Mode::Nat | Mode::Fullnat => {
            let endpoint = service.endpoint(addr);
            let mut rewrite = Rewrite {
                addr: addr_bytes(addr),
                port_be: endpoint.addr.port().to_be(),
                family: family(addr),
                ..Rewrite::default()
            };
            let mut flags = 0;
            if forward.mode == Mode::Fullnat {
                let pool = forward
                    .source
                    .context("the bench's pools name their address")?;
                let ports = forward.pool_ports();
                rewrite.source = addr_bytes(pool);
                rewrite.ports = [ports.first, ports.last];
                flags = REPLY_FULLNAT;
            }
            dp.set_rewrite(backend.index, &rewrite)?;
            let reply = Reply {
                vip: service.vip.key(),
                backend: backend.index,
                flags,
            };
            dp.set_reply(&endpoint.key(), &reply)?;
        }
        _ => {
            let source = forward
                .source
                .context("the bench's tunnels name their source")?;
            let tunnel = Tunnel {
                dst: addr_bytes(addr),
                src: addr_bytes(source),
                family: family(addr),
                port_be: match forward.mode {
                    Mode::Gue => forward.gue_port().to_be(),
                    _ => 0,
                },
                ..Tunnel::default()
            };
            dp.set_tunnel(backend.index, &tunnel)?;
        }
    }
    let entry = Backend {
        epoch: backend.epoch,
        forward: forward.mode.code(),
        ..Backend::default()
    };
    dp.set_backend(backend.index, &entry, true)?;
    Ok(())
}

/// The rows of every service: established, and but for the reference (dsr) new flow and,
/// for `nat`, a backend's reply.
fn rows(
    dp: &mut DataPlane,
    pool: &mut Pool,
    macs: &BTreeSet<[u8; 6]>,
    plan: &Plan,
    overhead: f64,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for service in Routed::all() {
        let forward = service.expect(macs);
        let client: SocketAddr = match service.v6() {
            true => "[2001:db8:2::1]:40000".parse()?,
            false => "198.18.200.1:40000".parse()?,
        };
        let row = |path: &str| format!("{} {path}", service.name);
        let mut add = |path, cost| {
            rows.push(Row {
                mode: service.mode.to_string(),
                v6: service.v6(),
                path,
                cost,
            })
        };
        // The same number of calls per round as a new-flow row.
        let calls = plan.new_flows;

        let syn = tcp(client, service.vip, Segment::Syn);
        let ack = tcp(client, service.vip, Segment::Ack);
        let opened = dp.test_run(&syn, 1)?;
        forward.check(&row("SYN"), &opened)?;
        dp.test_run(&ack, 1)?;
        let established = single_calls(
            dp,
            &row(ESTABLISHED),
            &forward,
            &ack,
            calls,
            plan.rounds,
            overhead,
        )?;
        add(ESTABLISHED, established);
        if service.mode == Mode::Dsr {
            continue;
        }

        // The reply of the flow established above, from the backend it reached (for full
        // NAT: to the pool address and port the flow left from), timed before the new-flow
        // rounds (which free the pool ports of full NAT's flows).
        let reply = if service.mode.translated() {
            let outer = Outer::of(&opened.packet)?;
            let to = match service.mode {
                Mode::Fullnat => {
                    let (port, _) = outer.ports.context("the SYN left without ports")?;
                    SocketAddr::new(outer.src, port)
                }
                _ => client,
            };
            let reply = tcp(SocketAddr::new(outer.dst, BACKEND_PORT), to, Segment::Ack);
            let expect = Expect::Routed(NEXT_HOP_MAC, Shape::Reply(service.vip));
            Some(single_calls(
                dp,
                &row(REPLY),
                &expect,
                &reply,
                calls,
                plan.rounds,
                overhead,
            )?)
        } else {
            None
        };

        let fresh = Fresh {
            flows: Flows { vip: service.vip },
            kind: Single::NewFlow,
            expect: forward,
        };
        add(
            NEW_FLOW,
            match service.mode {
                // Every round's flows hold pool ports, more in all than a backend's pool
                // has: they are freed between rounds, as the daemon frees ended flows'.
                Mode::Fullnat => {
                    single_rounds_reset(dp, &row(NEW_FLOW), &fresh, plan, overhead, |_| {
                        free_ports(pool)
                    })?
                }
                _ => single_rounds(dp, &row(NEW_FLOW), &fresh, plan, 0, overhead)?,
            },
        );

        if let Some(reply) = reply {
            add(REPLY, reply);
        }
    }
    Ok(rows)
}

/// Writes the rows as a table of their own under the section's, each against this table's
/// DSR established flow of its family; `calls` per round timed each row, and `repeated` is
/// that flow in the section's table (timed by repeated runs, 2 backends: IPv4, IPv6),
/// shown to compare the two ways of timing.
pub fn write(report: &mut Report, rows: &[Row], calls: u32, repeated: [Option<f64>; 2]) {
    let reference = |v6: bool| {
        rows.iter()
            .find(|r| r.mode == Mode::Dsr.to_string() && r.v6 == v6 && r.path == ESTABLISHED)
            .map(|r| r.cost.median)
    };
    report.line("### Routed forwarding modes\n");
    report.line(format!(
        "One service per mode and family on a data plane of its own, 2 backends each, its \
         entries written as the daemon writes them ({BACKEND_PORT} is the `nat` and \
         `fullnat` backends' port, the VIPs' is 80; the tunnels' outer source and the \
         `fullnat` pool address are the LB's address, a new `fullnat` flow allocates its \
         pool port), and a \
         direct-server-return service per family as the reference. The rows run on a thread \
         inside a network namespace of the bench's own: a veth `v0` with {LB4} and {LB6}, its \
         neighbour {NEXT_HOP4} / {NEXT_HOP6} a permanent entry, default routes via it. So \
         every routed packet is looked up with `bpf_fib_lookup` and sent to that next hop; \
         every run's packet is checked (next hop's MAC, outer header or rewritten address \
         and port). A routed packet leaves the program rewritten or encapsulated, and \
         BPF_PROG_TEST_RUN repeats a run on the buffer the previous run left, so every row \
         here is timed one run per call on a fresh copy of its frame, less the per-call \
         overhead (as the new-flow rows above), {} calls per round. *× DSR* divides by the \
         DSR established flow of the same family in this table (one MAC rewrite, no route \
         lookup); timed by repeated runs in the table above, that flow took {} ns (IPv4) and \
         {} ns (IPv6).\n",
        calls,
        repeated[0].map_or("–".into(), |ns| format!("{ns:.0}")),
        repeated[1].map_or("–".into(), |ns| format!("{ns:.0}")),
    ));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let versus = reference(row.v6).map_or("–".to_string(), |ns| {
                format!("{:.2}", row.cost.median / ns)
            });
            vec![
                row.mode.clone(),
                family_name(row.v6).to_string(),
                row.path.to_string(),
                row.cost.to_string(),
                versus,
            ]
        })
        .collect();
    report.table(
        &["mode", "family", "path", "ns/packet", "× DSR established"],
        &table,
    );
    report.line(
        "¹ A fresh flow per call. *backend's reply*: an ACK from the backend's address and \
         port to the client of the established flow; it is recognised by its source (no \
         connection-tracking lookup), its source rewritten to the VIP's and routed to the \
         client.\n",
    );
    report.chart(Chart {
        file: "per-packet-routed.png".into(),
        title: "Per-packet cost of the routed modes (BPF_PROG_TEST_RUN)".into(),
        unit: "ns/packet".into(),
        bars: rows
            .iter()
            .map(|row| Bar {
                label: format!("{} {}: {}", row.mode, family_name(row.v6), row.path),
                value: row.cost,
            })
            .collect(),
    });
}

fn family_name(v6: bool) -> &'static str {
    match v6 {
        true => "IPv6",
        false => "IPv4",
    }
}
