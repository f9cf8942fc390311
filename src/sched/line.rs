//! [`PriorityLine`]: items in priority order (highest first), FIFO within a priority, with an
//! overtaking limit so no item waits forever.
//!
//! The next item is the oldest one of the highest priority, except that when
//! [`OVERTAKE_LIMIT`] items in a row were taken past the oldest waiting item (because they had a
//! higher priority), the next one taken is the oldest whatever its priority. So an item is
//! overtaken at most `OVERTAKE_LIMIT` times per item older than it, and with one priority in
//! use the line is plain FIFO.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// How many takes in a row may pass over the oldest waiting item before it is served.
pub(crate) const OVERTAKE_LIMIT: u32 = 8;

/// An item with a priority: higher is served first.
pub(crate) trait Ranked {
    fn priority(&self) -> i32;
}

/// Items in the order described in the module doc.
pub(crate) struct PriorityLine<T> {
    /// Per priority, highest first: `(arrival number, item)` in arrival order.
    by_priority: BTreeMap<Reverse<i32>, VecDeque<(u64, T)>>,
    len: usize,
    next_arrival: u64,
    /// Takes in a row that passed over the oldest item.
    overtakes: u32,
}

impl<T> Default for PriorityLine<T> {
    fn default() -> Self {
        Self { by_priority: BTreeMap::new(), len: 0, next_arrival: 0, overtakes: 0 }
    }
}

impl<T: Ranked> PriorityLine<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, item: T) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.by_priority.entry(Reverse(item.priority())).or_default().push_back((arrival, item));
        self.len += 1;
    }

    /// The priority class whose front item goes next.
    fn next_class(&self) -> Option<Reverse<i32>> {
        let (&top, _) = self.by_priority.first_key_value()?;
        if self.overtakes < OVERTAKE_LIMIT {
            return Some(top);
        }
        self.by_priority.iter().min_by_key(|(_, items)| items.front().map_or(u64::MAX, |(n, _)| *n)).map(|(&k, _)| k)
    }

    /// Takes the next item if `accept` takes it (a refused item stays where it is).
    pub(crate) fn pop_if(&mut self, accept: impl FnOnce(&T) -> bool) -> Option<T> {
        let class = self.next_class()?;
        let items = self.by_priority.get_mut(&class)?;
        let (arrival, item) = items.front()?;
        if !accept(item) {
            return None;
        }
        let arrival = *arrival;
        let (_, item) = items.pop_front()?;
        if items.is_empty() {
            self.by_priority.remove(&class);
        }
        self.len -= 1;
        let took_oldest = self.by_priority.values().filter_map(VecDeque::front).all(|(n, _)| *n > arrival);
        self.overtakes = if took_oldest { 0 } else { self.overtakes + 1 };
        Some(item)
    }

    /// Takes the next item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.pop_if(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(priority, name)`.
    impl Ranked for (i32, &'static str) {
        fn priority(&self) -> i32 {
            self.0
        }
    }

    fn line(items: &[(i32, &'static str)]) -> PriorityLine<(i32, &'static str)> {
        let mut line = PriorityLine::default();
        items.iter().for_each(|&item| line.push(item));
        line
    }

    fn names(mut line: PriorityLine<(i32, &'static str)>) -> Vec<&'static str> {
        std::iter::from_fn(|| line.pop()).map(|(_, name)| name).collect()
    }

    #[test]
    fn higher_priority_first_fifo_within_a_priority() {
        let l = line(&[(0, "low1"), (0, "low2"), (5, "high1"), (-3, "neg"), (5, "high2"), (1, "mid")]);
        assert_eq!(l.len(), 6);
        assert_eq!(names(l), ["high1", "high2", "mid", "low1", "low2", "neg"]);
    }

    #[test]
    fn the_oldest_item_is_overtaken_at_most_the_limit_in_a_row() {
        let limit = OVERTAKE_LIMIT as usize;
        let mut items = vec![(0, "old")];
        items.extend(std::iter::repeat_n((1, "h"), 3 * limit));
        let order = names(line(&items));
        assert_eq!(order.iter().position(|n| *n == "old"), Some(limit), "{order:?}");
        // Two starved classes: each oldest in turn gets its place after `limit` overtakes.
        let mut items = vec![(0, "a"), (1, "b")];
        items.extend(std::iter::repeat_n((2, "h"), 3 * limit));
        let order = names(line(&items));
        let a = order.iter().position(|n| *n == "a").unwrap();
        let b = order.iter().position(|n| *n == "b").unwrap();
        assert_eq!((a, b), (limit, 2 * limit + 1), "{order:?}");
    }

    #[test]
    fn taking_the_oldest_resets_the_count() {
        // 'old' is overtaken limit-1 times, then served at its turn: 'low' is not forced ahead.
        let mut items = vec![(1, "old"), (0, "low")];
        items.extend(std::iter::repeat_n((2, "h"), OVERTAKE_LIMIT as usize - 1));
        let order = names(line(&items));
        assert_eq!(&order[OVERTAKE_LIMIT as usize - 1..], ["old", "low"]);
    }

    #[test]
    fn pop_if_leaves_a_refused_item_in_place() {
        let mut l = line(&[(1, "keyed"), (0, "plain")]);
        assert_eq!(l.pop_if(|(_, n)| *n != "keyed"), None, "the next item is refused: nothing taken");
        assert_eq!(names(l), ["keyed", "plain"]);
    }
}
