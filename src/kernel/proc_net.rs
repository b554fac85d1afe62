//! CLOSE_WAIT sockets from /proc/net/tcp and /proc/net/tcp6 (readable by any user).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use super::{KernelSocket, TCP_CLOSE_WAIT};
use crate::sys::number::{dec, hex};

/// Parses "0100007F:1F90" (address in the kernel's in-memory byte order, port in hex).
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = field.split_once(':')?;
    let port = hex(port_hex)?;
    // Hex digits only before slicing by byte offset: a multibyte character would put a
    // slice boundary inside it (a panic), and the kernel never writes one.
    if !ip_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ip = match ip_hex.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex::<u32>(ip_hex)?.swap_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                let word = hex::<u32>(&ip_hex[i * 8..i * 8 + 8])?.swap_bytes();
                octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one table (header line first) and keeps sockets in `state` on one of `ports`.
pub fn parse(text: &str, state: u8, ports: &[u16]) -> Vec<KernelSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let st: u8 = hex(f.get(3)?)?;
            if st != state {
                return None;
            }
            let local = parse_addr(f.get(1)?)?;
            if !ports.contains(&local.port()) {
                return None;
            }
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(KernelSocket {
                local,
                remote: parse_addr(f.get(2)?)?,
                state: st,
                recv_q: hex(rx)?,
                inode: dec(f.get(9)?)?,
                cookie: 0,
                uid: dec(f.get(7)?)?,
            })
        })
        .collect()
}

/// Every CLOSE_WAIT socket whose local port is one of `ports`, IPv4 and IPv6.
pub fn close_wait_on_ports(ports: &[u16]) -> Result<Vec<KernelSocket>, String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(text) => out.extend(parse(&text, TCP_CLOSE_WAIT, ports)),
            // No IPv6 on this host is not an error.
            Err(e) if file.ends_with('6') && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 08 00000000:0000004A 00:00000000 00000000    33        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0050 0100007F:C351 08 00000000:00000000 00:00000000 00000000    33        0 3333 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn keeps_close_wait_on_our_ports_only() {
        let v = parse(TCP, TCP_CLOSE_WAIT, &[8080]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(v[0].remote, "127.0.0.1:50000".parse().unwrap());
        assert_eq!((v[0].inode, v[0].recv_q, v[0].uid), (2222, 0x4a, 33));
    }

    #[test]
    fn parses_ipv6_and_mapped_addresses() {
        let a = parse_addr("00000000000000000000000001000000:1F90").unwrap();
        assert_eq!(a, "[::1]:8080".parse().unwrap());
        let m = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(m, "127.0.0.1:80".parse().unwrap());
    }

    /// Found by fuzz::proc_net::mutated_lines: a tcp6 address of 32 bytes with a multibyte
    /// character in it was sliced at byte offsets 8, 16, 24 and panicked.
    #[test]
    fn a_multibyte_char_in_an_address_is_refused_not_a_panic() {
        assert_eq!(parse_addr("000000€00000000000000000000000:0050"), None);
        assert_eq!(parse_addr("000€0000:0050"), None);
        let line = "   0: 000000€00000000000000000000000:0050 00000000000000000000000000000000:0000 08 00000000:00000000 00:00000000 00000000 0 0 1 1";
        assert!(parse(&format!("header\n{line}\n"), TCP_CLOSE_WAIT, &[80]).is_empty());
    }

    /// Found by fuzz::proc_net::signed_fields: a '+' before the port, state, rx queue, uid or
    /// inode was read as if it were not there; the kernel never prints one.
    #[test]
    fn signed_numbers_are_refused() {
        let ok = "   1: 0100007F:1F90 0100007F:C350 08 00000000:0000004A 00:00000000 00000000    33        0 2222 1";
        assert_eq!(parse(&format!("h\n{ok}"), TCP_CLOSE_WAIT, &[8080]).len(), 1);
        for (from, to) in [
            (":1F90", ":+1F90"),
            (" 08 ", " +08 "),
            (":0000004A", ":+0000004A"),
            (" 33 ", " +33 "),
            (" 2222 ", " +2222 "),
        ] {
            let signed = ok.replacen(from, to, 1);
            assert!(
                parse(&format!("h\n{signed}"), TCP_CLOSE_WAIT, &[8080]).is_empty(),
                "{signed}"
            );
        }
    }

    #[test]
    fn reads_the_live_tables() {
        // Whatever is on this host, reading must succeed and only return CLOSE_WAIT sockets.
        let v = close_wait_on_ports(&[1]).unwrap();
        assert!(v
            .iter()
            .all(|s| s.state == TCP_CLOSE_WAIT && s.local.port() == 1));
    }
}
