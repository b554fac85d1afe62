//! /proc/net/tcp and tcp6 (`kernel::proc_net`): lines rendered as the kernel prints them
//! (net/ipv4/tcp_ipv4.c get_tcp4_sock, net/ipv6/tcp_ipv6.c get_tcp6_sock) read back, and
//! mutated lines never panic nor yield a socket the filter did not ask for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{canonical, check, mutate};
use crate::kernel::proc_net::parse;
use crate::kernel::KernelSocket;

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

/// One row of a table: IPv4 rows go to `tcp`, IPv6 rows to `tcp6`.
#[derive(Clone, Debug)]
struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    rx: u32,
    uid: u32,
    inode: u64,
}

/// An address as the kernel prints it: each 32-bit word of the address in host order, %08X.
fn hex_ip(ip: IpAddr) -> String {
    let words = |b: &[u8]| {
        b.chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
            .collect::<String>()
    };
    match ip {
        IpAddr::V4(a) => words(&a.octets()),
        IpAddr::V6(a) => words(&a.octets()),
    }
}

impl Row {
    fn line(&self, sl: usize) -> String {
        let (l, r) = (self.local, self.remote);
        format!(
            "{sl:4}: {}:{:04X} {}:{:04X} {:02X} {:08X}:{:08X} 00:00000000 00000000 {:5} {:8} {} 1 0000000000000000 20 4 30 10 -1",
            hex_ip(l.ip()), l.port(), hex_ip(r.ip()), r.port(), self.state, 0, self.rx, self.uid, 0, self.inode
        )
    }

    fn socket(&self) -> KernelSocket {
        KernelSocket {
            local: canonical(self.local),
            remote: canonical(self.remote),
            state: self.state,
            recv_q: self.rx as u64,
            inode: self.inode,
            cookie: 0,
            uid: self.uid,
        }
    }
}

/// A row, often in the state and on a port the filter asks for (only those lines are read
/// past their state field).
fn row(v6: bool, state: u8) -> impl Strategy<Value = Row> {
    let ip = move || -> BoxedStrategy<IpAddr> {
        match v6 {
            false => any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed(),
            true => any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed(),
        }
    };
    let port = prop_oneof![3 => 80u16..83, 1 => any::<u16>()];
    let ends = (ip(), port, ip(), any::<u16>());
    let fields = (
        prop_oneof![Just(state), 1u8..12],
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    );
    (ends, fields).prop_map(|((lip, lp, rip, rp), (state, rx, uid, inode))| Row {
        local: SocketAddr::new(lip, lp),
        remote: SocketAddr::new(rip, rp),
        state,
        rx,
        uid,
        inode,
    })
}

/// A table (header, rows, the trailing newline) and the filter to read it with.
#[derive(Clone, Debug)]
struct Table {
    rows: Vec<Row>,
    state: u8,
    ports: Vec<u16>,
}

impl Table {
    fn text(&self) -> String {
        let mut t = format!("{HEADER}\n");
        for (i, r) in self.rows.iter().enumerate() {
            // tcp4_seq_show pads its lines with spaces to 149 characters; tcp6 does not.
            let width = if r.local.is_ipv4() { 149 } else { 0 };
            t.push_str(&format!("{:<width$}\n", r.line(i)));
        }
        t
    }

    fn expected(&self) -> Vec<KernelSocket> {
        let wanted = |r: &&Row| r.state == self.state && self.ports.contains(&r.local.port());
        self.rows.iter().filter(wanted).map(Row::socket).collect()
    }
}

fn table() -> impl Strategy<Value = Table> {
    let filter = (prop_oneof![Just(8u8), 1u8..12], vec(80u16..83, 0..3));
    (any::<bool>(), filter).prop_flat_map(|(v6, (state, ports))| {
        vec(row(v6, state), 0..12).prop_map(move |rows| Table {
            rows,
            state,
            ports: ports.clone(),
        })
    })
}

/// Sockets of the wanted state on the wanted ports only: whatever the text, nothing else.
fn filtered(v: &[KernelSocket], state: u8, ports: &[u16]) -> Result<(), TestCaseError> {
    for s in v {
        prop_assert!(
            s.state == state && ports.contains(&s.local.port()),
            "{:?}",
            s
        );
    }
    Ok(())
}

#[test]
fn any_text() {
    let text = prop_oneof![
        any::<String>(),
        vec("[ 0-9A-F:\n]{0,40}", 0..4).prop_map(|l| format!("{HEADER}\n{}", l.join("\n"))),
    ];
    check(
        "proc_net::any_text",
        (text, 1u8..12, vec(any::<u16>(), 0..3)),
        |(t, st, ports)| filtered(&parse(&t, st, &ports), st, &ports),
    );
}

#[test]
fn real_lines_round_trip() {
    check("proc_net::real_lines_round_trip", table(), |t| {
        prop_assert_eq!(parse(&t.text(), t.state, &t.ports), t.expected());
        Ok(())
    });
}

/// Field numbers (whitespace-separated, from 0) that hold a number the parser reads, and
/// where in the field it starts: after the colon of `address:port` and `tx:rx`.
const NUMBERS: [(usize, bool); 6] = [
    (1, true),
    (2, true),
    (3, false),
    (4, true),
    (7, false),
    (9, false),
];

/// `line` with `sign` put before the number of field `NUMBERS[k]`.
fn signed(line: &str, k: usize, sign: char) -> String {
    let (field, after_colon) = NUMBERS[k];
    let mut f: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let at = if after_colon {
        f[field].find(':').unwrap() + 1
    } else {
        0
    };
    f[field].insert(at, sign);
    f.join(" ")
}

#[test]
fn mutated_lines() {
    let edited = table().prop_flat_map(|t| (Just(t.clone()), mutate::text(Just(t.text()), 4)));
    check("proc_net::mutated_lines", edited, |(t, text)| {
        filtered(&parse(&text, t.state, &t.ports), t.state, &t.ports)
    });
}

/// A number with a sign is not what the kernel prints: that line is dropped, never misread;
/// the other lines are still read.
#[test]
fn signed_fields() {
    let signs = (
        table(),
        any::<Index>(),
        0..NUMBERS.len(),
        prop::sample::select(vec!['+', '-']),
    );
    check("proc_net::signed_fields", signs, |(t, i, k, sign)| {
        if t.rows.is_empty() {
            return Ok(());
        }
        let n = i.index(t.rows.len());
        let mut lines: Vec<String> = t.text().lines().map(str::to_string).collect();
        lines[n + 1] = signed(&lines[n + 1], k, sign);
        let got = parse(&lines.join("\n"), t.state, &t.ports);
        let mut want = t.clone();
        want.rows.remove(n);
        prop_assert_eq!(got, want.expected(), "{}", lines[n + 1]);
        Ok(())
    });
}
