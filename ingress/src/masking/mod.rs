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

pub mod catalog;
pub mod method;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use gatehouse_schemas::decision::{Decision, MaskColumn, MaskMethod, MaskOutput};
use wildmatch::WildMatch;

use crate::codec;
use crate::config::Secret;
use crate::tracker::Sent;
use crate::upstream::UpstreamTarget;
use catalog::Catalog;
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
    columns: Vec<(WildMatch, WildMatch, WildMatch, MaskColumn)>,
    outputs: Vec<MaskOutput>,
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
        Some(Arc::new(MaskPlan {
            columns,
            outputs: outputs.to_vec(),
        }))
    }

    /// The strictest method masking `schema.table.column`, if any.
    fn column_method(&self, schema: &str, table: &str, column: &str) -> Option<&MaskMethod> {
        self.columns
            .iter()
            .filter(|(s, t, c, _)| s.matches(schema) && t.matches(table) && c.matches(column))
            .map(|(.., m)| &m.method)
            .max_by_key(|m| m.strictness())
    }

    fn output_method(&self, statement: usize, position: usize) -> Option<&MaskMethod> {
        self.outputs
            .iter()
            .filter(|o| o.statement as usize == statement && o.position as usize == position)
            .map(|o| &o.method)
            .max_by_key(|m| m.strictness())
    }
}

/// A statement prepared with `Parse` under a mask verdict.
#[derive(Debug)]
struct MaskedStatement {
    plan: Arc<MaskPlan>,
    /// Its row shape, from the answer to a `Describe` of it, with each field's
    /// column mask resolved.
    fields: Mutex<Option<Arc<Vec<Field>>>>,
}

/// A portal bound to a masked statement.
#[derive(Debug)]
struct MaskedPortal {
    statement: Arc<MaskedStatement>,
    /// Result format codes of the `Bind`.
    formats: Vec<i16>,
    /// Its row shape, from the answer to a `Describe` of the portal.
    fields: Mutex<Option<Arc<Vec<Field>>>>,
}

/// What a forwarded client message needs the backend direction to know.
#[derive(Debug)]
enum Cause {
    Query {
        plan: Option<Arc<MaskPlan>>,
        ddl: bool,
        /// Which statement of the text the next result belongs to.
        index: usize,
        fields: Option<Arc<Vec<Field>>>,
    },
    Parse,
    Bind,
    DescribeStatement(Option<Arc<MaskedStatement>>),
    DescribePortal(Option<Arc<MaskedPortal>>),
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
            Self::Query { plan, .. } => plan.is_some(),
            Self::Execute { portal, blind, .. } => portal.is_some() || *blind,
            Self::DescribeStatement(s) => s.is_some(),
            Self::DescribePortal(p) => p.is_some(),
            Self::Parse | Self::Bind | Self::Close | Self::Sync | Self::Other => false,
        }
    }
}

/// What the client direction knows when it forwards a message.
#[derive(Debug, Default)]
pub struct Pending(Option<Cause>);

/// What the backend direction does with one backend message.
#[derive(Debug)]
pub enum Action {
    /// Forward it as it came.
    Pass,
    /// Send these bytes instead.
    Replace(BytesMut),
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
    /// More than [`MAX_PENDING`] messages awaited answers: pairing is lost for
    /// the rest of the session, so a masking session's rows are all NULL.
    overflowed: bool,
    skipping: bool,
}

/// Names beyond this are not tracked; their executions are masked blind.
const MAX_NAMES: usize = 10_000;
/// Messages awaiting an answer (as the tracker's bound).
const MAX_PENDING: usize = 100_000;

impl SessionMasker {
    /// Whether backend messages need reading whole (some cause masks).
    pub fn active(&self) -> bool {
        self.masking
    }

    /// The client direction decided `frame` (a `Query` or `Parse`) with
    /// `decision` and forwards it: what the backend direction will need.
    pub fn decided(&mut self, tag: u8, name: &str, decision: &Decision) -> Pending {
        let plan = MaskPlan::of(decision);
        let ddl = decision.statements.iter().any(|s| s.class == "ddl");
        self.masking |= plan.is_some();
        match tag {
            codec::PARSE => {
                let stmt = plan.map(|plan| {
                    Arc::new(MaskedStatement {
                        plan,
                        fields: Mutex::new(None),
                    })
                });
                if self.statements.len() < MAX_NAMES || self.statements.contains_key(name) {
                    self.statements.insert(name.to_owned(), stmt);
                } else if stmt.is_some() {
                    self.statements.remove(name);
                }
                // A prepared DDL statement: its Execute empties the catalog.
                if ddl {
                    self.ddl.insert(name.to_owned());
                } else {
                    self.ddl.remove(name);
                }
                Pending(Some(Cause::Parse))
            }
            _ => Pending(Some(Cause::Query {
                plan,
                ddl,
                index: 0,
                fields: None,
            })),
        }
    }

    /// The client direction forwards `tag` (`pending`: from [`Self::decided`]);
    /// `body` is the message body.
    pub fn sent(&mut self, sent: Sent, tag: u8, body: &[u8], pending: Pending) {
        let cause = match (sent, pending.0) {
            (_, Some(c)) if tag == codec::QUERY || tag == codec::PARSE => c,
            (Sent::Query { .. }, _) => Cause::Query {
                plan: None,
                ddl: false,
                index: 0,
                fields: None,
            },
            (Sent::Parse, _) => Cause::Parse,
            (Sent::FunctionCall { .. }, _) => Cause::Other,
            (Sent::Bind, _) => {
                if let Some((portal, statement, formats)) = wire::bind_formats(body) {
                    let bound = match self.statements.get(&statement) {
                        Some(Some(s)) => Some(Arc::new(MaskedPortal {
                            statement: s.clone(),
                            formats,
                            fields: Mutex::new(None),
                        })),
                        Some(None) => None,
                        // A statement not prepared through this gateway (SQL
                        // PREPARE): masked blind if the session masks.
                        None if self.masking => Some(Arc::new(MaskedPortal {
                            statement: Arc::new(MaskedStatement {
                                plan: Arc::new(MaskPlan {
                                    columns: Vec::new(),
                                    outputs: Vec::new(),
                                }),
                                fields: Mutex::new(None),
                            }),
                            formats,
                            fields: Mutex::new(None),
                        })),
                        None => None,
                    };
                    if self.ddl.contains(&statement) {
                        self.ddl_portals.insert(portal.clone());
                    } else {
                        self.ddl_portals.remove(&portal);
                    }
                    if self.portals.len() < MAX_NAMES || self.portals.contains_key(&portal) {
                        self.portals.insert(portal, bound);
                    }
                }
                Cause::Bind
            }
            (Sent::Describe, _) => match body.split_first() {
                Some((b'S', rest)) => {
                    let name = wire::cstr(rest);
                    Cause::DescribeStatement(self.statements.get(&name).cloned().flatten())
                }
                Some((_, rest)) => {
                    let name = wire::cstr(rest);
                    Cause::DescribePortal(self.portals.get(&name).cloned().flatten())
                }
                None => Cause::Other,
            },
            (Sent::Execute { .. }, _) => {
                let name = codec::execute_portal(body)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let ddl = self.ddl_portals.contains(&name);
                match self.portals.get(&name) {
                    Some(p) => Cause::Execute {
                        portal: p.clone(),
                        blind: false,
                        ddl,
                    },
                    // A cursor's portal or one past the bound: blind when masking.
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
                        self.portals.remove(&*String::from_utf8_lossy(name));
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
        if self.queue.len() >= MAX_PENDING {
            self.overflowed = true;
            return;
        }
        self.queue.push_back(cause);
    }

    /// A whole backend message (`msg`: tag, length, body). `catalog` resolves
    /// field origins; `key` keys the hash method.
    pub fn backend(&mut self, msg: &[u8], catalog: &Catalog, key: &[u8]) -> Action {
        let tag = msg[0];
        let body = &msg[5..];
        match tag {
            b'1' | b'2' | b'3' => {
                self.queue.pop_front();
                Action::Pass
            }
            b'T' => {
                let Some(front) = self.queue.front_mut() else {
                    return Action::Pass;
                };
                if !front.masked() {
                    if matches!(
                        front,
                        Cause::DescribeStatement(_) | Cause::DescribePortal(_)
                    ) {
                        self.queue.pop_front();
                    }
                    return Action::Pass;
                }
                let Some(mut fields) = wire::row_description(body) else {
                    return Action::Pass;
                };
                let missing: Vec<u32> = fields
                    .iter()
                    .filter(|f| f.table != 0 && catalog.get(f.table).is_none())
                    .map(|f| f.table)
                    .collect();
                if !missing.is_empty() {
                    return Action::Lookup(missing);
                }
                let plan = match &*front {
                    Cause::Query { plan, .. } => plan.clone(),
                    Cause::DescribeStatement(Some(s)) => Some(s.plan.clone()),
                    Cause::DescribePortal(Some(p)) => Some(p.statement.plan.clone()),
                    _ => None,
                };
                if let Some(plan) = &plan {
                    resolve_origins(&mut fields, plan, catalog);
                }
                let fields = Arc::new(fields);
                match front {
                    Cause::Query { fields: f, .. } => *f = Some(fields),
                    Cause::DescribeStatement(Some(s)) => {
                        *s.fields.lock().unwrap_or_else(|p| p.into_inner()) = Some(fields);
                        self.queue.pop_front();
                    }
                    Cause::DescribePortal(Some(p)) => {
                        *p.fields.lock().unwrap_or_else(|p| p.into_inner()) = Some(fields);
                        self.queue.pop_front();
                    }
                    _ => {}
                }
                Action::Pass
            }
            b'n' => {
                if matches!(
                    self.queue.front(),
                    Some(Cause::DescribeStatement(_) | Cause::DescribePortal(_))
                ) {
                    self.queue.pop_front();
                }
                Action::Pass
            }
            b'D' => self.data_row(msg, key),
            b'C' | b'I' => {
                match self.queue.front_mut() {
                    Some(Cause::Query {
                        index, fields, ddl, ..
                    }) => {
                        *index += 1;
                        *fields = None;
                        if *ddl {
                            catalog.invalidate();
                        }
                    }
                    Some(Cause::Execute { ddl, .. }) => {
                        if *ddl {
                            catalog.invalidate();
                        }
                        self.queue.pop_front();
                    }
                    _ => {}
                }
                Action::Pass
            }
            b's' => {
                if matches!(self.queue.front(), Some(Cause::Execute { .. })) {
                    self.queue.pop_front();
                }
                Action::Pass
            }
            b'E' | b'N' => {
                let masked = self.queue.front().is_some_and(Cause::masked);
                if tag == b'E' {
                    match self.queue.front() {
                        Some(Cause::Query { .. } | Cause::Other | Cause::Sync) | None => {}
                        Some(_) => {
                            self.queue.pop_front();
                            self.skipping = true;
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
                while let Some(c) = self.queue.pop_front() {
                    match c {
                        Cause::Query { ddl, .. } => {
                            if ddl {
                                catalog.invalidate();
                            }
                            break;
                        }
                        Cause::Other | Cause::Sync => break,
                        _ => {}
                    }
                }
                self.skipping = false;
                Action::Pass
            }
            _ => Action::Pass,
        }
    }

    fn data_row(&mut self, msg: &[u8], key: &[u8]) -> Action {
        if self.overflowed && self.masking {
            return Action::Replace(wire::all_null(msg));
        }
        let Some(front) = self.queue.front() else {
            return Action::Pass;
        };
        let masks: Vec<Option<(MaskMethod, Kind)>> = match front {
            Cause::Query {
                plan: Some(plan),
                index,
                fields,
                ..
            } => match fields {
                Some(f) => field_masks(f, None, plan, *index),
                // Rows without a description (a FETCH of a binary cursor...):
                // nothing is known, so nothing is shown.
                None => return Action::Replace(wire::all_null(msg)),
            },
            Cause::Execute {
                portal: Some(p), ..
            } => {
                let from_portal = p.fields.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let (fields, formats) = match from_portal {
                    Some(f) => (Some(f), None),
                    None => (
                        p.statement
                            .fields
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone(),
                        Some(&p.formats[..]),
                    ),
                };
                match fields {
                    Some(f)
                        if !p.statement.plan.columns.is_empty()
                            || !p.statement.plan.outputs.is_empty() =>
                    {
                        field_masks(&f, formats, &p.statement.plan, 0)
                    }
                    _ => return Action::Replace(wire::all_null(msg)),
                }
            }
            Cause::Execute { blind: true, .. } => return Action::Replace(wire::all_null(msg)),
            _ => return Action::Pass,
        };
        match wire::rewrite_data_row(msg, &masks, key) {
            Some(out) => Action::Replace(out),
            None => Action::Pass,
        }
    }
}

/// Hands one backend message (whole when masking reads it, else its header)
/// to the session's masker, looking relations up in the catalog when it asks.
/// `Some`: the bytes to send instead. Cancel safety: dropping it mid-look-up
/// loses only the look-up (the masker changes nothing before it completes).
pub async fn backend(
    masker: &Mutex<SessionMasker>,
    catalog: &Catalog,
    masking: &Masking,
    msg: &[u8],
) -> Option<BytesMut> {
    loop {
        let action =
            masker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .backend(msg, catalog, masking.key());
        match action {
            Action::Pass => return None,
            Action::Replace(bytes) => return Some(bytes),
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
) -> Vec<Option<(MaskMethod, Kind)>> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let by_output = plan.output_method(statement, i);
            let method = [f.origin_method.as_ref(), by_output]
                .into_iter()
                .flatten()
                .max_by_key(|m| m.strictness())?;
            let binary = match formats {
                None => f.format == 1,
                Some([]) => false,
                Some([one]) => *one == 1,
                Some(all) => all.get(i).is_some_and(|x| *x == 1),
            };
            Some((method.clone(), Kind::of(f.type_oid, binary)))
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
        let through_view = rel
            .reads
            .iter()
            .filter_map(|(s, t, c)| plan.column_method(s, t, c))
            .max_by_key(|m| m.strictness());
        f.origin_method = [own, through_view]
            .into_iter()
            .flatten()
            .max_by_key(|m| m.strictness())
            .cloned();
    }
}
