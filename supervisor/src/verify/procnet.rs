//! Which TCP ports a process listens on, from `/proc`: a worker that
//! listens on a port of its own, beside the socket baton passed it, answers
//! on nothing baton owns (the black hole).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The TCP addresses `pid` listens on (sockets in its fd table in state
/// LISTEN), sorted; empty if `/proc` cannot tell.
pub fn listening(pid: i32) -> Vec<SocketAddr> {
    let inodes: HashSet<u64> = socket_inodes(pid).into_iter().collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        found.extend(
            parse_table(&text)
                .into_iter()
                .filter_map(|(addr, state, inode)| {
                    (state == 0x0A && inodes.contains(&inode)).then_some(addr)
                }),
        );
    }
    found.sort();
    found.dedup();
    found
}

/// The inodes of the established TCP connections to one of `ports` (read
/// once per `baton status`: the kernel prints every TCP socket of the
/// network namespace, about 70 ms for 30,000 of them). Empty if `/proc`
/// cannot tell.
pub fn established(ports: &[u16]) -> HashSet<u64> {
    let mut found = HashSet::new();
    if ports.is_empty() {
        return found;
    }
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/net/{table}")) else {
            continue;
        };
        // Fields: sl local rem st tx:rx tr:when retrnsmt uid timeout inode.
        for line in text.lines().skip(1) {
            let mut f = line.split_ascii_whitespace();
            let (Some(local), Some(state), Some(inode)) = (f.nth(1), f.nth(1), f.nth(5)) else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if state == "01" && port.is_some_and(|p| ports.contains(&p)) {
                found.extend(inode.parse::<u64>());
            }
        }
    }
    found
}

/// How many of `connections` (from [`established`]) the processes `pids`
/// hold in their fd tables.
pub fn held_by(pids: &[i32], connections: &HashSet<u64>) -> usize {
    if connections.is_empty() {
        return 0;
    }
    let held: HashSet<u64> = pids.iter().flat_map(|&pid| socket_inodes(pid)).collect();
    held.intersection(connections).count()
}

/// The inodes of the sockets in `pid`'s fd table.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        target
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// `(local address, state, inode)` of each line of `/proc/net/tcp{,6}`.
fn parse_table(text: &str) -> Vec<(SocketAddr, u8, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((SocketAddr::new(parse_ip(ip)?, port), state, inode))
        })
        .collect()
}

/// The kernel prints an address as 32-bit words in the host's byte order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listener_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening(std::process::id() as i32).contains(&addr));
        drop(l);
        assert!(!listening(std::process::id() as i32).contains(&addr));
    }
}
