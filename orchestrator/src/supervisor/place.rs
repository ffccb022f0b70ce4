//! Where a new copy goes: [`place`], the host for a worker started under a new id (or on a copy of an earlier
//! run that a host holds). A copy never moves: a worker restarted on its copy goes to the host that holds it.

use std::collections::BTreeMap;

use protocol::coord::CopyRecord;

/// The host for a new copy, from `hosts` (in the order configured): one that runs no worker if there is one (one
/// copy per host), else the one running the fewest; among those, the one holding the fewest copies, so that no
/// host gets a second copy while another holds none (a dead worker's copy still counts until it is removed);
/// then the first configured. `copies` is the registry of copies, `running` whether a worker runs on a copy;
/// copies on hosts no longer configured count for nothing. `None` only without hosts.
pub(super) fn place<'a>(
    hosts: &'a [String],
    copies: &BTreeMap<String, CopyRecord>,
    running: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    let load = |host: &str| {
        copies
            .iter()
            .filter(|(_, copy)| copy.host == host)
            .fold((0usize, 0usize), |(workers, held), (id, _)| {
                (workers + usize::from(running(id)), held + 1)
            })
    };
    hosts
        .iter()
        .enumerate()
        .min_by_key(|(order, host)| (load(host), *order))
        .map(|(_, host)| host.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| (*h).to_owned()).collect()
    }

    /// The registry: (id, host).
    fn copies(placed: &[(&str, &str)]) -> BTreeMap<String, CopyRecord> {
        placed
            .iter()
            .map(|(id, host)| {
                let record = CopyRecord {
                    host: (*host).to_owned(),
                };
                ((*id).to_owned(), record)
            })
            .collect()
    }

    #[test]
    fn a_new_copy_goes_to_a_host_without_a_worker_in_the_order_configured() {
        let hosts = hosts(&["a", "b", "c"]);
        assert_eq!(place(&hosts, &copies(&[]), |_| true), Some("a"));
        let placed = copies(&[("m", "a")]);
        assert_eq!(place(&hosts, &placed, |_| true), Some("b"));
        let placed = copies(&[("m", "a"), ("s", "b")]);
        assert_eq!(place(&hosts, &placed, |_| true), Some("c"));
    }

    #[test]
    fn with_a_worker_on_every_host_it_goes_to_the_host_running_the_fewest() {
        let hosts = hosts(&["a", "b"]);
        let placed = copies(&[("m", "a"), ("s1", "b"), ("s2", "a")]);
        assert_eq!(place(&hosts, &placed, |_| true), Some("b"));
        let placed = copies(&[("m", "a"), ("s1", "b"), ("s2", "b")]);
        assert_eq!(place(&hosts, &placed, |_| true), Some("a"));
    }

    #[test]
    fn no_host_gets_a_second_copy_while_another_holds_none() {
        let hosts = hosts(&["a", "b", "c"]);
        // The slave on b died: its copy stays until a healthy master makes it unneeded. A host with no copy at
        // all comes first, then b (no worker) rather than a (one).
        let placed = copies(&[("m", "a"), ("dead", "b")]);
        let running = |id: &str| id != "dead";
        assert_eq!(place(&hosts, &placed, running), Some("c"));
        let placed = copies(&[("m", "a"), ("dead", "b"), ("s", "c")]);
        assert_eq!(place(&hosts, &placed, running), Some("b"));
    }

    #[test]
    fn copies_on_hosts_no_longer_configured_count_for_nothing() {
        let hosts = hosts(&["a", "b"]);
        let placed = copies(&[("x", "gone"), ("m", "b")]);
        assert_eq!(place(&hosts, &placed, |_| true), Some("a"));
        assert_eq!(place(&[], &placed, |_| true), None);
    }
}
