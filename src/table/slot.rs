//! Per-slot field access: addresses, request text (seqlock), and a plain-data view for readers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU32};

use super::crash;
use super::layout::Slot;
use super::shared::{read_bytes, write_bytes};
use super::state::SlotState;

const IPV6_FLAG: u32 = 1 << 16;

/// The guard shut this connection's socket down (it stays listed until Apache lets go of it).
pub const FLAG_FORCE_CLOSED: u32 = 1 << 0;
/// AutoClose Report already logged this connection.
pub const FLAG_REPORTED: u32 = 1 << 1;
/// `acked_bytes` holds a sample taken during this CLOSE_WAIT period.
pub const FLAG_SAMPLED: u32 = 1 << 2;
/// The client is gone: CLOSE_WAIT past the vhost's timeout with no data moving
/// (`abandoned_since_mono_ms` says since when).
pub const FLAG_ABANDONED: u32 = 1 << 3;
/// The request's CGI processes were sent SIGTERM / SIGKILL.
pub const FLAG_CGI_TERM: u32 = 1 << 4;
pub const FLAG_CGI_KILL: u32 = 1 << 5;
/// The guard process shut it down (taken out of a hung child); with FLAG_FORCE_CLOSED.
pub const FLAG_RESCUED: u32 = 1 << 6;

/// A consistent-enough copy of one slot, taken without locking (for status and scans).
#[derive(Clone, Debug, PartialEq)]
pub struct SlotView {
    pub index: usize,
    /// The lease's stored state, not the one the status page shows.
    pub state: SlotState,
    pub tag: u32,
    pub owner_pid: u32,
    pub fd: i32,
    pub inode: u64,
    pub vhost: u32,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub accept_mono_ms: u64,
    pub state_since_mono_ms: u64,
    pub close_wait_since_mono_ms: u64,
    pub requests: u64,
    pub flags: u32,
    pub abandoned_since_mono_ms: u64,
    pub method: String,
    pub path: String,
}

fn store_addr(ip: &[AtomicU32; 4], port: &AtomicU32, addr: &SocketAddr) {
    // Four big-endian words of the IPv6 form (IPv4 as ::ffff:a.b.c.d), written directly: this
    // runs twice per accepted connection.
    let (words, flag) = match addr.ip() {
        IpAddr::V4(v4) => ([0, 0, 0xffff, u32::from(v4)], 0),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            let w = |i: u32| (n >> (96 - 32 * i)) as u32;
            ([w(0), w(1), w(2), w(3)], IPV6_FLAG)
        }
    };
    for (word, value) in ip.iter().zip(words) {
        word.store(value, Relaxed);
    }
    port.store(addr.port() as u32 | flag, Relaxed);
}

fn load_addr(ip: &[AtomicU32; 4], port: &AtomicU32) -> SocketAddr {
    let mut octets = [0u8; 16];
    for (i, word) in ip.iter().enumerate() {
        octets[i * 4..i * 4 + 4].copy_from_slice(&word.load(Relaxed).to_be_bytes());
    }
    let p = port.load(Relaxed);
    let v6 = Ipv6Addr::from(octets);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) if p & IPV6_FLAG == 0 => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, (p & 0xffff) as u16)
}

/// The client address recorded in `slot`.
pub fn client_of(slot: &Slot) -> SocketAddr {
    load_addr(&slot.client_ip, &slot.client_port)
}

/// The connection's (local, client) addresses as the kernel names them (an IPv4 client of an
/// IPv6 listener as IPv4): the key of a lookup and of the join with a dump.
pub fn tuple_of(slot: &Slot) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    (
        canonical(load_addr(&slot.local_ip, &slot.local_port)),
        canonical(client_of(slot)),
    )
}

impl Slot {
    /// Records the connection at accept time (owner only, before publishing a state): the
    /// descriptor, the 4-tuple the scan looks the socket up by, the arrival vhost. The socket's
    /// inode is not read here (an fstat per connection): the scan records the kernel's when it
    /// first sees the socket in CLOSE_WAIT, before the mark that lets anyone act on it.
    pub fn set_socket(&self, fd: i32, client: &SocketAddr, local: &SocketAddr, vhost: u32) {
        self.fd.store(fd, Relaxed);
        crash::point();
        self.vhost.store(vhost, Relaxed);
        crash::point();
        store_addr(&self.client_ip, &self.client_port, client);
        store_addr(&self.local_ip, &self.local_port, local);
    }

    /// Writes method and path under the seqlock (owner only). Raw bytes as Apache has them:
    /// UTF-8 is checked only when a reader renders them. Long values are truncated.
    /// A writer that died mid-write left the counter odd: the next write starts from the
    /// even value below it, so the seqlock heals at the slot's next write (and `reset_text_seq`
    /// heals it when the slot is freed).
    pub fn write_text(&self, method: &[u8], path: &[u8]) {
        let base = self.text_seq.load(Relaxed) & !1;
        self.text_seq.store(base.wrapping_add(1), Relaxed); // odd: write in progress
        crash::point();
        fence(Release);
        let m = write_bytes(&self.method, method);
        crash::point();
        let p = write_bytes(&self.path, path);
        crash::point();
        self.text_len.store(m as u32 | (p as u32) << 8, Relaxed);
        crash::point();
        self.text_seq.store(base.wrapping_add(2), Release);
        crash::point();
    }

    /// Makes the seqlock even again (a slot being freed: nobody writes its text any more).
    pub fn reset_text_seq(&self) {
        let seq = self.text_seq.load(Relaxed);
        if seq & 1 == 1 {
            self.text_seq.store(seq.wrapping_add(1), Release);
            crash::point();
        }
    }

    /// Reads method and path; gives up (empty strings) if a writer keeps interfering.
    pub fn read_text(&self) -> (String, String) {
        for _ in 0..16 {
            let before = self.text_seq.load(Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = self.text_len.load(Relaxed);
            let m = read_bytes(&self.method, (len & 0xff) as usize);
            let p = read_bytes(&self.path, (len >> 8 & 0xff) as usize);
            fence(Acquire);
            if self.text_seq.load(Relaxed) == before {
                return (lossy(m), lossy(p));
            }
        }
        (String::new(), String::new())
    }

    pub fn view(&self, index: usize) -> SlotView {
        let (method, path) = self.read_text();
        let lease = self.lease();
        SlotView {
            index,
            state: lease.state,
            tag: lease.tag,
            owner_pid: lease.pid,
            fd: self.fd.load(Relaxed),
            inode: self.inode.load(Relaxed),
            vhost: self.vhost.load(Relaxed),
            client: load_addr(&self.client_ip, &self.client_port),
            local: load_addr(&self.local_ip, &self.local_port),
            accept_mono_ms: self.accept_mono_ms.load(Relaxed),
            state_since_mono_ms: self.state_since_mono_ms.load(Relaxed),
            close_wait_since_mono_ms: self.close_wait_since(lease.tag).unwrap_or(0),
            requests: self.requests.load(Relaxed),
            flags: self.flags.load(Relaxed),
            abandoned_since_mono_ms: self.abandoned_since_mono_ms.load(Relaxed),
            method,
            path,
        }
    }
}

/// Truncation can split a UTF-8 sequence; show a replacement char rather than fail.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
