//! The neighbour nudge: one ICMP echo request, to make the kernel resolve a neighbour's MAC
//! (like `ping -c1`).

use std::net::IpAddr;

const ICMP_ECHO: u8 = 8;
const ICMPV6_ECHO: u8 = 128;

/// Sends one echo request to `addr`; failures are ignored (resolution then times out).
pub fn nudge(addr: IpAddr) {
    let (domain, protocol, kind) = match addr {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, ICMP_ECHO),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, ICMPV6_ECHO),
    };
    // SAFETY: plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return;
    }
    let mut packet = [kind, 0, 0, 0, 0x62, 0x6c, 0, 1];
    if addr.is_ipv4() {
        // The kernel computes ICMPv6 checksums itself; ICMPv4 needs ours.
        let sum = checksum(&packet).to_be_bytes();
        packet[2] = sum[0];
        packet[3] = sum[1];
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: valid buffer and sockaddr of the stated length.
    unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        );
        libc::close(fd);
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_request() {
        // Echo request, id 0x626c, seq 1: the sum of words is 0x0800+0x626c+0x0001.
        let packet = [ICMP_ECHO, 0, 0, 0, 0x62, 0x6c, 0, 1];
        assert_eq!(checksum(&packet), !(0x0800u16 + 0x626c + 0x0001));
    }
}
