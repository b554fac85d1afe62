//! Finding and signalling the processes that serve one connection (a CGI and its children),
//! with the checks that make it safe to signal them.
//!
//! A process is only ever signalled if (1) the kernel puts it below this server's root
//! parent — in its process tree, or, once re-parented (mod_cgid's daemon is gone at a stop
//! before the CGIs it started), in the process group the root parent leads — (2) its environment names the connection (`REMOTE_ADDR` and
//! `REMOTE_PORT`, which mod_cgi and mod_cgid give every CGI and which its children inherit),
//! and (3) it is still the same process when the signal goes out: the signal is sent through a
//! pidfd opened first, after checking the process's start time through that pidfd's pid, so a
//! pid reused in between can never be hit.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::number::dec;
use super::procfs;

/// One process, as /proc/<pid>/stat shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    /// With the pid, names the process for good (a reused pid has another start time).
    pub start_time: u64,
}

/// Every process the kernel lists now (those that exit while we read are skipped).
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let st = procfs::stat(pid)?;
            (st.state != 'Z' && st.state != 'X').then_some(Proc {
                pid,
                ppid: st.ppid,
                pgrp: st.pgrp,
                start_time: st.start_time,
            })
        })
        .collect()
}

/// The processes below `root` in `procs` (children, their children, ...), `root` excluded.
pub fn descendants_of(procs: &[Proc], root: u32) -> Vec<Proc> {
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent && p.pid != root) {
            if !found.iter().any(|f| f.pid == p.pid) {
                found.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// The processes in the process group that `leader` leads (its own process group), `leader`
/// excluded. Apache's parent leads its group (it detaches with setsid(), or is started as a
/// job of its own), and every child, daemon and CGI inherits it unless it moves itself.
pub fn in_group_of(procs: &[Proc], leader: u32) -> Vec<Proc> {
    procs
        .iter()
        .filter(|p| p.pgrp == leader && p.pid != leader)
        .copied()
        .collect()
}

/// Whether a NUL-separated environment block names the client `client`: exactly one
/// `REMOTE_ADDR`, its address (an IPv4 client on an IPv6 listener may be written either
/// way), and exactly one `REMOTE_PORT`, its port.
///
/// A block with either variable twice names nobody. A CGI can set its own environment, and
/// hand any environment to what it runs; readers disagree on which copy counts (glibc's
/// getenv() takes the first), so an ambiguous block cannot be trusted to pick a process to
/// signal. Such a process is left running, as it would be without the module.
pub fn environ_names_client(environ: &[u8], client: SocketAddr) -> bool {
    let text = |name| only_value(environ, name).and_then(|v| std::str::from_utf8(v).ok());
    let addr_ok = text("REMOTE_ADDR")
        .and_then(|v| v.parse::<IpAddr>().ok())
        .is_some_and(|ip| same_ip(ip, client.ip()));
    let port_ok = text("REMOTE_PORT").and_then(dec::<u16>) == Some(client.port());
    addr_ok && port_ok
}

/// The value of variable `name` when the block has it exactly once.
fn only_value<'a>(environ: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut values = environ
        .split(|b| *b == 0)
        .filter_map(|var| var.strip_prefix(name.as_bytes())?.strip_prefix(b"="));
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The environment block a process started with. Readable for processes of our own user that
/// are dumpable (a CGI after exec is); EACCES otherwise (e.g. suexec runs it as another user).
pub fn environ(pid: u32) -> io::Result<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ"))
}

/// Why a process could not be signalled.
#[derive(Debug)]
pub enum SignalError {
    /// It exited, or its pid now names another process: nothing to do.
    Gone,
    /// The kernel refused (another user, e.g. suexec): say so once.
    Denied,
    /// Any other failure of the pidfd calls (not expected; the caller moves on).
    Other,
}

/// Sends `sig` to `p` if it is still the same process (pid and start time).
pub fn signal_verified(p: &Proc, sig: i32) -> Result<(), SignalError> {
    let pidfd = super::pidfd::open(p.pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => SignalError::Gone,
        _ => SignalError::Other,
    })?;
    // The pidfd pins the process: if the start time still matches now, it is the one we found.
    match procfs::stat(p.pid) {
        Some(st) if st.start_time == p.start_time && st.state != 'Z' => {}
        _ => return Err(SignalError::Gone),
    }
    super::pidfd::send_signal(&pidfd, sig).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => SignalError::Gone,
        Some(libc::EPERM) => SignalError::Denied,
        _ => SignalError::Other,
    })
}

/// Which process holds each socket of `inodes`: (pid, descriptor) of the first holder found,
/// `skip` excluded. Walks /proc/*/fd (readlink `socket:[inode]`); processes whose fd table
/// cannot be read are skipped. Cost: one readlink per open descriptor on the host, so the
/// caller runs it only for sockets that passed their timeout, once each.
pub fn socket_holders(
    inodes: &std::collections::HashSet<u64>,
    skip: u32,
) -> std::collections::HashMap<u64, (u32, i32)> {
    let mut found = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid == skip {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                if inodes.contains(&inode) {
                    found.entry(inode).or_insert((pid, fd));
                }
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

/// `socket:[12345]` → 12345 (decimal digits only, as the kernel writes it).
pub fn socket_inode(link: &str) -> Option<u64> {
    dec(link.strip_prefix("socket:[")?.strip_suffix(']')?)
}

/// /proc/<pid>/comm without the newline. Bytes, shown lossily: the kernel cuts a name at 15
/// bytes, inside a UTF-8 character if need be.
pub fn comm(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/comm"))
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
        .unwrap_or_default()
}

/// Whether `p` still runs (same pid and start time, not a zombie).
pub fn is_running(p: &Proc) -> bool {
    procfs::is_alive(p.pid, p.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp: 1,
            start_time: 1,
        }
    }

    #[test]
    fn socket_links_and_holders() {
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        assert_eq!(socket_inode("socket:[12x]"), None);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let inode = crate::sys::socket::inode(l.as_raw_fd()).unwrap();
        let want: std::collections::HashSet<u64> = [inode].into();
        let found = socket_holders(&want, 0);
        assert_eq!(
            found.get(&inode),
            Some(&(std::process::id(), l.as_raw_fd()))
        );
        assert!(
            socket_holders(&want, std::process::id()).is_empty(),
            "skip honoured"
        );
        assert!(!comm(std::process::id()).is_empty());
    }

    /// Found by fuzz::process::socket_links: `socket:[+5]` was read as inode 5; u64's
    /// parse takes a '+' the kernel never writes.
    #[test]
    fn socket_links_with_a_sign_are_refused() {
        assert_eq!(socket_inode("socket:[5]"), Some(5));
        assert_eq!(socket_inode("socket:[+5]"), None);
        assert_eq!(socket_inode("socket:[-1]"), None);
        assert_eq!(socket_inode("socket:[18446744073709551616]"), None);
        assert_eq!(socket_inode("socket:[]"), None);
    }

    /// Found by fuzz::process::environ_model (shrunk, client 0.0.0.0:0:
    /// `REMOTE_ADDR=0.0.0.1\0REMOTE_ADDR=0.0.0.0\0REMOTE_PORT=0`): the last copy of a
    /// variable won, so a block naming two clients was taken for the last one's.
    #[test]
    fn duplicate_remote_variables_name_nobody() {
        let c: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let one = b"REMOTE_ADDR=127.0.0.1\0REMOTE_PORT=40000".to_vec();
        assert!(environ_names_client(&one, c));
        for extra in [
            &b"REMOTE_ADDR=10.0.0.1"[..],
            b"REMOTE_ADDR=127.0.0.1",
            b"REMOTE_PORT=40000",
            b"REMOTE_ADDR=\xff",
        ] {
            let twice = [extra, b"\0", &one].concat();
            assert!(!environ_names_client(&twice, c), "{twice:?}");
        }
    }

    /// Found by fuzz::process::environ_model (shrunk: `REMOTE_ADDR=0.0.0.0\0REMOTE_PORT=+0`):
    /// a signed port was read as the client's; Apache writes digits only.
    #[test]
    fn a_signed_remote_port_names_nobody() {
        let c: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert!(!environ_names_client(
            b"REMOTE_ADDR=127.0.0.1\0REMOTE_PORT=+40000",
            c
        ));
    }

    /// Found with the stat fix (same cause, no property): a name cut inside a UTF-8
    /// character was shown as an empty command.
    #[test]
    fn comm_of_a_non_utf8_name_is_shown() {
        procfs::with_thread_named(b"caf\xc3\0", |tid| {
            assert_eq!(comm(tid), "caf\u{fffd}");
        });
    }

    #[test]
    fn group_members_of_a_leader() {
        let g = |pid, pgrp| Proc {
            pid,
            ppid: 1,
            pgrp,
            start_time: 1,
        };
        let procs = [g(10, 10), g(11, 10), g(12, 12)];
        let members: Vec<u32> = in_group_of(&procs, 10).iter().map(|p| p.pid).collect();
        assert_eq!(members, vec![11]);
        assert!(in_group_of(&procs, 11).is_empty(), "11 leads no group");
    }

    #[test]
    fn descendants_follow_the_tree_and_nothing_else() {
        let procs = [
            p(1, 0),
            p(10, 1),
            p(11, 10),
            p(12, 11),
            p(20, 1),
            p(30, 99),
            p(13, 10),
        ];
        let mut d: Vec<u32> = descendants_of(&procs, 10).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
        assert!(descendants_of(&procs, 12).is_empty());
        // A cycle in hostile input does not loop for ever.
        let cyc = [p(5, 6), p(6, 5)];
        assert_eq!(descendants_of(&cyc, 5).len(), 1);
    }

    #[test]
    fn environ_must_name_address_and_port() {
        let c: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let env = b"PATH=/bin\0REMOTE_ADDR=127.0.0.1\0REMOTE_PORT=40000\0SERVER_PORT=80\0";
        assert!(environ_names_client(env, c));
        assert!(environ_names_client(
            b"REMOTE_PORT=40000\0REMOTE_ADDR=::ffff:127.0.0.1",
            c
        ));
        assert!(!environ_names_client(
            b"REMOTE_ADDR=127.0.0.1\0REMOTE_PORT=40001\0",
            c
        ));
        assert!(!environ_names_client(
            b"REMOTE_ADDR=127.0.0.2\0REMOTE_PORT=40000\0",
            c
        ));
        assert!(!environ_names_client(b"REMOTE_ADDR=127.0.0.1\0", c));
        assert!(!environ_names_client(
            b"XREMOTE_ADDR=127.0.0.1\0REMOTE_PORT=40000",
            c
        ));
        assert!(!environ_names_client(b"\xff\xfe\0\0", c));
    }

    #[test]
    fn signals_only_the_same_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let st = procfs::stat(child.id()).unwrap();
        let me = Proc {
            pid: child.id(),
            ppid: std::process::id(),
            pgrp: st.pgrp,
            start_time: st.start_time,
        };
        // A different start time means another process with the same pid: refused.
        let other = Proc {
            start_time: st.start_time + 1,
            ..me
        };
        assert!(matches!(
            signal_verified(&other, libc::SIGTERM),
            Err(SignalError::Gone)
        ));
        assert!(is_running(&me));
        // Signal 0 probes without effect; then a real SIGTERM ends it.
        signal_verified(&me, 0).unwrap();
        signal_verified(&me, libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(matches!(
            signal_verified(&me, libc::SIGTERM),
            Err(SignalError::Gone)
        ));
        assert!(descendants_of(&all(), std::process::id())
            .iter()
            .all(|p| p.pid != me.pid));
    }
}
