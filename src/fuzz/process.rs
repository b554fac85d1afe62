//! Who serves a connection (`sys::process`): /proc/<pid>/fd link targets and the
//! environment block a CGI was started with.

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::{check, mutate};
use crate::sys::process::{environ_names_client, socket_inode};

/// What `socket_inode` must make of a link: `socket:[` decimal digits `]` that fit a u64.
fn link_model(link: &str) -> Option<u64> {
    let digits = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[test]
fn socket_links() {
    let near = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        mutate::words("+5|-1|18446744073709551616|| 5|٣|0x10"),
    ]
    .prop_map(|d| format!("socket:[{d}]"));
    let link = prop_oneof![near.clone(), mutate::text(near, 3), any::<String>()];
    check("process::socket_links", (any::<u64>(), link), |(n, l)| {
        prop_assert_eq!(socket_inode(&format!("socket:[{n}]")), Some(n));
        prop_assert_eq!(socket_inode(&l), link_model(&l), "{:?}", l);
        Ok(())
    });
}

/// One variable of a generated environment.
#[derive(Clone, Debug)]
enum Var {
    /// REMOTE_ADDR naming the client (as Apache writes it, or v4-mapped) or another address.
    Addr(bool, bool),
    /// REMOTE_PORT naming the client's port, another port, or the port with a sign.
    Port(u8),
    /// Anything else: other names, look-alikes, bytes that are not UTF-8.
    Other(Vec<u8>),
}

impl Var {
    fn bytes(&self, client: SocketAddr) -> Vec<u8> {
        let text = match self {
            Var::Addr(true, mapped) => match client.ip() {
                IpAddr::V4(a) if *mapped => format!("REMOTE_ADDR=::ffff:{a}"),
                ip => format!("REMOTE_ADDR={ip}"),
            },
            Var::Addr(false, _) => format!("REMOTE_ADDR={}", other_ip(client.ip())),
            Var::Port(0) => format!("REMOTE_PORT={}", client.port()),
            Var::Port(1) => format!("REMOTE_PORT=+{}", client.port()),
            Var::Port(_) => format!("REMOTE_PORT={}", client.port() as u32 + 1),
            Var::Other(b) => return b.clone(),
        };
        text.into_bytes()
    }
}

fn other_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) ^ 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) ^ 1).into()),
    }
}

fn var() -> impl Strategy<Value = Var> {
    let other = prop_oneof![
        mutate::words("PATH=/bin|XREMOTE_ADDR=1.2.3.4|REMOTE_ADDRESS=1|REMOTE_ADDR|remote_port=1|REMOTE_PORT|=|")
            .prop_map(String::into_bytes),
        vec(1u8..=255, 0..12),
        Just(b"REMOTE_ADDR=\xff".to_vec()),
    ];
    prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(m, v4)| Var::Addr(m, v4)),
        (0u8..3).prop_map(Var::Port),
        other.prop_map(Var::Other),
    ]
}

fn client() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(|o| IpAddr::from(o).to_canonical()),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// An environment block: variables NUL-separated, maybe with the final NUL.
fn block(vars: &[Var], client: SocketAddr, final_nul: bool) -> Vec<u8> {
    let mut b = vars
        .iter()
        .map(|v| v.bytes(client))
        .collect::<Vec<_>>()
        .join(&0u8);
    if final_nul {
        b.push(0);
    }
    b
}

/// How many variables of `block` are named `name` (`name=` at a variable's start).
fn count(block: &[u8], name: &str) -> usize {
    let prefix = format!("{name}=");
    block
        .split(|&b| b == 0)
        .filter(|v| v.starts_with(prefix.as_bytes()))
        .count()
}

#[test]
fn environ_model() {
    let input = (vec(var(), 0..6), client(), any::<bool>());
    check("process::environ_model", input, |(vars, c, nul)| {
        let env = block(&vars, c, nul);
        let addrs = vars.iter().filter(|v| matches!(v, Var::Addr(..))).count();
        let ports = vars.iter().filter(|v| matches!(v, Var::Port(_))).count();
        let named = |v: &Var| matches!(v, Var::Addr(true, _) | Var::Port(0));
        // One REMOTE_ADDR and one REMOTE_PORT, both the client's: any other count, or a
        // variable that only looks like one (not UTF-8), names nobody.
        let want = count(&env, "REMOTE_ADDR") == 1
            && addrs == 1
            && count(&env, "REMOTE_PORT") == 1
            && ports == 1
            && vars.iter().filter(|v| named(v)).count() == 2;
        prop_assert_eq!(
            environ_names_client(&env, c),
            want,
            "{:?}",
            String::from_utf8_lossy(&env)
        );
        Ok(())
    });
}

/// Any bytes, and generated blocks with byte edits: no panic, and a client named only by a
/// block with exactly one of each variable.
#[test]
fn mutated_environ() {
    let edited = (
        vec(var(), 0..6),
        client(),
        any::<bool>(),
        mutate::byte_edits(4),
    )
        .prop_map(|(vars, c, nul, edits)| {
            let mut env = block(&vars, c, nul);
            mutate::apply_all(&edits, &mut env);
            (env, c)
        });
    let raw = (vec(any::<u8>(), 0..64), client());
    check(
        "process::mutated_environ",
        prop_oneof![edited, raw],
        |(env, c)| {
            if environ_names_client(&env, c) {
                prop_assert_eq!(count(&env, "REMOTE_ADDR"), 1);
                prop_assert_eq!(count(&env, "REMOTE_PORT"), 1);
            }
            Ok(())
        },
    );
}
