//! The session's names, in one registry: prepared statements (`Parse` and SQL
//! `PREPARE` share a namespace, as in PostgreSQL), portals (`Bind`) and SQL
//! cursors (a cursor is a portal an `Execute` can fetch from). Each name holds
//! everything the gateway knows about it, for every concern at once: the text
//! and verdict it runs (evidence, approvals), its mask (masking), and the row
//! description a `Describe` of it answered (result capture).
//!
//! Names are recorded as the client direction decides and sends what creates
//! them; should a creation fail upstream, the name still means its old object
//! there (or nothing). Within the creation's own batch that does not matter
//! (after an error the server skips to the `Sync`), so a name is *unsettled*
//! only once a `Sync` (or a simple query) follows an unanswered creation of
//! it: masking then cannot be sure of it and masks its rows blind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gatehouse_schemas::decision::Decision;
use gatehouse_schemas::evidence::Param;

use crate::evidence::capture::Columns;
use crate::masking::objects::{Cursor, MaskedPortal, MaskedStatement};

/// Names of each kind a session may hold; past this, new ones are not
/// tracked (an `Execute` of them is recorded without its text, and masked
/// blind).
pub const MAX_NAMES: usize = 10_000;

/// What the gateway knows of a name's mask.
#[derive(Debug)]
pub enum Mask<T> {
    /// Nothing: in a session that masks, its rows are masked blind.
    Unknown,
    /// Not masked.
    Clear,
    /// Masked so.
    Masked(Arc<T>),
}

impl<T> Clone for Mask<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Unknown => Self::Unknown,
            Self::Clear => Self::Clear,
            Self::Masked(m) => Self::Masked(m.clone()),
        }
    }
}

impl<T> Mask<T> {
    /// `Some(None)`: not masked; `Some(Some)`: masked; `None`: unknown.
    pub fn known(&self) -> Option<Option<Arc<T>>> {
        match self {
            Self::Unknown => None,
            Self::Clear => Some(None),
            Self::Masked(m) => Some(Some(m.clone())),
        }
    }

    /// From what masking decided (`None`: not masked).
    pub fn of(masked: Option<Arc<T>>) -> Self {
        masked.map_or(Self::Clear, Self::Masked)
    }
}

/// What a prepared statement runs, as evidence and approvals name it.
#[derive(Debug)]
pub struct Prepared {
    /// Its SQL.
    pub sql: String,
    /// Its verdict; `None` for a statement prepared with SQL `PREPARE` (decided then).
    pub decision: Option<Arc<Decision>>,
    /// The approval a held `Parse` ran under, whether an `Execute` used it (an
    /// approval authorizes one execution), and the digest of the parameters it
    /// was approved with when they were bound before the approval.
    pub approval: Option<Approval>,
}

/// An approval a prepared statement runs under.
#[derive(Debug)]
pub struct Approval {
    /// The approval request's id.
    pub id: String,
    /// Whether an `Execute` used it.
    pub used: AtomicBool,
    /// The digest of the parameters approved with it, if they were known.
    pub params: Option<[u8; 32]>,
}

/// A prepared statement.
#[derive(Debug)]
pub struct Statement {
    /// What it runs.
    pub prepared: Arc<Prepared>,
    /// Made by SQL `PREPARE` (not `Parse`).
    pub sql_prepare: bool,
    /// Its mask.
    pub mask: Mask<MaskedStatement>,
    /// Its `Execute` runs DDL: it empties the catalog.
    pub ddl: bool,
    /// Result capture: its columns, from the answer to a `Describe` of it.
    pub columns: Option<Arc<Columns>>,
}

/// A portal bound with `Bind`.
#[derive(Debug)]
pub struct Portal {
    /// The statement it runs (`None`: a statement the gateway does not know).
    pub prepared: Option<Arc<Prepared>>,
    /// The name of that statement.
    pub statement: String,
    /// Its parameters as evidence records them.
    pub params: Vec<Param>,
    /// The digest of its parameter values, when its statement runs under an approval.
    pub digest: Option<[u8; 32]>,
    /// Its result format codes.
    pub formats: Arc<[i16]>,
    /// Its mask.
    pub mask: Mask<MaskedPortal>,
    /// Its `Execute` runs DDL.
    pub ddl: bool,
    /// Result capture: its columns, from the answer to a `Describe` of it.
    pub columns: Option<Arc<Columns>>,
}

/// Creations of names sent and not answered yet (see the module's doc).
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

/// The registry.
#[derive(Debug, Default)]
pub struct Names {
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
    /// SQL cursors declared through the gateway, kept as their `DECLARE` and
    /// `CLOSE` complete.
    cursors: HashMap<String, Cursor>,
    /// SQL-`PREPARE`d statements, name to inner SQL: what the decider reads to
    /// decide `EXECUTE name` as what it runs.
    sql_prepared: Arc<BTreeMap<String, String>>,
    unsettled_statements: Unsettled,
    unsettled_portals: Unsettled,
}

impl Names {
    /// The prepared statement `name`.
    pub fn statement(&self, name: &str) -> Option<&Statement> {
        self.statements.get(name)
    }

    /// Whether another statement name may be created.
    pub fn statement_room(&self, name: &str) -> bool {
        self.statements.len() < MAX_NAMES || self.statements.contains_key(name)
    }

    /// Names statement `name` (past the bound: not recorded, its binds are
    /// masked blind). Result capture keeps the columns a `Describe` gave
    /// while the text stays the same.
    pub fn name_statement(&mut self, name: &str, mut statement: Statement) {
        if !self.statement_room(name) {
            return;
        }
        if let Some(old) = self.statements.get(name)
            && old.prepared.sql == statement.prepared.sql
            && statement.columns.is_none()
        {
            statement.columns = old.columns.clone();
        }
        self.statements.insert(name.to_owned(), statement);
    }

    /// Statement `name` runs under an approval from now on (`prepared`: its
    /// text, verdict and approval); what else is known of it stays.
    pub fn approve_statement(&mut self, name: &str, prepared: Arc<Prepared>) {
        match self.statements.get_mut(name) {
            Some(s) => s.prepared = prepared,
            None => self.name_statement(
                name,
                Statement {
                    prepared,
                    sql_prepare: false,
                    mask: Mask::Unknown,
                    ddl: false,
                    columns: None,
                },
            ),
        }
    }

    /// The statement `name` as masking may rely on it: `Some(None)` not
    /// masked, `None` unknown (or unsettled).
    pub fn statement_mask(&self, name: &str) -> Option<Option<Arc<MaskedStatement>>> {
        if self.unsettled_statements.unsettled(name) {
            return None;
        }
        self.statements.get(name)?.mask.known()
    }

    /// Whether `Execute`s of statement `name` run DDL.
    pub fn statement_ddl(&self, name: &str) -> bool {
        self.statements.get(name).is_some_and(|s| s.ddl)
    }

    /// Masking no longer knows what statement `name` means (its creation
    /// failed, or a SQL `PREPARE` of it ran where the gateway could not
    /// follow): its binds are masked blind until it is named again.
    pub fn forget_statement_mask(&mut self, name: &str) {
        if let Some(s) = self.statements.get_mut(name) {
            s.mask = Mask::Unknown;
            s.ddl = false;
        }
    }

    /// `Close` of statement `name`, or `DEALLOCATE name`.
    pub fn close_statement(&mut self, name: &str) {
        self.statements.remove(name);
    }

    /// `DEALLOCATE ALL`, `DISCARD ALL`: every named statement goes (the
    /// unnamed one is no prepared statement of theirs).
    pub fn close_named_statements(&mut self) {
        self.statements.retain(|n, _| n.is_empty());
    }

    /// Result capture: statement `name` was described with `columns`.
    pub fn describe_statement(&mut self, name: &str, columns: Arc<Columns>) {
        if let Some(s) = self.statements.get_mut(name) {
            s.columns = Some(columns);
        }
    }

    /// The SQL-`PREPARE`d statements, for the decider.
    pub fn sql_prepared(&self) -> Arc<BTreeMap<String, String>> {
        self.sql_prepared.clone()
    }

    /// An allowed SQL `PREPARE name AS inner`.
    pub fn sql_prepare(&mut self, name: &str, inner: &str) {
        if self.sql_prepared.len() < MAX_NAMES || self.sql_prepared.contains_key(name) {
            Arc::make_mut(&mut self.sql_prepared).insert(name.to_owned(), inner.to_owned());
        }
    }

    /// An allowed `DEALLOCATE name` (`None`: `ALL`, `DISCARD ALL`).
    pub fn sql_deallocate(&mut self, name: Option<&str>) {
        match name {
            Some(n) => {
                if self.sql_prepared.contains_key(n) {
                    Arc::make_mut(&mut self.sql_prepared).remove(n);
                }
            }
            None => {
                if !self.sql_prepared.is_empty() {
                    self.sql_prepared = Arc::default();
                }
            }
        }
    }

    /// The portal `name`.
    pub fn portal(&self, name: &str) -> Option<&Portal> {
        self.portals.get(name)
    }

    /// Whether another portal name may be created.
    pub fn portal_room(&self, name: &str) -> bool {
        self.portals.len() < MAX_NAMES || self.portals.contains_key(name)
    }

    /// Binds portal `name` (past the bound: not recorded; a SQL cursor of the
    /// name is forgotten, so its `Execute` finds neither and is masked blind).
    pub fn bind(&mut self, name: &str, portal: Portal) {
        if self.portal_room(name) {
            self.portals.insert(name.to_owned(), portal);
        } else {
            self.cursors.remove(name);
        }
    }

    /// The portal `name` as masking may rely on it: a bound one, else a SQL
    /// cursor of that name (they share a namespace); `Some(None)` not masked,
    /// `None` unknown (or unsettled).
    pub fn portal_mask(&self, name: &str) -> Option<Option<Arc<MaskedPortal>>> {
        if self.unsettled_portals.unsettled(name) {
            return None;
        }
        match self.portals.get(name) {
            Some(p) => p.mask.known(),
            None => self.cursors.get(name).map(|c| c.portal.clone()),
        }
    }

    /// Whether `Execute`s of portal `name` run DDL.
    pub fn portal_ddl(&self, name: &str) -> bool {
        self.portals.get(name).is_some_and(|p| p.ddl)
    }

    /// `Close` of portal `name` (a SQL cursor is a portal too).
    pub fn close_portal(&mut self, name: &str) {
        self.portals.remove(name);
        self.cursors.remove(name);
    }

    /// A simple query drops the unnamed statement and portal.
    pub fn simple_query(&mut self) {
        self.statements.remove("");
        self.portals.remove("");
    }

    /// Result capture: portal `name` was described with `columns`.
    pub fn describe_portal(&mut self, name: &str, columns: Arc<Columns>) {
        if let Some(p) = self.portals.get_mut(name) {
            p.columns = Some(columns);
        }
    }

    /// The columns that name the rows of an `Execute` of portal `name`: those
    /// of a `Describe` of the portal, else of its statement.
    pub fn execute_columns(&self, name: &str) -> Option<Arc<Columns>> {
        let p = self.portals.get(name)?;
        p.columns.clone().or_else(|| {
            self.statements
                .get(&p.statement)
                .and_then(|s| s.columns.clone())
        })
    }

    /// The SQL cursor `name`.
    pub fn cursor(&self, name: &str) -> Option<&Cursor> {
        self.cursors.get(name)
    }

    /// A `DECLARE` of cursor `name` completed (past the bound, a new cursor
    /// is not kept: its rows are then NULL).
    pub fn declare_cursor(&mut self, name: String, cursor: Cursor) {
        if self.cursors.len() < MAX_NAMES || self.cursors.contains_key(&name) {
            self.cursors.insert(name, cursor);
        }
    }

    /// `CLOSE name` completed (`None`: `CLOSE ALL`).
    pub fn close_cursor(&mut self, name: Option<&str>) {
        match name {
            Some(n) => {
                self.cursors.remove(n);
            }
            None => self.cursors.clear(),
        }
    }

    /// A `ROLLBACK` completed: cursors of the rolled-back work are gone
    /// (those of an outer savepoint too, as far as the gateway knows: their
    /// rows are then NULL).
    pub fn rolled_back(&mut self) {
        self.cursors.retain(|_, c| c.hold && c.committed);
    }

    /// Out of any transaction: cursors without hold are gone, those with
    /// hold are committed.
    pub fn idle(&mut self) {
        self.cursors.retain(|_, c| c.hold);
        for c in self.cursors.values_mut() {
            c.committed = true;
        }
    }

    /// A creation of statement `name` was sent; `now`: unsettled at once.
    pub fn creating_statement(&mut self, name: &str, now: bool) {
        self.unsettled_statements.sent(name, now);
    }

    /// A creation of portal `name` was sent; `now`: unsettled at once (a
    /// `DECLARE`, whose cursor is recorded only when it completes: until then
    /// the name means nothing the gateway knows, whatever it meant).
    pub fn creating_portal(&mut self, name: &str, now: bool) {
        if now {
            self.portals.remove(name);
        }
        self.unsettled_portals.sent(name, now);
    }

    /// A `Sync` or a simple query was sent.
    pub fn boundary(&mut self) {
        self.unsettled_statements.boundary();
        self.unsettled_portals.boundary();
    }

    /// A creation of statement `name` was answered; `failed`: it failed or was
    /// skipped, so masking forgets the name (unless a later creation of it
    /// awaits its own answer).
    pub fn created_statement(&mut self, name: &str, failed: bool) {
        if self.unsettled_statements.answered(name) && failed {
            self.forget_statement_mask(name);
        }
    }

    /// As [`Names::created_statement`], for a portal.
    pub fn created_portal(&mut self, name: &str, failed: bool) {
        if self.unsettled_portals.answered(name)
            && failed
            && let Some(p) = self.portals.get_mut(name)
        {
            p.mask = Mask::Unknown;
        }
    }

    /// A `PREPARE` or `DECLARE` of a text was answered (the name is recorded,
    /// or forgotten, by what it completed with).
    pub fn answered_statement(&mut self, name: &str) {
        self.unsettled_statements.answered(name);
    }

    /// As [`Names::answered_statement`], for a cursor.
    pub fn answered_portal(&mut self, name: &str) {
        self.unsettled_portals.answered(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        Statement {
            prepared: Arc::new(Prepared {
                sql: sql.into(),
                decision: None,
                approval: None,
            }),
            sql_prepare: false,
            mask: Mask::Clear,
            ddl: false,
            columns: None,
        }
    }

    #[test]
    fn a_name_is_unsettled_once_a_sync_follows_its_unanswered_creation() {
        let mut n = Names::default();
        // Parse; Bind in the same batch: the record stands (were the Parse
        // to fail, the Bind would be skipped).
        n.name_statement("s", statement("select 1"));
        n.creating_statement("s", false);
        assert!(n.statement_mask("s").is_some());
        // After a Sync, the Parse still unanswered: its record may be stale.
        n.boundary();
        assert!(n.statement_mask("s").is_none());
        // A newer creation in the next batch: the record is that one's.
        n.creating_statement("s", false);
        assert!(n.statement_mask("s").is_some());
        // The first creation failed, the second awaits its answer: kept.
        n.created_statement("s", true);
        assert!(n.statement_mask("s").is_some());
        // The second failed too: forgotten for masking, kept for evidence.
        n.created_statement("s", true);
        assert!(n.statement_mask("s").is_none());
        assert_eq!(n.statement("s").unwrap().prepared.sql, "select 1");
        // Recorded only once answered (DECLARE): unsettled at once.
        n.creating_portal("c", true);
        assert!(n.portal_mask("c").is_none());
        n.answered_portal("c");
        n.declare_cursor(
            "c".into(),
            Cursor {
                portal: None,
                hold: false,
                committed: false,
            },
        );
        assert!(matches!(n.portal_mask("c"), Some(None)));
        n.idle();
        assert!(n.portal_mask("c").is_none(), "a cursor without hold ends");
    }

    #[test]
    fn described_columns_survive_a_new_parse_of_the_same_text_only() {
        let mut n = Names::default();
        n.name_statement("s", statement("select 1"));
        let cols = Arc::new(Columns::default());
        n.describe_statement("s", cols.clone());
        n.name_statement("s", statement("select 1"));
        assert!(n.statement("s").unwrap().columns.is_some());
        n.name_statement("s", statement("select 2"));
        assert!(n.statement("s").unwrap().columns.is_none());
    }

    #[test]
    fn sql_prepared_statements_are_shared_copy_on_write() {
        let mut n = Names::default();
        n.sql_prepare("p", "select 1");
        let before = n.sql_prepared();
        n.sql_prepare("q", "select 2");
        assert_eq!(before.len(), 1, "a decision in flight keeps its view");
        assert_eq!(n.sql_prepared().len(), 2);
        n.sql_deallocate(Some("p"));
        assert_eq!(n.sql_prepared().keys().collect::<Vec<_>>(), ["q"]);
        n.sql_deallocate(None);
        assert!(n.sql_prepared().is_empty());
    }
}
