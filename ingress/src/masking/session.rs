//! One session's masking, as annotations on the pipeline's entries.
//!
//! The client direction tells the [`Masker`] what it decided and sends, in
//! order; each pipeline entry carries the [`Cause`] masking needs to know of
//! its answers (the statement's plan, which statement of a text the rows
//! belong to, the portal an `Execute` runs). The pipeline pairs each backend
//! message with its entry and asks the masker what the client gets instead:
//! a rewritten `DataRow` or `CopyData`, a scrubbed error, nothing at all for
//! the answers to the gateway's own probes.
//!
//! Rows that come without their own description are masked too: a
//! `COPY ... TO STDOUT` by a probe the gateway sends ahead of it (`Parse` and
//! `Describe` of a query with the same output columns, answers swallowed), a
//! `FETCH` with the plan its cursor's `DECLARE` had, an `Execute` of a portal
//! never described after a `Describe` the gateway sends itself. A name whose
//! meaning upstream the gateway cannot be sure of (see `protocol::names`) is
//! masked blind: every column NULL.

use std::sync::Arc;

use bytes::BytesMut;
use gatehouse_schemas::decision::{CopyFormat, Decision, ResultOp};

use super::catalog::Catalog;
use super::copy::{self, ColMask, CopyOut};
use super::objects::{
    Cursor, MaskedPortal, MaskedStatement, Op, Probe, describe_portal, lock, probe_bytes,
};
use super::plan::{MaskPlan, field_masks, missing_relations, resolve_origins};
use super::wire;
use crate::protocol::codec;
use crate::protocol::names::{Mask, Names, Prepared, Statement};

/// How the rows of a simple query's current result set are masked.
#[derive(Debug)]
pub enum Rows {
    /// No `RowDescription` yet.
    Undescribed,
    /// Each column's mask.
    Masks(Arc<Vec<ColMask>>),
    /// Nothing to mask (an unmasked cursor's rows).
    Pass,
    /// Rows of a cursor the gateway does not know: every column NULL.
    Blind,
}

/// What masking needs to know of the answers to one pipeline entry.
#[derive(Debug, Default)]
pub enum Cause {
    /// Nothing (`Close`, `Sync`, `FunctionCall`).
    #[default]
    None,
    /// A simple `Query`.
    Query {
        /// Its mask plan (`None`: not masked).
        plan: Option<Arc<MaskPlan>>,
        /// It runs DDL: each statement's completion empties the catalog.
        ddl: bool,
        /// Which statement of the text the next result belongs to.
        index: usize,
        /// How the current result set's rows are masked.
        rows: Rows,
        /// Per statement, what it does with undescribed rows (empty: nothing).
        ops: Vec<Op>,
    },
    /// The gateway's own probe of a COPY's columns; every answer to it is
    /// swallowed.
    Probe {
        /// The COPY's text's plan.
        plan: Arc<MaskPlan>,
        /// Which statement of the text the COPY is.
        statement: usize,
        /// Whether it copies in binary.
        binary: bool,
        /// What it learns, shared with the COPY's op.
        probe: Arc<Probe>,
        /// It failed: the COPY's columns stay unknown (all NULL).
        failed: bool,
    },
    /// `Parse` of the statement of this name.
    Parse(String),
    /// `Bind` of the portal of this name.
    Bind(String),
    /// `Describe` of a statement (`None`: not masked).
    DescribeStatement(Option<Arc<MaskedStatement>>),
    /// `Describe` of a portal (`None`: not masked).
    DescribePortal(Option<Arc<MaskedPortal>>),
    /// `Execute` of a portal.
    Execute {
        /// The portal (`None`: not masked, or unknown).
        portal: Option<Arc<MaskedPortal>>,
        /// An unknown portal in a session that masks: every column NULL.
        blind: bool,
        /// It runs DDL.
        ddl: bool,
    },
}

impl Cause {
    /// Whether its answers may show a masked value.
    pub fn masked(&self) -> bool {
        match self {
            Self::Query { plan, ops, .. } => {
                plan.is_some() || ops.iter().any(|o| matches!(o, Op::Fetch { .. }))
            }
            Self::Probe { .. } => true,
            Self::Execute { portal, blind, .. } => portal.is_some() || *blind,
            Self::DescribeStatement(s) => s.is_some(),
            Self::DescribePortal(p) => p.is_some(),
            Self::Parse(_) | Self::Bind(_) | Self::None => false,
        }
    }

    /// The ops of this cause that create names (SQL `PREPARE`, `DECLARE`).
    pub fn creates(&self) -> &[Op] {
        match self {
            Self::Query { ops, .. } => ops,
            Self::Execute {
                portal: Some(p), ..
            } => std::slice::from_ref(&p.statement.op),
            _ => &[],
        }
    }

    fn op(&self) -> Option<&Op> {
        match self {
            Self::Query { ops, index, .. } => ops.get(*index),
            Self::Execute {
                portal: Some(p), ..
            } => Some(&p.statement.op),
            _ => None,
        }
    }
}

/// What masking learnt deciding a `Query` or `Parse`.
#[derive(Debug, Default)]
pub struct Decided {
    /// The cause of its entry.
    pub cause: Option<Cause>,
    /// Probes to send ahead of it: their bytes and causes.
    pub probes: Vec<(BytesMut, Cause)>,
    /// A `Parse`: its statement's mask.
    pub statement: Option<Mask<MaskedStatement>>,
}

/// What the backend direction does with one backend message.
#[derive(Debug)]
pub enum Action {
    /// Forward it as it came.
    Pass,
    /// Send these bytes instead.
    Replace(BytesMut),
    /// Send nothing: the answer to the gateway's own message (or a row that
    /// continues in the next `CopyData`). Neither the client nor evidence sees it.
    Swallow,
    /// Look these relations up in the catalog, then ask again (nothing has
    /// changed meanwhile).
    Lookup(Vec<u32>),
}

/// One session's masking state beyond its names and entries.
#[derive(Debug, Default)]
pub struct Masker {
    /// Whether any statement of the session was masked.
    active: bool,
    /// The COPY TO in flight, when masked.
    copy: Option<CopyOut>,
    /// A masked COPY TO whose row format the gateway does not know: its rows
    /// are withheld.
    copy_withheld: bool,
}

impl Masker {
    /// Whether backend messages need reading whole (a statement was masked).
    pub fn active(&self) -> bool {
        self.active
    }

    /// The client direction decided a `Query` (`tag`) or `Parse` named `name`
    /// as `decision`: the cause of its entry and the probes to send ahead of
    /// it. SQL `PREPARE` and `DEALLOCATE` of the text are recorded in `names`
    /// (with the plan of the statement they prepare).
    pub fn decided(
        &mut self,
        names: &mut Names,
        tag: u8,
        name: &str,
        decision: &Decision,
    ) -> Decided {
        let plan = MaskPlan::of(decision);
        let ddl = decision
            .statements
            .iter()
            .any(|s| s.class == "ddl" || s.classes.iter().any(|c| c == "ddl"));
        self.active |= plan.is_some();
        let mut probes = Vec::new();
        // What each statement does with rows that come without a description,
        // as the decider read it.
        let mut ops: Vec<Op> = if self.active {
            decision
                .results
                .iter()
                .enumerate()
                .map(|(i, op)| match op {
                    ResultOp::CopyOut { probe, format } => match &plan {
                        Some(plan) => {
                            let shared = Arc::new(Probe::default());
                            let cause = Cause::Probe {
                                plan: plan.clone(),
                                statement: i,
                                binary: *format == CopyFormat::Binary,
                                probe: shared.clone(),
                                failed: false,
                            };
                            probes.push((probe_bytes(probe, tag == codec::QUERY), cause));
                            Op::Copy {
                                format: format.clone(),
                                probe: shared,
                            }
                        }
                        None => Op::None,
                    },
                    ResultOp::Declare { name, hold } => Op::Declare {
                        name: name.clone(),
                        hold: *hold,
                    },
                    ResultOp::Fetch { name } => Op::Fetch { name: name.clone() },
                    ResultOp::Close { name } => Op::Close(name.clone()),
                    ResultOp::Other => Op::None,
                })
                .collect()
        } else {
            Vec::new()
        };
        // SQL PREPARE and DEALLOCATE, in the namespace `Bind` reads.
        for (i, s) in decision.statements.iter().enumerate() {
            match &s.deallocates {
                Some(Some(n)) => {
                    names.sql_deallocate(Some(n.as_str()));
                    names.close_statement(n);
                }
                Some(None) => {
                    names.sql_deallocate(None);
                    names.close_named_statements();
                }
                None => {}
            }
            let Some((prepared, inner)) = &s.prepares else {
                continue;
            };
            names.sql_prepare(prepared, inner);
            // A PREPARE through the extended protocol runs at an Execute the
            // gateway does not follow it to: its name is masked blind.
            let mask = if tag == codec::QUERY {
                if ops.len() <= i {
                    ops.resize(i + 1, Op::None);
                }
                ops[i] = Op::Prepare {
                    name: prepared.clone(),
                };
                Mask::of(
                    plan.as_ref()
                        .map(|p| MaskedStatement::new(p.of_statement(i), Op::None)),
                )
            } else {
                Mask::Unknown
            };
            names.name_statement(
                prepared,
                Statement {
                    prepared: Arc::new(Prepared {
                        sql: inner.clone(),
                        decision: None,
                        approval: None,
                    }),
                    sql_prepare: true,
                    mask,
                    ddl: false,
                    columns: None,
                },
            );
        }
        if tag == codec::PARSE {
            let statement = Mask::of(plan.map(|plan| {
                MaskedStatement::new(plan, ops.into_iter().next().unwrap_or_default())
            }));
            return Decided {
                cause: Some(Cause::Parse(name.to_owned())),
                probes,
                statement: Some(statement),
            };
        }
        Decided {
            cause: Some(Cause::Query {
                plan,
                ddl,
                index: 0,
                rows: Rows::Undescribed,
                ops,
            }),
            probes,
            statement: None,
        }
    }

    /// The cause of a `Query` sent without a decision of its own (a
    /// refused statement's substitute, an unreadable text).
    pub fn undecided_query() -> Cause {
        Cause::Query {
            plan: None,
            ddl: false,
            index: 0,
            rows: Rows::Undescribed,
            ops: Vec::new(),
        }
    }

    /// The mask of a portal bound to statement `statement` with result
    /// `formats`, and whether it runs DDL.
    pub fn bound(
        &self,
        names: &Names,
        statement: &str,
        formats: &[i16],
    ) -> (Mask<MaskedPortal>, bool) {
        let mask = match names.statement_mask(statement) {
            Some(Some(s)) => Mask::Masked(MaskedPortal::new(s, formats.to_vec())),
            Some(None) => Mask::Clear,
            // A statement the gateway does not know: masked by origin only if
            // the session masks.
            None if self.active => Mask::Masked(MaskedPortal::new(
                MaskedStatement::blind(),
                formats.to_vec(),
            )),
            None => Mask::Clear,
        };
        (mask, names.statement_ddl(statement))
    }

    /// The cause of a `Describe` (`body`: its body).
    pub fn described(&self, names: &Names, body: &[u8]) -> Cause {
        match codec::target(body) {
            Some((b'S', name)) => {
                let name = String::from_utf8_lossy(name);
                Cause::DescribeStatement(names.statement(&name).and_then(|s| match &s.mask {
                    Mask::Masked(m) => Some(m.clone()),
                    _ => None,
                }))
            }
            Some((_, name)) => {
                Cause::DescribePortal(names.portal_mask(&String::from_utf8_lossy(name)).flatten())
            }
            None => Cause::None,
        }
    }

    /// The cause of an `Execute` of portal `name`, and the gateway's own
    /// `Describe` to send ahead of it (with its cause) when the portal was
    /// never described: its rows are then masked by their shape.
    pub fn executed(&self, names: &Names, name: &str) -> (Cause, Option<(BytesMut, Cause)>) {
        let ddl = names.portal_ddl(name);
        match names.portal_mask(name) {
            Some(p) => {
                let mut ahead = None;
                if let Some(p) = &p
                    && !matches!(p.statement.op, Op::Copy { .. })
                    && lock(&p.fields).is_none()
                    && lock(&p.statement.fields).is_none()
                {
                    ahead = Some((
                        describe_portal(name),
                        Cause::DescribePortal(Some(p.clone())),
                    ));
                }
                (
                    Cause::Execute {
                        portal: p,
                        blind: false,
                        ddl,
                    },
                    ahead,
                )
            }
            // A portal the gateway does not know (past the bound, or
            // unsettled): blind when masking.
            None => (
                Cause::Execute {
                    portal: None,
                    blind: self.active,
                    ddl,
                },
                None,
            ),
        }
    }

    /// A backend message (`msg`: tag, length, body) whose entry's cause is
    /// `front` (`None`: nothing awaits an answer). `catalog` resolves field
    /// origins; `key` keys the hash method. The pipeline pops entries
    /// afterwards (see [`Masker::popped`]).
    pub fn on_message(
        &mut self,
        names: &mut Names,
        front: Option<&mut Cause>,
        msg: &[u8],
        catalog: &Catalog,
        key: &[u8],
    ) -> Action {
        let tag = msg[0];
        let body = &msg[5..];
        match tag {
            b'T' => match front {
                Some(front) => self.row_description(names, front, body, catalog),
                None => Action::Pass,
            },
            b'D' => self.data_row(names, front.map(|f| &*f), msg, key),
            b'H' => {
                self.copy_out(front.map(|f| &*f), body);
                Action::Pass
            }
            b'd' => {
                if self.copy_withheld {
                    return Action::Swallow;
                }
                match self.copy.as_mut().map(|c| c.data(body, key)) {
                    None | Some(None) => Action::Pass,
                    Some(Some(v)) if v.is_empty() => Action::Swallow,
                    Some(Some(v)) => Action::Replace(copy::copy_data(&v)),
                }
            }
            b'c' => {
                if let Some(c) = self.copy.take()
                    && c.leftover() > 0
                {
                    tracing::warn!(bytes = c.leftover(), "masking_copy_row_incomplete");
                }
                self.copy_withheld = false;
                Action::Pass
            }
            b'C' | b'I' => {
                let Some(front) = front else {
                    return Action::Pass;
                };
                if tag == b'C' {
                    completed(names, front, &wire::cstr(body));
                }
                match front {
                    Cause::Query {
                        index, rows, ddl, ..
                    } => {
                        *index += 1;
                        *rows = Rows::Undescribed;
                        if *ddl {
                            catalog.invalidate();
                        }
                    }
                    Cause::Execute { ddl: true, .. } => catalog.invalidate(),
                    _ => {}
                }
                Action::Pass
            }
            b'E' | b'N' => {
                let masked = front.as_ref().is_some_and(|f| f.masked());
                if tag == b'E' {
                    self.copy = None;
                    self.copy_withheld = false;
                    if let Some(Cause::Query { ops, index, .. }) = front {
                        // What the rest of the text would have prepared
                        // never was: the names mean what they meant, or
                        // nothing.
                        for op in ops.iter().skip(*index) {
                            if let Op::Prepare { name } = op {
                                names.forget_statement_mask(name);
                            }
                        }
                    }
                }
                if masked {
                    Action::Replace(wire::scrub_error(tag, body))
                } else {
                    Action::Pass
                }
            }
            b'Z' => {
                if body.first() == Some(&b'I') {
                    names.idle();
                }
                Action::Pass
            }
            _ => Action::Pass,
        }
    }

    /// An entry with cause `cause` got its last answer; `failed`: it failed or
    /// was skipped, so the names it would have created are forgotten (unless
    /// a later creation of the same name awaits its own answer).
    pub fn popped(&mut self, names: &mut Names, cause: &Cause, failed: bool, catalog: &Catalog) {
        match cause {
            Cause::Parse(name) => names.created_statement(name, failed),
            Cause::Bind(name) => names.created_portal(name, failed),
            Cause::Query { ddl: true, .. } => catalog.invalidate(),
            _ => {}
        }
        for op in cause.creates() {
            match op {
                Op::Prepare { name } => names.answered_statement(name),
                Op::Declare { name, .. } => names.answered_portal(name),
                _ => {}
            }
        }
    }

    /// An answer to the gateway's own probe (`cause`); `sync`: the probe ends
    /// with its own `Sync`.
    pub fn probe(
        &mut self,
        cause: &mut Cause,
        sync: bool,
        tag: u8,
        body: &[u8],
        catalog: &Catalog,
    ) -> ProbeStep {
        let Cause::Probe {
            plan,
            statement,
            binary,
            probe,
            failed,
        } = cause
        else {
            return ProbeStep::Swallow;
        };
        match tag {
            b'T' => {
                let Some(mut fields) = wire::row_description(body) else {
                    return ProbeStep::Swallow;
                };
                if let Some(missing) = missing_relations(&fields, catalog) {
                    return ProbeStep::Lookup(missing);
                }
                resolve_origins(&mut fields, plan, catalog);
                let format = [i16::from(*binary)];
                let masks = field_masks(&fields, Some(&format), plan, *statement);
                *lock(&probe.masks) = Some(masks);
                ProbeStep::Swallow
            }
            b'n' => {
                *lock(&probe.masks) = Some(Vec::new());
                ProbeStep::Swallow
            }
            b'3' if !sync => ProbeStep::Done,
            b'Z' if sync => ProbeStep::Done,
            // The client's ReadyForQuery: the server skipped the probe after
            // an earlier error of the client's pipeline.
            b'Z' => ProbeStep::Pass,
            b'E' if sync || *failed => {
                // The COPY's columns stay unknown: all NULL. The COPY itself
                // runs (or fails) on its own.
                *failed = true;
                ProbeStep::Swallow
            }
            // Ahead of an extended-protocol message: the server now skips to
            // the client's Sync, so this error stands for that message's.
            b'E' => ProbeStep::Failed,
            // ParseComplete, ParameterDescription, CloseComplete, notices.
            _ => ProbeStep::Swallow,
        }
    }

    /// A `RowDescription`: each column's mask, for the rows that follow.
    fn row_description(
        &mut self,
        names: &Names,
        front: &mut Cause,
        body: &[u8],
        catalog: &Catalog,
    ) -> Action {
        if !front.masked() {
            return Action::Pass;
        }
        // A FETCH reads with its cursor's plan (`None`: a cursor the gateway
        // does not know).
        let fetch = match &*front {
            Cause::Query { ops, index, .. } => match ops.get(*index) {
                Some(Op::Fetch { name }) => Some(names.cursor(name).map(Cursor::plan)),
                _ => None,
            },
            _ => None,
        };
        let (plan, statement) = match (fetch, &*front) {
            (Some(Some(plan)), _) => (plan, 0),
            (Some(None), _) => {
                if let Cause::Query { rows, .. } = front {
                    *rows = Rows::Blind;
                }
                return Action::Pass;
            }
            (None, Cause::Query { plan, index, .. }) => (plan.clone(), *index),
            (None, Cause::DescribeStatement(Some(s))) => (Some(s.plan.clone()), 0),
            (None, Cause::DescribePortal(Some(p))) => (Some(p.statement.plan.clone()), 0),
            (None, _) => (None, 0),
        };
        let Some(mut fields) = wire::row_description(body) else {
            return Action::Pass;
        };
        if plan.is_some()
            && let Some(missing) = missing_relations(&fields, catalog)
        {
            return Action::Lookup(missing);
        }
        if let Some(plan) = &plan {
            resolve_origins(&mut fields, plan, catalog);
        }
        match front {
            Cause::Query { rows, .. } => {
                *rows = match &plan {
                    Some(plan) => {
                        Rows::Masks(Arc::new(field_masks(&fields, None, plan, statement)))
                    }
                    None => Rows::Pass,
                };
            }
            Cause::DescribeStatement(Some(s)) => *lock(&s.fields) = Some(Arc::new(fields)),
            Cause::DescribePortal(Some(p)) => *lock(&p.fields) = Some(Arc::new(fields)),
            _ => {}
        }
        Action::Pass
    }

    /// A `CopyOutResponse`: the COPY's rows are masked from here to `CopyDone`.
    fn copy_out(&mut self, front: Option<&Cause>, body: &[u8]) {
        self.copy = None;
        self.copy_withheld = false;
        let Some(front) = front.filter(|f| f.masked()) else {
            return;
        };
        let columns = body.get(1..3).map_or(0, |n| {
            usize::try_from(i16::from_be_bytes([n[0], n[1]])).unwrap_or(0)
        });
        match front.op() {
            Some(Op::Copy { format, probe }) => {
                let masks = lock(&probe.masks).clone();
                self.copy = Some(CopyOut::new(format.clone(), columns, masks.as_deref()));
            }
            // A COPY the gateway did not recognise under a mask: its format and
            // columns are unknown, so none of its rows is shown.
            _ => self.copy_withheld = true,
        }
    }

    fn data_row(&mut self, names: &Names, front: Option<&Cause>, msg: &[u8], key: &[u8]) -> Action {
        let Some(front) = front else {
            return Action::Pass;
        };
        let owned;
        let masks: &[ColMask] = match front {
            Cause::Query { rows, plan, .. } => match rows {
                Rows::Masks(m) => m,
                Rows::Pass => return Action::Pass,
                Rows::Blind => return Action::Replace(wire::all_null(msg)),
                // Rows without a description: nothing is known, so nothing is
                // shown.
                Rows::Undescribed if plan.is_some() => {
                    return Action::Replace(wire::all_null(msg));
                }
                Rows::Undescribed => return Action::Pass,
            },
            Cause::Execute {
                portal: Some(p), ..
            } => {
                let plan = match &p.statement.op {
                    Op::Fetch { name } => match names.cursor(name).map(Cursor::plan) {
                        Some(Some(plan)) => plan,
                        Some(None) => return Action::Pass,
                        None => return Action::Replace(wire::all_null(msg)),
                    },
                    _ => p.statement.plan.clone(),
                };
                let from_portal = lock(&p.fields).clone();
                let (fields, formats) = match from_portal {
                    Some(f) => (Some(f), None),
                    None => (lock(&p.statement.fields).clone(), Some(&p.formats[..])),
                };
                match fields {
                    Some(f) if !plan.is_empty() => {
                        owned = field_masks(&f, formats, &plan, 0);
                        &owned
                    }
                    _ => return Action::Replace(wire::all_null(msg)),
                }
            }
            Cause::Execute { blind: true, .. } => return Action::Replace(wire::all_null(msg)),
            _ => return Action::Pass,
        };
        match wire::rewrite_data_row(msg, masks, key) {
            Some(out) => Action::Replace(out),
            None => Action::Pass,
        }
    }

    /// Pairing was lost (the pipeline overflowed): in a session that masks,
    /// nothing of a row, a COPY or a server message is shown.
    pub fn lost(&self, msg: &[u8]) -> Action {
        if !self.active {
            return Action::Pass;
        }
        match msg[0] {
            b'D' => Action::Replace(wire::all_null(msg)),
            b'd' => Action::Swallow,
            tag @ (b'E' | b'N') => Action::Replace(wire::scrub_error(tag, &msg[5..])),
            _ => Action::Pass,
        }
    }
}

/// What an answer to a probe does.
#[derive(Debug)]
pub enum ProbeStep {
    /// Swallowed; the probe awaits more answers.
    Swallow,
    /// Swallowed; the probe is answered in full.
    Done,
    /// The probe failed ahead of an extended-protocol message: the error
    /// stands for that message's (scrubbed: it may quote the query).
    Failed,
    /// Look these relations up first.
    Lookup(Vec<u32>),
    /// Not an answer to the probe: paired as any other message.
    Pass,
}

/// A statement completed with command tag `tag`: cursors opened or closed.
fn completed(names: &mut Names, front: &Cause, tag: &str) {
    let plan = match front {
        Cause::Query {
            plan: Some(plan),
            index,
            ..
        } => Some(plan.of_statement(*index)),
        Cause::Execute {
            portal: Some(p), ..
        } => Some(p.statement.plan.clone()),
        _ => None,
    };
    match front.op().cloned() {
        Some(Op::Declare { name, hold }) => {
            // An Execute of the cursor's portal is masked like a FETCH.
            let portal =
                plan.map(|p| MaskedPortal::new(MaskedStatement::new(p, Op::None), Vec::new()));
            names.declare_cursor(
                name,
                Cursor {
                    portal,
                    hold,
                    committed: false,
                },
            );
        }
        Some(Op::Close(name)) => names.close_cursor(name.as_deref()),
        _ => {}
    }
    if tag == "ROLLBACK" {
        names.rolled_back();
    }
}
