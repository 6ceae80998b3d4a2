//! Whether the host forwards IP packets. The data plane routes the packets of routed
//! backends (the outer packets of tunnels, the rewritten ones of `nat`) with
//! `bpf_fib_lookup`, which refuses when forwarding is off on the interface, and the kernel
//! forwards those whose next hop it must resolve first: a host with a routed service needs
//! `net.ipv4.conf.all.forwarding` (and for IPv6 services `net.ipv6.conf.all.forwarding`)
//! on.

use std::path::Path;

/// The sysctl files read, by family.
const SYSCTLS: [(&str, &str); 2] = [
    ("IPv4", "/proc/sys/net/ipv4/conf/all/forwarding"),
    ("IPv6", "/proc/sys/net/ipv6/conf/all/forwarding"),
];

/// One line saying which families the host does not forward, if any (a file that cannot
/// be read counts as off).
pub fn warning() -> Option<String> {
    let off: Vec<&str> = SYSCTLS
        .iter()
        .filter(|(_, path)| !enabled(Path::new(path)))
        .map(|(family, _)| *family)
        .collect();
    say(&off)
}

fn enabled(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.trim() != "0")
}

fn say(off: &[&str]) -> Option<String> {
    if off.is_empty() {
        return None;
    }
    let families = off.join(" and ");
    let sysctls: Vec<String> = off
        .iter()
        .map(|family| match *family {
            "IPv4" => "net.ipv4.conf.all.forwarding=1".to_string(),
            _ => "net.ipv6.conf.all.forwarding=1".to_string(),
        })
        .collect();
    Some(format!(
        "{families} forwarding is off on this host: routed backends (ipip, gue, nat) of \
         that family are not reached until it is on (sysctl -w {})",
        sysctls.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_families_that_are_off_in_one_line() {
        assert_eq!(say(&[]), None);
        let both = say(&["IPv4", "IPv6"]).unwrap();
        assert_eq!(
            both,
            "IPv4 and IPv6 forwarding is off on this host: routed backends (ipip, gue, nat) of \
             that family are not reached until it is on (sysctl -w \
             net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1)"
        );
        assert!(say(&["IPv6"])
            .unwrap()
            .starts_with("IPv6 forwarding is off"));
    }

    #[test]
    fn reads_a_sysctl_file() {
        let dir = std::env::temp_dir().join(format!("forwarding-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (on, off) = (dir.join("on"), dir.join("off"));
        std::fs::write(&on, "1\n").unwrap();
        std::fs::write(&off, "0\n").unwrap();
        assert!(enabled(&on));
        assert!(!enabled(&off));
        assert!(!enabled(&dir.join("missing")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
