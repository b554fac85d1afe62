//! /proc/<pid>/stat (`sys::procfs`): the command name (field 2) is whatever the process
//! calls itself, up to 15 bytes cut anywhere: spaces, ')', a newline, bytes that are not
//! UTF-8. The fields after it must still be read right.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{check, mutate};

/// Fields after the name (counted from 0 after ')') that the parser reads as numbers.
const NUMBERS: [usize; 5] = [1, 2, 11, 12, 19];
use crate::sys::procfs::{parse_stat, ProcStat};

/// A stat line's values: the ones the module reads, and the signed ones around them.
#[derive(Clone, Debug)]
struct Stat {
    pid: u32,
    comm: Vec<u8>,
    read: ProcStat,
    /// tty_nr, tpgid, cutime, cstime, priority, nice: may be negative.
    signed: [i64; 6],
}

impl Stat {
    /// The line as fs/proc/array.c do_task_stat writes it (name raw, not escaped).
    fn bytes(&self) -> Vec<u8> {
        let r = &self.read;
        let [tty, tpgid, cutime, cstime, prio, nice] = self.signed;
        let mut b = format!("{} (", self.pid).into_bytes();
        b.extend_from_slice(&self.comm);
        b.extend_from_slice(
            format!(
                ") {} {} {} {} {tty} {tpgid} 4194560 100 0 0 0 {} {} {cutime} {cstime} {prio} {nice} 1 0 {} 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
                r.state, r.ppid, r.pgrp, self.pid, r.utime_ticks, r.stime_ticks, r.start_time
            )
            .as_bytes(),
        );
        b
    }
}

/// A command name: up to 15 bytes, no NUL; often the tricky ones.
fn comm() -> impl Strategy<Value = Vec<u8>> {
    let tricky = prop::sample::select(vec![b' ', b')', b'(', b'\n', 0xc3, 0xa9, 0xff, b'a']);
    let byte = prop_oneof![tricky, 1u8..=255];
    vec(byte, 0..=15)
}

fn stat() -> impl Strategy<Value = Stat> {
    let state = prop::sample::select(vec!['R', 'S', 'D', 'Z', 'T', 't', 'X', 'I']);
    let read = (
        state,
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    (any::<u32>(), comm(), read, any::<[i32; 6]>()).prop_map(|(pid, comm, r, signed)| Stat {
        pid,
        comm,
        read: ProcStat {
            state: r.0,
            ppid: r.1,
            pgrp: r.2,
            utime_ticks: r.3,
            stime_ticks: r.4,
            start_time: r.5,
        },
        signed: signed.map(i64::from),
    })
}

#[test]
fn stat_round_trip() {
    check("procfs::stat_round_trip", stat(), |s| {
        prop_assert_eq!(parse_stat(&s.bytes()), Some(s.read));
        Ok(())
    });
}

/// Any bytes, and real lines with byte edits: no panic.
#[test]
fn mutated_stat() {
    let edited = (stat(), mutate::byte_edits(4)).prop_map(|(s, edits)| {
        let mut b = s.bytes();
        mutate::apply_all(&edits, &mut b);
        b
    });
    let input = prop_oneof![edited, vec(any::<u8>(), 0..300)];
    check("procfs::mutated_stat", input, |b| {
        let _ = parse_stat(&b);
        Ok(())
    });
}

/// `line` with `sign` put before field `field` after the name.
fn signed(line: &[u8], field: usize, sign: u8) -> Vec<u8> {
    let close = line.iter().rposition(|&c| c == b')').unwrap();
    let mut out = line[..=close].to_vec();
    let fields = line[close + 1..].split(|c| c.is_ascii_whitespace());
    for (i, f) in fields.filter(|f| !f.is_empty()).enumerate() {
        out.push(b' ');
        if i == field {
            out.push(sign);
        }
        out.extend_from_slice(f);
    }
    out
}

/// A sign before a number the kernel prints unsigned: refused, not misread.
#[test]
fn signed_fields() {
    let input = (
        stat(),
        prop::sample::select(NUMBERS.to_vec()),
        prop::sample::select(vec![b'+', b'-']),
    );
    check("procfs::signed_fields", input, |(s, field, sign)| {
        prop_assert_eq!(parse_stat(&signed(&s.bytes(), field, sign)), None);
        Ok(())
    });
}
