//! Inline masking: rewrites the `DataRow`s of statements under a mask verdict
//! so masked values never reach the client, and scrubs their errors and notices.
//!
//! Which result column is masked comes from two places: its origin (the
//! `RowDescription` table OID and attribute number, resolved by [`catalog`]) for
//! direct columns, and the decider's lineage (by position) for derived ones.
//!
//! The client direction tells the [`SessionMasker`] what it forwarded, in
//! order, with what each message needs resolved at that moment (which statement
//! a `Bind` binds, which portal an `Execute` runs); the backend direction pairs
//! each backend message with its cause the way `tracker` does.
//!
//! Rows that come without their own description are masked too: a
//! `COPY ... TO STDOUT` by a probe Gatehouse sends ahead of it (`Parse` and
//! `Describe` of a query with the same output columns, answers swallowed), a
//! `FETCH` with the plan its cursor's `DECLARE` had, an `Execute` of a portal
//! never described after a `Describe` Gatehouse sends itself.
//!
//! SQL names share the protocol's namespaces, as in PostgreSQL: a statement
//! prepared with SQL `PREPARE` can be bound with `Bind` (its plan is that of
//! the `PREPARE`, which the decider decides as what it prepares), and a SQL
//! cursor is a portal that `Execute` can fetch from (with its `DECLARE`'s
//! plan). A name whose meaning upstream Gatehouse cannot be sure of (never
//! seen, or its creation still unanswered after a `Sync`, or failed) is masked
//! blind: every column NULL.

pub mod catalog;
pub mod copy;
pub mod detect;
pub mod method;
pub mod values;
pub mod views;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use gatehouse_decider::results::{self, CopyFormat, ResultOp};
use gatehouse_schemas::decision::{Decision, MaskColumn, MaskMethod, MaskOutput};
use wildmatch::WildMatch;

use crate::codec;
use crate::config::Secret;
use crate::tracker::Sent;
use crate::upstream::UpstreamTarget;
use catalog::Catalog;
use copy::{ColMask, CopyOut};
use wire::{Field, Kind};

/// Gateway-wide masking state: the hash key and one catalog per upstream.
pub struct Masking {
    key: Secret,
    ttl: Duration,
    catalogs: Mutex<HashMap<String, Arc<Catalog>>>,
}

impl Masking {
    /// `key` keys the `hash` method (never logged); catalog entries live `ttl`.
    pub fn new(key: Secret, ttl: Duration) -> Self {
        Self {
            key,
            ttl,
            catalogs: Mutex::default(),
        }
    }

    /// The key of the `hash` method.
    pub fn key(&self) -> &[u8] {
        self.key.expose().as_bytes()
    }

    /// The catalog of `target`'s upstream (shared by the roles that reach the
    /// same server and database as the same user).
    pub fn catalog(&self, target: &Arc<UpstreamTarget>) -> Arc<Catalog> {
        let id = format!("{}/{}/{}", target.addr(), target.config.dbname, target.user);
        let mut map = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id)
            .or_insert_with(|| Arc::new(Catalog::new(target.clone(), self.ttl)))
            .clone()
    }
}

/// The mask verdict of one SQL text, compiled for matching.
#[derive(Debug)]
pub struct MaskPlan {
    columns: Arc<Vec<(WildMatch, WildMatch, WildMatch, MaskColumn)>>,
    outputs: Vec<MaskOutput>,
    /// Content detectors for every text output column.
    detect: Option<MaskMethod>,
}

impl MaskPlan {
    /// The plan of a decision, when it masks.
    pub fn of(d: &Decision) -> Option<Arc<MaskPlan>> {
        let (columns, outputs) = d.verdict.masks()?;
        let columns = columns
            .iter()
            .filter_map(|c| {
                let mut parts = c.column.splitn(3, '.');
                let (s, t, col) = (parts.next()?, parts.next()?, parts.next()?);
                Some((
                    WildMatch::new(s),
                    WildMatch::new(t),
                    WildMatch::new(col),
                    c.clone(),
                ))
            })
            .collect();
        let detectors = d.verdict.detectors();
        Some(Arc::new(MaskPlan {
            columns: Arc::new(columns),
            outputs: outputs.to_vec(),
            detect: (!detectors.is_empty()).then(|| MaskMethod::Detect {
                detectors: detectors.to_vec(),
            }),
        }))
    }

    /// The plan of statement `index` alone, as statement 0 (a cursor's rows
    /// come back through a later FETCH).
    fn of_statement(&self, index: usize) -> Arc<MaskPlan> {
        Arc::new(MaskPlan {
            columns: self.columns.clone(),
            outputs: self
                .outputs
                .iter()
                .filter(|o| o.statement as usize == index)
                .map(|o| MaskOutput {
                    statement: 0,
                    ..o.clone()
                })
                .collect(),
            detect: self.detect.clone(),
        })
    }

    /// Masks by origin only (a statement whose lineage Gatehouse never saw).
    fn blind() -> Arc<MaskPlan> {
        Arc::new(MaskPlan {
            columns: Arc::new(Vec::new()),
            outputs: Vec::new(),
            detect: None,
        })
    }

    /// Whether the plan masks anything at all.
    fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.outputs.is_empty() && self.detect.is_none()
    }

    /// The strictest method masking `schema.table.column`, if any.
    fn column_method(&self, schema: &str, table: &str, column: &str) -> Option<MaskMethod> {
        strictest(
            self.columns
                .iter()
                .filter(|(s, t, c, _)| s.matches(schema) && t.matches(table) && c.matches(column))
                .map(|(.., m)| &m.method),
        )
    }

    fn output_method(&self, statement: usize, position: usize) -> Option<MaskMethod> {
        strictest(
            self.outputs
                .iter()
                .filter(|o| o.statement as usize == statement && o.position as usize == position)
                .map(|o| &o.method),
        )
    }
}

/// The strictest of several methods; content detectors, the least strict,
/// combine (every detector of each scans the value).
fn strictest<'m>(methods: impl Iterator<Item = &'m MaskMethod>) -> Option<MaskMethod> {
    let mut best: Option<MaskMethod> = None;
    for m in methods {
        best = match (best, m) {
            (None, m) => Some(m.clone()),
            (
                Some(MaskMethod::Detect { detectors: mut a }),
                MaskMethod::Detect { detectors: b },
            ) => {
                for d in b {
                    if !a.contains(d) {
                        a.push(*d);
                    }
                }
                a.sort();
                Some(MaskMethod::Detect { detectors: a })
            }
            (Some(b), m) if m.strictness() > b.strictness() => Some(m.clone()),
            (b, _) => b,
        };
    }
    best
}

/// What one statement of a text does with rows that arrive without their own
/// `RowDescription` (see `gatehouse_decider::results`).
#[derive(Debug, Clone, Default)]
enum Op {
    #[default]
    None,
    /// `COPY ... TO STDOUT`, its columns learnt by a probe sent ahead of it.
    Copy {
        format: CopyFormat,
        probe: Arc<Probe>,
    },
    /// `DECLARE name CURSOR`: on success the cursor keeps this statement's plan.
    Declare { name: String, hold: bool },
    /// SQL `PREPARE name`: the statement was named with this statement's plan
    /// when the text was sent (and forgotten if it fails).
    Prepare { name: String },
    /// `FETCH`: rows masked with the cursor's plan.
    Fetch { name: String },
    /// `CLOSE name` (`None`: all).
    Close(Option<String>),
}

/// What a probe (`Parse`/`Describe`/`Close` of a query with a COPY's output
/// columns, sent by Gatehouse ahead of the COPY) learnt: each column's mask.
#[derive(Debug, Default)]
struct Probe {
    masks: Mutex<Option<Vec<ColMask>>>,
}

/// The reserved name of the probe statement; a client statement of that name
/// makes the probe fail, and the COPY's columns are then all NULL.
const PROBE_NAME: &str = "gatehouse_mask_probe";

/// A SQL cursor declared through the gateway.
#[derive(Debug)]
struct Cursor {
    /// The portal it is, with its query's plan (`None`: not masked): what a
    /// `FETCH` and an `Execute` of it are masked with.
    portal: Option<Arc<MaskedPortal>>,
    /// `WITH HOLD`: outlives its transaction once that commits.
    hold: bool,
    /// Its transaction committed.
    committed: bool,
}

/// A statement prepared with `Parse` under a mask verdict.
#[derive(Debug)]
struct MaskedStatement {
    plan: Arc<MaskPlan>,
    op: Op,
    /// Its row shape, from the answer to a `Describe` of it, with each field's
    /// column mask resolved.
    fields: Mutex<Option<Arc<Vec<Field>>>>,
}

impl MaskedStatement {
    fn new(plan: Arc<MaskPlan>, op: Op) -> Arc<Self> {
        Arc::new(Self {
            plan,
            op,
            fields: Mutex::new(None),
        })
    }

    /// A statement Gatehouse does not know: masked by origin only, so a
    /// masking session's rows are all NULL.
    fn blind() -> Arc<Self> {
        Self::new(MaskPlan::blind(), Op::None)
    }
}

/// A portal bound to a masked statement.
#[derive(Debug)]
struct MaskedPortal {
    statement: Arc<MaskedStatement>,
    /// Result format codes of the `Bind` (empty for a SQL cursor: the
    /// `Describe` of it says its format).
    formats: Vec<i16>,
    /// Its row shape, from the answer to a `Describe` of the portal.
    fields: Mutex<Option<Arc<Vec<Field>>>>,
}

impl MaskedPortal {
    fn new(statement: Arc<MaskedStatement>, formats: Vec<i16>) -> Arc<Self> {
        Arc::new(Self {
            statement,
            formats,
            fields: Mutex::new(None),
        })
    }
}

impl Cursor {
    /// Its query's plan (`None`: not masked).
    fn plan(&self) -> Option<Arc<MaskPlan>> {
        self.portal.as_ref().map(|p| p.statement.plan.clone())
    }
}

/// Creations of names (statements or portals) sent and not answered yet. The
/// client direction records a name as it sends what creates it; should that
/// fail, the name still means its old object upstream. Within the creation's
/// own batch that does not matter (after an error the server skips to the
/// `Sync`), so a name is unsettled only once a `Sync` (or a simple query)
/// follows an unanswered creation of it: its record may then be stale.
#[derive(Debug, Default)]
struct Unsettled(HashMap<String, (usize, bool)>);

impl Unsettled {
    /// A creation of `name` was sent; `now`: unsettled at once (its record is
    /// only made when it is answered).
    fn sent(&mut self, name: &str, now: bool) {
        let e = self.0.entry(name.to_owned()).or_default();
        e.0 += 1;
        e.1 = now;
    }

    /// A `Sync` or a simple query was sent.
    fn boundary(&mut self) {
        for e in self.0.values_mut() {
            e.1 = true;
        }
    }

    /// A creation of `name` was answered (or skipped); whether none is left.
    fn answered(&mut self, name: &str) -> bool {
        match self.0.get_mut(name) {
            Some(e) if e.0 > 1 => {
                e.0 -= 1;
                false
            }
            _ => {
                self.0.remove(name);
                true
            }
        }
    }

    fn unsettled(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|e| e.1)
    }
}

/// How the rows of a simple query's current result set are masked.
#[derive(Debug)]
enum Rows {
    /// No `RowDescription` yet.
    Undescribed,
    /// Each column's mask.
    Masks(Arc<Vec<ColMask>>),
    /// Nothing to mask (an unmasked cursor's rows).
    Pass,
    /// Rows of a cursor Gatehouse does not know: every column NULL.
    Blind,
}

/// What a forwarded client message needs the backend direction to know.
#[derive(Debug)]
enum Cause {
    Query {
        plan: Option<Arc<MaskPlan>>,
        ddl: bool,
        /// Which statement of the text the next result belongs to.
        index: usize,
        rows: Rows,
        /// Per statement, what it does with undescribed rows (empty: nothing).
        ops: Vec<Op>,
    },
    /// Gatehouse's own probe of a COPY's columns; every answer to it is
    /// swallowed. `sync`: it ends with a `Sync` (ahead of a simple query).
    Probe {
        plan: Arc<MaskPlan>,
        statement: usize,
        binary: bool,
        probe: Arc<Probe>,
        sync: bool,
        failed: bool,
    },
    /// `Parse` of the statement of this name.
    Parse(String),
    /// `Bind` of the portal of this name.
    Bind(String),
    DescribeStatement(Option<Arc<MaskedStatement>>),
    /// `true`: Gatehouse's own `Describe`, ahead of an `Execute` of a portal
    /// never described; its answer is swallowed.
    DescribePortal(Option<Arc<MaskedPortal>>, bool),
    Execute {
        portal: Option<Arc<MaskedPortal>>,
        /// An unknown statement in a session that masks: every column NULL.
        blind: bool,
        ddl: bool,
    },
    Close,
    Sync,
    Other,
}

impl Cause {
    fn masked(&self) -> bool {
        match self {
            Self::Query { plan, ops, .. } => {
                plan.is_some() || ops.iter().any(|o| matches!(o, Op::Fetch { .. }))
            }
            Self::Probe { .. } => true,
            Self::Execute { portal, blind, .. } => portal.is_some() || *blind,
            Self::DescribeStatement(s) => s.is_some(),
            Self::DescribePortal(p, _) => p.is_some(),
            Self::Parse(_) | Self::Bind(_) | Self::Close | Self::Sync | Self::Other => false,
        }
    }

    /// The ops of this cause that create names (SQL PREPARE, DECLARE).
    fn creates(&self) -> &[Op] {
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

/// What the client direction knows when it forwards a message.
#[derive(Debug, Default)]
pub struct Pending {
    cause: Option<Cause>,
    /// Probes to send ahead of the message, and their causes.
    probes: Vec<(BytesMut, Cause)>,
}

/// What the backend direction does with one backend message.
#[derive(Debug)]
pub enum Action {
    /// Forward it as it came.
    Pass,
    /// Send these bytes instead.
    Replace(BytesMut),
    /// Send nothing: the answer to Gatehouse's own message (or a row that
    /// continues in the next `CopyData`). Neither the client nor the evidence
    /// tracker sees it.
    Swallow,
    /// Look these relations up in the catalog, then ask again.
    Lookup(Vec<u32>),
}

/// One session's masking: the client direction's view of names, and the causes
/// awaiting their answers.
#[derive(Default)]
pub struct SessionMasker {
    /// Client direction: statements and portals by name, as of what was sent.
    statements: HashMap<String, Option<Arc<MaskedStatement>>>,
    portals: HashMap<String, Option<Arc<MaskedPortal>>>,
    /// Statements and portals that run DDL.
    ddl: HashSet<String>,
    ddl_portals: HashSet<String>,
    /// Whether any statement of the session was masked.
    masking: bool,
    /// Backend direction.
    queue: VecDeque<Cause>,
    /// SQL cursors declared through the gateway, by name; kept by the backend
    /// direction as their DECLARE and CLOSE complete.
    cursors: HashMap<String, Cursor>,
    /// Creations of statement names (`Parse`, SQL `PREPARE`) and of portal
    /// names (`Bind`, `DECLARE`) awaiting their answers.
    unsettled_statements: Unsettled,
    unsettled_portals: Unsettled,
    /// The COPY TO in flight, when masked.
    copy: Option<CopyOut>,
    /// A masked COPY TO whose row format Gatehouse does not know: its rows are
    /// withheld.
    copy_withheld: bool,
    /// More than [`MAX_PENDING`] messages awaited answers: pairing is lost for
    /// the rest of the session, so a masking session's rows are all NULL.
    overflowed: bool,
}

/// Names beyond this are not tracked; their executions are masked blind.
const MAX_NAMES: usize = 10_000;
/// Messages awaiting an answer (as the tracker's bound).
const MAX_PENDING: usize = 100_000;

/// The bytes of a probe: `Parse`, `Describe` and `Close` of `sql` under
/// [`PROBE_NAME`], and a `Sync` when `sync` (ahead of a simple query, so a
/// failed probe does not make the server skip the query).
fn probe_bytes(sql: &str, sync: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let mut msg = |tag: u8, body: &[&[u8]]| {
        let len: usize = body.iter().map(|b| b.len()).sum();
        out.put_u8(tag);
        out.put_u32(u32::try_from(len + 4).unwrap_or(u32::MAX));
        for b in body {
            out.put_slice(b);
        }
    };
    let name = [PROBE_NAME.as_bytes(), b"\0"].concat();
    msg(codec::PARSE, &[&name, sql.as_bytes(), b"\0", &[0, 0]]);
    msg(codec::DESCRIBE, &[b"S", &name]);
    msg(codec::CLOSE, &[b"S", &name]);
    if sync {
        msg(codec::SYNC, &[]);
    }
    out
}

/// A `Describe` of portal `name`.
fn describe_portal(name: &str) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(codec::DESCRIBE);
    out.put_u32(u32::try_from(name.len() + 6).unwrap_or(u32::MAX));
    out.put_u8(b'P');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out
}

impl SessionMasker {
    /// Records what statement name `name` means from now on (`None`: not
    /// masked); `ddl`: its Execute empties the catalog. Past the bound, the
    /// name is not recorded and binds of it are masked blind.
    fn name_statement(&mut self, name: &str, stmt: Option<Arc<MaskedStatement>>, ddl: bool) {
        if self.statements.len() < MAX_NAMES || self.statements.contains_key(name) {
            self.statements.insert(name.to_owned(), stmt);
        }
        if ddl {
            self.ddl.insert(name.to_owned());
        } else {
            self.ddl.remove(name);
        }
    }

    /// Forgets statement name `name`: binds of it are masked blind until it is
    /// named again.
    fn forget_statement(&mut self, name: &str) {
        self.statements.remove(name);
        self.ddl.remove(name);
    }

    /// The statement `name` names as of what was sent: `Some(None)` not
    /// masked, `None` unknown (or unsettled, see [`Unsettled`]).
    fn statement(&self, name: &str) -> Option<Option<Arc<MaskedStatement>>> {
        if self.unsettled_statements.unsettled(name) {
            return None;
        }
        self.statements.get(name).cloned()
    }

    /// The portal `name` names as of what was sent: a bound one, else a SQL
    /// cursor of that name (they share a namespace); `Some(None)` not masked,
    /// `None` unknown (or unsettled).
    fn portal(&self, name: &str) -> Option<Option<Arc<MaskedPortal>>> {
        if self.unsettled_portals.unsettled(name) {
            return None;
        }
        match self.portals.get(name) {
            Some(p) => Some(p.clone()),
            None => self.cursors.get(name).map(|c| c.portal.clone()),
        }
    }

    /// Whether backend messages need reading whole (some cause masks).
    pub fn active(&self) -> bool {
        self.masking
    }

    /// The client direction decided `frame` (a `Query` or `Parse` of `sql`)
    /// with `decision` and forwards it: what the backend direction will need.
    pub fn decided(&mut self, tag: u8, name: &str, sql: &str, decision: &Decision) -> Pending {
        let plan = MaskPlan::of(decision);
        let ddl = decision
            .statements
            .iter()
            .any(|s| s.class == "ddl" || s.classes.iter().any(|c| c == "ddl"));
        self.masking |= plan.is_some();
        let mut probes = Vec::new();
        let mut ops: Vec<Op> = if self.masking && results::may_have_ops(sql) {
            results::result_ops(sql)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, op)| match op {
                    ResultOp::CopyOut { probe, format } => match &plan {
                        Some(plan) => {
                            let shared = Arc::new(Probe::default());
                            let cause = Cause::Probe {
                                plan: plan.clone(),
                                statement: i,
                                binary: format == CopyFormat::Binary,
                                probe: shared.clone(),
                                sync: tag == codec::QUERY,
                                failed: false,
                            };
                            probes.push((probe_bytes(&probe, tag == codec::QUERY), cause));
                            Op::Copy {
                                format,
                                probe: shared,
                            }
                        }
                        None => Op::None,
                    },
                    ResultOp::Declare { name, hold } => Op::Declare { name, hold },
                    ResultOp::Fetch { name } => Op::Fetch { name },
                    ResultOp::Close(name) => Op::Close(name),
                    ResultOp::Other => Op::None,
                })
                .collect()
        } else {
            Vec::new()
        };
        // SQL PREPARE and DEALLOCATE, in the namespace `Bind` reads.
        for (i, s) in decision.statements.iter().enumerate() {
            match &s.deallocates {
                Some(Some(name)) => self.forget_statement(name),
                // DEALLOCATE ALL, DISCARD ALL (the unnamed statement is no
                // prepared statement of theirs).
                Some(None) => self.statements.retain(|n, _| n.is_empty()),
                None => {}
            }
            let Some((name, _)) = &s.prepares else {
                continue;
            };
            if tag == codec::QUERY {
                let stmt = plan
                    .as_ref()
                    .map(|p| MaskedStatement::new(p.of_statement(i), Op::None));
                self.name_statement(name, stmt, false);
                if ops.len() <= i {
                    ops.resize(i + 1, Op::None);
                }
                ops[i] = Op::Prepare { name: name.clone() };
            } else {
                // A PREPARE through the extended protocol runs at an Execute
                // Gatehouse does not follow it to: its name is masked blind.
                self.forget_statement(name);
            }
        }
        let cause = match tag {
            codec::PARSE => {
                let stmt = plan.map(|plan| {
                    MaskedStatement::new(plan, ops.into_iter().next().unwrap_or_default())
                });
                self.name_statement(name, stmt, ddl);
                Cause::Parse(name.to_owned())
            }
            _ => Cause::Query {
                plan,
                ddl,
                index: 0,
                rows: Rows::Undescribed,
                ops,
            },
        };
        Pending {
            cause: Some(cause),
            probes,
        }
    }

    /// The client direction forwards `tag` (`pending`: from [`Self::decided`]);
    /// `body` is the message body. Returns the bytes Gatehouse sends upstream
    /// just ahead of it (probes, a `Describe`), whose answers it swallows.
    pub fn sent(&mut self, sent: Sent, tag: u8, body: &[u8], pending: Pending) -> Option<BytesMut> {
        let mut ahead: Vec<(BytesMut, Cause)> = pending.probes;
        let cause = match (sent, pending.cause) {
            (_, Some(c)) if tag == codec::QUERY || tag == codec::PARSE => c,
            (Sent::Query { .. }, _) => Cause::Query {
                plan: None,
                ddl: false,
                index: 0,
                rows: Rows::Undescribed,
                ops: Vec::new(),
            },
            (Sent::Parse, _) => Cause::Parse(wire::cstr(body)),
            (Sent::FunctionCall { .. }, _) => Cause::Other,
            (Sent::Bind, _) => {
                let Some((portal, statement, formats)) = wire::bind_formats(body) else {
                    // Malformed: the server refuses it.
                    return self.push(ahead, Cause::Bind(String::new()));
                };
                let bound = match self.statement(&statement) {
                    Some(Some(s)) => Some(MaskedPortal::new(s, formats)),
                    Some(None) => None,
                    // A statement Gatehouse does not know: masked by origin
                    // only if the session masks.
                    None if self.masking => {
                        Some(MaskedPortal::new(MaskedStatement::blind(), formats))
                    }
                    None => None,
                };
                if self.ddl.contains(&statement) {
                    self.ddl_portals.insert(portal.clone());
                } else {
                    self.ddl_portals.remove(&portal);
                }
                if self.portals.len() < MAX_NAMES || self.portals.contains_key(&portal) {
                    self.portals.insert(portal.clone(), bound);
                } else {
                    // Untracked, its Execute must not find a cursor of the name.
                    self.cursors.remove(&portal);
                }
                Cause::Bind(portal)
            }
            (Sent::Describe, _) => match body.split_first() {
                Some((b'S', rest)) => {
                    let name = wire::cstr(rest);
                    Cause::DescribeStatement(self.statements.get(&name).cloned().flatten())
                }
                Some((_, rest)) => {
                    let name = wire::cstr(rest);
                    Cause::DescribePortal(self.portal(&name).flatten(), false)
                }
                None => Cause::Other,
            },
            (Sent::Execute { .. }, _) => {
                let name = codec::execute_portal(body)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let ddl = self.ddl_portals.contains(&name);
                match self.portal(&name) {
                    Some(p) => {
                        if let Some(p) = &p
                            && !matches!(p.statement.op, Op::Copy { .. })
                            && lock(&p.fields).is_none()
                            && lock(&p.statement.fields).is_none()
                        {
                            // Never described: Gatehouse describes the portal
                            // itself, so its rows are masked by their shape.
                            ahead.push((
                                describe_portal(&name),
                                Cause::DescribePortal(Some(p.clone()), true),
                            ));
                        }
                        Cause::Execute {
                            portal: p,
                            blind: false,
                            ddl,
                        }
                    }
                    // A portal Gatehouse does not know (past the bound, or
                    // unsettled): blind when masking.
                    None => Cause::Execute {
                        portal: None,
                        blind: self.masking,
                        ddl,
                    },
                }
            }
            (Sent::Close, _) => {
                match codec::close_target(body) {
                    Some((b'S', name)) => {
                        self.statements.remove(&*String::from_utf8_lossy(name));
                    }
                    Some((_, name)) => {
                        let name = String::from_utf8_lossy(name);
                        self.portals.remove(&*name);
                        // A SQL cursor is a portal too.
                        self.cursors.remove(&*name);
                    }
                    None => {}
                }
                Cause::Close
            }
            (Sent::Sync, _) => Cause::Sync,
        };
        if matches!(sent, Sent::Query { .. }) && tag == codec::QUERY {
            // A simple query drops the unnamed statement and portal.
            self.statements.remove("");
            self.portals.remove("");
        }
        self.push(ahead, cause)
    }

    /// Queues `cause` after the causes of `ahead`, and returns the bytes of
    /// `ahead`. Names `cause` creates are unsettled until it is answered.
    fn push(&mut self, ahead: Vec<(BytesMut, Cause)>, cause: Cause) -> Option<BytesMut> {
        if self.queue.len() + ahead.len() >= MAX_PENDING {
            self.overflowed = true;
            return None;
        }
        match &cause {
            Cause::Parse(name) => self.unsettled_statements.sent(name, false),
            Cause::Bind(name) => self.unsettled_portals.sent(name, false),
            Cause::Sync | Cause::Other | Cause::Query { .. } => {
                self.unsettled_statements.boundary();
                self.unsettled_portals.boundary();
            }
            _ => {}
        }
        for op in cause.creates() {
            match op {
                Op::Prepare { name } => self.unsettled_statements.sent(name, true),
                // A cursor is recorded when its DECLARE completes; until then
                // its name means nothing Gatehouse knows, whatever it meant.
                Op::Declare { name, .. } => {
                    self.portals.remove(name);
                    self.unsettled_portals.sent(name, true);
                }
                _ => {}
            }
        }
        let mut bytes: Option<BytesMut> = None;
        for (b, c) in ahead {
            bytes
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&b);
            self.queue.push_back(c);
        }
        self.queue.push_back(cause);
        bytes
    }

    /// Pops the front cause; `failed`: it failed or was skipped, so the names
    /// it would have created are forgotten (unless a later creation of the
    /// same name awaits its own answer).
    fn pop(&mut self, failed: bool) -> Option<Cause> {
        let cause = self.queue.pop_front()?;
        match &cause {
            Cause::Parse(name) => {
                let last = self.unsettled_statements.answered(name);
                if last && failed {
                    self.forget_statement(name);
                }
            }
            Cause::Bind(name) => {
                let last = self.unsettled_portals.answered(name);
                if last && failed {
                    self.portals.remove(name);
                }
            }
            _ => {}
        }
        for op in cause.creates() {
            match op {
                Op::Prepare { name } => {
                    self.unsettled_statements.answered(name);
                }
                Op::Declare { name, .. } => {
                    self.unsettled_portals.answered(name);
                }
                _ => {}
            }
        }
        Some(cause)
    }

    /// A whole backend message (`msg`: tag, length, body). `catalog` resolves
    /// field origins; `key` keys the hash method.
    pub fn backend(&mut self, msg: &[u8], catalog: &Catalog, key: &[u8]) -> Action {
        let tag = msg[0];
        let body = &msg[5..];
        if let Some(Cause::Probe { .. }) = self.queue.front() {
            return self.probe(tag, body, catalog);
        }
        match tag {
            b'1' | b'2' | b'3' => {
                self.pop(false);
                Action::Pass
            }
            b'T' => self.row_description(body, catalog),
            b'n' => match self.queue.front() {
                Some(Cause::DescribePortal(_, true)) => {
                    self.queue.pop_front();
                    Action::Swallow
                }
                Some(Cause::DescribeStatement(_) | Cause::DescribePortal(..)) => {
                    self.queue.pop_front();
                    Action::Pass
                }
                _ => Action::Pass,
            },
            b'D' => self.data_row(msg, key),
            b'H' => {
                self.copy_out(body);
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
                if tag == b'C' {
                    self.completed(&wire::cstr(body));
                }
                match self.queue.front_mut() {
                    Some(Cause::Query {
                        index, rows, ddl, ..
                    }) => {
                        *index += 1;
                        *rows = Rows::Undescribed;
                        if *ddl {
                            catalog.invalidate();
                        }
                    }
                    Some(Cause::Execute { ddl, .. }) => {
                        if *ddl {
                            catalog.invalidate();
                        }
                        self.pop(false);
                    }
                    _ => {}
                }
                Action::Pass
            }
            b's' => {
                if matches!(self.queue.front(), Some(Cause::Execute { .. })) {
                    self.pop(false);
                }
                Action::Pass
            }
            b'E' | b'N' => {
                let masked = self.queue.front().is_some_and(Cause::masked);
                if tag == b'E' {
                    self.copy = None;
                    self.copy_withheld = false;
                    match self.queue.front() {
                        Some(Cause::Query { ops, index, .. }) => {
                            // What the rest of the text would have prepared
                            // never was: the names mean what they meant, or
                            // nothing.
                            let names: Vec<String> = ops
                                .iter()
                                .skip(*index)
                                .filter_map(|op| match op {
                                    Op::Prepare { name } => Some(name.clone()),
                                    _ => None,
                                })
                                .collect();
                            for name in names {
                                self.forget_statement(&name);
                            }
                        }
                        Some(Cause::Other | Cause::Sync) | None => {}
                        Some(_) => {
                            self.pop(true);
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
                // Causes still queued before the Sync got no answer: the
                // server skipped them after an error.
                while let Some(front) = self.queue.front() {
                    let end = matches!(front, Cause::Query { .. } | Cause::Other | Cause::Sync);
                    if let Some(Cause::Query { ddl: true, .. }) = self.pop(!end) {
                        catalog.invalidate();
                    }
                    if end {
                        break;
                    }
                }
                if body.first() == Some(&b'I') {
                    // Out of any transaction: cursors without hold are gone,
                    // those with hold are committed.
                    self.cursors.retain(|_, c| c.hold);
                    for c in self.cursors.values_mut() {
                        c.committed = true;
                    }
                }
                Action::Pass
            }
            _ => Action::Pass,
        }
    }

    /// An answer to Gatehouse's own probe (the front cause).
    fn probe(&mut self, tag: u8, body: &[u8], catalog: &Catalog) -> Action {
        let Some(Cause::Probe {
            plan,
            statement,
            binary,
            probe,
            sync,
            failed,
        }) = self.queue.front_mut()
        else {
            return Action::Pass;
        };
        match tag {
            b'T' => {
                let Some(mut fields) = wire::row_description(body) else {
                    return Action::Swallow;
                };
                if let Some(missing) = missing_relations(&fields, catalog) {
                    return Action::Lookup(missing);
                }
                resolve_origins(&mut fields, plan, catalog);
                let format = [i16::from(*binary)];
                let masks = field_masks(&fields, Some(&format), plan, *statement);
                *lock(&probe.masks) = Some(masks);
                Action::Swallow
            }
            b'n' => {
                *lock(&probe.masks) = Some(Vec::new());
                Action::Swallow
            }
            b'3' if !*sync => {
                self.queue.pop_front();
                Action::Swallow
            }
            b'Z' => {
                self.queue.pop_front();
                Action::Swallow
            }
            b'E' if *sync || *failed => {
                // The COPY's columns stay unknown: all NULL. The COPY itself
                // runs (or fails) on its own.
                *failed = true;
                Action::Swallow
            }
            b'E' => {
                // Ahead of an extended-protocol message: the server now skips
                // to the client's Sync, so this error stands for that
                // message's (scrubbed: it may quote the query).
                self.queue.pop_front();
                Action::Replace(wire::scrub_error(tag, body))
            }
            // ParseComplete, ParameterDescription, CloseComplete, notices.
            _ => Action::Swallow,
        }
    }

    /// A `RowDescription`: each column's mask, for the rows that follow.
    fn row_description(&mut self, body: &[u8], catalog: &Catalog) -> Action {
        let Some(front) = self.queue.front_mut() else {
            return Action::Pass;
        };
        let swallow = matches!(front, Cause::DescribePortal(_, true));
        let done = |q: &mut VecDeque<Cause>| {
            q.pop_front();
            if swallow {
                Action::Swallow
            } else {
                Action::Pass
            }
        };
        if !front.masked() {
            if matches!(
                front,
                Cause::DescribeStatement(_) | Cause::DescribePortal(..)
            ) {
                return done(&mut self.queue);
            }
            return Action::Pass;
        }
        // A FETCH reads with its cursor's plan (`None`: a cursor Gatehouse
        // does not know).
        let fetch = match &*front {
            Cause::Query { ops, index, .. } => match ops.get(*index) {
                Some(Op::Fetch { name }) => Some(self.cursors.get(name).map(Cursor::plan)),
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
            (None, Cause::DescribePortal(Some(p), _)) => (Some(p.statement.plan.clone()), 0),
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
                Action::Pass
            }
            Cause::DescribeStatement(Some(s)) => {
                *lock(&s.fields) = Some(Arc::new(fields));
                done(&mut self.queue)
            }
            Cause::DescribePortal(Some(p), _) => {
                *lock(&p.fields) = Some(Arc::new(fields));
                done(&mut self.queue)
            }
            _ => Action::Pass,
        }
    }

    /// A `CopyOutResponse`: the COPY's rows are masked from here to `CopyDone`.
    fn copy_out(&mut self, body: &[u8]) {
        self.copy = None;
        self.copy_withheld = false;
        let Some(front) = self.queue.front() else {
            return;
        };
        if !front.masked() {
            return;
        }
        let columns = body.get(1..3).map_or(0, |n| {
            usize::try_from(i16::from_be_bytes([n[0], n[1]])).unwrap_or(0)
        });
        match front.op() {
            Some(Op::Copy { format, probe }) => {
                let masks = lock(&probe.masks).clone();
                self.copy = Some(CopyOut::new(format.clone(), columns, masks.as_deref()));
            }
            // A COPY Gatehouse did not recognise under a mask: its format and
            // columns are unknown, so none of its rows is shown.
            _ => self.copy_withheld = true,
        }
    }

    /// A statement completed with command tag `tag`: cursors opened or closed.
    fn completed(&mut self, tag: &str) {
        let Some(front) = self.queue.front() else {
            return;
        };
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
            // Past the bound, a cursor is not kept: its rows are then NULL.
            Some(Op::Declare { name, hold })
                if self.cursors.len() < MAX_NAMES || self.cursors.contains_key(&name) =>
            {
                // An Execute of the cursor's portal is masked like a FETCH.
                let portal =
                    plan.map(|p| MaskedPortal::new(MaskedStatement::new(p, Op::None), Vec::new()));
                self.cursors.insert(
                    name,
                    Cursor {
                        portal,
                        hold,
                        committed: false,
                    },
                );
            }
            Some(Op::Close(Some(name))) => {
                self.cursors.remove(&name);
            }
            Some(Op::Close(None)) => self.cursors.clear(),
            _ => {}
        }
        if tag == "ROLLBACK" {
            // Cursors of the rolled-back work are gone (those of an outer
            // savepoint too, as far as Gatehouse knows: their rows are then NULL).
            self.cursors.retain(|_, c| c.hold && c.committed);
        }
    }

    fn data_row(&mut self, msg: &[u8], key: &[u8]) -> Action {
        if self.overflowed && self.masking {
            return Action::Replace(wire::all_null(msg));
        }
        let Some(front) = self.queue.front() else {
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
                    Op::Fetch { name } => match self.cursors.get(name).map(Cursor::plan) {
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Relations of `fields` the catalog does not hold yet.
fn missing_relations(fields: &[Field], catalog: &Catalog) -> Option<Vec<u32>> {
    let missing: Vec<u32> = fields
        .iter()
        .filter(|f| f.table != 0 && catalog.get(f.table).is_none())
        .map(|f| f.table)
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// What the relay does with one backend message.
pub enum Backend {
    /// Forward it (the tracker sees it).
    Pass,
    /// Send these bytes instead (the tracker sees the original).
    Replace(BytesMut),
    /// Neither the client nor the tracker sees it.
    Swallow,
}

/// Hands one backend message (whole when masking reads it, else its header)
/// to the session's masker, looking relations up in the catalog when it asks.
/// Cancel safety: dropping it mid-look-up loses only the look-up (the masker
/// changes nothing before it completes).
pub async fn backend(
    masker: &Mutex<SessionMasker>,
    catalog: &Catalog,
    masking: &Masking,
    msg: &[u8],
) -> Backend {
    loop {
        let action = lock(masker).backend(msg, catalog, masking.key());
        match action {
            Action::Pass => return Backend::Pass,
            Action::Replace(bytes) => return Backend::Replace(bytes),
            Action::Swallow => return Backend::Swallow,
            Action::Lookup(oids) => {
                if let Err(e) = catalog.load(&oids).await {
                    // Fail closed: columns of relations not found are NULL.
                    tracing::warn!(error = %e, "masking_catalog_lookup_failed");
                    catalog.mark_unknown(&oids);
                }
            }
        }
    }
}

/// Each field's mask: from its origin column or the decider's output lineage,
/// the strictest of both; with the format it travels in.
fn field_masks(
    fields: &[Field],
    formats: Option<&[i16]>,
    plan: &MaskPlan,
    statement: usize,
) -> Vec<ColMask> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let by_output = plan.output_method(statement, i);
            let method = strictest(
                [
                    f.origin_method.as_ref(),
                    by_output.as_ref(),
                    plan.detect.as_ref(),
                ]
                .into_iter()
                .flatten(),
            )?;
            let binary = match formats {
                None => f.format == 1,
                Some([]) => false,
                Some([one]) => *one == 1,
                Some(all) => all.get(i).is_some_and(|x| *x == 1),
            };
            let kind = Kind::of(f.type_oid, binary);
            // Detectors scan text; a value of another type is left alone.
            if matches!(method, MaskMethod::Detect { .. }) && kind != Kind::Text {
                return None;
            }
            Some((method, kind))
        })
        .collect()
}

/// Sets each field's origin method from the catalog.
fn resolve_origins(fields: &mut [Field], plan: &MaskPlan, catalog: &Catalog) {
    for f in fields.iter_mut() {
        if f.table == 0 {
            continue;
        }
        let Some(rel) = catalog.get(f.table).filter(|r| r.kind != '?') else {
            // Looked up just before; gone only if invalidated meanwhile: mask.
            f.origin_method = Some(MaskMethod::Null);
            continue;
        };
        let own = rel
            .columns
            .get(&f.column)
            .and_then(|c| plan.column_method(&rel.schema, &rel.name, c));
        // A view column: masked when the view reads any masked column.
        let through_view: Vec<MaskMethod> = rel
            .reads
            .iter()
            .filter_map(|(s, t, c)| plan.column_method(s, t, c))
            .collect();
        f.origin_method = strictest(own.iter().chain(&through_view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_unsettled_once_a_sync_follows_its_unanswered_creation() {
        let mut u = Unsettled::default();
        // Parse; Bind in the same batch: the record stands (were the Parse
        // to fail, the Bind would be skipped).
        u.sent("s", false);
        assert!(!u.unsettled("s"));
        // After a Sync, the Parse still unanswered: its record may be stale.
        u.boundary();
        assert!(u.unsettled("s"));
        // A newer creation in the next batch: the record is that one's.
        u.sent("s", false);
        assert!(!u.unsettled("s"));
        assert!(!u.answered("s"), "one creation is still unanswered");
        assert!(u.answered("s"));
        assert!(!u.unsettled("s"));
        // Recorded only once answered (DECLARE): unsettled at once.
        u.sent("c", true);
        assert!(u.unsettled("c"));
        assert!(u.answered("c"));
        assert!(!u.unsettled("c"));
    }
}
