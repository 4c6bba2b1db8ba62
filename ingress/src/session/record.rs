//! A session's evidence: its chain of events, its counts, and the records of
//! its statements and their completions.

use gatehouse_schemas::decision::{Decision, Verdict};
use gatehouse_schemas::evidence::{
    EventBody, ResultData, Statement, StatementCompleted, StatementObjects, StatementPath,
};

use crate::evidence::completion::Completion;
use crate::evidence::{Chain, EvidenceError, Recorder, Ticket};
use crate::masking;

/// What both directions of a session record into.
pub(super) struct SessionEvidence {
    /// The session's chain (`None`: this gateway records no evidence).
    pub chain: Option<Chain>,
    /// Statements seen.
    pub statements: u64,
    /// Statements refused.
    pub refused: u64,
}

impl SessionEvidence {
    /// Records one event; `None` when this gateway records no evidence.
    pub fn record(
        &mut self,
        recorder: Option<&Recorder>,
        body: EventBody,
    ) -> Option<Result<(u64, Ticket), EvidenceError>> {
        Some(self.chain.as_mut()?.record(recorder?, body))
    }

    /// Records how statements ended (their result data first: replay shows a
    /// statement's rows, then how it ended).
    pub fn complete(&mut self, recorder: Option<&Recorder>, done: Vec<Completion>) {
        for mut c in done {
            for set in std::mem::take(&mut c.results) {
                let body = EventBody::ResultData(ResultData {
                    statement: c.stmt,
                    columns: set.columns,
                    rows: set.rows,
                    truncated: set.truncated,
                    row_count: set.count,
                });
                self.record_or_log(recorder, body, c.stmt, "result_data_not_recorded");
            }
            let body = EventBody::StatementCompleted(StatementCompleted {
                statement: c.stmt,
                outcome: c.outcome.to_owned(),
                tags: c.tags,
                rows: c.rows,
                duration_us: c.duration_us,
                sqlstate: c.sqlstate,
            });
            self.record_or_log(recorder, body, c.stmt, "completion_not_recorded");
        }
    }

    /// Records an event nothing waits on; a failure (the session's later
    /// records refuse its statements anyway) is logged as `what`.
    fn record_or_log(
        &mut self,
        recorder: Option<&Recorder>,
        body: EventBody,
        statement: u64,
        what: &'static str,
    ) {
        if let Some(Err(e)) = self.record(recorder, body) {
            tracing::warn!(error = %e, statement, "{what}");
        }
    }

    /// Records a statement event; `count`: a statement the session's count
    /// has not seen yet (a held statement released was counted when held).
    /// `Ok(None)`: this gateway records no evidence.
    pub fn statement(
        &mut self,
        recorder: Option<&Recorder>,
        statement: Statement,
        count: bool,
    ) -> Result<Option<(u64, Ticket)>, EvidenceError> {
        let forwarded = statement.forwarded;
        if count {
            self.statements += 1;
        }
        if !forwarded {
            self.refused += 1;
        }
        match self.record(recorder, EventBody::Statement(statement)) {
            None => Ok(None),
            Some(Ok(recorded)) => Ok(Some(recorded)),
            Some(Err(e)) => {
                if forwarded {
                    self.refused += 1;
                }
                tracing::warn!(error = %e, "statement_refused_evidence_unavailable");
                Err(e)
            }
        }
    }
}

/// A statement event's body, without parameters. `key` keys the `hash`
/// method for values shown masked.
pub(super) fn statement_record(
    path: StatementPath,
    name: &str,
    sql: &str,
    function_oid: Option<u32>,
    decision: Option<&Decision>,
    forwarded: bool,
    key: &[u8],
) -> Statement {
    let reason = decision.and_then(|d| match &d.verdict {
        Verdict::Block { reason } | Verdict::Approve { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    // A masked caller's statement may carry a masked value in a literal
    // (`insert ... values ('123-45-6789')`), whatever its verdict: evidence
    // shows it masked (see `masking::values`).
    Statement {
        path,
        statement_name: (!name.is_empty()).then(|| name.to_owned()),
        portal: None,
        sql: match decision {
            Some(d) => masking::values::shown_sql(d, sql, key).into_owned(),
            None => sql.to_owned(),
        },
        function_oid,
        params: None,
        verdict: decision.map_or("block", |d| d.verdict.name()).to_owned(),
        rule: decision.and_then(|d| d.rule.clone()),
        reason,
        policy_version: decision.map(|d| d.policy_version.clone()),
        classes: decision
            .map(|d| d.statements.iter().flat_map(statement_classes).collect())
            .unwrap_or_default(),
        shadow: decision.map(|d| d.shadow.clone()).unwrap_or_default(),
        forwarded,
        approval: None,
        objects: decision.map(StatementObjects::of),
    }
}

/// A statement's classes, primary first (a decider that predates several
/// classes a statement sends its one class alone).
fn statement_classes(s: &gatehouse_schemas::decision::StatementSummary) -> Vec<String> {
    if s.classes.is_empty() {
        vec![s.class.clone()]
    } else {
        s.classes.clone()
    }
}
