//! The read floor: the furthest (epoch, seq) any read reply has shown, sent with every read batch as
//! `at_least` (invariant 8 in ARCHITECTURE.md).
//!
//! A slave may serve an entry before the write is acknowledged (the master waits for every slave's ack);
//! without the floor, a reader could see that entry on one slave, then miss it on another. Every read passes
//! through the orchestrator, so it keeps the floor, and slaves read only once they stand there. Epoch first in
//! the order: an entry of a dead master that no one kept cannot hold reads back once the slaves follow the new
//! master. The floor lives in memory only: across an orchestrator restart a read may see less than one before.

use std::sync::Mutex;

use protocol::queue::ReadPosition;

#[derive(Debug, Default)]
pub struct ReadFloor {
    /// `std::sync::Mutex`: held only to read or raise the position, never across an `.await`.
    furthest: Mutex<ReadPosition>,
}

impl ReadFloor {
    /// What the next read batch asks for.
    pub fn get(&self) -> ReadPosition {
        *self.furthest.lock().expect("read floor poisoned")
    }

    /// Takes in the position a reply showed; the floor never goes down. Called before the reply reaches any
    /// caller, so a read that starts after it ended asks for at least what it saw.
    pub fn raise(&self, shown: ReadPosition) {
        let mut furthest = self.furthest.lock().expect("read floor poisoned");
        *furthest = (*furthest).max(shown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> ReadPosition {
        ReadPosition { epoch, seq }
    }

    #[test]
    fn the_floor_is_the_furthest_position_shown_and_never_goes_down() {
        let floor = ReadFloor::default();
        assert_eq!(floor.get(), ReadPosition::default());
        floor.raise(at(2, 7));
        assert_eq!(floor.get(), at(2, 7));
        // A reply from a copy further behind does not lower it.
        floor.raise(at(2, 3));
        assert_eq!(floor.get(), at(2, 7));
    }

    #[test]
    fn a_later_epoch_is_further_whatever_its_seq() {
        // An entry of the old master that no one kept must not hold reads back under the new one.
        let floor = ReadFloor::default();
        floor.raise(at(2, 7));
        floor.raise(at(3, 5));
        assert_eq!(floor.get(), at(3, 5));
    }
}
