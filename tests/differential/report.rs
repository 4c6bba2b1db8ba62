//! The differential test's findings: the property's violations, and parse
//! coverage by statement kind with what stays unparsed grouped by cause.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use gatehouse_decider::StatementClass as C;

use crate::oracle::{LogLevel, Outcome};
use crate::script::Record;

/// A statement where the decider's account is weaker than PostgreSQL's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The script.
    pub file: String,
    /// The statement's first line.
    pub line: usize,
    /// Which part of the property fails.
    pub property: &'static str,
    /// What PostgreSQL and the decider said, and the statement.
    pub detail: String,
}

/// A read-only rule allows a statement that changed something.
pub const READ_ONLY_ALLOWS_CHANGE: &str = "a read-only rule allows it";
/// Logged as `ddl`, classed without `ddl`, `dcl` or `admin`.
pub const DDL_NOT_DDL: &str = "logged as ddl, not classed ddl";
/// Logged as `mod`, classed without `write` or stricter.
pub const MOD_NOT_WRITE: &str = "logged as mod, not classed write or stricter";

fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(140) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// Every violation of the property among `records`.
pub fn violations(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in records {
        let o = &r.observed;
        let classes = r
            .decided
            .as_ref()
            .map(|d| d.class_names().join("+"))
            .unwrap_or_default();
        let mut push = |property, said: String| {
            out.push(Violation {
                file: r.file.clone(),
                line: r.line,
                property,
                detail: format!(
                    "PostgreSQL: {said}; decider: {classes}: {}",
                    snippet(&r.text)
                ),
            })
        };
        if o.changed() && r.read_only_allows {
            let mut said = Vec::new();
            if o.wrote {
                said.push("wrote".to_owned());
            }
            if let Some(tag) = &o.ddl_event {
                said.push(format!("ran {tag}"));
            }
            if o.setting_changed {
                said.push("changed a setting".to_owned());
            }
            if let Some(level @ (LogLevel::Mod | LogLevel::Ddl)) = o.log {
                said.push(format!("logged {level:?}"));
            }
            push(READ_ONLY_ALLOWS_CHANGE, said.join(", "));
        }
        let Some(d) = &r.decided else { continue };
        let has = |set: &[C]| set.iter().any(|c| d.classes.contains(c));
        match o.log {
            Some(LogLevel::Ddl) if !has(&[C::Ddl, C::Dcl, C::Admin]) => {
                push(DDL_NOT_DDL, "logged ddl".into())
            }
            Some(LogLevel::Mod) if !has(&[C::Write, C::Ddl, C::Dcl, C::Admin, C::CopyIn]) => {
                push(MOD_NOT_WRITE, "logged mod".into())
            }
            _ => {}
        }
    }
    out
}

/// Parse coverage: per kind, statements PostgreSQL ran without error and how
/// many of them the decider parsed.
#[derive(Debug, Default)]
pub struct Figures {
    /// Every statement of the scripts run.
    pub statements: usize,
    /// By outcome: ran, failed, not run.
    pub ran: usize,
    pub failed: usize,
    pub not_run: usize,
    /// Ran outside a transaction block (observed by log level alone).
    pub bare: usize,
    /// Queries and DML PostgreSQL ran: (ran, parsed).
    pub queries: (usize, usize),
    /// Everything else PostgreSQL ran: (ran, parsed).
    pub others: (usize, usize),
    /// Every statement, whatever PostgreSQL made of it: (all, parsed).
    pub everything: (usize, usize),
    /// Per kind: (query or DML, ran, parsed).
    pub kinds: BTreeMap<String, (bool, usize, usize)>,
    /// What PostgreSQL said the statements did.
    pub wrote: usize,
    pub logged_ddl: usize,
    pub logged_mod: usize,
    pub ddl_events: usize,
    pub settings: usize,
}

impl Figures {
    /// The figures of `records`.
    pub fn of(records: &[Record]) -> Figures {
        let mut f = Figures::default();
        for r in records {
            let o = &r.observed;
            let parsed = r.unparsed.is_none();
            f.statements += 1;
            f.everything.0 += 1;
            f.everything.1 += usize::from(parsed);
            f.bare += usize::from(o.bare);
            f.wrote += usize::from(o.wrote);
            f.ddl_events += usize::from(o.ddl_event.is_some());
            f.settings += usize::from(o.setting_changed);
            f.logged_ddl += usize::from(o.log == Some(LogLevel::Ddl));
            f.logged_mod += usize::from(o.log == Some(LogLevel::Mod));
            match o.outcome {
                Outcome::Ok => {
                    f.ran += 1;
                    let bucket = if r.query_or_dml {
                        &mut f.queries
                    } else {
                        &mut f.others
                    };
                    bucket.0 += 1;
                    bucket.1 += usize::from(parsed);
                    let k = f
                        .kinds
                        .entry(r.kind.clone())
                        .or_insert((r.query_or_dml, 0, 0));
                    k.1 += 1;
                    k.2 += usize::from(parsed);
                }
                Outcome::Error(_) => f.failed += 1,
                Outcome::NotRun(_) => f.not_run += 1,
            }
        }
        f
    }

    /// The share of queries and DML PostgreSQL ran that the decider parses.
    pub fn query_coverage(&self) -> f64 {
        share(self.queries)
    }
}

fn share((all, parsed): (usize, usize)) -> f64 {
    if all == 0 {
        1.0
    } else {
        parsed as f64 / all as f64
    }
}

fn percent(pair: (usize, usize)) -> String {
    format!("{:.2} % ({} of {})", 100.0 * share(pair), pair.1, pair.0)
}

/// The parser's message without positions and the token it stopped at, so
/// that statements failing for one cause share it.
fn cause(error: &str) -> String {
    let mut e = error.to_owned();
    if let Some(i) = e.find(" at Line:") {
        e.truncate(i);
    }
    if let Some(i) = e.find(", found:") {
        e.truncate(i);
    }
    e
}

/// The report: figures, violations, and everything unparsed by cause.
pub fn render(f: &Figures, records: &[Record], elapsed: Duration, all: bool) -> String {
    let mut out = String::new();
    let scope = if all {
        "the whole corpus"
    } else {
        "the CI scripts"
    };
    let _ = writeln!(
        out,
        "differential test over {scope}: {} statements in {:.0} s",
        f.statements,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "PostgreSQL: {} ran, {} failed, {} not run ({} of those that ran, outside a transaction block)",
        f.ran, f.failed, f.not_run, f.bare
    );
    let _ = writeln!(
        out,
        "PostgreSQL's account: {} wrote, {} logged as ddl, {} as mod, {} ran DDL (event trigger), {} changed a setting",
        f.wrote, f.logged_ddl, f.logged_mod, f.ddl_events, f.settings
    );
    let _ = writeln!(
        out,
        "parse coverage, queries and DML PostgreSQL ran: {}",
        percent(f.queries)
    );
    let _ = writeln!(
        out,
        "parse coverage, other statements PostgreSQL ran: {}",
        percent(f.others)
    );
    let _ = writeln!(
        out,
        "parse coverage, every statement of the scripts: {}",
        percent(f.everything)
    );
    let _ = writeln!(out, "\nby kind (statements PostgreSQL ran: parsed / ran):");
    let mut kinds: Vec<_> = f.kinds.iter().collect();
    kinds.sort_by_key(|(k, (q, ran, _))| (!q, std::cmp::Reverse(*ran), (*k).clone()));
    for (k, (q, ran, parsed)) in kinds {
        let _ = writeln!(
            out,
            "  {:<32} {:>6} / {:<6} {:>7.2} %{}",
            k,
            parsed,
            ran,
            100.0 * share((*ran, *parsed)),
            if *q { "  (query or DML)" } else { "" }
        );
    }
    let violations = violations(records);
    let _ = writeln!(
        out,
        "\nviolations of the property ({}; reviewed exceptions are listed in exceptions.rs):",
        violations.len()
    );
    for v in &violations {
        let _ = writeln!(out, "  {}:{} {}: {}", v.file, v.line, v.property, v.detail);
    }
    let mut causes: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.observed.outcome == Outcome::Ok) {
        if let Some(e) = &r.unparsed {
            causes
                .entry((r.kind.clone(), cause(e)))
                .or_default()
                .push(r);
        }
    }
    let mut causes: Vec<_> = causes.into_iter().collect();
    causes.sort_by_key(|(k, v)| (std::cmp::Reverse(v.len()), k.clone()));
    let _ = writeln!(
        out,
        "\nunparsed statements PostgreSQL ran, by kind and cause:"
    );
    for ((kind, cause), list) in causes {
        let _ = writeln!(out, "  {:>5}  {kind}: {cause}", list.len());
        for r in list.iter().take(3) {
            let _ = writeln!(
                out,
                "           {}:{}  {}",
                r.file,
                r.line,
                snippet(&r.text)
            );
        }
    }
    out
}
