//! One queue of what went upstream and what answers to expect, in order.
//!
//! The server answers the messages of a session strictly in order:
//! `ParseComplete` for a `Parse`, `BindComplete` for a `Bind`,
//! `ParameterDescription` and then `RowDescription`/`NoData` for a `Describe`,
//! rows and then `CommandComplete`, `EmptyQueryResponse` or `PortalSuspended`
//! for an `Execute`, `CloseComplete` for a `Close`, `ReadyForQuery` for a
//! `Sync`, a `Query` or a `FunctionCall`. After an error in an
//! extended-protocol pipeline it skips every message up to the next `Sync`.
//! `Flush`, COPY data and `Terminate` have no answer of their own.
//! <https://www.postgresql.org/docs/current/protocol-flow.html>
//!
//! Each message forwarded is an [`Entry`]: its [`Kind`] (which answers end it),
//! whether the client or the gateway sent it (the answers to the gateway's own
//! messages — masking's probes — are swallowed), and what each concern needs
//! to know of its answers: masking's [`Cause`], evidence's [`Completing`], a
//! refused message's [`Substitute`]. This module pairs each backend message
//! with its entry, asks each concern in turn, and pops entries by the one
//! grammar above; nothing else keeps a queue of its own. Both directions of a
//! session share it behind one lock, together with the session's [`Names`].

use std::collections::VecDeque;

use bytes::BytesMut;

use super::names::Names;
use crate::evidence::capture::Capture;
use crate::evidence::completion::{Completing, Completion, Ended};
use crate::masking::catalog::Catalog;
use crate::masking::objects::Op;
use crate::masking::session::{Action, Cause, Masker, ProbeStep};
use crate::masking::wire::scrub_error;

/// Which message an entry stands for: what the server answers it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Query`: results, then `ReadyForQuery`.
    Query,
    /// `FunctionCall`: its result, then `ReadyForQuery`.
    FunctionCall,
    /// `Parse`: `ParseComplete`.
    Parse,
    /// `Bind`: `BindComplete`.
    Bind,
    /// `Describe`: `ParameterDescription` (of a statement), then
    /// `RowDescription` or `NoData`.
    Describe,
    /// `Execute`: rows, then `CommandComplete`, `EmptyQueryResponse` or
    /// `PortalSuspended`.
    Execute,
    /// `Close`: `CloseComplete`.
    Close,
    /// `Sync`: `ReadyForQuery`.
    Sync,
    /// Masking's probe of a COPY's columns (`Parse`, `Describe`, `Close` of a
    /// query, and a `Sync` when `sync`): answered in full by `CloseComplete`,
    /// or by `ReadyForQuery` when it has its own `Sync`.
    Probe {
        /// It ends with its own `Sync` (ahead of a simple query).
        sync: bool,
    },
}

/// A refused message's substitute (see `session::refusal`): the marker the
/// server's error names, and the error the client gets instead.
#[derive(Debug)]
pub struct Substitute {
    /// The marker text the substitute carries.
    pub marker: String,
    /// The client's `ErrorResponse`.
    pub error: BytesMut,
}

impl Substitute {
    /// Whether `body` (an `ErrorResponse` body) is the server's error of this
    /// substitute: it names the marker, not followed by another digit.
    fn answered_by(&self, body: &[u8]) -> bool {
        let m = self.marker.as_bytes();
        body.windows(m.len())
            .enumerate()
            .any(|(at, w)| w == m && !body.get(at + m.len()).is_some_and(u8::is_ascii_digit))
    }
}

/// One message forwarded upstream, awaiting its answers.
#[derive(Debug)]
pub struct Entry {
    /// Which message.
    pub kind: Kind,
    /// The gateway's own message: its answers are swallowed.
    pub own: bool,
    /// What masking needs to know of its answers.
    pub cause: Cause,
    /// What evidence gathers of its answers (`None`: evidence is off, or the
    /// message is the gateway's own).
    pub completing: Option<Completing>,
    /// Set for a refused message's substitute.
    pub substitute: Option<Substitute>,
}

impl Entry {
    /// A client message.
    pub fn client(kind: Kind, cause: Cause, completing: Option<Completing>) -> Self {
        Self {
            kind,
            own: false,
            cause,
            completing,
            substitute: None,
        }
    }

    /// A message of the gateway's own.
    pub fn own(kind: Kind, cause: Cause) -> Self {
        Self {
            kind,
            own: true,
            cause,
            completing: None,
            substitute: None,
        }
    }
}

/// What the client gets of one backend message.
#[derive(Debug)]
pub enum Answer {
    /// The message as it came.
    Forward,
    /// These bytes instead.
    Replace(BytesMut),
    /// Nothing (the answer to the gateway's own message, or a masked COPY row
    /// that continues in the next message).
    Swallow,
    /// Look these relations up in the catalog, then hand the same message
    /// again (nothing changed meanwhile).
    Lookup(Vec<u32>),
}

/// Entries awaiting an answer, at most. A client that pipelines more without
/// reading loses pairing for the rest of the session: its statements stay
/// "started, never completed" in evidence, and in a session that masks
/// nothing of a row is shown any more.
pub const MAX_PENDING: usize = 100_000;

/// One session's pipeline.
#[derive(Debug)]
pub struct Pipeline {
    entries: VecDeque<Entry>,
    /// Pairing was lost ([`MAX_PENDING`]).
    lost: bool,
    /// Whether entries complete recorded statements.
    evidence: bool,
    /// The session's names.
    pub names: Names,
    /// The session's masking.
    pub masker: Masker,
    /// Result capture, when the role records result data.
    capture: Option<Box<Capture>>,
}

impl Pipeline {
    /// The pipeline of a session; `evidence`: statements are recorded (and
    /// their results kept with `capture`).
    pub fn new(evidence: bool, capture: Option<Box<Capture>>) -> Self {
        Self {
            entries: VecDeque::new(),
            lost: false,
            evidence,
            names: Names::default(),
            masker: Masker::default(),
            capture: capture.filter(|_| evidence),
        }
    }

    /// Result capture, when on.
    pub fn capture(&self) -> Option<&Capture> {
        self.capture.as_deref()
    }

    /// Whether entries carry evidence.
    pub fn evidence(&self) -> bool {
        self.evidence
    }

    /// Entries awaiting answers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing awaits an answer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What evidence gathers of an entry for statement event `stmt` (a
    /// message of type `tag` with `body`): `None` when evidence is off.
    pub fn completing(&self, stmt: Option<u64>, tag: u8, body: &[u8]) -> Option<Completing> {
        if !self.evidence {
            return None;
        }
        let note = self
            .capture
            .as_ref()
            .map(|c| c.note(&self.names, tag, body))
            .unwrap_or_default();
        Some(Completing::new(stmt, note))
    }

    /// The client direction is about to send the message of `entry`, in
    /// order with the others: the names it creates are unsettled until it is
    /// answered, and a `Sync` or simple query is a boundary (see
    /// [`Names`]); a simple query drops the unnamed statement and portal.
    pub fn sending(&mut self, entry: &Entry) {
        let names = &mut self.names;
        match (&entry.kind, &entry.cause) {
            (Kind::Parse, Cause::Parse(name)) => names.creating_statement(name, false),
            (Kind::Bind, Cause::Bind(name)) => names.creating_portal(name, false),
            (Kind::Query | Kind::FunctionCall | Kind::Sync, _) => names.boundary(),
            _ => {}
        }
        if entry.kind == Kind::Query {
            names.simple_query();
        }
        for op in entry.cause.creates() {
            match op {
                Op::Prepare { name } => names.creating_statement(name, true),
                Op::Declare { name, .. } => names.creating_portal(name, true),
                _ => {}
            }
        }
    }

    /// The message of `entry`, announced with [`Pipeline::sending`], is not
    /// sent after all (a substitute goes in its place): what it would have
    /// created failed.
    pub fn unsent(&mut self, entry: &Entry, catalog: &Catalog) {
        if matches!(entry.kind, Kind::Parse | Kind::Bind) || !entry.cause.creates().is_empty() {
            self.masker
                .popped(&mut self.names, &entry.cause, true, catalog);
        }
    }

    /// Queues `entry` after the gateway's own entries `ahead`, as their bytes
    /// go upstream. `false`: not queued, pairing is lost from now on
    /// ([`MAX_PENDING`]); the caller then sends none of the gateway's own
    /// bytes ahead of the message.
    pub fn push(&mut self, ahead: Vec<Entry>, mut entry: Entry) -> bool {
        if self.lost || self.entries.len() + ahead.len() >= MAX_PENDING {
            self.lost = true;
            return false;
        }
        if let Some(c) = &mut entry.completing {
            // A statement's duration runs from its forwarding.
            c.forwarded();
        }
        self.entries.extend(ahead);
        self.entries.push_back(entry);
        true
    }

    /// Whether a backend message of type `tag` is needed whole (its body read)
    /// rather than streamed through from its header.
    pub fn reads_whole(&self, tag: u8) -> bool {
        self.masker.active()
            || (self.evidence
                && (matches!(tag, b'C' | b'E')
                    || (tag == b'T' && self.capture.is_some())
                    || (tag == b'D' && self.capture.as_ref().is_some_and(|c| c.rows()))))
            || (tag == b'E' && self.entries.front().is_some_and(|e| e.substitute.is_some()))
    }

    /// One backend message (`msg`: tag, length, and the body when
    /// [`Pipeline::reads_whole`] said so) pairs with the front entry: what the
    /// client gets instead. Finished statements are pushed to `done`.
    /// `catalog` resolves masked columns' origins; `key` keys the hash method.
    pub fn answer(
        &mut self,
        msg: &[u8],
        catalog: &Catalog,
        key: &[u8],
        done: &mut Vec<Completion>,
    ) -> Answer {
        if self.lost {
            return answer(self.masker.lost(msg));
        }
        let tag = msg[0];
        let body = &msg[5..];
        if let Some(front) = self.entries.front_mut()
            && front.own
        {
            match front.kind {
                Kind::Probe { sync } => {
                    match self
                        .masker
                        .probe(&mut front.cause, sync, tag, body, catalog)
                    {
                        ProbeStep::Swallow => return Answer::Swallow,
                        ProbeStep::Lookup(oids) => return Answer::Lookup(oids),
                        ProbeStep::Done => {
                            self.entries.pop_front();
                            return Answer::Swallow;
                        }
                        ProbeStep::Failed => {
                            self.entries.pop_front();
                            let scrubbed = scrub_error(tag, body);
                            return self.pair(msg, Some(scrubbed), catalog, key, done);
                        }
                        ProbeStep::Pass => {}
                    }
                }
                Kind::Describe => match tag {
                    b'T' | b'n' => {
                        let cause = Some(&mut front.cause);
                        if let Action::Lookup(oids) =
                            self.masker
                                .on_message(&mut self.names, cause, msg, catalog, key)
                        {
                            return Answer::Lookup(oids);
                        }
                        self.entries.pop_front();
                        return Answer::Swallow;
                    }
                    // The server now skips the client's messages up to its
                    // Sync: the error stands for the next one's, scrubbed (it
                    // may quote the gateway's query).
                    b'E' => {
                        self.entries.pop_front();
                        let scrubbed = scrub_error(tag, body);
                        return self.pair(msg, Some(scrubbed), catalog, key, done);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        self.pair(msg, None, catalog, key, done)
    }

    /// Pairs `msg` with the front entry (a client message's), each concern in
    /// turn; `instead`: what the client gets whatever they say.
    fn pair(
        &mut self,
        msg: &[u8],
        instead: Option<BytesMut>,
        catalog: &Catalog,
        key: &[u8],
        done: &mut Vec<Completion>,
    ) -> Answer {
        let tag = msg[0];
        let Self {
            entries,
            names,
            masker,
            capture,
            ..
        } = self;
        let mut front = entries.front_mut();
        // Masking first: a look-up it asks for comes before anything changes.
        let mut answer = match masker.on_message(
            names,
            front.as_mut().map(|f| &mut f.cause),
            msg,
            catalog,
            key,
        ) {
            Action::Lookup(oids) => return Answer::Lookup(oids),
            Action::Swallow => return Answer::Swallow,
            Action::Pass => Answer::Forward,
            Action::Replace(bytes) => Answer::Replace(bytes),
        };
        if let Some(bytes) = instead {
            answer = Answer::Replace(bytes);
        }
        if let Some(front) = front.as_mut() {
            if tag == b'E'
                && let Some(sub) = front.substitute.take_if(|s| s.answered_by(&msg[5..]))
            {
                answer = Answer::Replace(sub.error);
            }
            if let Some(c) = &mut front.completing {
                // Evidence reads what the client receives (masked rows).
                let body = match &answer {
                    Answer::Replace(bytes) => bytes.get(5..).unwrap_or_default(),
                    _ => &msg[5..],
                };
                c.on_message(front.kind, tag, body, capture.as_deref(), names);
            }
        }
        self.pop_answered(msg, catalog, done);
        answer
    }

    /// Pops the entries `msg` ends, by the protocol's grammar.
    fn pop_answered(&mut self, msg: &[u8], catalog: &Catalog, done: &mut Vec<Completion>) {
        let front = self.entries.front().map(|e| e.kind);
        match (msg[0], front) {
            (_, None) => {}
            (b'1' | b'2' | b'3', _) | (b'T' | b'n', Some(Kind::Describe)) => {
                self.pop(Ended::Ok, catalog, done);
            }
            (b'C' | b'I', Some(Kind::Execute)) => self.pop(Ended::Ok, catalog, done),
            (b's', Some(Kind::Execute)) => self.pop(Ended::Suspended, catalog, done),
            (b'E', Some(Kind::Query | Kind::FunctionCall | Kind::Sync)) => {}
            // The failing extended message; the server skips the rest until Sync.
            (b'E', Some(_)) => self.pop(Ended::Error, catalog, done),
            // Ends the front Query or FunctionCall, or everything up to and
            // including the first Sync (the rest was skipped).
            (b'Z', _) => {
                while let Some(kind) = self.entries.front().map(|e| e.kind) {
                    let end = matches!(kind, Kind::Query | Kind::FunctionCall | Kind::Sync);
                    self.pop(if end { Ended::Ok } else { Ended::Skipped }, catalog, done);
                    if end {
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    fn pop(&mut self, ended: Ended, catalog: &Catalog, done: &mut Vec<Completion>) {
        let Some(e) = self.entries.pop_front() else {
            return;
        };
        let failed = matches!(ended, Ended::Error | Ended::Skipped);
        self.masker
            .popped(&mut self.names, &e.cause, failed, catalog);
        if let Some(c) = e.completing {
            done.extend(c.finish(ended));
        }
    }
}

fn answer(action: Action) -> Answer {
    match action {
        Action::Pass => Answer::Forward,
        Action::Replace(b) => Answer::Replace(b),
        Action::Swallow => Answer::Swallow,
        Action::Lookup(oids) => Answer::Lookup(oids),
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
