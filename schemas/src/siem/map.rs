//! How each kind of evidence event fills the OCSF record: activity, status,
//! disposition and action, and the session's context on every record.

use super::*;
use crate::evidence::{Event, EventBody, SessionContext};

/// The fields that depend on the kind of event.
pub(super) struct Mapped {
    pub activity_id: u8,
    pub activity_name: &'static str,
    pub severity_id: u8,
    pub success: bool,
    pub status_detail: Option<String>,
    pub action: (u8, &'static str),
    pub disposition: Option<(u8, &'static str)>,
    pub message: String,
    pub user: Option<User>,
    pub issuer: Option<String>,
    pub role: Option<String>,
    pub src: Option<Endpoint>,
    pub dst: Option<Endpoint>,
    pub database: Option<Database>,
    pub query: Option<QueryInfo>,
    pub authorizations: Vec<Authorization>,
    pub duration: Option<u64>,
    pub count: Option<u64>,
}

/// `authorizations[].policy.name` of a statement no rule decided.
pub(super) const NO_RULE: &str = "(no rule)";

/// Allowed: the gateway let it happen.
const ALLOWED: (u8, &str) = (1, "Allowed");
/// Denied: the gateway refused it.
const DENIED: (u8, &str) = (2, "Denied");
/// Nothing was decided (a request, an end).
const NO_ACTION: (u8, &str) = (99, "Other");

impl Mapped {
    pub fn new(event: &Event) -> Self {
        let mut m = Self {
            activity_id: activity::OTHER,
            activity_name: "Other",
            severity_id: 1,
            success: true,
            status_detail: None,
            action: NO_ACTION,
            disposition: None,
            message: event.body.kind().replace('_', " "),
            user: None,
            issuer: None,
            role: None,
            src: None,
            dst: None,
            database: None,
            query: None,
            authorizations: Vec::new(),
            duration: None,
            count: None,
        };
        let ctx = match &event.body {
            EventBody::SessionStarted(s) => Some(SessionContext::of(s)),
            _ => event.ctx.clone(),
        };
        if let Some(ctx) = ctx {
            m.context(ctx);
        }
        m
    }

    /// Who, from where, to which database: on every record.
    fn context(&mut self, ctx: SessionContext) {
        self.user = Some(User {
            uid: ctx.sub,
            name: ctx.name,
            type_id: 3,
            kind: "System".into(),
            domain: ctx.iss.clone(),
        });
        self.issuer = Some(ctx.iss);
        self.role = Some(ctx.role);
        self.src = Some(endpoint(&ctx.client));
        let (server, dbname) = ctx.upstream.rsplit_once('/').unwrap_or((&ctx.upstream, ""));
        self.dst = Some(endpoint(server));
        self.database = Some(Database {
            name: dbname.to_owned(),
            kind: "PostgreSQL".into(),
            type_id: 1,
        });
    }

    pub fn map(&mut self, event: &Event, id: &str) {
        match &event.body {
            EventBody::SessionStarted(s) => {
                self.activity_id = activity::CONNECT;
                self.activity_name = "Connect";
                self.action = ALLOWED;
                let name = self.user.as_ref().map_or("", |u| u.name.as_str());
                self.message = format!("{name} connected as role {}", s.role);
            }
            EventBody::Statement(s) => {
                (self.activity_id, self.activity_name) = statement_activity(&s.sql, &s.classes);
                self.action = if s.forwarded { ALLOWED } else { DENIED };
                self.disposition = Some(match s.verdict.as_str() {
                    "allow" => (1, "Allowed"),
                    "block" => (2, "Blocked"),
                    "approve" if s.forwarded => (8, "Approved"),
                    "approve" => (14, "Delayed"),
                    "mask" => (99, "Masked"),
                    _ => (99, "Other"),
                });
                self.success = s.forwarded;
                if !s.forwarded {
                    self.severity_id = 3;
                    self.status_detail = Some(
                        s.reason
                            .clone()
                            .unwrap_or_else(|| format!("refused ({})", s.verdict)),
                    );
                }
                let params = s.params.as_ref().map_or(0, Vec::len);
                self.message = format!(
                    "{} {} ({}{})",
                    if s.forwarded { "ran" } else { "refused" },
                    s.classes.first().map_or("statement", String::as_str),
                    s.verdict,
                    if params > 0 {
                        format!(", {params} parameters")
                    } else {
                        String::new()
                    }
                );
                self.query = Some(QueryInfo {
                    query_string: s.sql.clone(),
                    name: s.statement_name.clone(),
                    uid: id.to_owned(),
                });
                self.authorizations = vec![Authorization {
                    decision: s.verdict.clone(),
                    policy: (s.rule.is_some() || s.policy_version.is_some() || s.reason.is_some())
                        .then(|| Policy {
                            // OCSF wants a policy named: no rule decided
                            // (default deny, unparsed, no decider) says so.
                            name: Some(s.rule.clone().unwrap_or_else(|| NO_RULE.into())),
                            version: s.policy_version.clone(),
                            desc: s.reason.clone(),
                        }),
                }];
            }
            EventBody::StatementCompleted(c) => {
                (self.activity_id, self.activity_name) = completed_activity(&c.tags);
                self.action = ALLOWED;
                self.success = c.outcome == "ok" || c.outcome == "suspended";
                self.status_detail = c
                    .sqlstate
                    .as_ref()
                    .map(|s| format!("SQLSTATE {s}"))
                    .or_else(|| (!self.success).then(|| c.outcome.clone()));
                self.duration = Some(c.duration_us / 1000);
                self.count = Some(c.rows);
                self.message = format!(
                    "statement {} completed: {} ({})",
                    c.statement,
                    c.outcome,
                    c.tags.join(", ")
                );
            }
            EventBody::ResultData(d) => {
                self.activity_id = activity::READ;
                self.activity_name = "Read";
                self.action = ALLOWED;
                self.count = Some(d.row_count.max(d.rows.len() as u64));
                self.message = format!(
                    "{} result rows of statement {}, {} kept{}",
                    d.row_count.max(d.rows.len() as u64),
                    d.statement,
                    d.rows.len(),
                    if d.truncated { " (truncated)" } else { "" }
                );
            }
            EventBody::Approval(a) => {
                self.activity_name = "Approval";
                self.success = !matches!(
                    a.state.as_str(),
                    "denied" | "expired" | "cancelled" | "withdrawn" | "refused"
                );
                self.action = match a.state.as_str() {
                    "approved" => ALLOWED,
                    "denied" | "expired" | "cancelled" | "withdrawn" | "refused" => DENIED,
                    _ => NO_ACTION,
                };
                self.disposition = match a.state.as_str() {
                    "requested" => Some((14, "Delayed")),
                    "approved" => Some((8, "Approved")),
                    "denied" => Some((2, "Blocked")),
                    _ => None,
                };
                if a.state == "denied" {
                    self.severity_id = 3;
                }
                self.status_detail = Some(a.state.clone());
                self.message = format!(
                    "approval {} of statement {}: {}{}",
                    a.request,
                    a.statement,
                    a.state,
                    a.by.as_ref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default()
                );
            }
            EventBody::SessionEnded(e) => {
                self.activity_name = "Disconnect";
                self.duration = Some(e.duration_ms);
                self.count = Some(e.statements);
                self.message = format!(
                    "session ended ({}): {} statements, {} refused",
                    e.reason, e.statements, e.refused
                );
            }
        }
    }
}

pub(super) fn severity_name(id: u8) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    }
}

/// `ip:port`, `[v6]:port` or `host:port` as an endpoint.
fn endpoint(addr: &str) -> Endpoint {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()),
        _ => (addr, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        Endpoint {
            ip: Some(host.to_owned()),
            hostname: None,
            port,
        }
    } else {
        Endpoint {
            ip: None,
            hostname: Some(host.to_owned()),
            port,
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (0 if it is not one).
pub(super) fn epoch_ms(ts: &str) -> i64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// The activity of a command word: what it does to data, in OCSF's terms.
fn command_activity(word: &str) -> Option<(u8, &'static str)> {
    Some(match word.to_ascii_uppercase().as_str() {
        "INSERT" => (activity::WRITE, "Write"),
        "UPDATE" | "MERGE" | "ALTER" | "GRANT" | "REVOKE" | "COMMENT" | "REINDEX" | "CLUSTER"
        | "REFRESH" | "SECURITY" => (activity::UPDATE, "Update"),
        "DELETE" | "TRUNCATE" | "DROP" => (activity::DELETE, "Delete"),
        "CREATE" => (activity::CREATE, "Create"),
        _ => return None,
    })
}

/// A statement's activity, before it runs: a copy's direction from its class,
/// else the first command word of its text (a `WITH` query, whose command
/// follows its CTEs, counts as a query: its completion names what it did).
pub(super) fn statement_activity(sql: &str, classes: &[String]) -> (u8, &'static str) {
    if classes.iter().any(|c| c == "copy-in") {
        return (activity::WRITE, "Write");
    }
    if classes.iter().any(|c| c == "copy-out") {
        return (activity::READ, "Read");
    }
    first_word(sql)
        .and_then(command_activity)
        .unwrap_or((activity::QUERY, "Query"))
}

/// A completed statement's activity, from PostgreSQL's own command tags (`INSERT
/// 0 3`, `DELETE 2`, `CREATE TABLE`, `SELECT 5` for `SELECT … INTO`, which
/// creates a table, is named `SELECT` too and counts as a query): the first tag
/// that changes data.
pub(super) fn completed_activity(tags: &[String]) -> (u8, &'static str) {
    tags.iter()
        .filter_map(|t| t.split_whitespace().next())
        .find_map(|w| match w {
            "COPY" => None,
            w => command_activity(w),
        })
        .unwrap_or((activity::QUERY, "Query"))
}

/// The first word of a SQL text, past blanks, comments and opening parentheses.
fn first_word(sql: &str) -> Option<&str> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = rest.strip_prefix("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 1;
            let mut chars = r.char_indices().peekable();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match (c, chars.peek().map(|&(_, n)| n)) {
                    ('/', Some('*')) => {
                        depth += 1;
                        chars.next();
                    }
                    ('*', Some('/')) => {
                        depth -= 1;
                        chars.next();
                        if depth == 0 {
                            end = i + 2;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &r[end.min(r.len())..];
        } else {
            break;
        }
    }
    let word = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .filter(|w| !w.is_empty())?;
    Some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dml_and_ddl_map_to_the_class_activities() {
        let none: &[String] = &[];
        for (sql, want) in [
            ("insert into t values (1)", activity::WRITE),
            ("  -- note\n UPDATE t SET a = 1", activity::UPDATE),
            (
                "/* a /* nested */ comment */ delete from t",
                activity::DELETE,
            ),
            ("truncate t", activity::DELETE),
            ("drop table t", activity::DELETE),
            ("create table t (a int)", activity::CREATE),
            ("alter table t add b int", activity::UPDATE),
            (
                "merge into t using s on true when matched then delete",
                activity::UPDATE,
            ),
            ("(select 1)", activity::QUERY),
            (
                "with x as (delete from t returning *) select * from x",
                activity::QUERY,
            ),
            ("begin", activity::QUERY),
            ("", activity::QUERY),
        ] {
            assert_eq!(statement_activity(sql, none).0, want, "{sql}");
        }
        let copy_in = ["copy-in".to_owned()];
        assert_eq!(
            statement_activity("copy t from stdin", &copy_in).0,
            activity::WRITE
        );
        let copy_out = ["copy-out".to_owned()];
        assert_eq!(
            statement_activity("copy t to stdout", &copy_out).0,
            activity::READ
        );
        let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            completed_activity(&tags(&["INSERT 0 3"])).0,
            activity::WRITE
        );
        assert_eq!(
            completed_activity(&tags(&["BEGIN", "DELETE 2", "COMMIT"])).0,
            activity::DELETE
        );
        assert_eq!(completed_activity(&tags(&["SELECT 5"])).0, activity::QUERY);
        assert_eq!(
            completed_activity(&tags(&["CREATE TABLE"])).0,
            activity::CREATE
        );
    }
}
