//! Which children are gone, cheaply enough to ask four times a second: one pidfd per child
//! row, opened once (and checked against the row's start time then), polled afterwards. A
//! pidfd polls readable as soon as its process ends, reaped or not, and a pid can never name
//! another process through it; no /proc file is read per check.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use crate::sys::{pidfd, procfs};

#[derive(Default)]
pub struct ChildWatch {
    /// pid → (the row's start time, its pidfd).
    open: HashMap<u32, (u64, OwnedFd)>,
}

impl ChildWatch {
    /// Whether the process `pid` that started at `start_time` (0: unknown) still runs.
    pub fn is_alive(&mut self, pid: u32, start_time: u64) -> bool {
        if let Some((t, fd)) = self.open.get(&pid) {
            if *t == start_time {
                return !pidfd::has_exited(fd);
            }
        }
        // New (or recycled) pid: pin it, then make sure it is the process the row names.
        let fd = match pidfd::open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                self.open.remove(&pid);
                // ESRCH: gone. Anything else (no pidfd_open: old kernel, seccomp, valgrind)
                // says nothing about the child: ask /proc instead.
                return e.raw_os_error() != Some(libc::ESRCH) && procfs::is_alive(pid, start_time);
            }
        };
        if !procfs::is_alive(pid, start_time) {
            self.open.remove(&pid);
            return false;
        }
        self.open.insert(pid, (start_time, fd));
        true
    }

    /// Closes the pidfds of pids no row names any more.
    pub fn keep_only(&mut self, pids: &[u32]) {
        self.open.retain(|pid, _| pids.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_alive_until_it_exits_and_its_pid_is_not_trusted_blindly() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = procfs::stat(pid).unwrap().start_time;
        let mut w = ChildWatch::default();
        assert!(w.is_alive(pid, start));
        assert!(w.is_alive(pid, start), "from the cached pidfd");
        assert!(
            !w.is_alive(pid, start + 1),
            "another start time is another process"
        );
        child.kill().unwrap();
        // Not reaped yet: the pidfd already says it ended.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while w.is_alive(pid, start) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!w.is_alive(pid, start));
        child.wait().unwrap();
        w.keep_only(&[]);
        assert!(w.open.is_empty());
    }
}
