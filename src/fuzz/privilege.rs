//! /proc/sys/kernel/cap_last_cap (`sys::privilege`): the guard process drops every capability
//! up to this number one prctl at a time, so a value beyond what a capability set can hold
//! (64 bits) must not be taken.

use proptest::prelude::*;

use super::{check, mutate};
use crate::sys::privilege::parse_last_cap;

#[test]
fn cap_last_cap() {
    let near =
        prop_oneof![0u64..100, any::<u32>().prop_map(u64::from)].prop_map(|n| format!("{n}\n"));
    let text = prop_oneof![near.clone(), mutate::text(near, 2), any::<String>()];
    check("privilege::cap_last_cap", text, |t| {
        let digits = t.strip_suffix('\n').unwrap_or(&t);
        let want = digits
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= 63 && digits.bytes().all(|b| b.is_ascii_digit()));
        prop_assert_eq!(parse_last_cap(&t), want, "{:?}", t);
        Ok(())
    });
}
