//! The upstream catalog, as masking and policy need it: a `RowDescription`
//! field's table OID and attribute number resolved to `schema.table.column`,
//! the relation names a masked caller's statement reads resolved to view
//! definitions, and the names any caller's statement calls functions through
//! resolved to the functions they may run; over a separate connection with
//! the role's credential (`application_name` `gatehouse-catalog`), cached per
//! upstream with a TTL and emptied when DDL passes through the gateway.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_decider::lineage::relation_name;
use gatehouse_schemas::decision::{CallKind, CallName, Callee, ViewDefinition};
use pgwire::messages::{DecodeContext, PgWireBackendMessage, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::UpstreamError;
use crate::upstream::{self, Upstream, UpstreamTarget};

/// One relation of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `pg_class.relkind`: `r` table, `v` view, `m` materialized view, ...
    pub kind: char,
    /// Column names by attribute number.
    pub columns: HashMap<i16, String>,
    /// For a view: the table columns its query reads (`schema`, `table`,
    /// `column`), from `pg_depend`. Which view column shows which of them is not
    /// recorded there, so a view column is masked when the view reads any masked
    /// column (see docs/src/masking.md).
    pub reads: Vec<(String, String, String)>,
}

/// What a relation name written in a statement stands for, as masking needs
/// to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// No view: a table, another kind of relation, or nothing at all.
    NotView,
    /// A view or materialized view: its schema-qualified name (as
    /// [`relation_name`] writes it) and definition.
    View(String, ViewDefinition),
    /// An unqualified name that a view has in one schema and another relation
    /// in another (the relations' names): which one the session's search_path
    /// picks is not known here.
    Ambiguous(Vec<String>),
}

/// OIDs below this were assigned by initdb (PostgreSQL's
/// `FirstNormalObjectId`): every object with one is built in.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// The `application_name` of the catalog's own upstream connections, so an
/// operator (and a test) tells them from the sessions in `pg_stat_activity`.
pub const CATALOG_APPLICATION_NAME: &str = "gatehouse-catalog";

/// Entries by a name as statements write it, each with when it was looked up.
type NameCache<K, T> = Mutex<HashMap<K, (Instant, Arc<T>)>>;

/// Entries for names looked up, and until when all of them hold.
pub type Resolved<K, T> = (Vec<(K, Arc<T>)>, Instant);

/// The catalog of one upstream.
pub struct Catalog {
    target: Arc<UpstreamTarget>,
    ttl: Duration,
    relations: Mutex<HashMap<u32, (Instant, Arc<Relation>)>>,
    /// Relation names as statements write them ([`Catalog::resolve`]).
    names: NameCache<String, Named>,
    /// Names statements call functions through ([`Catalog::callees`]).
    functions: NameCache<CallName, Vec<Callee>>,
    /// Moves on with every [`Catalog::invalidate`]: verdicts decided with what
    /// the catalog said before are stale.
    generation: AtomicU64,
    /// A connection kept for the next look-up.
    conn: tokio::sync::Mutex<Option<Upstream>>,
}

impl Catalog {
    /// A catalog reached through `target`, entries kept for `ttl`.
    pub fn new(target: Arc<UpstreamTarget>, ttl: Duration) -> Self {
        Self {
            target,
            ttl,
            relations: Mutex::default(),
            names: Mutex::default(),
            functions: Mutex::default(),
            generation: AtomicU64::new(0),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The catalog's generation: changes whenever it is emptied.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A cached relation.
    pub fn get(&self, oid: u32) -> Option<Arc<Relation>> {
        let map = self.relations.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&oid)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, r)| r.clone())
    }

    /// Forgets everything (DDL passed through the gateway).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.relations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The functions each of `calls` may run (see [`Resolution`]), looked
    /// up when not cached; and until when all of it holds. An unqualified
    /// name is looked up in every schema: the session's search_path is not
    /// known here (and may put a schema before `pg_catalog`), and overloading
    /// may pick another schema's function anyway. A function name with no
    /// function is looked up as a type (`citext(x)` is a cast).
    pub async fn callees(
        &self,
        calls: &[CallName],
    ) -> Result<Resolved<CallName, Vec<Callee>>, UpstreamError> {
        let missing = self.missing(&self.functions, calls);
        if !missing.is_empty() {
            let list = missing
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let kind = match c.kind {
                        CallKind::Function => "function",
                        CallKind::Operator => "operator",
                        CallKind::Type => "type",
                    };
                    let schema = c.schema.as_deref().map_or("null".to_owned(), literal);
                    format!(
                        "({i}, '{kind}', {schema}::text, {}::text)",
                        literal(&c.name)
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let sql =
                format!("set search_path = pg_catalog; {CALLEES_SQL}").replace("{list}", &list);
            let [rows] = self.queries([sql.as_str()]).await?;
            let mut found: Vec<Vec<Callee>> = vec![Vec::new(); missing.len()];
            for row in rows {
                let [i, schema, name, oid] = &row[..] else {
                    continue;
                };
                let Some(callees) = i.parse::<usize>().ok().and_then(|i| found.get_mut(i)) else {
                    continue;
                };
                // An OID that does not read is taken as a user's function.
                let builtin = oid.parse::<u32>().is_ok_and(|o| o < FIRST_NORMAL_OBJECT_ID);
                callees.push(Callee {
                    schema: schema.clone(),
                    name: name.clone(),
                    builtin,
                });
            }
            let now = Instant::now();
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            for (call, mut callees) in missing.into_iter().zip(found) {
                callees.sort();
                callees.dedup();
                map.insert(call.clone(), (now, Arc::new(callees)));
            }
        }
        self.collect(&self.functions, calls)
    }

    /// What each of `names` (relation names as [`relation_name`] writes them)
    /// stands for, looked up when not cached; and until when all of it holds
    /// (the oldest entry's expiry).
    ///
    /// An unqualified name is looked up in every schema but the system ones
    /// (the session's search_path is not known here): a view there is taken as
    /// the one the name means, and a view beside another relation of that name
    /// makes it [`Named::Ambiguous`]. A view's definition comes from
    /// `pg_get_viewdef` under a `search_path` of `pg_catalog` only, so that
    /// every relation in it is schema-qualified.
    pub async fn resolve(
        &self,
        names: &[String],
    ) -> Result<Resolved<String, Named>, UpstreamError> {
        let missing = self.missing(&self.names, names);
        if !missing.is_empty() {
            let list = values_list(&missing);
            let sql = format!(
                "set search_path = pg_catalog; \
                 select w.name, n.nspname, c.relname, c.relkind, \
                   case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end, \
                   case when c.relkind in ('v', 'm') then (select json_agg(a.attname order by a.attnum)::text \
                     from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) end \
                 from (values {list}) w(name) \
                 cross join lateral (select parse_ident(w.name) as parts) p \
                 join pg_class c on c.relname = p.parts[array_length(p.parts, 1)] \
                 join pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind in ('r', 'v', 'm', 'p', 'f') and case array_length(p.parts, 1) \
                   when 1 then n.nspname not in ('pg_catalog', 'information_schema') \
                     and n.nspname !~ '^pg_toast' \
                   else n.nspname = p.parts[array_length(p.parts, 1) - 1] end"
            );
            let [rows] = self.queries([sql.as_str()]).await?;
            // Per name: each relation it may be (schema-qualified name, and
            // the definition of a view).
            let mut found: HashMap<&str, Vec<(String, Option<ViewDefinition>)>> =
                missing.iter().map(|n| (n.as_str(), Vec::new())).collect();
            for row in rows {
                let [name, schema, relname, kind, def, columns] = &row[..] else {
                    continue;
                };
                let Some(candidates) = found.get_mut(name.as_str()) else {
                    continue;
                };
                let qualified = relation_name(Some(schema), relname);
                let view = matches!(kind.as_str(), "v" | "m").then(|| ViewDefinition {
                    // A column list that does not read leaves the view
                    // unpaired: the decider then refuses what reads it.
                    columns: serde_json::from_str(columns).unwrap_or_default(),
                    query: def.clone(),
                });
                candidates.push((qualified, view));
            }
            let now = Instant::now();
            let mut map = self.names.lock().unwrap_or_else(|p| p.into_inner());
            for (name, candidates) in found {
                let named = match &candidates[..] {
                    [(qualified, Some(def))] => Named::View(qualified.clone(), def.clone()),
                    several if several.iter().any(|(_, d)| d.is_some()) => {
                        Named::Ambiguous(several.iter().map(|(q, _)| q.clone()).collect())
                    }
                    _ => Named::NotView,
                };
                map.insert(name.to_owned(), (now, Arc::new(named)));
            }
        }
        self.collect(&self.names, names)
    }

    /// The entry of `name` in `map`, unless it expired.
    fn cached<K: Hash + Eq, T>(
        &self,
        map: &NameCache<K, T>,
        name: &K,
    ) -> Option<(Instant, Arc<T>)> {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .cloned()
    }

    /// Those of `names` that `map` does not hold fresh.
    fn missing<'a, K: Hash + Eq, T>(&self, map: &NameCache<K, T>, names: &'a [K]) -> Vec<&'a K> {
        names
            .iter()
            .filter(|n| self.cached(map, n).is_none())
            .collect()
    }

    /// The entries of `names` in `map` (just looked up), and until when all
    /// of them hold (the oldest entry's expiry).
    fn collect<K: Hash + Eq + Clone, T>(
        &self,
        map: &NameCache<K, T>,
        names: &[K],
    ) -> Result<Resolved<K, T>, UpstreamError> {
        let mut out = Vec::with_capacity(names.len());
        let mut until: Option<Instant> = None;
        for name in names {
            // Gone only if invalidated meanwhile: ask again next time, and
            // fail closed now.
            let (at, entry) = self.cached(map, name).ok_or_else(|| {
                UpstreamError::Protocol("the catalog changed during the look-up".into())
            })?;
            let expires = at + self.ttl;
            until = Some(until.map_or(expires, |u| u.min(expires)));
            out.push((name.clone(), entry));
        }
        Ok((out, until.unwrap_or_else(Instant::now)))
    }

    /// Runs `sqls` in order over the catalog's connection (opened when there is
    /// none, dropped after a failure) and returns their rows.
    async fn queries<const N: usize>(
        &self,
        sqls: [&str; N],
    ) -> Result<[Vec<Vec<String>>; N], UpstreamError> {
        let mut guard = self.conn.lock().await;
        let result = async {
            if guard.is_none() {
                let params = BTreeMap::from([(
                    "application_name".to_owned(),
                    CATALOG_APPLICATION_NAME.to_owned(),
                )]);
                *guard = Some(upstream::connect(&self.target, &params).await?);
            }
            let conn = guard.as_mut().ok_or(UpstreamError::TlsRefused)?;
            let mut out = [const { Vec::new() }; N];
            for (rows, sql) in out.iter_mut().zip(sqls) {
                *rows = simple_query(conn, sql).await?;
            }
            Ok(out)
        }
        .await;
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Records `oids` as relations that could not be looked up (kind `?`): their
    /// columns are masked NULL until the entry expires.
    pub fn mark_unknown(&self, oids: &[u32]) {
        let now = Instant::now();
        let mut map = self.relations.lock().unwrap_or_else(|p| p.into_inner());
        for oid in oids {
            map.insert(
                *oid,
                (
                    now,
                    Arc::new(Relation {
                        schema: String::new(),
                        name: String::new(),
                        kind: '?',
                        columns: HashMap::new(),
                        reads: Vec::new(),
                    }),
                ),
            );
        }
    }

    /// Loads the relations among `oids` that are not cached.
    pub async fn load(&self, oids: &[u32]) -> Result<(), UpstreamError> {
        let missing: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|o| self.get(*o).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let columns = format!(
            "select c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname \
             from pg_catalog.pg_class c \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             join pg_catalog.pg_attribute a on a.attrelid = c.oid \
             where c.oid in ({list}) and a.attnum > 0 and not a.attisdropped"
        );
        let reads = format!(
            "select distinct r.ev_class, n.nspname, c.relname, a.attname \
             from pg_catalog.pg_rewrite r \
             join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass \
               and d.objid = r.oid and d.refclassid = 'pg_catalog.pg_class'::regclass \
               and d.refobjsubid > 0 \
             join pg_catalog.pg_class c on c.oid = d.refobjid \
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
             join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum = d.refobjsubid \
             where r.ev_class in ({list}) and d.refobjid <> r.ev_class"
        );
        let [cols, deps] = self.queries([columns.as_str(), reads.as_str()]).await?;
        let mut found: HashMap<u32, Relation> = HashMap::new();
        for row in cols {
            let [oid, schema, name, kind, attnum, attname] = &row[..] else {
                continue;
            };
            let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                continue;
            };
            let rel = found.entry(oid).or_insert_with(|| Relation {
                schema: schema.clone(),
                name: name.clone(),
                kind: kind.chars().next().unwrap_or('r'),
                columns: HashMap::new(),
                reads: Vec::new(),
            });
            rel.columns.insert(attnum, attname.clone());
        }
        for row in deps {
            let [oid, schema, table, column] = &row[..] else {
                continue;
            };
            if let Some(rel) = oid.parse::<u32>().ok().and_then(|o| found.get_mut(&o)) {
                rel.reads
                    .push((schema.clone(), table.clone(), column.clone()));
            }
        }
        let gone: Vec<u32> = missing
            .iter()
            .copied()
            .filter(|o| !found.contains_key(o))
            .collect();
        self.mark_unknown(&gone);
        let now = Instant::now();
        let mut map = self.relations.lock().unwrap_or_else(|p| p.into_inner());
        for (oid, rel) in found {
            map.insert(oid, (now, Arc::new(rel)));
        }
        Ok(())
    }
}

/// The functions each name of a `VALUES` list `{list}` of (ordinal, kind,
/// schema, name) may run, as (ordinal, schema, name, OID) rows: functions of
/// that name; the functions of operators of that name; for a type (or a
/// function name with no function: a cast written as a call), the casts into
/// it, its input function and the functions and operators its domain
/// constraints use, down its chain of base types.
const CALLEES_SQL: &str = "\
with recursive w(i, kind, schema, name) as (values {list}), \
types(i, oid) as ( \
  select w.i, t.oid from w \
  join pg_type t on t.typname = w.name \
  join pg_namespace n on n.oid = t.typnamespace \
  where (w.schema is null or n.nspname = w.schema) \
    and (w.kind = 'type' or (w.kind = 'function' and not exists ( \
      select from pg_proc p join pg_namespace pn on pn.oid = p.pronamespace \
      where p.proname = w.name and (w.schema is null or pn.nspname = w.schema)))) \
  union \
  select types.i, t.typbasetype from types join pg_type t on t.oid = types.oid \
  where t.typbasetype <> 0), \
runs(i, fn) as ( \
  select w.i, p.oid from w \
  join pg_proc p on p.proname = w.name \
  join pg_namespace n on n.oid = p.pronamespace \
  where w.kind = 'function' and (w.schema is null or n.nspname = w.schema) \
  union all \
  select w.i, o.oprcode::oid from w \
  join pg_operator o on o.oprname = w.name \
  join pg_namespace n on n.oid = o.oprnamespace \
  where w.kind = 'operator' and (w.schema is null or n.nspname = w.schema) \
  union all \
  select types.i, c.castfunc from types join pg_cast c on c.casttarget = types.oid \
  where c.castfunc <> 0 \
  union all \
  select types.i, t.typinput::oid from types join pg_type t on t.oid = types.oid \
  union all \
  select types.i, coalesce(o.oprcode::oid, d.refobjid) from types \
  join pg_constraint k on k.contypid = types.oid \
  join pg_depend d on d.classid = 'pg_constraint'::regclass and d.objid = k.oid \
    and d.refclassid in ('pg_proc'::regclass, 'pg_operator'::regclass) \
  left join pg_operator o on d.refclassid = 'pg_operator'::regclass and o.oid = d.refobjid) \
select runs.i, n.nspname, p.proname, p.oid from runs \
join pg_proc p on p.oid = runs.fn \
join pg_namespace n on n.oid = p.pronamespace";

/// `names` as the rows of a `VALUES` list of one text column.
fn values_list(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| format!("({})", literal(n)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` as an escape string literal: its meaning does not depend on
/// `standard_conforming_strings`.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Runs one simple query and returns its rows as text (NULL as empty): the
/// catalog's look-ups, and `gatehouse doctor`'s check of an upstream.
pub async fn simple_query(
    conn: &mut Upstream,
    sql: &str,
) -> Result<Vec<Vec<String>>, UpstreamError> {
    let mut msg = BytesMut::new();
    msg.extend_from_slice(b"Q");
    msg.extend_from_slice(&(u32::try_from(sql.len() + 5).unwrap_or(u32::MAX)).to_be_bytes());
    msg.extend_from_slice(sql.as_bytes());
    msg.extend_from_slice(&[0]);
    conn.stream.write_all(&msg).await?;
    conn.stream.flush().await?;
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let buf = &mut conn.leftover;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let decoded = PgWireBackendMessage::decode(buf, &ctx)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let Some(m) = decoded else {
            if conn.stream.read_buf(buf).await? == 0 {
                return Err(UpstreamError::Protocol("catalog connection closed".into()));
            }
            continue;
        };
        match m {
            PgWireBackendMessage::DataRow(r) => {
                rows.push(text_fields(&r.data, r.field_count));
            }
            PgWireBackendMessage::ErrorResponse(e) => {
                let text = e
                    .fields
                    .iter()
                    .find(|(k, _)| *k == b'M')
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                error = Some(UpstreamError::Protocol(format!(
                    "catalog look-up failed: {text}"
                )));
            }
            PgWireBackendMessage::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// The text fields of a DataRow body.
fn text_fields(data: &[u8], count: i16) -> Vec<String> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut at = 0;
    for _ in 0..count {
        let Some(len) = data.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            out.push(String::new());
            continue;
        }
        let end = at + usize::try_from(len).unwrap_or(0);
        out.push(String::from_utf8_lossy(data.get(at..end).unwrap_or_default()).into_owned());
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("clinic.v"), "E'clinic.v'");
        assert_eq!(literal("\"it's\"\\x"), "E'\"it''s\"\\\\x'");
    }
}
