//! Leases that need no synchronised clocks.
//!
//! Two leases guard safety in the database service:
//! - a **read lease**, granted by the master to each in-sync slave: a slave serves reads only while it holds one,
//!   and the master acknowledges a write without a slave only once every lease it granted that slave has ended
//!   (so a cut-off slave never serves a read that misses an acknowledged write);
//! - the **leadership lease** of the master, granted by ZooKeeper: the master acts only while it is sure its
//!   session, and so its master znode, still lives.
//!
//! The rules assume nothing about clock *offsets*: no instant ever crosses a process boundary, every process
//! measures durations on its own monotonic clock. They assume a bound on clock *rate*: every process's monotonic
//! clock runs within [`MAX_DRIFT_PPM`] of real time (1 %: hardware clocks drift by parts per million, NTP slews
//! by at most 500 ppm), and does not stop while the process could act (a host suspended to disk stops its
//! monotonic clock; that is outside the model).
//!
//! A lease is anchored at a moment the holder knows precedes the grant (Gray and Cheriton, 1989): the slave
//! numbers the messages it sends the master ([`LeaseAnchor`]) and remembers when it sent each; the master echoes
//! the last anchor it received from a slave in its grant. The slave then holds the lease for the lease duration
//! from the moment it sent that anchor. The master, which received the anchor at a moment `heard` of its own,
//! counts the lease as held until `heard` plus the duration stretched by the drift bound, plus [`MARGIN`].
//! Because the anchor was sent before it was heard, the slave's lease ends, in real time, before the master's
//! count does. A grant that sat in a queue while the slave was paused is anchored before the pause: it is
//! already over when it arrives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::queue::LeaseAnchor;

/// The most two clocks' rates may differ, in parts per million.
pub const MAX_DRIFT_PPM: u32 = 10_000;

/// Added to every wait on the grantor's side: the time between reading the clock and acting on what it said.
pub const MARGIN: Duration = Duration::from_millis(50);

/// How many sent anchors a holder remembers while none of them is granted. Forgetting an old one is safe (an
/// echo of it grants nothing); the bound only keeps a slave whose master went silent from growing without end.
const ANCHORS_KEPT: usize = 1024;

/// `d` scaled by `num / den`, rounded up.
fn scale_up(d: Duration, num: u64, den: u64) -> Duration {
    let nanos = d.as_nanos() * u128::from(num);
    let scaled = nanos.div_ceil(u128::from(den));
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// `d` scaled by `num / den`, rounded down.
fn scale_down(d: Duration, num: u64, den: u64) -> Duration {
    let scaled = d.as_nanos() * u128::from(num) / u128::from(den);
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
}

const PPM: u64 = 1_000_000;
const DRIFT: u64 = MAX_DRIFT_PPM as u64;

/// How long after it heard an anchor the grantor must count a lease of `lease` granted on it as still held.
///
/// The holder serves at most `lease` of its own clock after it sent the anchor, that is at most
/// `lease / (1 - ρ)` of real time; the grantor's wait of `w` of its clock lasts at least `w / (1 + ρ)` of real
/// time. So `w = lease · (1 + ρ) / (1 - ρ)`, and the margin.
pub fn grantor_hold(lease: Duration) -> Duration {
    scale_up(lease, PPM + DRIFT, PPM - DRIFT) + MARGIN
}

/// The read lease as its holder, a slave, sees it: the anchors it sent and when, and until when it may serve.
#[derive(Debug, Clone)]
pub struct HolderLease {
    session: u64,
    next: u64,
    /// Anchors sent and not yet granted or superseded, oldest first, with the moment each was sent.
    sent: VecDeque<(u64, Instant)>,
    until: Option<Instant>,
}

impl HolderLease {
    /// A holder for one run of a slave; `session` must differ from every earlier run's (draw it at random).
    pub fn new(session: u64) -> Self {
        Self {
            session,
            next: 0,
            sent: VecDeque::new(),
            until: None,
        }
    }

    /// A new anchor, for a message about to be sent at `now` (or later: a later send only shortens the lease).
    pub fn anchor(&mut self, now: Instant) -> LeaseAnchor {
        self.next += 1;
        if self.sent.len() == ANCHORS_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((self.next, now));
        LeaseAnchor {
            session: self.session,
            n: self.next,
        }
    }

    /// Takes a grant of `lease` on `anchor`. An anchor of another session, or one this holder no longer
    /// remembers, grants nothing. A grant never shortens the lease already held.
    pub fn grant(&mut self, anchor: LeaseAnchor, lease: Duration) -> bool {
        if anchor.session != self.session {
            return false;
        }
        let Some(&(_, sent)) = self.sent.iter().find(|(n, _)| *n == anchor.n) else {
            return false;
        };
        // A duration no clock can add (a forged message) grants nothing.
        let Some(until) = sent.checked_add(lease) else {
            return false;
        };
        // Older anchors can only ever give shorter leases than this one: forget them.
        while self.sent.front().is_some_and(|(n, _)| *n < anchor.n) {
            self.sent.pop_front();
        }
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
        true
    }

    /// Gives the lease up: from now on nothing is served until a new grant.
    pub fn revoke(&mut self) {
        self.until = None;
    }

    /// Whether the lease holds at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// When the lease ends (`None`: not held).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// The master's leadership lease, granted by ZooKeeper: a session lives for the session timeout after the
/// server last heard from the client, by the server's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeadershipLease {
    until: Option<Instant>,
}

impl LeadershipLease {
    /// Renews the lease after a request sent at `asked` confirmed that the master znode is ours. The server heard
    /// that request after `asked`, so the session lives at least `timeout` of the server's clock from `asked`:
    /// `timeout · (1 - ρ) / (1 + ρ)` of ours. A fifth of the timeout more comes off, for acting on a lease just
    /// checked (publishing, answering) and for the server's own scheduling.
    pub fn renewed(&mut self, asked: Instant, session_timeout: Duration) {
        let span = scale_down(session_timeout, PPM - DRIFT, PPM + DRIFT)
            .saturating_sub(session_timeout / 5);
        let until = asked + span;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// The connection to ZooKeeper is suspended, or the znode is not ours: not leader until renewed.
    pub fn drop_lease(&mut self) {
        self.until = None;
    }

    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LEASE: Duration = Duration::from_millis(1500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lease_runs_for_its_duration_from_when_the_holder_sent_the_anchor() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(7);
        assert!(!lease.holds(t0), "no lease before any grant");
        let a = lease.anchor(t0);
        // The grant arrives 400 ms later: the lease still counts from the anchor.
        assert!(lease.grant(a, LEASE));
        assert!(lease.holds(t0 + ms(1499)));
        assert!(!lease.holds(t0 + LEASE));
        assert_eq!(lease.until(), Some(t0 + LEASE));
    }

    #[test]
    fn a_grant_that_waited_in_a_queue_while_the_holder_was_paused_grants_nothing_fresh() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(7);
        let a = lease.anchor(t0);
        // The holder was paused for 10 s; the grant was in its queue all along.
        let woke = t0 + ms(10_000);
        lease.grant(a, LEASE);
        assert!(!lease.holds(woke));
        // Only an anchor sent after waking gives a lease that holds after waking.
        let b = lease.anchor(woke);
        lease.grant(b, LEASE);
        assert!(lease.holds(woke + ms(1000)));
    }

    #[test]
    fn an_anchor_of_another_session_or_one_never_sent_grants_nothing() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(7);
        let a = lease.anchor(t0);
        assert!(!lease.grant(LeaseAnchor { session: 8, n: a.n }, LEASE));
        assert!(!lease.grant(
            LeaseAnchor {
                session: 7,
                n: a.n + 1
            },
            LEASE
        ));
        assert!(!lease.holds(t0));
    }

    #[test]
    fn a_stale_grant_never_shortens_a_lease_and_revoking_ends_it_at_once() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(1);
        let a = lease.anchor(t0);
        let b = lease.anchor(t0 + ms(500));
        assert!(lease.grant(b, LEASE));
        // The grant on the older anchor arrives late: it is forgotten, and would be shorter anyway.
        assert!(!lease.grant(a, LEASE));
        assert_eq!(lease.until(), Some(t0 + ms(2000)));
        lease.revoke();
        assert!(!lease.holds(t0 + ms(600)));
    }

    #[test]
    fn a_lease_too_long_for_the_clock_grants_nothing_rather_than_failing() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(1);
        let a = lease.anchor(t0);
        assert!(!lease.grant(a, Duration::MAX));
        assert!(!lease.holds(t0));
    }

    #[test]
    fn a_holder_forgets_its_oldest_anchors_beyond_a_bound() {
        let t0 = Instant::now();
        let mut lease = HolderLease::new(1);
        let first = lease.anchor(t0);
        for _ in 0..ANCHORS_KEPT {
            lease.anchor(t0);
        }
        assert!(!lease.grant(first, LEASE), "forgotten");
    }

    #[test]
    fn the_grantor_waits_longer_than_any_holder_can_serve_with_the_drift_bound() {
        let hold = grantor_hold(LEASE);
        // 1500 ms · 1.01 / 0.99 = 1530.30… ms, plus the margin.
        assert!(hold > ms(1580) && hold < ms(1582), "{hold:?}");
    }

    #[test]
    fn a_leadership_lease_ends_well_before_the_session_can_expire() {
        let t0 = Instant::now();
        let mut lease = LeadershipLease::default();
        assert!(!lease.holds(t0));
        lease.renewed(t0, ms(4000));
        // 4000 · 0.99 / 1.01 − 800 = 3120.79… ms.
        assert!(lease.holds(t0 + ms(3120)));
        assert!(!lease.holds(t0 + ms(3121)));
        lease.drop_lease();
        assert!(!lease.holds(t0));
    }

    proptest! {
        /// Whatever the two clocks' rates within the bound, and whatever delays on the way, the holder's last
        /// moment of serving comes, in real time, before the grantor's count ends.
        #[test]
        fn no_holder_serves_past_the_grantors_count(
            holder_rate_ppm in (PPM - DRIFT)..=(PPM + DRIFT),
            grantor_rate_ppm in (PPM - DRIFT)..=(PPM + DRIFT),
            lease_ms in 1u64..60_000,
            to_grantor_ms in 0u64..10_000,
        ) {
            // Real time in nanoseconds; each clock reads real time scaled by its rate.
            let lease = ms(lease_ms);
            let anchor_sent_real: u128 = 1_000_000_000;
            let heard_real = anchor_sent_real + u128::from(to_grantor_ms) * 1_000_000;
            // The holder stops once `lease` has passed on its clock since the anchor.
            let holder_stops_real =
                anchor_sent_real + lease.as_nanos() * u128::from(PPM) / u128::from(holder_rate_ppm);
            // The grantor stops counting once `grantor_hold` has passed on its clock since it heard the anchor.
            let grantor_ends_real = heard_real
                + grantor_hold(lease).as_nanos() * u128::from(PPM) / u128::from(grantor_rate_ppm);
            prop_assert!(holder_stops_real < grantor_ends_real);
        }
    }
}
