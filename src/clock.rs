//! CLOCK_MONOTONIC in milliseconds: system-wide, so times written by one process can be
//! compared by another, and immune to wall-clock jumps (a CLOSE_WAIT timeout must never fire
//! early because NTP stepped the clock).

pub fn mono_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000 + ts.tv_nsec as u64 / 1_000_000
}

/// CLOCK_REALTIME in milliseconds since the Unix epoch: only for showing when something
/// happened (the leak report's "last seen", the history's timestamps), never for a deadline.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
