//! Mutations of near-valid input: a valid value with a few edits still gets past a parser's
//! first checks, which is where a random string rarely goes.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// One edit of a sequence of units (bytes or chars). Positions are `Index`es, so they stay
/// valid whatever length the earlier edits left.
#[derive(Clone, Debug)]
pub enum Edit<T> {
    Replace(Index, T),
    Insert(Index, Vec<T>),
    Delete(Index, usize),
    Truncate(Index),
    /// Repeats a run in place (a field or message given twice).
    Duplicate(Index, usize),
}

impl<T: Clone> Edit<T> {
    pub fn apply(&self, v: &mut Vec<T>) {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
        match self {
            Edit::Replace(i, u) if !v.is_empty() => {
                let k = at(i, v.len());
                v[k] = u.clone();
            }
            Edit::Replace(..) => {}
            Edit::Insert(i, us) => {
                let k = at(i, v.len() + 1);
                v.splice(k..k, us.iter().cloned());
            }
            Edit::Delete(i, n) => {
                let k = at(i, v.len());
                v.drain(k..(k + n).min(v.len()));
            }
            Edit::Truncate(i) => v.truncate(at(i, v.len() + 1)),
            Edit::Duplicate(i, n) => {
                let k = at(i, v.len());
                let run: Vec<T> = v[k..(k + n).min(v.len())].to_vec();
                v.splice(k..k, run);
            }
        }
    }
}

fn edit<T, U>(unit: U) -> impl Strategy<Value = Edit<T>>
where
    T: Clone + std::fmt::Debug,
    U: Strategy<Value = T> + Clone,
{
    prop_oneof![
        (any::<Index>(), unit.clone()).prop_map(|(i, u)| Edit::Replace(i, u)),
        (any::<Index>(), vec(unit, 1..4)).prop_map(|(i, u)| Edit::Insert(i, u)),
        (any::<Index>(), 1..8usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1..16usize).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// One of the `|`-separated words of `list` (a vocabulary written on one line, empty words
/// included: "|a" is "" and "a").
pub fn words(list: &'static str) -> impl Strategy<Value = String> {
    prop::sample::select(list.split('|').collect::<Vec<_>>()).prop_map(str::to_string)
}

/// Bytes a parser of binary or /proc data treats specially, plus any byte.
pub fn interesting_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(0x80),
        Just(b'+'),
        Just(b'-'),
        Just(b' '),
        Just(b')'),
        Just(b'='),
        Just(b'\n'),
        any::<u8>(),
    ]
}

/// Characters that trip text parsers: separators, signs, quotes, non-ASCII whitespace and
/// digits, and multibyte UTF-8 of every length (a byte index inside one panics when sliced).
pub fn interesting_char() -> impl Strategy<Value = char> + Clone {
    prop_oneof![
        prop::sample::select(vec![
            ' ', '\t', '\n', '\r', '\0', '+', '-', ':', ';', '&', '=', '%', '(', ')', '[', ']',
            '\'', '"', '\\', '0', '9', 'F', 'x', 'é', '€', '😀', '\u{a0}', '\u{3000}', '٣', 'Ｆ',
        ]),
        any::<char>(),
    ]
}

/// Up to `max` byte edits, for input kept in several pieces (datagrams).
pub fn byte_edits(max: usize) -> impl Strategy<Value = Vec<Edit<u8>>> {
    vec(edit(interesting_byte()), 0..=max)
}

pub fn apply_all<T: Clone>(edits: &[Edit<T>], v: &mut Vec<T>) {
    for e in edits {
        e.apply(v);
    }
}

/// `edits` made to the datagram `which` of `grams` (a reply cut into datagrams).
pub fn one_datagram(grams: &mut [Vec<u8>], which: Index, edits: &[Edit<u8>]) {
    let k = which.index(grams.len());
    apply_all(edits, &mut grams[k]);
}

/// `valid` with up to `max_edits` edits made of `unit`s.
fn edited<T, V, U>(valid: V, unit: U, max_edits: usize) -> impl Strategy<Value = Vec<T>>
where
    T: Clone + std::fmt::Debug,
    V: Strategy<Value = Vec<T>>,
    U: Strategy<Value = T> + Clone,
{
    (valid, vec(edit(unit), 0..=max_edits)).prop_map(|(mut v, edits)| {
        apply_all(&edits, &mut v);
        v
    })
}

/// Text input: `valid` with up to `max_edits` character edits, and possibly one run of ASCII
/// characters replaced by a multibyte character of the same byte length (so a parser that
/// checks a field's byte length and then slices it meets a char boundary inside).
pub fn text(
    valid: impl Strategy<Value = String>,
    max_edits: usize,
) -> impl Strategy<Value = String> {
    let chars = valid.prop_map(|s| s.chars().collect::<Vec<char>>());
    let multibyte = prop::sample::select(vec!['é', '€', '😀']);
    (
        edited(chars, interesting_char(), max_edits),
        prop::option::of((any::<Index>(), multibyte)),
    )
        .prop_map(|(v, same_len)| {
            let mut s: String = v.into_iter().collect();
            if let Some((i, c)) = same_len {
                same_length_multibyte(&mut s, i, c);
            }
            s
        })
}

/// Replaces `c.len_utf8()` ASCII characters at a position `i` picks by `c`.
fn same_length_multibyte(s: &mut String, i: Index, c: char) {
    let n = c.len_utf8();
    let starts: Vec<usize> = (0..s.len().saturating_sub(n - 1))
        .filter(|&k| s.is_char_boundary(k) && s.as_bytes()[k..k + n].is_ascii())
        .collect();
    if !starts.is_empty() {
        let k = starts[i.index(starts.len())];
        s.replace_range(k..k + n, c.encode_utf8(&mut [0; 4]));
    }
}
