//! How each recorded statement ended: command tags, rows, SQLSTATE, duration,
//! result data — or "skipped" when PostgreSQL skipped it after an earlier
//! error of its pipeline. A [`Completing`] rides on the statement's pipeline
//! entry (see `protocol::pipeline`), gathers what the answers paired with it
//! say, and becomes a [`Completion`] when the pipeline pops the entry.

use std::time::Instant;

use super::capture::{Capture, Note, ResultSet};
use crate::protocol::messages::{cstr, sqlstate, tag_rows};
use crate::protocol::names::Names;
use crate::protocol::pipeline::Kind;

/// How a tracked statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The `seq` of the statement event.
    pub stmt: u64,
    /// `ok`, `error`, `suspended` or `skipped`.
    pub outcome: &'static str,
    /// Command tags, in order.
    pub tags: Vec<String>,
    /// Rows returned or affected, summed.
    pub rows: u64,
    /// From forwarding to the end of the answer.
    pub duration_us: u64,
    /// The error's SQLSTATE.
    pub sqlstate: Option<String>,
    /// Its result sets, when the role records result data.
    pub results: Vec<ResultSet>,
}

/// How the pipeline ended an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Answered in full.
    Ok,
    /// An `Execute` whose row limit was reached (`PortalSuspended`).
    Suspended,
    /// It failed.
    Error,
    /// The server skipped it after an earlier error of its pipeline.
    Skipped,
}

/// What evidence gathers of one entry's answers.
#[derive(Debug)]
pub struct Completing {
    /// The statement event's `seq` (`None`: no statement of its own, such as a
    /// refused statement's substitute, which runs and completes nothing).
    stmt: Option<u64>,
    at: Instant,
    tags: Vec<String>,
    /// Rows of the statements completed so far.
    rows: u64,
    /// DataRows since the last command tag.
    counted: u64,
    sqlstate: Option<String>,
    /// What result capture keeps with it.
    note: Note,
}

impl Completing {
    /// An entry of statement `stmt` forwarded now; `note`: what result capture keeps.
    pub fn new(stmt: Option<u64>, note: Note) -> Self {
        Self {
            stmt,
            at: Instant::now(),
            tags: Vec::new(),
            rows: 0,
            counted: 0,
            sqlstate: None,
            note,
        }
    }

    /// The statement event it completes, if any.
    pub fn stmt(&self) -> Option<u64> {
        self.stmt
    }

    /// Its message goes upstream now: the statement's duration starts.
    pub fn forwarded(&mut self) {
        self.at = Instant::now();
    }

    /// A backend message of type `tag` answering this entry, `body` as the
    /// client receives it (given for `CommandComplete` and `ErrorResponse`,
    /// and for what capture reads); `kind`: the entry's message.
    pub fn on_message(
        &mut self,
        kind: Kind,
        tag: u8,
        body: &[u8],
        capture: Option<&Capture>,
        names: &mut Names,
    ) {
        match tag {
            b'T' => match (&mut self.note, capture) {
                (Note::Describe(d), Some(c)) => c.described(names, d, body),
                (Note::Collect(r), Some(c)) => c.description(r, body),
                _ => {}
            },
            b'D' => {
                self.counted += 1;
                if let (Some(c), Note::Collect(r)) = (capture, &mut self.note) {
                    c.row(names, r, body);
                }
            }
            b'C' if matches!(kind, Kind::Execute | Kind::Query) => {
                let text = cstr(body);
                if kind == Kind::Execute {
                    self.rows = tag_rows(&text).unwrap_or(self.counted);
                } else {
                    if let Note::Collect(r) = &mut self.note {
                        r.close();
                    }
                    // The tag says how many rows a statement returned or
                    // affected; without a count, the rows seen.
                    let counted = std::mem::take(&mut self.counted);
                    self.rows += tag_rows(&text).unwrap_or(counted);
                }
                self.tags.push(text);
            }
            b's' if kind == Kind::Execute => self.rows = self.counted,
            b'E' => self.sqlstate = sqlstate(body),
            _ => {}
        }
    }

    /// The statement's completion, when it is one.
    pub fn finish(self, ended: Ended) -> Option<Completion> {
        let stmt = self.stmt?;
        let outcome = match ended {
            Ended::Ok | Ended::Error if self.sqlstate.is_some() => "error",
            Ended::Ok => "ok",
            Ended::Suspended => "suspended",
            Ended::Error => "error",
            Ended::Skipped => "skipped",
        };
        Some(Completion {
            stmt,
            outcome,
            tags: self.tags,
            rows: self.rows,
            duration_us: u64::try_from(self.at.elapsed().as_micros()).unwrap_or(u64::MAX),
            sqlstate: self.sqlstate,
            results: match self.note {
                Note::Collect(c) => c.finish(),
                _ => Vec::new(),
            },
        })
    }
}
