//! Numbers in text the kernel (or Apache, for a CGI's REMOTE_PORT) writes: digits only.
//!
//! Rust's integer parsing also takes a leading `+`, which neither ever prints. A field that
//! has one is not the field we think it is (another format, a forged value), so it is refused
//! rather than read.

/// `s` as an unsigned number in `radix` (10 or 16): ASCII digits of that radix only (no sign,
/// no space), and a value that fits in `T`.
pub fn unsigned<T: TryFrom<u64>>(s: &str, radix: u32) -> Option<T> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    T::try_from(u64::from_str_radix(s, radix).ok()?).ok()
}

pub fn dec<T: TryFrom<u64>>(s: &str) -> Option<T> {
    unsigned(s, 10)
}

pub fn hex<T: TryFrom<u64>>(s: &str) -> Option<T> {
    unsigned(s, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only_and_in_range() {
        assert_eq!(dec::<u64>("12345"), Some(12345));
        assert_eq!(dec::<u64>("007"), Some(7));
        assert_eq!(hex::<u16>("1F90"), Some(8080));
        assert_eq!(hex::<u16>("1f90"), Some(8080));
        for bad in ["", "+5", "-1", " 5", "5 ", "٣", "0x10", "1F"] {
            assert_eq!(dec::<u64>(bad), None, "{bad:?}");
        }
        assert_eq!(hex::<u16>("+1F90"), None);
        assert_eq!(dec::<u16>("65536"), None);
        assert_eq!(dec::<u64>("18446744073709551616"), None);
    }
}
