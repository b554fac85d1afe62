//! /proc/<pid>/stat: liveness, parent, start time and CPU time of a process.

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
/// and parentheses, so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) ... starttime(22).
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        utime_ticks: f.get(11)?.parse().ok()?,
        stime_ticks: f.get(12)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (apache2 (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
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
        assert_eq!(parse_stat("no parens here"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
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
