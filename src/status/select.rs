//! Which connection rows a page lists, in what order: plain Rust, no rendering.
//!
//! Rows that need attention (in CLOSE_WAIT, force-closed or rescued, abandoned) are always
//! listed in full, whatever the page: they are why a person opens the page, and AutoClose
//! keeps them few. The others (idle keep-alive and busy connections, thousands of them on a
//! large server) are listed oldest first, `limit` at a time from `offset`. A filter narrows
//! both. Totals, vhost and child tables are computed elsewhere over every row, never over
//! a selection.

use std::cmp::Ordering;

use super::model::{ConnRow, Snapshot};
use super::params::LISTED_STATES;
use super::query::{Filter, Query};
use crate::status::model::ShownState;

/// The rows one page shows.
#[derive(Debug)]
pub struct Selection<'a> {
    /// Every row that needs attention and matches the filter, most urgent first.
    pub attention: Vec<&'a ConnRow>,
    /// The page of the other matching rows, oldest first.
    pub others: Vec<&'a ConnRow>,
    /// Every listed connection, filter or not.
    pub total: usize,
    /// Other rows that match the filter (the page is a window of these).
    pub others_matching: usize,
    /// Index of `others[0]` among them.
    pub offset: usize,
    /// Page size; None when every row was asked for.
    pub limit: Option<usize>,
}

impl Selection<'_> {
    /// Rows that match the filter.
    pub fn matching(&self) -> usize {
        self.attention.len() + self.others_matching
    }

    /// Rows on this page.
    pub fn shown(&self) -> usize {
        self.attention.len() + self.others.len()
    }

    /// Some matching rows are not on this page.
    pub fn truncated(&self) -> bool {
        self.shown() < self.matching()
    }

    /// Where the next page starts, if there is one.
    pub fn next_offset(&self) -> Option<usize> {
        let end = self.offset + self.others.len();
        (end < self.others_matching).then_some(end)
    }

    /// Where the previous page starts, if this is not the first.
    pub fn prev_offset(&self) -> Option<usize> {
        let back = self.limit.unwrap_or(self.offset);
        (self.offset > 0).then(|| self.offset.saturating_sub(back))
    }

    /// All rows of the page in display order.
    pub fn rows(&self) -> impl Iterator<Item = &ConnRow> {
        self.attention.iter().chain(self.others.iter()).copied()
    }
}

/// In CLOSE_WAIT, shut down by the guard (its handler may still run), or abandoned.
pub fn needs_attention(c: &ConnRow) -> bool {
    urgency(c) < 3
}

/// 0 CLOSE_WAIT, 1 force-closed or rescued, 2 abandoned, 3 the rest.
fn urgency(c: &ConnRow) -> u8 {
    match c.state {
        ShownState::CloseWait => 0,
        ShownState::ForceClosed | ShownState::Rescued => 1,
        _ if c.abandoned_ms.is_some() => 2,
        _ => 3,
    }
}

pub fn matches(f: &Filter, c: &ConnRow) -> bool {
    let vhost_ok = f
        .vhost
        .as_deref()
        .is_none_or(|v| vhost_matches(v, &c.vhost));
    let state_ok = f.states.is_empty() || f.states.contains(&c.state);
    let client_ok = f
        .client
        .as_ref()
        .is_none_or(|m| m.matcher.matches(&c.client));
    vhost_ok && state_ok && client_ok
}

/// `name:port` exactly, or `name` on any port; without regard to case, as host names go.
fn vhost_matches(filter: &str, label: &str) -> bool {
    label.eq_ignore_ascii_case(filter)
        || label
            .rsplit_once(':')
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case(filter))
}

/// The most urgent first: longest in CLOSE_WAIT, then longest abandoned; then oldest.
/// Ties are broken by owner, client and port so that pages taken a moment apart line up.
fn display_order(a: &ConnRow, b: &ConnRow) -> Ordering {
    urgency(a)
        .cmp(&urgency(b))
        .then(b.close_wait_ms.cmp(&a.close_wait_ms))
        .then(b.abandoned_ms.cmp(&a.abandoned_ms))
        .then(b.age_ms.cmp(&a.age_ms))
        .then(a.pid.cmp(&b.pid))
        .then_with(|| a.client.cmp(&b.client))
        .then(a.local_port.cmp(&b.local_port))
}

/// Every row of the snapshot in display order (attention first).
#[cfg(test)]
pub fn ordered(s: &Snapshot) -> Vec<&ConnRow> {
    let mut rows: Vec<&ConnRow> = s.connections.iter().collect();
    rows.sort_by(|a, b| display_order(a, b));
    rows
}

/// The rows the query asks for.
pub fn select<'a>(s: &'a Snapshot, q: &Query) -> Selection<'a> {
    let (mut attention, mut others): (Vec<&ConnRow>, Vec<&ConnRow>) = s
        .connections
        .iter()
        .filter(|c| matches(&q.filter, c))
        .partition(|c| needs_attention(c));
    attention.sort_by(|a, b| display_order(a, b));
    let others_matching = others.len();
    let offset = q.offset().min(others_matching);
    let end = q.limit.rows().map_or(others_matching, |n| {
        offset.saturating_add(n).min(others_matching)
    });
    // Only the rows up to the page's end need their order settled.
    if end < others_matching {
        others.select_nth_unstable_by(end, |a, b| display_order(a, b));
        others.truncate(end);
    }
    others.sort_by(|a, b| display_order(a, b));
    others.drain(..offset);
    Selection {
        attention,
        others,
        total: s.connections.len(),
        others_matching,
        offset: q.offset(),
        limit: q.limit.rows(),
    }
}

/// How many rows are in each listed state (no filter): what the state links show.
pub fn state_counts(s: &Snapshot) -> Vec<(ShownState, usize)> {
    LISTED_STATES
        .iter()
        .map(|&st| (st, s.connections.iter().filter(|c| c.state == st).count()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;
    use crate::status::query::{parse, Limit};

    fn row(i: usize, state: ShownState, age_ms: u64) -> ConnRow {
        let mut c = fixture::snapshot().connections[0].clone();
        c.state = state;
        c.age_ms = age_ms;
        c.close_wait_ms = (state == ShownState::CloseWait).then_some(age_ms / 2);
        c.client = format!("10.0.{}.{}:{}", i / 250, i % 250, 40_000 + i);
        c.vhost = if i.is_multiple_of(3) {
            "a.test:80"
        } else {
            "b.test:8080"
        }
        .into();
        c.abandoned_ms = None;
        c
    }

    /// 300 keep-alive rows (ages 1..=300 s, two of them equal), 5 CLOSE_WAIT, 1 force-closed,
    /// 1 abandoned handling.
    fn big() -> Snapshot {
        let mut s = fixture::snapshot();
        s.connections = (0..300)
            .map(|i| row(i, ShownState::Keepalive, 1_000 * (i as u64 % 299 + 1)))
            .collect();
        for i in 0..5 {
            s.connections
                .push(row(300 + i, ShownState::CloseWait, 1_000 * i as u64));
        }
        s.connections.push(row(305, ShownState::ForceClosed, 5));
        let mut ab = row(306, ShownState::Handling, 7);
        ab.abandoned_ms = Some(3);
        s.connections.push(ab);
        s
    }

    fn sel<'a>(s: &'a Snapshot, args: &str) -> Selection<'a> {
        select(s, &parse(Some(args)).unwrap())
    }

    #[test]
    fn attention_always_then_a_bounded_page() {
        let s = big();
        let p = sel(&s, "");
        assert_eq!(p.attention.len(), 7);
        assert!(p.attention[..5]
            .iter()
            .all(|c| c.state == ShownState::CloseWait));
        // Longest in CLOSE_WAIT first.
        assert_eq!(p.attention[0].close_wait_ms, Some(2_000));
        assert_eq!(p.attention[5].state, ShownState::ForceClosed);
        assert!(p.attention[6].abandoned_ms.is_some());
        assert_eq!(p.others.len(), 100);
        assert_eq!((p.total, p.matching(), p.shown()), (307, 307, 107));
        assert!(p.truncated());
        assert_eq!((p.next_offset(), p.prev_offset()), (Some(100), None));
        // Oldest first.
        assert!(p.others.windows(2).all(|w| w[0].age_ms >= w[1].age_ms));
        assert_eq!(p.others[0].age_ms, 299_000);
    }

    #[test]
    fn pages_line_up_without_overlap() {
        let s = big();
        let all = sel(&s, "all");
        assert_eq!(all.others.len(), 300);
        assert!(!all.truncated() && all.next_offset().is_none());
        let mut seen = Vec::new();
        for page in 1..=3 {
            let p = sel(&s, &format!("page={page}"));
            assert_eq!(p.attention.len(), 7, "attention rows on every page");
            seen.extend(p.others.iter().map(|c| c.client.clone()));
        }
        let expect: Vec<String> = all.others.iter().map(|c| c.client.clone()).collect();
        assert_eq!(seen, expect);
        let last = sel(&s, "page=3");
        assert_eq!((last.next_offset(), last.prev_offset()), (None, Some(100)));
        // offset= pages anywhere, the same order.
        let o = sel(&s, "offset=150&limit=20");
        assert_eq!(o.others.len(), 20);
        assert_eq!(o.others[0].client, expect[150]);
        assert_eq!(o.prev_offset(), Some(130));
        assert_eq!(sel(&s, "offset=10&limit=20").prev_offset(), Some(0));
        // Past the end: an empty page, still with the attention rows.
        let past = sel(&s, "page=9");
        assert!(past.others.is_empty() && past.attention.len() == 7);
        assert_eq!(past.offset, 800);
    }

    #[test]
    fn filters_narrow_both_lists() {
        let s = big();
        let p = sel(&s, "state=keepalive&limit=all");
        assert!(p.attention.is_empty());
        assert_eq!(p.others.len(), 300);
        let p = sel(&s, "state=close_wait,force_closed");
        assert_eq!((p.attention.len(), p.others_matching), (6, 0));
        let p = sel(&s, "vhost=A.TEST&all");
        assert!(p.rows().all(|c| c.vhost == "a.test:80"));
        assert_eq!(p.matching(), 103);
        assert_eq!(sel(&s, "vhost=a.test:80&all").matching(), 103);
        assert_eq!(sel(&s, "vhost=a.test:81&all").matching(), 0);
        assert_eq!(sel(&s, "vhost=test:80&all").matching(), 0);
        let p = sel(&s, "client=10.0.1.&all");
        assert_eq!(p.matching(), 57);
        assert!(p.rows().all(|c| c.client.starts_with("10.0.1.")));
        let one = sel(&s, "client=10.0.0.7");
        assert_eq!(one.matching(), 1);
        assert_eq!(one.others[0].client, "10.0.0.7:40007");
        assert_eq!(one.total, 307);
    }

    #[test]
    fn limit_bounds_only_the_others() {
        let s = big();
        let p = sel(&s, "limit=1");
        assert_eq!((p.attention.len(), p.others.len()), (7, 1));
        assert_eq!(p.limit, Some(1));
        let q = parse(Some("all")).unwrap();
        assert_eq!(q.limit, Limit::All);
        assert_eq!(select(&s, &q).limit, None);
    }

    #[test]
    fn ordered_matches_the_page_order() {
        let s = big();
        let all = sel(&s, "all");
        let paged: Vec<&ConnRow> = all.rows().collect();
        assert_eq!(ordered(&s), paged);
    }

    #[test]
    fn state_counts_cover_every_row() {
        let s = big();
        let counts = state_counts(&s);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<usize>(), 307);
        assert!(counts.contains(&(ShownState::Keepalive, 300)));
        assert!(counts.contains(&(ShownState::Rescued, 0)));
    }
}
