//! What the ingress asks the decider, and what it answers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Identity, ProtocolKind};

/// NATS subject of decision requests (request/reply, queue group [`DECIDE_QUEUE`]).
pub const DECIDE_SUBJECT: &str = "gatehouse.v1.decide";
/// Queue group of decider instances: each request reaches one of them.
pub const DECIDE_QUEUE: &str = "gatehouse-decider";
/// NATS subject on which each decider announces the policy it has loaded
/// ([`PolicyAnnouncement`]): at start, after every reload, and periodically, so
/// that ingresses learn a new version and empty their verdict caches.
pub const POLICY_SUBJECT: &str = "gatehouse.v1.policy";
/// Header of a decider's reply to a request it could not decide; the body is a
/// [`DecideError`]. (The NATS service API's convention for error replies.)
pub const ERROR_HEADER: &str = "Nats-Service-Error";
/// Header beside [`ERROR_HEADER`] with an HTTP-like code (`400`: bad request).
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// A statement to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRequest {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The Gatehouse role of the session.
    pub role: String,
    /// The caller.
    pub identity: Identity,
    /// Which message carried the SQL.
    pub protocol: ProtocolKind,
    /// The SQL text (empty for a `FunctionCall`).
    pub sql: String,
    /// The function OID of a `FunctionCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_oid: Option<u32>,
    /// Statements the session prepared with SQL `PREPARE`, by name, as inner SQL:
    /// an `EXECUTE name` is decided as that text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prepared: BTreeMap<String, String>,
    /// What the ingress looked up in the upstream catalog for this text.
    #[serde(flatten)]
    pub catalog: CatalogFacts,
}

/// What the ingress looked up in the upstream catalog for a statement text
/// (asked for by [`Decision::relations`] and [`Decision::functions`]), shown
/// to the decider with the text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CatalogFacts {
    /// Views (and materialized views) among the relations a masked caller's
    /// statement reads ([`Decision::relations`]), by their schema-qualified
    /// name (`clinic.v`; identifiers quoted as PostgreSQL's `quote_ident`
    /// does): the decider's lineage reads a view as its definition, so that a
    /// value derived from a view column is masked like one derived from the
    /// table column it shows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub views: BTreeMap<String, ViewDefinition>,
    /// The functions each name of [`Decision::functions`] may run, as the
    /// upstream's `pg_proc` has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<Resolution>,
}

/// How a statement reaches a function.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// By its name: a call in an expression, a table function in `FROM`,
    /// `CALL`.
    Function,
    /// Through an operator written with a symbol PostgreSQL's own operators
    /// do not use (`#=#`), or as `OPERATOR(schema.op)`: the function behind
    /// it is `pg_operator.oprcode`.
    Operator,
    /// Through a cast to (or a literal of) a type not built into PostgreSQL:
    /// the functions behind it are the casts into it (`pg_cast`), its input
    /// function and, for a domain, the functions its constraints call.
    Type,
}

/// A name through which a statement may run a function, as written (folded
/// like identifiers: lower case unless quoted).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct CallName {
    /// What the name is.
    pub kind: CallKind,
    /// The schema, when written (`etl.purge`); `None`: resolved by the
    /// session's search_path, which the ingress does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The function's, operator's or type's own name.
    pub name: String,
}

impl std::fmt::Display for CallName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        };
        match self.kind {
            CallKind::Function => f.write_str(&name),
            CallKind::Operator => write!(f, "operator {name}"),
            CallKind::Type => write!(f, "type {name}"),
        }
    }
}

/// A function of the upstream catalog.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Callee {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Created by initdb (its OID is below 16384, PostgreSQL's
    /// `FirstNormalObjectId`): built into PostgreSQL.
    pub builtin: bool,
}

impl std::fmt::Display for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The functions a [`CallName`] may run: every function of that name (in
/// every schema, when the name is unqualified: the session's search_path may
/// put any schema first, and overloading may pick another schema's function
/// anyway); for an operator, the functions of every operator of that name;
/// for a type, see [`CallKind::Type`]. Empty when there is none (the server
/// will report the error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resolution {
    /// The name as the decider gave it.
    #[serde(flatten)]
    pub call: CallName,
    /// What it may run.
    pub callees: Vec<Callee>,
}

/// A view's definition as the upstream catalog has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ViewDefinition {
    /// Its output columns' names, in order.
    pub columns: Vec<String>,
    /// Its query, from `pg_get_viewdef` under a `search_path` of `pg_catalog`
    /// only (so every relation in it is schema-qualified).
    pub query: String,
}

/// How a masked value is shown. Text-like values (text, varchar, char, name,
/// json, jsonb, unknown) are rewritten as the method says; a value of any other
/// type under a mask becomes NULL whatever the method (a number or a date has no
/// masked spelling a client could still parse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum MaskMethod {
    /// A fixed string, `****`.
    Redact,
    /// NULL.
    Null,
    /// Keep the first `keep_first` and last `keep_last` characters, replace
    /// every other letter or digit by `*` (separators stay: `***-**-6789`).
    Partial {
        /// Characters kept at the start.
        #[serde(default)]
        keep_first: u32,
        /// Characters kept at the end.
        #[serde(default)]
        keep_last: u32,
    },
    /// Keyed HMAC-SHA-256 of the value, hex (the ingress holds the key): stable
    /// within a key, so joins and group-bys on the masked output still work.
    Hash,
    /// Keep the domain of an e-mail address: `****@example.org`.
    Email,
    /// Not a policy method: what content detectors give a text column (see
    /// [`Detector`]). Only what they find inside a value is masked, every
    /// letter and digit of each match shown as `*`; the rest of the value,
    /// and a value of any other type, stays as it is.
    Detect {
        /// The detectors that scan the value.
        detectors: Vec<Detector>,
    },
}

/// A content detector: finds one kind of sensitive value inside free text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// US social security numbers written `123-45-6789`.
    Ssn,
    /// Payment card numbers: 13 to 19 digits, in groups separated by single
    /// spaces or dashes or none, that pass the Luhn check.
    Pan,
    /// E-mail addresses (`local@domain.tld`).
    Email,
    /// Phone numbers: E.164 (`+14155552671`, `+44 20 7946 0958`) and North
    /// American forms with separators (`(415) 555-2671`, `415-555-2671`,
    /// `1 415 555 2671`).
    Phone,
}

impl Detector {
    /// Every detector, in the order of their names.
    pub const ALL: [Detector; 4] = [Self::Ssn, Self::Pan, Self::Email, Self::Phone];

    /// The detector's name in policies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ssn => "ssn",
            Self::Pan => "pan",
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

impl MaskMethod {
    /// The method's name in policies and evidence.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Redact => "redact",
            Self::Null => "null",
            Self::Partial { .. } => "partial",
            Self::Hash => "hash",
            Self::Email => "email",
            Self::Detect { .. } => "detect",
        }
    }

    /// Strictness, to choose when several methods apply to one value: the
    /// strictest one shows the least.
    pub fn strictness(&self) -> u8 {
        match self {
            Self::Null => 5,
            Self::Redact => 4,
            Self::Hash => 3,
            Self::Email => 2,
            Self::Partial { .. } => 1,
            Self::Detect { .. } => 0,
        }
    }
}

/// A masked table column: the ingress masks every result column whose origin
/// (the `RowDescription` table OID and attribute number, resolved against the
/// upstream catalog) matches `column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MaskColumn {
    /// `schema.table.column` pattern (globs); a rule naming a data class gets
    /// one entry per column pattern of the class.
    pub column: String,
    /// How it is shown.
    #[serde(flatten)]
    pub method: MaskMethod,
    /// The data class the rule named, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The mask rule.
    #[serde(default)]
    pub rule: String,
}

/// An output column the decider's lineage found reading a masked column, by
/// position: derived values (`upper(ssn)`, `row_to_json(p)`) carry no table OID
/// in `RowDescription`, so the ingress masks them by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MaskOutput {
    /// Which statement of the text (0-based).
    pub statement: u32,
    /// Which output column (0-based).
    pub position: u32,
    /// The masked column it reads (the pattern that matched).
    pub source: String,
    /// How it is shown.
    #[serde(flatten)]
    pub method: MaskMethod,
}

/// A value a statement sends towards a masked column (a bind parameter, or a
/// literal of its text), and how evidence shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValueMask {
    /// `n` of a parameter `$n`; for a literal, its ordinal (0-based) among the
    /// text's value tokens (literals and `$n` placeholders, in order).
    pub index: u32,
    /// The masked column it targets (the pattern that matched).
    pub column: String,
    /// How evidence shows it.
    #[serde(flatten)]
    pub method: MaskMethod,
}

/// For a caller a mask rule applies to: what evidence and logs may show of the
/// values the statement text carries. A value listed in `literals` or `params`
/// targets (is written to, compared with, or computed with) a masked column and
/// is shown masked; one listed as clear is known to target none and is shown as
/// it is; any other is withheld (the decider could not tell where it goes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ValueMasks {
    /// How many value tokens (literals and `$n` placeholders) the decided text
    /// has. A text with another count (one sharing a cached verdict) is
    /// recorded with every literal withheld.
    pub values: u32,
    /// Value tokens that target a masked column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub literals: Vec<ValueMask>,
    /// Value tokens known to target no masked column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clear_literals: Vec<u32>,
    /// Parameters that target a masked column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ValueMask>,
    /// Parameters (`n` of `$n`) known to target no masked column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clear_params: Vec<u32>,
    /// Where the decided text's value tokens and comments stand, in order:
    /// what the ingress needs to show the text masked without reading SQL
    /// itself. `None` when the text could not be read: evidence then
    /// withholds all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<Vec<TextSpan>>,
}

/// Where one value token or comment of a text stands, in bytes of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TextSpan {
    /// Its first byte.
    pub start: u32,
    /// One past its last byte.
    pub end: u32,
    /// What it is.
    #[serde(flatten)]
    pub kind: SpanKind,
}

/// What a [`TextSpan`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SpanKind {
    /// A literal (a value token). `content`: bytes of the text that spell its
    /// value exactly, when it is written without escapes (a mask method is
    /// applied to them); without, it is only ever shown withheld.
    Literal {
        /// Start and end of its value's bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<(u32, u32)>,
    },
    /// A `$n` placeholder (a value token; shown as written).
    Param,
    /// A comment (never shown: it may hold anything).
    Comment,
}

/// How `COPY ... TO` writes rows.
/// <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9>
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "format")]
pub enum CopyFormat {
    /// `text`: fields split by `delimiter`, backslash escapes, rows end at a newline.
    Text {
        /// Field delimiter (one byte).
        delimiter: u8,
        /// How NULL is written.
        null: Vec<u8>,
        /// Whether the first row holds column names.
        header: bool,
    },
    /// `csv`: quoted fields may hold delimiters and newlines.
    Csv {
        /// Field delimiter (one byte).
        delimiter: u8,
        /// How NULL is written (unquoted).
        null: Vec<u8>,
        /// Whether the first row holds column names.
        header: bool,
        /// Quote character.
        quote: u8,
        /// Escape character inside quotes.
        escape: u8,
    },
    /// `binary`: a signature, then length-prefixed fields.
    Binary,
}

/// What one statement of a text does to result rows that arrive without
/// their own description (the ingress masks them by it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum ResultOp {
    /// `COPY ... TO STDOUT`: `probe` is a query with the same output columns
    /// (its `Describe` gives their origins and types).
    CopyOut {
        /// `SELECT` of the copied columns.
        probe: String,
        /// How the rows are written.
        format: CopyFormat,
    },
    /// `DECLARE name CURSOR [WITH HOLD] FOR ...`.
    Declare {
        /// The cursor's name, folded.
        name: String,
        /// Whether it outlives its transaction.
        hold: bool,
    },
    /// `FETCH ... FROM name` (rows) or `MOVE` (none).
    Fetch {
        /// The cursor's name, folded.
        name: String,
    },
    /// `CLOSE name`; `None`: `CLOSE ALL`, `DISCARD ALL`.
    Close {
        /// The cursor's name, folded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Anything else.
    Other,
}

/// How deep views may nest inside views before the decider gives up (and the
/// ingress stops asking again with their definitions).
pub const MAX_VIEW_DEPTH: usize = 8;

/// A relation's or function's name as the decider writes it for the ingress
/// ([`Decision::relations`], [`Decision::functions`]) and the ingress keys
/// view definitions ([`DecisionRequest::views`]): each part bare when it is
/// a plain lower-case identifier, else double-quoted with quotes doubled, so
/// that it reads back exactly.
pub fn relation_name(schema: Option<&str>, name: &str) -> String {
    fn part(p: &str) -> String {
        let plain = p
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
        if plain {
            p.to_owned()
        } else {
            format!("\"{}\"", p.replace('"', "\"\""))
        }
    }
    match schema {
        Some(s) => format!("{}.{}", part(s), part(name)),
        None => part(name),
    }
}

/// What happens to a statement. Ordered from least to most strict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// Forward it with these result columns masked.
    Mask {
        /// Masked table columns and their methods.
        columns: Vec<MaskColumn>,
        /// Output columns masked by position (derived values).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<MaskOutput>,
        /// Content detectors that scan every text output column.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detect: Vec<Detector>,
    },
    /// Hold it until an approver in `approvers` approves; once approved, run it
    /// with these result columns masked (a mask rule applies to the caller
    /// whatever else the statement needs).
    Approve {
        /// Why it needs approval.
        reason: String,
        /// The approver group.
        approvers: String,
        /// Masked table columns and their methods, as for [`Verdict::Mask`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<MaskColumn>,
        /// Output columns masked by position, as for [`Verdict::Mask`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<MaskOutput>,
        /// Content detectors, as for [`Verdict::Mask`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detect: Vec<Detector>,
    },
    /// Refuse it.
    Block {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// Strictness: block > approve > mask > allow.
    pub fn rank(&self) -> u8 {
        match self {
            Self::Allow => 0,
            Self::Mask { .. } => 1,
            Self::Approve { .. } => 2,
            Self::Block { .. } => 3,
        }
    }

    /// The result columns to mask when the statement runs: those of a `mask`
    /// verdict, and those an `approve` verdict carries (an approved statement's
    /// results are masked like any other). `None` when nothing is masked.
    pub fn masks(&self) -> Option<(&[MaskColumn], &[MaskOutput])> {
        match self {
            Self::Mask {
                columns, outputs, ..
            } => Some((columns, outputs)),
            Self::Approve {
                columns,
                outputs,
                detect,
                ..
            } if !columns.is_empty() || !outputs.is_empty() || !detect.is_empty() => {
                Some((columns, outputs))
            }
            _ => None,
        }
    }

    /// The content detectors that scan every text output column when the
    /// statement runs (empty when none, or nothing is masked).
    pub fn detectors(&self) -> &[Detector] {
        match self {
            Self::Mask { detect, .. } | Self::Approve { detect, .. } => detect,
            _ => &[],
        }
    }

    /// The verdict's name, for logs and evidence.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Mask { .. } => "mask",
            Self::Approve { .. } => "approve",
            Self::Block { .. } => "block",
        }
    }
}

/// What one statement of the text turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatementSummary {
    /// Its primary class (`read`, `write`, `ddl`, ...): the first of `classes`.
    pub class: String,
    /// Every class it has, primary first (`CREATE TABLE t AS SELECT ...` is
    /// `ddl` and `read`); empty from a decider that predates several classes
    /// a statement, where `class` is all there is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Literal-free fingerprint.
    pub fingerprint: String,
    /// `PREPARE name AS inner`: the session must remember `inner` under `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepares: Option<(String, String)>,
    /// `DEALLOCATE name` (`Some(None)` for ALL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocates: Option<Option<String>>,
    /// The objects it reads (for `EXECUTE`, those of the statement it runs),
    /// `schema.name` as the policy resolved them: what evidence records, so
    /// that auditors can ask who read or changed a table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// The objects it writes, resolved like [`StatementSummary::reads`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
    /// The functions it calls, as the policy matches them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

/// A shadow rule that matched: what it would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShadowHit {
    /// The rule id.
    pub rule: String,
    /// Its verdict.
    pub verdict: Verdict,
}

/// The decider's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The verdict for the whole text (the strictest of its statements').
    pub verdict: Verdict,
    /// The rule that produced the verdict (`None`: default deny or unparsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The policy version that decided.
    pub policy_version: String,
    /// Per statement, in order.
    pub statements: Vec<StatementSummary>,
    /// Shadow rules that matched (recorded, not enforced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowHit>,
    /// Whether the ingress may reuse the verdict for the same text from callers of
    /// the same identity class under the same policy version.
    pub cacheable: bool,
    /// Whether the verdict holds for every text of the same shape (literals
    /// blanked): a single plain read whose analysis reads no literal value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shape_cacheable: bool,
    /// Present when a mask rule applies to the caller, whatever the verdict
    /// (a refused statement's values are recorded too): which of the text's
    /// values evidence shows masked, clear or withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ValueMasks>,
    /// Present when a mask rule applies to the caller: the relations the text
    /// reads or writes (those of the views in [`DecisionRequest::views`]
    /// included), as written (`v`, `clinic.v`; identifiers quoted as
    /// `quote_ident` does). The ingress looks them up, and asks again with
    /// the definitions of those that are views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<String>,
    /// The names through which the text may run functions (calls, custom
    /// operators, casts to types not built into PostgreSQL; for a masked
    /// caller, those of the views in [`CatalogFacts::views`] too), for every
    /// caller; empty for a text that calls none (no catalog look-up then).
    /// The verdict holds as long as every name resolves to built-in
    /// functions only (the decider takes an unqualified name for the
    /// built-in one); the ingress looks the names up in the upstream catalog
    /// and, when one may run a function not built into PostgreSQL, asks again
    /// with [`CatalogFacts::functions`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<CallName>,
    /// Per statement, what it does to rows that come without their own
    /// description (a COPY's, a cursor's); empty when no statement does
    /// anything of the kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultOp>,
}

/// A decider announcing the policy it decides with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyAnnouncement {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The loaded policy's version (as in [`Decision::policy_version`]).
    pub version: String,
    /// Which decider instance speaks (random per process), so that operators
    /// and tests can tell instances apart.
    pub decider: String,
}

/// The reply to a request the decider could not decide (not JSON, unknown `v`).
/// Sent with the [`ERROR_HEADER`] header; the ingress refuses the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DecideError {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// What was wrong with the request.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_verdicts_roundtrip_with_method_parameters() {
        let v = Verdict::Mask {
            columns: vec![MaskColumn {
                column: "clinic.patients.ssn".into(),
                method: MaskMethod::Partial {
                    keep_first: 0,
                    keep_last: 4,
                },
                class: Some("pii.ssn".into()),
                rule: "mask-ssn".into(),
            }],
            outputs: vec![MaskOutput {
                statement: 0,
                position: 2,
                source: "clinic.patients.ssn".into(),
                method: MaskMethod::Hash,
            }],
            detect: vec![Detector::Ssn, Detector::Pan],
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["detect"][1], "pan");
        assert_eq!(json["columns"][0]["method"], "partial");
        assert_eq!(json["columns"][0]["keep_last"], 4);
        assert_eq!(json["outputs"][0]["method"], "hash");
        assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), v);
    }

    #[test]
    fn decisions_roundtrip_with_stable_names() {
        let d = Decision {
            v: 1,
            verdict: Verdict::Block {
                reason: "no deletes".into(),
            },
            rule: Some("no-deletes".into()),
            policy_version: "p1-abc".into(),
            statements: vec![StatementSummary {
                class: "ddl".into(),
                classes: vec!["ddl".into(), "read".into()],
                fingerprint: "00ff".into(),
                prepares: Some(("q".into(), "delete from t".into())),
                deallocates: None,
                reads: vec!["public.t".into()],
                writes: vec!["public.t".into()],
                calls: vec!["now".into()],
            }],
            shadow: vec![ShadowHit {
                rule: "s".into(),
                verdict: Verdict::Allow,
            }],
            cacheable: true,
            shape_cacheable: false,
            values: None,
            relations: vec!["clinic.v".into()],
            functions: vec![CallName {
                kind: CallKind::Operator,
                schema: Some("public".into()),
                name: "#=#".into(),
            }],
            results: vec![
                ResultOp::CopyOut {
                    probe: "SELECT * FROM t".into(),
                    format: CopyFormat::Csv {
                        delimiter: b',',
                        null: Vec::new(),
                        header: true,
                        quote: b'"',
                        escape: b'"',
                    },
                },
                ResultOp::Close { name: None },
            ],
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["verdict"]["verdict"], "block");
        assert_eq!(json["functions"][0]["kind"], "operator");
        assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), d);
        assert!(
            Verdict::Block {
                reason: String::new()
            }
            .rank()
                > Verdict::Allow.rank()
        );
    }

    #[test]
    fn announcements_and_errors_roundtrip() {
        let a = PolicyAnnouncement {
            v: 1,
            version: "p2".into(),
            decider: "d-1".into(),
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            serde_json::from_str::<PolicyAnnouncement>(&json).unwrap(),
            a
        );
        let e = DecideError {
            v: 1,
            error: "bad".into(),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<DecideError>(&json).unwrap(), e);
        // Subjects are versioned and prefixed.
        for s in [DECIDE_SUBJECT, POLICY_SUBJECT] {
            assert!(s.starts_with("gatehouse.v1."), "{s}");
        }
    }
}
