//! A network namespace with known routes and neighbours, for the tests of forwarding modes
//! that route with the kernel's tables (`bpf_fib_lookup`): forwarding on; a veth `v0`
//! (198.18.200.1/24, 2001:db8:200::1/64, MAC [`V0_MAC`]) whose neighbour 198.18.200.10 /
//! 2001:db8:200::10 has the permanent MAC [`NEXT_HOP_MAC`]; 198.18.200.11 has no neighbour
//! entry; clients 198.18.201.0/24 and 2001:db8:c::/64 are routed via the neighbour;
//! 198.18.250.0/24 has no route. Deleted on drop.

use std::{fs::File, os::fd::AsRawFd, process::Command};

/// The neighbour's MAC.
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x0a];
/// `v0`'s MAC.
pub const V0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];

/// The namespace; see the module documentation.
pub struct RoutedNetns(String);

impl RoutedNetns {
    /// Builds namespace `bdp-{name}` (a leftover of that name is removed first).
    pub fn new(name: &str) -> Self {
        let ns = RoutedNetns(format!("bdp-{name}"));
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.0])
            .stderr(std::process::Stdio::null())
            .status();
        let n = ns.0.as_str();
        let status = Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {n}");
        let batch = "link set lo up\n\
            link add v0 type veth peer name v1\n\
            link set v0 address 02:00:00:00:01:01\n\
            link set v0 up\n\
            link set v1 up\n\
            addr add 198.18.200.1/24 dev v0\n\
            addr add 2001:db8:200::1/64 dev v0 nodad\n\
            neigh add 198.18.200.10 lladdr 02:00:00:00:02:0a dev v0 nud permanent\n\
            neigh add 2001:db8:200::10 lladdr 02:00:00:00:02:0a dev v0 nud permanent\n\
            route add 198.18.201.0/24 via 198.18.200.10\n\
            route add 2001:db8:c::/64 via 2001:db8:200::10\n";
        let mut ip = Command::new("ip")
            .args(["-n", n, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run ip -batch");
        std::io::Write::write_all(ip.stdin.as_mut().expect("stdin"), batch.as_bytes())
            .expect("write the batch");
        drop(ip.stdin.take());
        assert!(
            ip.wait().expect("wait for ip").success(),
            "ip -batch in {n}"
        );
        for sysctl in [
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
        ] {
            let status = Command::new("ip")
                .args(["netns", "exec", n, "sysctl", "-qw", sysctl])
                .status()
                .expect("run sysctl");
            assert!(status.success(), "{sysctl}");
        }
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.0)).expect("open the netns");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: plain syscall on an open namespace file; changes this helper
                    // thread only.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("the test thread")
        })
    }
}

impl Drop for RoutedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
