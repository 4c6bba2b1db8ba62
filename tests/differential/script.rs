//! One script of the corpus, run as psql would run it, each statement both
//! analysed by the decider and observed in PostgreSQL.

use std::collections::BTreeMap;

use gatehouse_decider::engine::NO_CATALOG;
use gatehouse_decider::{Analysis, Policy, PreparedOp, Query, StatementAnalysis, analyze};
use gatehouse_ingress::masking::catalog::Catalog;
use gatehouse_schemas::decision::{CatalogFacts, Resolution, Verdict};
use gatehouse_schemas::{Identity, ProtocolKind};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::oracle::{Observed, Outcome, Session, Wire};
use crate::psql::{Item, Reader, SendAs, boolean, meta_arg, substitute};

/// The policy a read-only job would run under: reads of anything, nothing else.
pub const READ_ONLY: &str = r#"
version = "differential"

[[rules]]
id = "read-only"
classes = ["read"]
objects = ["*"]
verdict = "allow"
"#;

/// One statement of the corpus, both ways.
#[derive(Debug)]
pub struct Record {
    /// The script.
    pub file: String,
    /// The line it starts on.
    pub line: usize,
    /// Its text, psql variables substituted.
    pub text: String,
    /// Its kind, for the figures (`SELECT`, `CREATE TABLE`, ...).
    pub kind: String,
    /// One of the queries and DML jobs run (see [`is_query_or_dml`]).
    pub query_or_dml: bool,
    /// The decider's error when it left the statement unparsed.
    pub unparsed: Option<String>,
    /// What the decider decides it as (for EXECUTE, the prepared statement).
    pub decided: Option<StatementAnalysis>,
    /// Whether the read-only policy allows it, with the functions it calls
    /// resolved in the scratch cluster's catalog as the gateway resolves them
    /// (a function the corpus created is refused to a rule that names none).
    pub read_only_allows: bool,
    /// PostgreSQL's account.
    pub observed: Observed,
}

/// The tokens of a statement that are words or parentheses, upper-cased
/// (`None` for text that does not tokenize).
fn words(text: &str) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() else {
        return Vec::new();
    };
    tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            Token::Word(w) => Some(format!("\"{}\"", w.value)),
            Token::LParen => Some("(".into()),
            Token::RParen => Some(")".into()),
            Token::Whitespace(_) => None,
            _ => Some("?".into()),
        })
        .collect()
}

const QUERY_WORDS: [&str; 9] = [
    "SELECT", "VALUES", "TABLE", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY",
];

/// SELECT, VALUES, TABLE, WITH, INSERT, UPDATE, DELETE, MERGE, COPY, a
/// parenthesized query, and EXPLAIN of those.
pub fn is_query_or_dml(w: &[String]) -> bool {
    let mut i = 0;
    if w.first().is_some_and(|x| x == "EXPLAIN") {
        i = 1;
        while let Some(x) = w.get(i) {
            match x.as_str() {
                "ANALYZE" | "ANALYSE" | "VERBOSE" => i += 1,
                "(" if w
                    .get(i + 1)
                    .is_some_and(|n| !QUERY_WORDS.contains(&n.as_str())) =>
                {
                    let close = w[i..]
                        .iter()
                        .position(|t| t == ")")
                        .map_or(w.len(), |p| i + p);
                    i = close + 1;
                }
                _ => break,
            }
        }
    }
    w.get(i)
        .is_some_and(|x| x == "(" || QUERY_WORDS.contains(&x.as_str()))
}

/// The statement's kind: its first word, and for CREATE, ALTER, DROP and
/// COMMENT the kind of object.
pub fn kind(w: &[String]) -> String {
    let Some(first) = w.first() else {
        return "(empty)".into();
    };
    if !matches!(first.as_str(), "CREATE" | "ALTER" | "DROP") {
        return match first.as_str() {
            "(" => "SELECT".into(),
            _ if first.starts_with('"') || first == "?" => "(other)".into(),
            f => f.to_owned(),
        };
    }
    let skip = [
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "UNIQUE",
        "TRUSTED",
        "PROCEDURAL",
        "RECURSIVE",
        "DEFAULT",
        "CONSTRAINT",
    ];
    let mut out = first.clone();
    let mut words = w[1..].iter().filter(|x| !skip.contains(&x.as_str()));
    if let Some(object) = words.next() {
        out.push(' ');
        out.push_str(object);
        if matches!(
            object.as_str(),
            "MATERIALIZED" | "FOREIGN" | "EVENT" | "TEXT" | "OPERATOR" | "USER"
        ) && let Some(more) = words.next()
            && !more.starts_with('"')
        {
            out.push(' ');
            out.push_str(more);
        }
    }
    out
}

/// A transaction-control statement, and whether it opens (`Some(true)`) or
/// ends (`Some(false)`) the script's block.
fn control(w: &[String]) -> Option<Option<bool>> {
    let first = w.first()?.as_str();
    let second = w.get(1).map(String::as_str);
    let chain = w.windows(2).any(|p| p[0] == "AND" && p[1] == "CHAIN")
        && !w
            .windows(3)
            .any(|p| p[0] == "AND" && p[1] == "NO" && p[2] == "CHAIN");
    Some(match (first, second) {
        ("BEGIN", _) | ("START", Some("TRANSACTION")) => Some(true),
        ("SAVEPOINT" | "RELEASE", _) => None,
        ("ROLLBACK", Some("TO")) => None,
        ("COMMIT" | "ROLLBACK", Some("PREPARED")) => None,
        ("COMMIT" | "END" | "ROLLBACK" | "ABORT", _) if chain => None,
        ("COMMIT" | "END" | "ROLLBACK" | "ABORT", _) => Some(false),
        ("PREPARE", Some("TRANSACTION")) => Some(false),
        _ => return None,
    })
}

/// How psql's statement reaches the server.
fn wire(w: &[String]) -> Wire {
    if w.first().is_none_or(|f| f != "COPY") {
        return Wire::Simple;
    }
    let mut depth = 0i32;
    for pair in w.windows(2) {
        match pair[0].as_str() {
            "(" => depth += 1,
            ")" => depth -= 1,
            "FROM" if depth == 0 && pair[1] == "STDIN" => return Wire::CopyIn,
            "TO" if depth == 0 && pair[1] == "STDOUT" => return Wire::CopyOut,
            _ => {}
        }
    }
    Wire::Simple
}

/// Runs `script` (named `file`) in `session` and records every statement.
pub async fn run(
    file: &str,
    script: &str,
    session: &mut Session,
    policy: &Policy,
    catalog: &Catalog,
) -> Vec<Record> {
    let identity = Identity {
        issuer: "https://differential".into(),
        subject: "corpus".into(),
        key_id: None,
        algorithm: "RS256".into(),
        claims: serde_json::Map::new(),
    };
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut prepared: BTreeMap<String, String> = BTreeMap::new();
    // \if nesting: (this branch runs, some branch of the \if has run).
    let mut conditions: Vec<(bool, bool)> = Vec::new();
    let mut records = Vec::new();
    let mut reader = Reader::new(script);
    while let Some(item) = reader.next_item() {
        let active = conditions.iter().all(|(on, _)| *on);
        let (text, line, vars_at, send) = match item {
            Item::Meta { command, args, .. } => {
                let value = |n: &str| vars.get(n).cloned();
                let args: Vec<String> = args.iter().map(|a| meta_arg(a, value)).collect();
                match command.as_str() {
                    "if" => {
                        let on = active && args.first().and_then(|a| boolean(a)).unwrap_or(false);
                        conditions.push((on, on));
                    }
                    "elif" | "else" => {
                        let depth = conditions.len().saturating_sub(1);
                        let parent = conditions[..depth].iter().all(|(on, _)| *on);
                        let test = command == "else"
                            || args.first().and_then(|a| boolean(a)).unwrap_or(false);
                        if let Some((on, done)) = conditions.last_mut() {
                            *on = parent && !*done && test;
                            *done |= *on;
                        }
                    }
                    "endif" => {
                        conditions.pop();
                    }
                    _ if !active => {}
                    "set" => {
                        if let Some((name, value)) = args.split_first() {
                            vars.insert(name.clone(), value.concat());
                        }
                    }
                    "unset" => {
                        if let Some(name) = args.first() {
                            vars.remove(name);
                        }
                    }
                    "q" | "quit" => break,
                    _ => {}
                }
                continue;
            }
            Item::Sql {
                text,
                line,
                vars,
                send,
            } => (text, line, vars, send),
        };
        if !active {
            continue;
        }
        let text = substitute(&text, &vars_at, |n| vars.get(n).cloned());
        let w = words(&text);
        let query = Query {
            role: "ci",
            identity: &identity,
            protocol: ProtocolKind::SimpleQuery,
            sql: &text,
            function_oid: None,
            prepared: &prepared,
            catalog: &NO_CATALOG,
        };
        let mut explanation = policy.explain(query);
        // What the gateway does next: the names it calls through, looked up
        // in the catalog, and the statement decided again with the answers.
        let calls = explanation.decision.functions.clone();
        if !calls.is_empty() {
            let (found, _) = catalog
                .callees(&calls)
                .await
                .unwrap_or_else(|e| panic!("{file}:{line}: the catalog look-up failed: {e}"));
            let facts = CatalogFacts {
                views: Default::default(),
                functions: found
                    .into_iter()
                    .map(|(call, callees)| Resolution {
                        call,
                        callees: callees.to_vec(),
                    })
                    .collect(),
            };
            explanation = policy.explain(Query {
                catalog: &facts,
                ..query
            });
        }
        let read_only_allows = matches!(explanation.decision.verdict, Verdict::Allow);
        let own = explanation
            .statements
            .first()
            .and_then(|s| s.analysis.clone());
        let decided = match own.as_ref().and_then(|a| a.prepared.as_ref()) {
            Some(PreparedOp::Execute { name }) => {
                match prepared.get(name).map(|sql| analyze(sql)) {
                    Some(Analysis::Parsed { mut statements }) if statements.len() == 1 => {
                        statements.pop()
                    }
                    _ => None,
                }
            }
            _ => own,
        };
        let observed = match (&send, control(&w)) {
            (SendAs::Describe, _) => crate::oracle::Observed {
                outcome: Outcome::NotRun("\\gdesc describes without running"),
                log: None,
                wrote: false,
                ddl_event: None,
                setting_changed: false,
                bare: false,
            },
            (_, Some(opens)) => session.control(&text, opens).await,
            (SendAs::Gset(prefix), None) => {
                let o = session.run(&text, Wire::Simple, &mut String::new).await;
                if o.outcome == Outcome::Ok {
                    for (name, value) in session.last_row.take().unwrap_or_default() {
                        match value {
                            Some(v) => vars.insert(format!("{prefix}{name}"), v),
                            None => vars.remove(&format!("{prefix}{name}")),
                        };
                    }
                }
                o
            }
            _ => {
                let wire = wire(&w);
                session.run(&text, wire, &mut || reader.copy_data()).await
            }
        };
        if observed.outcome == Outcome::Ok {
            for s in &explanation.decision.statements {
                if let Some((name, inner)) = &s.prepares {
                    prepared.insert(name.clone(), inner.clone());
                }
                match &s.deallocates {
                    Some(Some(name)) => {
                        prepared.remove(name);
                    }
                    Some(None) => prepared.clear(),
                    None => {}
                }
            }
        }
        if observed.ddl_event.is_some() || observed.log == Some(crate::oracle::LogLevel::Ddl) {
            // As the gateway's catalog forgets what it knew after DDL.
            catalog.invalidate();
        }
        records.push(Record {
            file: file.to_owned(),
            line,
            kind: kind(&w),
            query_or_dml: is_query_or_dml(&w),
            unparsed: explanation.parse_error.clone(),
            decided,
            read_only_allows,
            observed,
            text,
        });
    }
    // A script that ends inside a block: psql's session would end and roll it back.
    if session.in_block {
        let _ = session.simple("ROLLBACK").await;
        session.in_block = false;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(sql: &str) -> Vec<String> {
        words(sql)
    }

    #[test]
    fn kinds_and_wires() {
        assert_eq!(
            kind(&w("create or replace temp view v as select 1")),
            "CREATE VIEW"
        );
        assert_eq!(
            kind(&w("CREATE MATERIALIZED VIEW mv AS SELECT 1")),
            "CREATE MATERIALIZED VIEW"
        );
        assert_eq!(kind(&w("(select 1)")), "SELECT");
        assert!(is_query_or_dml(&w("explain (costs off) select 1")));
        assert!(is_query_or_dml(&w(
            "explain analyze verbose insert into t values (1)"
        )));
        assert!(!is_query_or_dml(&w("explain create table t as select 1")));
        assert_eq!(
            wire(&w("copy t (a) from stdin with (format csv)")),
            Wire::CopyIn
        );
        assert_eq!(wire(&w("COPY (select 1) TO STDOUT")), Wire::CopyOut);
        assert_eq!(wire(&w("copy t from '/tmp/x'")), Wire::Simple);
        assert_eq!(control(&w("rollback to savepoint s")), Some(None));
        assert_eq!(control(&w("commit and chain")), Some(None));
        assert_eq!(
            control(&w("start transaction isolation level serializable")),
            Some(Some(true))
        );
        assert_eq!(control(&w("commit prepared 'x'")), Some(None));
        assert_eq!(control(&w("select 1")), None);
    }
}
