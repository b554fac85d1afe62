//! Which of Apache's listeners fit in the shared table's fixed list of listening ports
//! (`MAX_LISTEN_PORTS` entries of port + family). The scan covers every recorded port in each
//! recorded family, so one entry per distinct port is enough, as long as every family in use
//! is carried by some entry: a port listening on both IPv4 and IPv6 costs one entry, not two.

/// What the table records, and the ports it has no room for (not guarded at all: no scan,
/// no AutoClose, no rescue, no kernel view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    pub entries: Vec<(u16, bool)>,
    pub unguarded: Vec<u16>,
}

/// Fits `listeners` (port, is IPv6; in Apache's order) into at most `max` (≥ 2) entries: the
/// first `max` distinct ports are kept, each once, and both families stay represented when
/// the kept ports use both.
pub fn fit(listeners: &[(u16, bool)], max: usize) -> Fitted {
    let mut ports: Vec<u16> = Vec::new();
    for &(port, _) in listeners {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let unguarded = ports.split_off(ports.len().min(max));
    // Each port's entry takes the family of its first listener.
    let family_of = |port: u16| {
        listeners
            .iter()
            .find(|(p, _)| *p == port)
            .is_some_and(|l| l.1)
    };
    let mut entries: Vec<(u16, bool)> = ports.iter().map(|&p| (p, family_of(p))).collect();
    for v6 in [false, true] {
        let in_use = listeners
            .iter()
            .any(|&(p, f)| f == v6 && ports.contains(&p));
        if !in_use || entries.iter().any(|e| e.1 == v6) {
            continue;
        }
        // A family is missing only when every entry has the other one: add an entry if
        // there is room, else flip the last one (the first keeps the other family).
        if entries.len() < max {
            entries.push((ports[0], v6));
        } else if let Some(last) = entries.last_mut() {
            last.1 = v6;
        }
    }
    Fitted { entries, unguarded }
}

/// The port a `Listen` directive's first argument names: `80`, `127.0.0.1:8080`,
/// `[::1]:443`. None for anything Apache would not accept as a port.
pub fn listen_arg_port(arg: &str) -> Option<u16> {
    let port = match arg.rsplit_once(':') {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => port,
        Some(_) => return None,
        None => arg,
    };
    if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    port.parse().ok().filter(|&p| p != 0)
}

/// Puts `listeners` in the order their ports first appear in the configuration's `Listen`
/// lines (`config_ports`); listeners the lines do not name keep their order after them.
/// Apache's own list is no guide: a restart moves every reused listener to its front,
/// reversing the list, so which ports fit would change with every graceful restart.
pub fn in_config_order(listeners: &mut [(u16, bool)], config_ports: &[u16]) {
    let rank = |port: u16| {
        config_ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or(usize::MAX)
    };
    listeners.sort_by_key(|&(port, _)| rank(port));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_port_on_both_families_costs_one_entry_and_the_rest_is_named() {
        let l = [
            (80, false),
            (80, true),
            (443, false),
            (8080, false),
            (9090, true),
        ];
        let f = fit(&l, 3);
        assert_eq!(f.entries, vec![(80, false), (443, false), (8080, true)]);
        assert_eq!(f.unguarded, vec![9090]);
        // Everything fits: one entry per port, both families kept.
        let f = fit(&l, 32);
        assert_eq!(f.entries.len(), 4);
        assert!(f.unguarded.is_empty());
        // One port on both families needs two entries.
        assert_eq!(
            fit(&[(80, true), (80, false)], 32).entries,
            vec![(80, true), (80, false)]
        );
        assert_eq!(fit(&[], 32), Fitted::default());
    }

    #[test]
    fn listen_arguments_name_their_port() {
        assert_eq!(listen_arg_port("80"), Some(80));
        assert_eq!(listen_arg_port("127.0.0.1:8080"), Some(8080));
        assert_eq!(listen_arg_port("[::1]:443"), Some(443));
        assert_eq!(listen_arg_port("[::]:8443"), Some(8443));
        for bad in [
            "", "host:", "[::1]", "[::1", "0", "65536", "+80", "8o", "a:b:c",
        ] {
            assert_eq!(listen_arg_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn apaches_reversed_list_is_put_back_in_config_order() {
        // After a restart Apache's list runs backwards: 3, 2, 1 for lines 1, 2, 3.
        let mut l = vec![(8003, false), (9999, true), (8002, true), (8001, false)];
        in_config_order(&mut l, &[8001, 8002, 8003]);
        assert_eq!(
            l,
            vec![(8001, false), (8002, true), (8003, false), (9999, true)]
        );
        let f = fit(&l, 2);
        assert_eq!(f.unguarded, vec![8003, 9999]);
    }

    proptest! {
        // No failure file in src/ (as in src/fuzz): the message carries the shrunk input.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Whichever order Apache's list is in, the same ports are guarded.
        #[test]
        fn the_guarded_ports_do_not_depend_on_apaches_order(
            ports in prop::collection::vec(1u16..60, 1..50),
            max in 2usize..40,
        ) {
            let mut forward: Vec<(u16, bool)> = ports.iter().map(|&p| (p, false)).collect();
            let mut backward: Vec<(u16, bool)> = forward.iter().rev().copied().collect();
            in_config_order(&mut forward, &ports);
            in_config_order(&mut backward, &ports);
            prop_assert_eq!(fit(&forward, max).unguarded, fit(&backward, max).unguarded);
        }

        #[test]
        fn any_listen_argument_is_parsed_without_panic(arg in "\\PC{0,24}") {
            if let Some(p) = listen_arg_port(&arg) {
                prop_assert!(p != 0 && arg.ends_with(&p.to_string()));
            }
        }

        /// Whatever Apache listens on: at most `max` entries; the first `max` distinct ports
        /// recorded, the rest named; every family the recorded ports use is carried.
        #[test]
        fn fits_every_listener_set(
            l in prop::collection::vec((1u16..40, any::<bool>()), 0..80),
            max in 2usize..40,
        ) {
            let f = fit(&l, max);
            prop_assert!(f.entries.len() <= max);
            let mut distinct: Vec<u16> = Vec::new();
            for (p, _) in &l {
                if !distinct.contains(p) {
                    distinct.push(*p);
                }
            }
            let mut recorded: Vec<u16> = Vec::new();
            for (p, _) in &f.entries {
                if !recorded.contains(p) {
                    recorded.push(*p);
                }
            }
            let kept = distinct.len().min(max);
            prop_assert_eq!(&recorded[..], &distinct[..kept]);
            prop_assert_eq!(&f.unguarded[..], &distinct[kept..]);
            for v6 in [false, true] {
                let used = l.iter().any(|&(p, f6)| f6 == v6 && recorded.contains(&p));
                prop_assert_eq!(used, f.entries.iter().any(|e| e.1 == v6), "family v6={}", v6);
            }
        }
    }
}
