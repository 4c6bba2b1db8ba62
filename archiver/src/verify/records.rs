//! Comparing a segment's lines with its manifest, and the small helpers of
//! the session checks.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{BreakKind, SeqRange};
use crate::scan::Line;
use crate::segment::{Head, Manifest};

/// 64 hex digits as bytes; another string maps to the hash of its text, which
/// equals no record's hash.
pub(super) fn hash32(hex: &str) -> [u8; 32] {
    parse_hex32(hex).unwrap_or_else(|| Sha256::digest(hex.as_bytes()).into())
}

pub(super) fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

pub(super) fn ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<SeqRange> {
    let mut out: Vec<SeqRange> = Vec::new();
    for seq in seqs {
        match out.last_mut() {
            Some(r) if r.last + 1 == seq => r.last = seq,
            _ => out.push(SeqRange::one(seq)),
        }
    }
    out
}

/// What comparing a segment's lines with its manifest found.
pub(super) enum Finding {
    /// Line `line` is exactly the record the manifest lists for `seq`.
    Intact { seq: u64, line: usize },
    /// A break within this segment.
    Break(BreakKind, SeqRange, String),
}

pub(super) fn check_records(m: &Manifest, lines: &[Line]) -> Vec<Finding> {
    let by_hash: BTreeMap<&str, u64> = m.records.iter().map(|(s, h)| (h.as_str(), *s)).collect();
    let listed: BTreeSet<u64> = m.records.iter().map(|(s, _)| *s).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    // Seqs of intact lines, in line order, with the line's position.
    let mut intact_order = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let hash = &line.hash;
        if let Some(&seq) = by_hash.get(hash.as_str()) {
            if !seen.insert(seq) {
                out.push(Finding::Break(
                    BreakKind::ExtraRecord,
                    SeqRange::one(seq),
                    format!("record {seq} appears more than once (line {})", i + 1),
                ));
                continue;
            }
            intact_order.push((i, seq));
            out.push(Finding::Intact { seq, line: i });
            continue;
        }
        // Changed: name it by the seq it claims if the manifest lists that one,
        // else by the seq the manifest lists at this position.
        let claimed = Head::parse(&line.bytes)
            .ok()
            .map(|h| h.seq)
            .filter(|s| listed.contains(s));
        let seq = claimed.or_else(|| m.records.get(i).map(|r| r.0));
        match seq {
            Some(seq) if !seen.contains(&seq) => {
                seen.insert(seq);
                out.push(Finding::Break(
                    BreakKind::RecordChanged,
                    SeqRange::one(seq),
                    format!(
                        "line {} hashes to {hash}; the manifest lists {} for seq {seq}",
                        i + 1,
                        m.records
                            .iter()
                            .find(|r| r.0 == seq)
                            .map(|r| r.1.as_str())
                            .unwrap_or("?")
                    ),
                ));
            }
            _ => out.push(Finding::Break(
                BreakKind::ExtraRecord,
                SeqRange::one(claimed.unwrap_or(0)),
                format!("line {} is no record the manifest lists", i + 1),
            )),
        }
    }
    // Order: the intact records must come in the manifest's order.
    let misplaced: Vec<u64> = intact_order
        .iter()
        .filter(|(i, seq)| m.records.get(*i).map(|r| r.0) != Some(*seq))
        .map(|(_, seq)| *seq)
        .collect();
    let sorted = intact_order.windows(2).all(|w| w[0].1 < w[1].1);
    if !sorted && !misplaced.is_empty() {
        let first = *misplaced.iter().min().expect("non-empty");
        let last = *misplaced.iter().max().expect("non-empty");
        let list: Vec<String> = misplaced.iter().map(u64::to_string).collect();
        out.push(Finding::Break(
            BreakKind::Reordered,
            SeqRange { first, last },
            format!("records out of order: {}", list.join(", ")),
        ));
    }
    let absent: Vec<u64> = listed.difference(&seen).copied().collect();
    let last_present = seen.last().copied().unwrap_or(0);
    let (tail, middle): (Vec<u64>, Vec<u64>) = absent.iter().partition(|&&s| s > last_present);
    for r in ranges(middle) {
        out.push(Finding::Break(
            BreakKind::RecordRemoved,
            r,
            "the manifest lists these records; the segment does not hold them".into(),
        ));
    }
    for r in ranges(tail) {
        out.push(Finding::Break(
            BreakKind::Truncated,
            r,
            "the segment ends before these records its manifest lists".into(),
        ));
    }
    out
}
