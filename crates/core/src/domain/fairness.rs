//! Turns between senders sharing one queue (the message writer's): each sender's writes wait in a FIFO of
//! their own, and a batch takes one from each sender in turn, at most `share` from any one. A burst from one
//! sender then never stands ahead of another sender's write by more than one batch, and what one sender puts
//! into a batch (so the time that batch takes to commit) is bounded by `share`. A sender's writes still leave
//! in the order they came.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// FIFO queues per key, served in turns (round-robin).
#[derive(Debug)]
pub struct FairQueue<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Every key with something waiting, once, in the order of its next turn.
    turns: VecDeque<K>,
    len: usize,
}

impl<K: Eq + Hash + Clone, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        FairQueue { queues: HashMap::new(), turns: VecDeque::new(), len: 0 }
    }
}

impl<K: Eq + Hash + Clone, T> FairQueue<K, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item` behind the earlier items of `key`. A key with nothing waiting takes the last turn.
    pub fn push(&mut self, key: K, item: T) {
        let queue = self.queues.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(key);
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// How many items wait, over all keys.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many keys have something waiting.
    pub fn keys(&self) -> usize {
        self.turns.len()
    }

    /// The next batch: up to `max` items, one from each key in turn, round after round, at most `share` from
    /// any one key (both at least 1). A key that did not get a turn in this batch, or got fewer than the
    /// others, goes first in the next one; a key served goes behind the keys still waiting.
    pub fn take(&mut self, max: usize, share: usize) -> Vec<T> {
        let (max, share) = (max.max(1), share.max(1));
        let mut out = Vec::with_capacity(max.min(self.len));
        'rounds: for _ in 0..share {
            let keys = self.turns.len();
            if keys == 0 {
                break;
            }
            for _ in 0..keys {
                if out.len() == max {
                    break 'rounds;
                }
                let Some(key) = self.turns.pop_front() else { break 'rounds };
                let Some(queue) = self.queues.get_mut(&key) else { continue };
                if let Some(item) = queue.pop_front() {
                    out.push(item);
                    self.len -= 1;
                }
                if queue.is_empty() {
                    // freed, so a sender that went quiet costs nothing
                    self.queues.remove(&key);
                } else {
                    self.turns.push_back(key);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(items: &[(&'static str, u32)]) -> FairQueue<&'static str, u32> {
        let mut q = FairQueue::new();
        for (k, v) in items {
            q.push(*k, *v);
        }
        q
    }

    #[test]
    fn one_key_is_a_fifo_batched_by_the_smaller_of_max_and_share() {
        let mut q = queue(&[("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5)]);
        assert_eq!(q.take(100, 2), vec![1, 2]);
        assert_eq!(q.take(2, 100), vec![3, 4]);
        assert_eq!(q.take(100, 100), vec![5]);
        assert!(q.is_empty());
        assert_eq!(q.take(100, 100), Vec::<u32>::new());
    }

    #[test]
    fn a_burst_does_not_stand_ahead_of_another_keys_single_item() {
        let mut q = FairQueue::new();
        for i in 0..600 {
            q.push("flood", i);
        }
        q.push("quiet", 1000);
        // the quiet item is in the first batch, second (after the burst's first item)
        let first = q.take(100, 100);
        assert_eq!(first.len(), 100);
        assert_eq!(&first[..3], &[0, 1000, 1]);
        assert_eq!(q.len(), 501);
        assert_eq!(q.keys(), 1);
    }

    #[test]
    fn an_item_arriving_during_a_burst_goes_in_the_next_batch() {
        let mut q = FairQueue::new();
        for i in 0..600 {
            q.push("flood", i);
        }
        assert_eq!(q.take(100, 100), (0..100).collect::<Vec<_>>());
        q.push("quiet", 1000);
        let next = q.take(100, 100);
        assert!(next.contains(&1000), "{next:?}");
        assert_eq!(next.len(), 100);
    }

    #[test]
    fn share_bounds_what_one_key_puts_in_a_batch() {
        let mut q = FairQueue::new();
        for i in 0..50 {
            q.push("flood", i);
        }
        q.push("quiet", 1000);
        q.push("quiet", 1001);
        assert_eq!(q.take(100, 4), vec![0, 1000, 1, 1001, 2, 3]);
        assert_eq!(q.take(100, 4), vec![4, 5, 6, 7]);
    }

    #[test]
    fn each_keys_order_is_kept_across_batches() {
        let mut q = FairQueue::new();
        let mut n = 0;
        for round in 0..40u32 {
            for k in ["a", "b", "c"] {
                // uneven bursts
                for _ in 0..(round % 5 + if k == "a" { 7 } else { 1 }) {
                    q.push(k, (k, n));
                    n += 1;
                }
            }
        }
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut total = 0;
        while !q.is_empty() {
            let batch = q.take(10, 3);
            assert!(!batch.is_empty() && batch.len() <= 10);
            for k in ["a", "b", "c"] {
                assert!(batch.iter().filter(|(key, _)| *key == k).count() <= 3, "{batch:?}");
            }
            for (k, v) in batch {
                if let Some(last) = seen.insert(k, v) {
                    assert!(last < v, "{k}: {v} after {last}");
                }
                total += 1;
            }
        }
        assert_eq!(total, n);
        assert_eq!(q.keys(), 0);
    }

    #[test]
    fn a_key_cut_off_by_max_goes_first_next_time() {
        let mut q = queue(&[("a", 1), ("a", 2), ("b", 10), ("b", 11), ("c", 20), ("c", 21)]);
        // round one: a, b; max reached before c's turn
        assert_eq!(q.take(2, 10), vec![1, 10]);
        // c first, then a and b again
        assert_eq!(q.take(3, 10), vec![20, 2, 11]);
        assert_eq!(q.take(3, 10), vec![21]);
    }

    #[test]
    fn a_key_that_went_quiet_is_freed_and_rejoins_at_the_back() {
        let mut q = queue(&[("a", 1), ("b", 10), ("b", 11)]);
        assert_eq!(q.take(10, 1), vec![1, 10]);
        assert_eq!(q.keys(), 1);
        assert_eq!(q.queues.len(), 1, "a's empty queue is dropped");
        q.push("a", 2);
        assert_eq!(q.take(10, 1), vec![11, 2]);
        assert!(q.is_empty() && q.queues.is_empty() && q.turns.is_empty());
    }

    #[test]
    fn zero_max_or_share_still_makes_progress() {
        let mut q = queue(&[("a", 1), ("a", 2)]);
        assert_eq!(q.take(0, 0), vec![1]);
        assert_eq!(q.len(), 1);
    }
}
