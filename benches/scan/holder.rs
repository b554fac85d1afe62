//! Healthy connections for the scan bench, held by forked helper processes: each holds both
//! ends of up to `PER_HOLDER` connections to the bench's listener (the hard RLIMIT_NOFILE here
//! is 20,000 and cannot be raised without CAP_SYS_RESOURCE, so 100,000 connections take
//! several processes), and tells the bench the server side's addresses, which is all a lookup
//! needs. Clients come from 127.0.0.2, .3, …: 25,000 per source address, as one address has
//! about 28,000 ephemeral ports.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Connections (two descriptors each) per helper process.
pub const PER_HOLDER: usize = 9_000;
/// Client connections per source address.
const PER_SOURCE: usize = 25_000;

/// Makes the next close() send a RST and skip TIME_WAIT.
pub fn linger0(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads size_of::<linger>() bytes from `l`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Connection number `n` to 127.0.0.1:`port`, from 127.0.0.(2 + n / PER_SOURCE).
fn connect_from(n: usize, port: u16) -> std::io::Result<TcpStream> {
    let src = sockaddr_in(Ipv4Addr::new(127, 0, 0, 2 + (n / PER_SOURCE) as u8), 0);
    let dst = sockaddr_in(Ipv4Addr::LOCALHOST, port);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the returned stream (closed on every error path);
    // bind and connect read `len` bytes of our sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        // The port is chosen at connect, unique per 4-tuple: a port bound here would be taken
        // from every later connect() of the host (the bench's own CLOSE_WAIT clients too).
        let one: libc::c_int = 1;
        let one_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let opt = &one as *const libc::c_int as *const libc::c_void;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            opt,
            one_len,
        );
        let as_sa = |a: &libc::sockaddr_in| a as *const _ as *const libc::sockaddr;
        if libc::bind(fd, as_sa(&src), len) != 0 || libc::connect(fd, as_sa(&dst), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("an IPv6 address on an IPv4 listener: {a}"),
    }
}

/// 12 bytes: local address and port, peer address and port.
fn encode(s: &TcpStream) -> [u8; 12] {
    let (l, p) = (v4(s.local_addr().unwrap()), v4(s.peer_addr().unwrap()));
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&l.ip().octets());
    b[4..6].copy_from_slice(&l.port().to_be_bytes());
    b[6..10].copy_from_slice(&p.ip().octets());
    b[10..].copy_from_slice(&p.port().to_be_bytes());
    b
}

fn decode(b: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
    let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    (
        SocketAddr::V4(SocketAddrV4::new(ip(0), port(4))),
        SocketAddr::V4(SocketAddrV4::new(ip(6), port(10))),
    )
}

/// The helper's loop: for each command (first connection number, count) it connects that many
/// clients and accepts them on `listener` (one helper at a time: the bench waits for the
/// answer, so the accepted ones are its own), and answers with the server sides' addresses.
/// At EOF it resets everything and exits.
fn serve(listener: &TcpListener, mut cmd: File, mut answer: File) -> ! {
    let port = listener.local_addr().unwrap().port();
    let mut held = Vec::new();
    let mut n = [0u8; 8];
    while cmd.read_exact(&mut n).is_ok() {
        let first = u32::from_ne_bytes(n[..4].try_into().unwrap()) as usize;
        let count = u32::from_ne_bytes(n[4..].try_into().unwrap()) as usize;
        let mut out = Vec::with_capacity(12 * count);
        for i in 0..count {
            let c = connect_from(first + i, port).unwrap_or_else(|e| {
                eprintln!("connection holder: connect #{}: {e}", first + i);
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(1) }
            });
            let (s, _) = listener.accept().expect("accept");
            out.extend_from_slice(&encode(&s));
            held.push((c, s));
        }
        answer.write_all(&out).unwrap();
    }
    for (c, s) in &held {
        linger0(c.as_raw_fd());
        linger0(s.as_raw_fd());
    }
    drop(held);
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Closes every descriptor above stderr but `keep`: an earlier helper's command pipe left open
/// here would keep that helper from seeing EOF.
fn close_all_but(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: closes an inherited descriptor this child never uses (the directory's own
        // descriptor is gone already: closing it fails harmlessly).
        unsafe { libc::close(fd) };
    }
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh descriptors into `fds`, which we then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    }
}

/// A forked process holding both ends of up to `PER_HOLDER` connections.
pub struct Holder {
    pid: libc::pid_t,
    cmd: Option<File>,
    answers: File,
    pub held: usize,
}

impl Holder {
    pub fn start(listener: &TcpListener) -> Holder {
        let (cmd_r, cmd_w) = pipe();
        let (ans_r, ans_w) = pipe();
        // SAFETY: the bench is single-threaded here; the child only uses std networking and
        // pipes and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: prctl only sets this process's death signal.
            unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            };
            drop((cmd_w, ans_r));
            let keep = [listener.as_raw_fd(), cmd_r.as_raw_fd(), ans_w.as_raw_fd()];
            close_all_but(&keep);
            serve(listener, cmd_r, ans_w);
        }
        Holder {
            pid,
            cmd: Some(cmd_w),
            answers: ans_r,
            held: 0,
        }
    }

    /// `count` more connections, numbered from `first`: the server sides' (local, peer).
    pub fn connect(&mut self, first: usize, count: usize) -> Vec<(SocketAddr, SocketAddr)> {
        let cmd = self.cmd.as_mut().unwrap();
        let mut c = (first as u32).to_ne_bytes().to_vec();
        c.extend_from_slice(&(count as u32).to_ne_bytes());
        cmd.write_all(&c).unwrap();
        let mut b = vec![0u8; 12 * count];
        self.answers
            .read_exact(&mut b)
            .expect("the holder's answer");
        self.held += count;
        b.chunks(12).map(decode).collect()
    }

    /// Resets the connections and waits for the helper to exit.
    pub fn stop(&mut self) {
        drop(self.cmd.take());
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.cmd.is_some() {
            // SAFETY: our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.stop();
        }
    }
}
