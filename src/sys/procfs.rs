//! /proc/<pid>/stat: liveness, parent, start time and CPU time of a process.

use super::number::dec;

/// The fields of /proc/<pid>/stat this module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    /// Process group: set at fork, changed only by the process itself (setpgid/setsid), and
    /// kept when the parent dies and the process is re-parented.
    pub pgrp: u32,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Start time in clock ticks since boot: with the pid, it names one process for good.
    pub start_time: u64,
}

/// Parses the contents of /proc/<pid>/stat. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last ')'. It is bytes, not text: the
/// kernel cuts a name at 15 bytes, inside a UTF-8 character if need be, and a process may
/// name itself anything. Everything after it is ASCII.
pub fn parse_stat(bytes: &[u8]) -> Option<ProcStat> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&bytes[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) ... starttime(22).
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: dec(f.get(1)?)?,
        pgrp: dec(f.get(2)?)?,
        utime_ticks: dec(f.get(11)?)?,
        stime_ticks: dec(f.get(12)?)?,
        start_time: dec(f.get(19)?)?,
    })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is a running (non-zombie) process; if `start_time` is non-zero it must also
/// be the same process that had that start time (not a recycled pid).
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    match stat(pid) {
        Some(s) => {
            s.state != 'Z' && s.state != 'X' && (start_time == 0 || s.start_time == start_time)
        }
        None => false,
    }
}

/// Runs `f` with the id of a live thread named `name` (NUL-terminated, at most 16 bytes):
/// /proc/<tid>/stat and /proc/<tid>/comm carry a thread's own name.
#[cfg(test)]
pub fn with_thread_named(name: &'static [u8], f: impl FnOnce(u32)) {
    assert_eq!(name.last(), Some(&0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = done_rx.recv();
    });
    f(rx.recv().unwrap());
    done_tx.send(()).unwrap();
    t.join().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (apache2 (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(
            (
                s.state,
                s.ppid,
                s.pgrp,
                s.utime_ticks,
                s.stime_ticks,
                s.start_time
            ),
            ('S', 1, 1234, 7, 3, 98765)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_stat(b"no parens here"), None);
        assert_eq!(parse_stat(b"1 (x) S"), None);
    }

    const REST: &str = " S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 10";

    /// Found by fuzz::procfs::stat_round_trip (shrunk: a name of the one byte 0xC3): the file
    /// was read as UTF-8, so a process whose 15-byte name ends inside a UTF-8 character (an
    /// executable named "ééééééééé" runs as "ééééééé\xc3") had no stat at all: never found
    /// among a connection's processes, and taken for dead.
    #[test]
    fn a_name_cut_inside_a_utf8_char_is_read() {
        for name in [
            &b"\x80"[..],
            b"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3",
        ] {
            let mut line = b"4321 (".to_vec();
            line.extend_from_slice(name);
            line.extend_from_slice(format!("){REST}").as_bytes());
            let s = parse_stat(&line).expect("stat with a non-UTF-8 name");
            assert_eq!((s.ppid, s.start_time), (1, 98765));
        }
    }

    /// The same on a live process: a thread named with a cut UTF-8 character.
    #[test]
    fn a_live_thread_with_a_non_utf8_name_has_a_stat() {
        with_thread_named(b"caf\xc3\0", |tid| {
            let raw = std::fs::read(format!("/proc/{tid}/stat")).unwrap();
            assert!(
                std::str::from_utf8(&raw).is_err(),
                "the kernel wrote the raw name"
            );
            assert!(stat(tid).is_some());
        });
    }

    /// Found by fuzz::procfs::signed_fields: "+1" as the parent pid (or another number the
    /// kernel prints unsigned) was read as 1.
    #[test]
    fn signed_numbers_are_refused() {
        assert!(parse_stat(format!("1 (x){REST}").as_bytes()).is_some());
        let signed = REST.replacen(" 1 ", " +1 ", 1);
        assert_eq!(parse_stat(format!("1 (x){signed}").as_bytes()), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert!(is_alive(me, st.start_time));
        assert!(!is_alive(me, st.start_time + 1));
        assert!(!is_alive(u32::MAX - 1, 0));
    }
}
