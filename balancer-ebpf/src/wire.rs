//! Sizes and numbers of the headers the program reads and writes, in one place.

/// An Ethernet header without tags.
pub const ETH_LEN: usize = 14;
/// One 802.1Q/802.1ad tag.
pub const VLAN_LEN: usize = 4;
/// An IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// The fixed IPv6 header.
pub const IPV6_LEN: usize = 40;
/// A UDP header.
pub const UDP_LEN: usize = 8;
/// Type, code, checksum and the four bytes of the type's own, before an ICMP or ICMPv6
/// error's quote.
pub const ICMP_LEN: usize = 8;
/// EtherTypes: IPv4, IPv6, and the TPIDs of a VLAN tag (802.1Q, 802.1ad).
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// IP protocol numbers of ICMP and ICMPv6.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
/// ICMP "destination unreachable"; ICMPv6 "packet too big".
pub const ICMP_UNREACHABLE: u8 = 3;
pub const ICMPV6_TOO_BIG: u8 = 2;
/// Where the TCP checksum is in its header; UDP's.
pub const TCP_CHECK: usize = 16;
pub const UDP_CHECK: usize = 6;
