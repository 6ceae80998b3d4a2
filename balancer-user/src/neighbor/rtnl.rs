//! One rtnetlink socket for requests: send a request for one object, read the kernel's
//! answer, map a netlink error to an `io::Error`; or dump a table ([`Rtnl::dump`]), or make
//! a change and wait for the kernel's acknowledgement ([`Rtnl::change`]).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Size of the receive buffer: larger than any one answer to a request for one object.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A request socket.
pub(crate) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket connected to the kernel.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Sends `message` (an `RTM_GET*` request for one object) and returns the kernel's
    /// answer. A netlink error answer is returned as the `io::Error` of its errno.
    pub(super) fn get(&mut self, message: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        // Acknowledged, so that the answer ends as a dump's does.
        self.send(message, NLM_F_REQUEST | NLM_F_ACK)?;
        let mut answer = None;
        self.read_until_end(|inner| {
            answer.get_or_insert(inner);
        })?;
        answer.ok_or_else(|| io::Error::other("the kernel answered without a message"))
    }

    /// Asks the kernel to check requests strictly (`NETLINK_GET_STRICT_CHK`), which makes
    /// it filter a dump by what the request names (a route dump: table, protocol, type).
    pub(crate) fn strict(&self) -> io::Result<()> {
        self.socket.set_netlink_get_strict_chk(true)
    }

    /// Sends `message` (an `RTM_GET*` request) as a dump and returns every object the
    /// kernel answers with.
    pub(crate) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.send(message, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut objects = Vec::new();
        self.read_until_end(|inner| objects.push(inner))?;
        Ok(objects)
    }

    /// Sends `message` (an `RTM_NEW*` or `RTM_DEL*` request) with `flags` (e.g.
    /// `NLM_F_CREATE`) and waits for the kernel's acknowledgement; its refusal is the
    /// `io::Error` of its errno.
    pub(crate) fn change(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.read_until_end(|_| {})
    }

    /// Sends `message` with `flags` as the next request.
    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(())
    }

    /// Reads the answers to the last request, handing each object to `each`, until the
    /// end of a dump or an acknowledgement; a netlink error is the `io::Error` of its errno.
    fn read_until_end(&mut self, mut each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)?
                .min(RECEIVE_BUFFER);
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..size])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = (message.header.length as usize + 3) & !3;
                let ours = message.header.sequence_number == self.sequence;
                match message.payload {
                    _ if !ours => {}
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(()),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}
