//! A model of connection tracking, written from the rules the README states, independently
//! of the program's code:
//!
//! * A flow's first packet (whatever it is) is recorded as *pending*, on the backend the
//!   tables choose, in one of the two slots of the pending table its 5-tuple hashes to:
//!   a pending flow already there on another backend is replaced in its slot; else an empty
//!   slot is taken, else the slot written longer ago, whose flow is lost. A SYN on a
//!   pending flow with the sequence number of the SYN that opened it (a retransmit) keeps
//!   its backend. The client's
//!   next packet that is neither a SYN nor a FIN or RST promotes it: it is *established*.
//!   UDP has no flags: its second datagram promotes.
//! * A client's FIN or RST marks its flow closed (pending or established); a closed flow
//!   keeps its backend for its further packets, except a SYN (without ACK), which is a new
//!   connection: balanced afresh and recorded in place of the closed one (in the same
//!   table); a closed pending flow is never promoted. So is a SYN on an open pending flow
//!   whose sequence number is not the one of the SYN that opened it (a flow opened by
//!   something else, or by a SYN of sequence number 0, takes any SYN as a retransmit); an
//!   established flow keeps its backend for such a SYN.
//! * Established flows are looked up before pending ones; an entry whose backend is gone
//!   (cleared, or its index taken by another epoch) is ignored, and the new choice is
//!   recorded as pending (promotion then replaces the dead established entry).
//! * What a backend's counters count besides packets and bytes: a new flow when the tables
//!   chose it; a flow's first close (a FIN, or a reset if the packet carries a RST) of a
//!   tracked flow or of a new flow's first packet; a SYN on an open pending flow (a
//!   retransmit).
//! * Packets to a port (and protocol) that no VIP serves, or served and still has flows,
//!   never touch either table.

use std::collections::HashMap;

use balancer_common::{
    packet_events::{FIN_CLOSE, NEW_FLOW, RESET, SYN_RETRANSMIT},
    pending_hash, FlowKey,
};

use super::packet::{ACK, FIN, RST, SYN};

/// A tracked flow as the model has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Backend index.
    pub backend: u32,
    /// That backend's epoch when the flow was recorded.
    pub epoch: u32,
    /// The client sent a FIN.
    pub fin: bool,
    /// The client sent a RST.
    pub rst: bool,
    /// The sequence number of the SYN that opened it; 0: none.
    pub syn_seq: u32,
}

impl Entry {
    /// Whether the client closed the flow.
    pub fn closed(&self) -> bool {
        self.fin || self.rst
    }

    /// Whether a SYN (`syn`) of sequence number `seq` opens a new connection on the flow,
    /// a `pending` one or not.
    fn reopens(&self, syn: bool, seq: u32, pending: bool) -> bool {
        let reused = pending && self.syn_seq != 0 && self.syn_seq != seq;
        syn && (self.closed() || reused)
    }
}

/// What the model says one packet does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Its flow is tracked on a live backend: forwarded there, not a new flow; `events`
    /// (`packet_events` bits) says what else the backend's counters count for it.
    Follow { backend: u32, events: u32 },
    /// It needs a new choice from the tables (not tracked, stale, or a SYN on a closed
    /// flow); [`Tracking::record`] stores the choice.
    Choose,
    /// Not for a VIP port: passed before any lookup.
    Filtered,
}

/// The two tables of the model.
#[derive(Clone, Debug)]
pub struct Tracking {
    /// Established flows.
    pub established: HashMap<FlowKey, Entry>,
    /// Pending flows.
    pub pending: HashMap<FlowKey, Entry>,
    /// Slots of the pending table (a power of two).
    slots: u32,
    /// The pending flows of each pair of slots, written longer ago first.
    pairs: HashMap<u32, Vec<FlowKey>>,
}

/// The counter a flow's first close counts in: a packet with a RST resets it, else one with
/// a FIN closes it.
fn first_close(fin: bool, rst: bool) -> u32 {
    match (fin, rst) {
        (_, true) => RESET,
        (true, false) => FIN_CLOSE,
        (false, false) => 0,
    }
}

/// What a packet's flags say: (a SYN without ACK, FIN, RST). UDP has none.
fn signals(tcp: Option<(u8, u32)>) -> (bool, bool, bool) {
    match tcp {
        None => (false, false, false),
        Some((f, _)) => (f & (SYN | ACK) == SYN, f & FIN != 0, f & RST != 0),
    }
}

impl Tracking {
    /// Empty tables, with `slots` pending slots.
    pub fn new(slots: u32) -> Self {
        Self {
            established: HashMap::new(),
            pending: HashMap::new(),
            slots,
            pairs: HashMap::new(),
        }
    }

    /// Forgets every flow (as `DataPlane::forget_flows` of every backend does).
    pub fn clear(&mut self) {
        self.established.clear();
        self.pending.clear();
        self.pairs.clear();
    }

    /// Removes the pending flow `key`, if there is one.
    fn unpend(&mut self, key: &FlowKey) -> Option<Entry> {
        let entry = self.pending.remove(key)?;
        let pair = self.pair(key);
        if let Some(mates) = self.pairs.get_mut(&pair) {
            mates.retain(|mate| mate != key);
        }
        Some(entry)
    }

    /// The pair of pending slots of `key`: the low bits but the lowest of its pending hash.
    fn pair(&self, key: &FlowKey) -> u32 {
        pending_hash(key) as u32 & (self.slots - 1) & !1
    }

    /// One packet of the flow `key` (`tcp`: flags and sequence number, `None` for UDP), when
    /// its port passes the
    /// filter (`vip_port`) and `live(index, epoch)` tells which backends still exist. The
    /// model's tables change as the program's should; after [`Step::Choose`], call
    /// [`Tracking::record`] with the choice if it was forwarded.
    pub fn packet(
        &mut self,
        key: FlowKey,
        tcp: Option<(u8, u32)>,
        vip_port: bool,
        live: impl Fn(u32, u32) -> bool,
    ) -> Step {
        if !vip_port {
            return Step::Filtered;
        }
        let (syn, fin, rst) = signals(tcp);
        let seq = tcp.map_or(0, |(_, seq)| seq);
        if let Some(entry) = self.established.get_mut(&key) {
            if live(entry.backend, entry.epoch) {
                if entry.reopens(syn, seq, false) {
                    return Step::Choose;
                }
                let events = if entry.closed() {
                    0
                } else {
                    first_close(fin, rst)
                };
                entry.fin |= fin;
                entry.rst |= rst;
                return Step::Follow {
                    backend: entry.backend,
                    events,
                };
            }
        }
        if let Some(entry) = self.pending.get_mut(&key) {
            if live(entry.backend, entry.epoch) {
                if entry.reopens(syn, seq, true) {
                    return Step::Choose;
                }
                let backend = entry.backend;
                let mut events = 0;
                if !entry.closed() {
                    events = first_close(fin, rst);
                    if syn {
                        events |= SYN_RETRANSMIT;
                    }
                }
                if !syn && !fin && !rst && !entry.closed() {
                    let promoted = self.unpend(&key).expect("just found");
                    self.established.insert(key, promoted);
                } else {
                    entry.fin |= fin;
                    entry.rst |= rst;
                }
                return Step::Follow { backend, events };
            }
        }
        Step::Choose
    }

    /// Records the new choice (`backend`, `epoch`) for a packet that got [`Step::Choose`]:
    /// in place of a live established entry that the packet reopens (a SYN on a closed
    /// connection), else as pending. Returns what the backend's counters count for the packet: a new flow,
    /// and its close if the packet closes it.
    pub fn record(
        &mut self,
        key: FlowKey,
        tcp: Option<(u8, u32)>,
        backend: u32,
        epoch: u32,
        live: impl Fn(u32, u32) -> bool,
    ) -> u32 {
        let (syn, fin, rst) = signals(tcp);
        let seq = tcp.map_or(0, |(_, seq)| seq);
        let events = NEW_FLOW | first_close(fin, rst);
        let entry = Entry {
            backend,
            epoch,
            fin,
            rst,
            syn_seq: if syn { seq } else { 0 },
        };
        let reopened = self
            .established
            .get(&key)
            .is_some_and(|e| live(e.backend, e.epoch) && e.reopens(syn, seq, false));
        if reopened {
            self.established.insert(key, entry);
            return events;
        }
        if self.unpend(&key).is_none() {
            let mates = self.pairs.get(&self.pair(&key)).map_or(0, Vec::len);
            if mates >= 2 {
                let oldest = self.pairs[&self.pair(&key)][0];
                self.unpend(&oldest);
            }
        }
        // Rewritten in place or new: the pair's latest write.
        let pair = self.pair(&key);
        self.pairs.entry(pair).or_default().push(key);
        self.pending.insert(key, entry);
        events
    }
}
