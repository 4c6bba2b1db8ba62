//! The reviewed exceptions to the property: statements of the corpus where the
//! decider's account is weaker than PostgreSQL's for a reason we accept. Each
//! says why. A violation not listed here fails the test, and so does an entry
//! whose script ran without it happening (the list stays true).

use crate::report::Violation;

/// One reviewed exception.
pub struct Exception {
    /// The script.
    pub file: &'static str,
    /// The statement's first line.
    pub line: usize,
    /// Which part of the property it breaks (see `report`).
    pub property: &'static str,
    /// Why that is acceptable.
    pub reason: &'static str,
}

/// The list.
pub const EXCEPTIONS: &[Exception] = &[];

/// Problems with `found` against the list: violations not listed, and listed
/// exceptions of the scripts that ran (`ran`) that did not happen.
pub fn check(found: &[Violation], ran: &[&str]) -> Vec<String> {
    let listed = |v: &Violation| {
        EXCEPTIONS
            .iter()
            .any(|e| e.file == v.file && e.line == v.line && e.property == v.property)
    };
    let mut problems: Vec<String> = found
        .iter()
        .filter(|v| !listed(v))
        .map(|v| {
            format!(
                "under-classified: {}:{} {}: {}",
                v.file, v.line, v.property, v.detail
            )
        })
        .collect();
    for e in EXCEPTIONS {
        let happened = found
            .iter()
            .any(|v| e.file == v.file && e.line == v.line && e.property == v.property);
        if ran.contains(&e.file) && !happened {
            problems.push(format!(
                "stale exception (no longer happens; remove it): {}:{} {} ({})",
                e.file, e.line, e.property, e.reason
            ));
        }
    }
    problems
}
