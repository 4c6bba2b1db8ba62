//! Pairs backend responses with the client messages that caused them, so that
//! each recorded statement gets its completion: command tags, rows, SQLSTATE,
//! duration — or "skipped" when PostgreSQL skipped it after an earlier error of
//! its pipeline.
//!
//! The backend answers client messages strictly in order: `ParseComplete` for a
//! `Parse`, `BindComplete` for a `Bind`, `ParameterDescription` and then
//! `RowDescription`/`NoData` for a `Describe`, rows and then `CommandComplete`,
//! `EmptyQueryResponse` or `PortalSuspended` for an `Execute`, `CloseComplete`
//! for a `Close`, `ReadyForQuery` for a `Sync`, a `Query` or a `FunctionCall`.
//! After an error in an extended-protocol pipeline the server skips every
//! message up to the next `Sync`; the tracker does the same. `Flush`, COPY data
//! and `Terminate` have no answer of their own and are not tracked.

use std::collections::VecDeque;
use std::time::Instant;

use crate::config::ResultsConfig;
use crate::results::{Capture, Note, ResultSet};

/// What a tracked client message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A simple `Query`; `stmt` is the `seq` of its statement event (`None` for a
    /// refused statement's substitute: it runs nothing and completes nothing).
    Query { stmt: Option<u64> },
    /// A `FunctionCall` (or its substitute).
    FunctionCall { stmt: Option<u64> },
    /// An `Execute` (or its substitute).
    Execute { stmt: Option<u64> },
    /// `Parse` (or a substitute standing in for one).
    Parse,
    /// `Bind`.
    Bind,
    /// `Describe`.
    Describe,
    /// `Close`.
    Close,
    /// `Sync`.
    Sync,
}

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

struct Pending {
    sent: Sent,
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

impl Pending {
    fn complete(self, outcome: &'static str) -> Option<Completion> {
        let stmt = match self.sent {
            Sent::Query { stmt } | Sent::FunctionCall { stmt } | Sent::Execute { stmt } => stmt?,
            _ => return None,
        };
        let outcome = if outcome == "ok" && self.sqlstate.is_some() {
            "error"
        } else {
            outcome
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

/// Bound on the messages awaiting an answer; a client that pipelines more than
/// this without reading loses completion detail (recorded as `skipped`) but
/// nothing else.
const MAX_PENDING: usize = 100_000;

/// The messages of one session that await their answer.
#[derive(Default)]
pub struct Tracker {
    queue: VecDeque<Pending>,
    /// An extended-protocol message failed; everything up to the next `Sync` is
    /// skipped by the server.
    skipping: bool,
    /// Messages dropped past [`MAX_PENDING`] since the last `ReadyForQuery`.
    overflowed: bool,
    /// Result data kept for replay, when the role records it.
    capture: Option<Box<Capture>>,
}

impl Tracker {
    /// A tracker for a role that records `results`.
    pub fn new(results: ResultsConfig) -> Tracker {
        Tracker {
            capture: Capture::new(results),
            ..Tracker::default()
        }
    }

    /// Which backend bodies [`Tracker::received`] needs besides `CommandComplete`
    /// and `ErrorResponse`: `RowDescription` (result capture), `DataRow`
    /// (rows kept).
    pub fn wants(&self) -> (bool, bool) {
        self.capture
            .as_ref()
            .map_or((false, false), |c| (true, c.rows()))
    }

    /// A client message was forwarded.
    pub fn sent(&mut self, sent: Sent) {
        self.push(sent, Note::None);
    }

    /// A client message of type `tag` with `body` was forwarded: as
    /// [`Tracker::sent`], and result capture reads it.
    pub fn sent_message(&mut self, sent: Sent, tag: u8, body: &[u8]) {
        let note = match self.capture.as_mut() {
            Some(c) => c.sent(tag, body),
            None => Note::None,
        };
        self.push(sent, note);
    }

    fn push(&mut self, sent: Sent, note: Note) {
        if self.queue.len() >= MAX_PENDING {
            self.overflowed = true;
            return;
        }
        self.queue.push_back(Pending {
            sent,
            at: Instant::now(),
            tags: Vec::new(),
            rows: 0,
            counted: 0,
            sqlstate: None,
            note,
        });
    }

    /// A backend message of type `tag` arrived; `body` is given for
    /// `CommandComplete` and `ErrorResponse`, and for the bodies
    /// [`Tracker::wants`] (as the client receives them). Finished statements are
    /// pushed to `done`.
    pub fn received(&mut self, tag: u8, body: &[u8], done: &mut Vec<Completion>) {
        match tag {
            // ParseComplete, BindComplete, CloseComplete.
            b'1' | b'2' | b'3' => {
                self.queue.pop_front();
            }
            // RowDescription / NoData answer a Describe (a Query's own
            // RowDescription belongs to the Query, which stays).
            b'T' | b'n' => {
                if matches!(self.front(), Some(Sent::Describe)) {
                    let p = self.queue.pop_front().expect("front exists");
                    if let (Some(c), Note::Describe(d), b'T') = (&mut self.capture, &p.note, tag) {
                        c.described(d, body);
                    }
                } else if let (Some(c), Some(p), b'T') =
                    (&self.capture, self.queue.front_mut(), tag)
                    && let Note::Collect(r) = &mut p.note
                {
                    c.description(r, body);
                }
            }
            b'D' => {
                if let Some(p) = self.queue.front_mut() {
                    p.counted += 1;
                    if let (Some(c), Note::Collect(r)) = (&self.capture, &mut p.note) {
                        c.row(r, body);
                    }
                }
            }
            b'C' => {
                let text = cstring(body);
                match self.queue.front_mut() {
                    Some(p) if matches!(p.sent, Sent::Execute { .. }) => {
                        p.rows = tag_rows(&text).unwrap_or(p.counted);
                        p.tags.push(text);
                        let p = self.queue.pop_front().expect("front exists");
                        done.extend(p.complete("ok"));
                    }
                    Some(p) if matches!(p.sent, Sent::Query { .. }) => {
                        if let Note::Collect(r) = &mut p.note {
                            r.close();
                        }
                        // The tag says how many rows a statement returned or
                        // affected; without a count, the rows seen.
                        let counted = std::mem::take(&mut p.counted);
                        p.rows += tag_rows(&text).unwrap_or(counted);
                        p.tags.push(text);
                    }
                    _ => {}
                }
            }
            // EmptyQueryResponse: an Execute of an empty statement ends here.
            b'I' => {
                if matches!(self.front(), Some(Sent::Execute { .. })) {
                    let p = self.queue.pop_front().expect("front exists");
                    done.extend(p.complete("ok"));
                }
            }
            // PortalSuspended.
            b's' => {
                if matches!(self.front(), Some(Sent::Execute { .. })) {
                    let mut p = self.queue.pop_front().expect("front exists");
                    p.rows = p.counted;
                    done.extend(p.complete("suspended"));
                }
            }
            b'E' => {
                let state = sqlstate(body);
                match self.front() {
                    Some(Sent::Query { .. } | Sent::FunctionCall { .. }) => {
                        if let Some(p) = self.queue.front_mut() {
                            p.sqlstate = state;
                        }
                    }
                    Some(Sent::Sync) | None => {}
                    Some(_) => {
                        // The failing extended message; the rest until Sync is skipped.
                        let mut p = self.queue.pop_front().expect("front exists");
                        p.sqlstate = state;
                        done.extend(p.complete("error"));
                        self.skipping = true;
                    }
                }
            }
            b'Z' => self.ready(done),
            _ => {}
        }
    }

    /// `ReadyForQuery`: ends the front Query or FunctionCall, or everything up to
    /// and including the first Sync.
    fn ready(&mut self, done: &mut Vec<Completion>) {
        while let Some(p) = self.queue.pop_front() {
            match p.sent {
                Sent::Query { .. } | Sent::FunctionCall { .. } => {
                    done.extend(p.complete("ok"));
                    break;
                }
                Sent::Sync => break,
                _ => done.extend(p.complete("skipped")),
            }
        }
        self.skipping = false;
        self.overflowed = false;
    }

    fn front(&self) -> Option<Sent> {
        self.queue.front().map(|p| p.sent)
    }

    /// Whether the server is skipping messages until the next Sync.
    pub fn skipping(&self) -> bool {
        self.skipping
    }
}

/// The row count a command tag carries (`SELECT 5`, `INSERT 0 3`, `UPDATE 2`).
fn tag_rows(tag: &str) -> Option<u64> {
    let last = tag.rsplit(' ').next()?;
    if tag.contains(' ') {
        last.parse().ok()
    } else {
        None
    }
}

fn cstring(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The `C` field of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if code == b'C' {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(state: &str) -> Vec<u8> {
        let mut b = b"SERROR\0C".to_vec();
        b.extend_from_slice(state.as_bytes());
        b.extend_from_slice(b"\0Mboom\0\0");
        b
    }

    fn run(sent: &[Sent], received: &[(u8, &[u8])]) -> Vec<Completion> {
        let mut t = Tracker::default();
        for s in sent {
            t.sent(*s);
        }
        let mut done = Vec::new();
        for (tag, body) in received {
            t.received(*tag, body, &mut done);
        }
        assert!(t.queue.is_empty(), "all answered");
        done
    }

    #[test]
    fn simple_queries_collect_tags_rows_and_errors() {
        let done = run(
            &[Sent::Query { stmt: Some(3) }],
            &[
                (b'T', b""),
                (b'D', b""),
                (b'D', b""),
                (b'C', b"SELECT 2\0"),
                (b'C', b"UPDATE 5\0"),
                (b'E', &error("23505")),
                (b'Z', b"I"),
            ],
        );
        assert_eq!(done.len(), 1);
        let c = &done[0];
        assert_eq!(
            (c.stmt, c.outcome, c.rows, c.sqlstate.as_deref()),
            (3, "error", 7, Some("23505"))
        );
        assert_eq!(c.tags, ["SELECT 2", "UPDATE 5"]);
    }

    #[test]
    fn extended_pipelines_complete_each_execute_and_skip_after_an_error() {
        let done = run(
            &[
                Sent::Parse,
                Sent::Bind,
                Sent::Describe,
                Sent::Execute { stmt: Some(1) },
                Sent::Bind,
                Sent::Execute { stmt: Some(2) },
                Sent::Bind,
                Sent::Execute { stmt: Some(3) },
                Sent::Sync,
            ],
            &[
                (b'1', b""),
                (b'2', b""),
                (b'T', b""),
                (b'D', b""),
                (b'C', b"SELECT 1\0"),
                (b'2', b""),
                (b'E', &error("22012")),
                (b'Z', b"I"),
            ],
        );
        let got: Vec<_> = done
            .iter()
            .map(|c| (c.stmt, c.outcome, c.rows, c.sqlstate.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "ok", 1, None),
                (2, "error", 0, Some("22012".into())),
                (3, "skipped", 0, None)
            ]
        );
    }

    #[test]
    fn a_failed_bind_skips_its_execute_and_substitutes_complete_nothing() {
        let done = run(
            &[
                Sent::Bind,
                Sent::Execute { stmt: Some(4) },
                Sent::Sync,
                Sent::Query { stmt: None },
                Sent::Parse,
                Sent::Bind,
                Sent::Execute { stmt: Some(6) },
                Sent::Sync,
            ],
            &[
                (b'E', &error("26000")),
                (b'Z', b"I"),
                (b'E', &error("42601")),
                (b'Z', b"I"),
                (b'1', b""),
                (b'2', b""),
                (b'C', b"INSERT 0 1\0"),
                (b'Z', b"I"),
            ],
        );
        let got: Vec<_> = done.iter().map(|c| (c.stmt, c.outcome, c.rows)).collect();
        assert_eq!(got, [(4, "skipped", 0), (6, "ok", 1)]);
    }

    #[test]
    fn suspended_portals_and_empty_queries() {
        let done = run(
            &[
                Sent::Execute { stmt: Some(1) },
                Sent::Execute { stmt: Some(2) },
                Sent::Sync,
            ],
            &[(b'D', b""), (b's', b""), (b'I', b""), (b'Z', b"T")],
        );
        let got: Vec<_> = done.iter().map(|c| (c.stmt, c.outcome, c.rows)).collect();
        assert_eq!(got, [(1, "suspended", 1), (2, "ok", 0)]);
    }

    #[test]
    fn reads_sqlstate_and_tag_counts() {
        assert_eq!(sqlstate(&error("42501")).as_deref(), Some("42501"));
        assert_eq!(sqlstate(b"SERROR\0\0"), None);
        assert_eq!(tag_rows("INSERT 0 3"), Some(3));
        assert_eq!(tag_rows("BEGIN"), None);
        assert_eq!(tag_rows("SELECT 12"), Some(12));
    }
}
