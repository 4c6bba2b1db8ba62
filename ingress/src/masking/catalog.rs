//! The upstream catalog, as masking needs it: a `RowDescription` field's table
//! OID and attribute number resolved to `schema.table.column`, over a separate
//! connection with the role's credential; cached per upstream with a TTL and
//! emptied when DDL passes through the gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
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
    /// column (see the README).
    pub reads: Vec<(String, String, String)>,
}

/// The catalog of one upstream.
pub struct Catalog {
    target: Arc<UpstreamTarget>,
    ttl: Duration,
    relations: Mutex<HashMap<u32, (Instant, Arc<Relation>)>>,
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
            conn: tokio::sync::Mutex::new(None),
        }
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
        self.relations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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
        let mut guard = self.conn.lock().await;
        let result = async {
            if guard.is_none() {
                *guard = Some(upstream::connect(&self.target, &BTreeMap::new()).await?);
            }
            let conn = guard.as_mut().ok_or(UpstreamError::TlsRefused)?;
            let cols = simple_query(conn, &columns).await?;
            let deps = simple_query(conn, &reads).await?;
            Ok::<_, UpstreamError>((cols, deps))
        }
        .await;
        let (cols, deps) = match result {
            Ok(r) => r,
            Err(e) => {
                *guard = None;
                return Err(e);
            }
        };
        drop(guard);
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

/// Runs one simple query and returns its rows as text (NULL as empty).
async fn simple_query(conn: &mut Upstream, sql: &str) -> Result<Vec<Vec<String>>, UpstreamError> {
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
