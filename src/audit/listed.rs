//! A list an answer shows in full up to a bound, and how many rows it left out.

use serde::Serialize;

/// Rows kept, in the order they came, and how many there were in all.
#[derive(Debug, Clone, Serialize)]
pub struct Listed<T> {
    /// Every row seen.
    pub total: u64,
    /// The first rows, at most the bound.
    pub rows: Vec<T>,
    #[serde(skip)]
    bound: usize,
}

impl<T> Listed<T> {
    /// An empty list keeping at most `bound` rows.
    pub fn new(bound: usize) -> Self {
        Self {
            total: 0,
            rows: Vec::new(),
            bound,
        }
    }

    /// Counts a row, and keeps it while there is room.
    pub fn push(&mut self, row: T) {
        self.total += 1;
        if self.rows.len() < self.bound {
            self.rows.push(row);
        }
    }

    /// Rows counted but not kept.
    pub fn more(&self) -> u64 {
        self.total - self.rows.len() as u64
    }

    /// No row at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_rows_and_counts_the_rest() {
        let mut l = Listed::new(2);
        for i in 0..5 {
            l.push(i);
        }
        assert_eq!((l.total, l.rows.clone(), l.more()), (5, vec![0, 1], 3));
        assert!(Listed::<u8>::new(1).is_empty());
    }
}
