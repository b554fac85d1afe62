//! Dropping the guard process's privileges: from root to Apache's `User`, keeping exactly one
//! capability, CAP_SYS_PTRACE, which `pidfd_getfd` needs to take a descriptor out of a child
//! that runs as `User` and is non-dumpable (it changed uid from root).

use std::io;

use super::number::dec;

pub const CAP_SYS_PTRACE: u32 = 19;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| parse_last_cap(&s))
        .unwrap_or(40)
}

/// Capability sets are 64 bits (two u32 words in capset's data).
const MAX_CAP: u32 = 63;

/// The contents of /proc/sys/kernel/cap_last_cap: a number and a newline. A number beyond
/// what a capability set holds is refused: the drop loop would run to it, one prctl each.
pub fn parse_last_cap(text: &str) -> Option<u32> {
    dec::<u32>(text.strip_suffix('\n').unwrap_or(text)).filter(|&n| n <= MAX_CAP)
}

/// Root only: becomes `uid`/`gid` (no supplementary groups) with CAP_SYS_PTRACE as the only
/// capability left, in every set including the bounding set, and no way to gain others
/// (no_new_privs). Call before any thread is started. If CAP_SYS_PTRACE cannot be kept (it is
/// not in the bounding set, as in a container started without it), the process still becomes
/// `uid`/`gid`, with no capability at all, and the error says why.
pub fn drop_to_user_keeping_ptrace(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: prctl/setgroups/setres[ug]id/capset are plain syscalls on this process; the
    // capset header and data are properly sized local structs.
    unsafe {
        for cap in 0..=last_cap() {
            if cap != CAP_SYS_PTRACE {
                // EINVAL for numbers this kernel lacks is fine.
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
        }
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "PR_SET_KEEPCAPS",
        )?;
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(gid, gid, gid), "setresgid")?;
        check(libc::setresuid(uid, uid, uid), "setresuid")?;
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let bit = 1u32 << CAP_SYS_PTRACE;
        let mut data = [
            CapData {
                effective: bit,
                permitted: bit,
                inheritable: 0,
            },
            CapData::default(),
        ];
        let kept = check(
            libc::syscall(libc::SYS_capset, &mut header, data.as_mut_ptr()) as libc::c_int,
            "capset",
        );
        if kept.is_err() {
            // CAP_SYS_PTRACE was not there to keep (not in the bounding set): keep nothing at
            // all — with KEEPCAPS, root's other permitted capabilities would otherwise stay.
            data[0] = CapData::default();
            check(
                libc::syscall(libc::SYS_capset, &mut header, data.as_mut_ptr()) as libc::c_int,
                "capset (drop all)",
            )?;
        }
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "PR_SET_KEEPCAPS",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "PR_SET_NO_NEW_PRIVS",
        )?;
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz::privilege::cap_last_cap (shrunk: "64\n"): any u32 was taken, so a
    /// bogus 4294967295 would have made the guard process loop over 4 billion prctl calls.
    #[test]
    fn cap_last_cap_beyond_63_is_refused() {
        let cases = [("40\n", Some(40)), ("63\n", Some(63)), ("64\n", None)];
        for (text, want) in cases
            .into_iter()
            .chain([("4294967295\n", None), ("+40\n", None)])
        {
            assert_eq!(parse_last_cap(text), want, "{text:?}");
        }
    }
}
