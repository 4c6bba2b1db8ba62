//! What the decider knows about a statement once parsed: its class, the objects
//! it reads and writes, the functions it calls, and its risk features.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A kind of statement. A statement has every class of what it does
/// ([`StatementAnalysis::classes`]): `CREATE TABLE t AS SELECT ...` is `ddl` and
/// `read`, `EXPLAIN ANALYZE DELETE ...` is `read` and `write`. Whatever
/// PostgreSQL's `log_statement` logs as `ddl` carries `ddl` (or `dcl` or `admin`,
/// which rank higher), whatever it logs as `mod` carries `write`, `copy-in` or a
/// class ranked above them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatementClass {
    /// SELECT, VALUES, TABLE, SHOW, EXPLAIN without ANALYZE (of any statement: it
    /// plans and runs nothing; the statement's objects count as reads).
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, data-modifying CTEs, EXPLAIN ANALYZE of a
    /// write, COPY (write ... RETURNING) TO, SELECT ... FOR UPDATE or SHARE (row
    /// locks are written into the rows, and need UPDATE privilege).
    Write,
    /// CREATE/ALTER/DROP of tables, views, indexes, schemas, functions, types,
    /// sequences, extensions...; CREATE TABLE AS, SELECT INTO, CREATE and REFRESH
    /// MATERIALIZED VIEW (they create or refill a relation); TRUNCATE; COMMENT;
    /// CLUSTER (it rewrites the table).
    Ddl,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE/USER/GROUP, ALTER DEFAULT PRIVILEGES,
    /// REASSIGN OWNED, DROP OWNED.
    Dcl,
    /// SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, DISCARD.
    Session,
    /// BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE, SET
    /// TRANSACTION, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED.
    Transaction,
    /// DO, CALL.
    Procedural,
    /// The legacy `FunctionCall` protocol message (a function run by OID, no SQL).
    FunctionCall,
    /// PREPARE, EXECUTE, DEALLOCATE (PREPARE and EXECUTE are decided as their
    /// inner statement; see [`PreparedOp`]).
    Prepared,
    /// DECLARE, FETCH, MOVE, CLOSE.
    Cursor,
    /// COPY ... FROM (STDIN or a file).
    CopyIn,
    /// COPY ... TO STDOUT.
    CopyOut,
    /// ALTER SYSTEM, COPY ... PROGRAM, COPY to/from a server file, LOAD, CHECKPOINT,
    /// and any statement calling a function that reaches files, processes or other
    /// servers (see `classify::ADMIN_FUNCTIONS`).
    Admin,
    /// LISTEN, NOTIFY, UNLISTEN, VACUUM, ANALYZE, REINDEX, LOCK, and anything
    /// else that neither reads nor writes rows.
    Utility,
}

impl StatementClass {
    /// Precedence among a statement's classes: the highest is its primary class
    /// ([`StatementAnalysis::class`]), named first wherever classes are listed.
    pub fn rank(self) -> u8 {
        match self {
            Self::Admin => 12,
            Self::Dcl => 11,
            Self::Ddl => 10,
            Self::Write => 9,
            Self::CopyIn => 8,
            Self::Procedural | Self::FunctionCall => 7,
            Self::Session => 6,
            Self::Prepared => 5,
            Self::Cursor => 4,
            Self::CopyOut => 3,
            Self::Utility => 2,
            Self::Transaction => 1,
            Self::Read => 0,
        }
    }

    /// Every class, for listings and validation.
    pub const ALL: [StatementClass; 14] = [
        Self::Read,
        Self::Write,
        Self::Ddl,
        Self::Dcl,
        Self::Session,
        Self::Transaction,
        Self::Procedural,
        Self::FunctionCall,
        Self::Prepared,
        Self::Cursor,
        Self::CopyIn,
        Self::CopyOut,
        Self::Admin,
        Self::Utility,
    ];
}

impl StatementAnalysis {
    /// [`Self::classes`], primary first, then by falling rank.
    pub fn classes_by_rank(&self) -> Vec<StatementClass> {
        let mut v: Vec<StatementClass> = self.classes.iter().copied().collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.rank()));
        v
    }

    /// The kebab-case names of [`Self::classes_by_rank`], as policy files,
    /// decisions and evidence spell them.
    pub fn class_names(&self) -> Vec<String> {
        self.classes_by_rank()
            .into_iter()
            .map(StatementClass::name)
            .map(str::to_owned)
            .collect()
    }
}

impl StatementClass {
    /// The class's name as policy files spell it (`copy-in`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Ddl => "ddl",
            Self::Dcl => "dcl",
            Self::Session => "session",
            Self::Transaction => "transaction",
            Self::Procedural => "procedural",
            Self::FunctionCall => "function-call",
            Self::Prepared => "prepared",
            Self::Cursor => "cursor",
            Self::CopyIn => "copy-in",
            Self::CopyOut => "copy-out",
            Self::Admin => "admin",
            Self::Utility => "utility",
        }
    }
}

/// Risk features a rule can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// UPDATE without WHERE, or with a WHERE that is always true (`1=1`, `true`,
    /// `x = x` on a column, `NOT false`, `1 < 2`, `'a' = 'a'`, `OR true`).
    UpdateWithoutWhere,
    /// DELETE without WHERE or with an always-true WHERE (as above).
    DeleteWithoutWhere,
    /// TRUNCATE.
    Truncate,
    /// DROP of anything.
    Drop,
    /// DROP ... CASCADE.
    DropCascade,
    /// ALTER TABLE ... ALTER COLUMN ... TYPE.
    AlterType,
    /// CREATE/ALTER/DROP ROLE/USER/GROUP, SET ROLE, SET SESSION AUTHORIZATION,
    /// RESET ROLE, REASSIGN OWNED, role membership (`GRANT admin TO bob`),
    /// `set_config('role' | 'session_authorization', ...)`, DISCARD ALL.
    RoleChange,
    /// GRANT, REVOKE, ALTER DEFAULT PRIVILEGES, DROP/REASSIGN OWNED, `OWNER TO`,
    /// row-level security (CREATE/ALTER/DROP POLICY, ALTER TABLE ... ROW LEVEL
    /// SECURITY).
    PrivilegeChange,
    /// A function with side effects beyond the statement called from anywhere
    /// (`pg_sleep`, `setval`, `nextval`, `set_config`, `pg_advisory_lock`, the
    /// admin functions, `dblink*`, `lo_*`, ...).
    SideEffectFunction,
    /// A CTE that writes (`WITH d AS (DELETE ...) SELECT ...`).
    DataModifyingCte,
    /// Changes what later statements resolve names to: `SET [LOCAL] search_path`,
    /// `SET SCHEMA`, `RESET search_path`, RESET ALL, DISCARD ALL,
    /// `set_config('search_path', ...)`, `ALTER ROLE|SYSTEM ... SET search_path`.
    /// `set_config` with a computed setting name, and any write to `pg_settings`,
    /// carry all three setting risks (this, [`Risk::ClientEncodingChange`],
    /// [`Risk::RoleChange`]).
    SearchPathChange,
    /// Changes how later bytes are read: `SET client_encoding`, `SET NAMES`,
    /// `SET standard_conforming_strings` (whether `\` escapes in '...' strings),
    /// `backslash_quote`, `set_config('client_encoding', ...)`, RESET ALL.
    ClientEncodingChange,
}

/// A schema-qualified object name, lower-cased unless it was quoted. A statement
/// that acts on every object of a schema (`DROP SCHEMA s`, `GRANT ... ON ALL
/// TABLES IN SCHEMA s`, `schema_to_xml('s', ...)`) names it with `*` as the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The schema, when written (`clinic.patients`); `None` for an unqualified name
    /// (resolved by the session's search_path, so rules match it conservatively).
    pub schema: Option<String>,
    /// The object's own name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Prepared statements and cursors: what a statement does to the session's
/// named statements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum PreparedOp {
    /// `PREPARE name AS inner`: decided as `inner`.
    Prepare {
        /// The statement name, lower-cased unless quoted.
        name: String,
        /// The SQL text of the inner statement (re-analysed when executed).
        inner_sql: String,
    },
    /// `EXECUTE name(...)`: decided as the statement prepared under `name`.
    Execute {
        /// The statement name.
        name: String,
    },
    /// `DEALLOCATE name` / `DEALLOCATE ALL` (`name` is `None`; DISCARD ALL, a
    /// session statement, also carries this).
    Deallocate {
        /// The statement name, or `None` for ALL.
        name: Option<String>,
    },
}

/// One statement, analysed.
///
/// For DECLARE ... CURSOR FOR q, the analysis of q is merged into this one
/// (reads, functions, risks): its classes are `cursor` and q's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementAnalysis {
    /// Its primary class: the highest-ranked of [`Self::classes`].
    pub class: StatementClass,
    /// Every class it has (never empty; holds [`Self::class`]). `read` is among
    /// them whenever it reads a relation, whatever else it does.
    pub classes: BTreeSet<StatementClass>,
    /// Tables, views and sequences it reads (through any subquery, CTE, join, view
    /// reference, COPY (query), EXPLAIN ANALYZE, RETURNING, ...).
    pub reads: BTreeSet<ObjectRef>,
    /// Tables it writes, sequences it advances (`nextval('s')`, `setval`), objects
    /// DDL/DCL creates, alters, drops or grants on (not roles), and the tables
    /// VACUUM, ANALYZE, CLUSTER, REINDEX and LOCK act on.
    pub writes: BTreeSet<ObjectRef>,
    /// Functions it calls, folded like names (lower-cased unless quoted),
    /// schema-qualified when written so (`pg_catalog.pg_read_file`).
    pub functions: BTreeSet<String>,
    /// The names through which it may run functions (its calls, custom
    /// operators, casts to types not built in), for the ingress to resolve in
    /// the upstream catalog.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub calls: BTreeSet<gatehouse_schemas::decision::CallName>,
    /// Risk features.
    pub risks: BTreeSet<Risk>,
    /// PREPARE/EXECUTE/DEALLOCATE.
    pub prepared: Option<PreparedOp>,
    /// A stable hash of the statement with literals replaced by placeholders,
    /// so `select 1` and `select 2` share it; hex, 16 characters. The analysis
    /// itself is hashed in too, so statements that differ only in literals the
    /// analysis depends on (`set_config('search_path', ...)` against
    /// `set_config('work_mem', ...)`, `WHERE 'a' = 'a'` against `WHERE 'a' = 'b'`)
    /// never share a fingerprint, nor a cached verdict.
    pub fingerprint: String,
}

/// The result of analysing one SQL text (a `Query` may hold several statements).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Analysis {
    /// Parsed; one entry per statement, in order (empty for an empty query).
    Parsed {
        /// The statements.
        statements: Vec<StatementAnalysis>,
    },
    /// sqlparser could not parse it, or parsed it into a shape the analyser cannot
    /// vouch for (see `classify`). Blocked unless a rule allows unparsed SQL.
    Unparsed {
        /// The parser's message, for the log and `policy explain`.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_the_policy_spelling() {
        for class in StatementClass::ALL {
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::Value::from(class.name())
            );
        }
    }
}
