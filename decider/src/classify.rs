//! The SQL analyser: parses a text with sqlparser (PostgreSQL dialect) and
//! describes each statement in it — class, objects read and written, functions
//! called, risk features — or reports it unparsed when it cannot be sure.
//!
//! The rule throughout: when sqlparser's tree could make a statement look less
//! dangerous than PostgreSQL would run it, take the stricter reading or refuse.

mod effects;
mod fallback;
mod functions;
pub(crate) mod names;
mod predicate;
mod rewrite;

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use sha2::{Digest, Sha256};
use sqlparser::ast::{
    AlterColumnOperation, AlterFunctionAction, AlterFunctionOperation, AlterRoleOperation,
    AlterSchemaOperation, AlterTableOperation, CommentObject, CopySource, CopyTarget,
    CreateTableLikeKind, DeclareType, DescribeAlias, DiscardObject, DropBehavior, Expr,
    FunctionArg, FunctionArgExpr, FunctionArguments, FunctionSecurity, GrantObjects, Ident,
    MergeAction, MergeClauseKind, ObjectName, ObjectNamePart, ObjectType, Query, ReferentialAction,
    Reset, SchemaName, Select, Set, SetExpr, Statement, TableFactor, TableObject, UtilityOption,
    Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::parsed::{Parsed, parse, tokenize};
use crate::{Analysis, ObjectRef, PreparedOp, Risk, StatementAnalysis, StatementClass};
use fallback::Recognized;
use functions::{
    QUERY_TEXT_FUNCTIONS, SCHEMA_NAME_FUNCTIONS, TABLE_NAME_FUNCTIONS, listed, setting_risks,
};

pub(crate) use functions::CallNames;
pub use functions::listed as listed_function;
pub use functions::{
    ADMIN_FUNCTIONS, BUILTIN_TYPES, RELATION_READING_FUNCTIONS, SIDE_EFFECT_FUNCTIONS,
    STATISTICS_FUNCTIONS, STATISTICS_RELATIONS,
};

/// How many levels of SQL text inside SQL text (`query_to_xml('select ...')`)
/// are analysed before the statement is simply called admin.
const MAX_NESTED_SQL: usize = 3;

/// Risks that come from what a statement does to rows and schema, as opposed to
/// the functions it calls. A plain EXPLAIN plans the statement without running
/// it, so it keeps only the function risks (which planning may still evaluate).
const STATEMENT_RISKS: [Risk; 6] = [
    Risk::UpdateWithoutWhere,
    Risk::DeleteWithoutWhere,
    Risk::Truncate,
    Risk::Drop,
    Risk::DropCascade,
    Risk::DataModifyingCte,
];

/// Analyses one SQL text (a simple-query string may hold several statements).
///
/// Never panics: anything unexpected, including a panic inside the parser,
/// comes back as [`Analysis::Unparsed`], which policy blocks by default.
pub fn analyze(sql: &str) -> Analysis {
    match Parsed::read(sql, false) {
        Ok(parsed) => analyze_parsed(&parsed, 0),
        Err(error) => Analysis::Unparsed { error },
    }
}

/// Analyses a text already read (see [`crate::parsed`]); `depth`: how deep in
/// SQL text inside SQL text it is. Never panics (as [`analyze`]).
pub(crate) fn analyze_parsed(parsed: &Parsed<'_>, depth: usize) -> Analysis {
    std::panic::catch_unwind(|| match statements(parsed, depth) {
        Ok(statements) => Analysis::Parsed { statements },
        Err(error) => Analysis::Unparsed { error },
    })
    .unwrap_or_else(|_| Analysis::Unparsed {
        error: "internal error while analysing the statement".to_owned(),
    })
}

fn analyze_text(sql: &str, depth: usize) -> Analysis {
    match Parsed::read(sql, false) {
        Ok(parsed) => match statements(&parsed, depth) {
            Ok(statements) => Analysis::Parsed { statements },
            Err(error) => Analysis::Unparsed { error },
        },
        Err(error) => Analysis::Unparsed { error },
    }
}

/// The normalized text of a one-statement SQL text (see `crate::shape`), or
/// `None` when it does not tokenize or holds several statements.
pub(crate) fn shape_of(sql: &str) -> Option<String> {
    check_unicode_spaces(sql).ok()?;
    let tokens = tokenize(sql).ok()?;
    let mut pieces = fallback::normalized_pieces(&tokens);
    (pieces.len() == 1).then(|| pieces.remove(0))
}

/// The text with every literal replaced by a placeholder, statement by statement
/// (for evidence of statements whose literals may hold masked values); a text
/// that does not tokenize becomes a fixed placeholder.
pub fn literal_free(sql: &str) -> String {
    match tokenize(sql) {
        Ok(tokens) => fallback::normalized_pieces(&tokens).join("; "),
        Err(_) => "<statement text withheld: it holds values under a mask>".to_owned(),
    }
}

/// What `crate::shape(sql).is_some()` says, given the text's normalized pieces.
pub(crate) fn has_shape(sql: &str, pieces: &[String]) -> bool {
    crate::shape::starts_with_select(sql) && pieces.len() == 1 && pieces[0].starts_with("SELECT ")
}

pub(crate) use fallback::{check_nesting, normalized_pieces, table_queries};

/// PostgreSQL's lexer takes any non-ASCII character, non-breaking space
/// included, as part of a name; sqlparser takes Unicode spaces for whitespace and
/// would read `pat<NBSP>ients` as table `pat` aliased `ients`. Such a space
/// outside a string, quoted name or comment is refused.
pub(crate) fn check_unicode_spaces(sql: &str) -> Result<(), String> {
    let odd = |c: char| c.is_whitespace() && !c.is_ascii();
    if !sql.chars().any(odd) {
        return Ok(());
    }
    // Mark each such space with a character sqlparser keeps as a token of its
    // own; one that survives outside literals shows up as that token.
    const MARK: char = '\u{1}';
    let marked: String = sql.chars().map(|c| if odd(c) { MARK } else { c }).collect();
    let outside = tokenize(&marked).map_or(true, |tokens| {
        tokens.iter().any(|t| t.token == Token::Char(MARK))
    });
    if outside {
        return Err(
            "non-ASCII whitespace between tokens: PostgreSQL would read it as part of a name"
                .to_owned(),
        );
    }
    Ok(())
}

/// The statements of a text, analysed.
fn statements(parsed: &Parsed<'_>, depth: usize) -> Result<Vec<StatementAnalysis>, String> {
    let normalized = &parsed.normalized;
    if let Ok(parsed) = &parsed.statements {
        // One normalized text per statement, unless semicolons inside a statement
        // make the split disagree with the parse (then print the tree instead).
        let aligned = normalized.len() == parsed.len();
        return parsed
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s, depth, aligned.then(|| normalized[i].as_str())))
            .collect();
    }
    let sql = parsed.sql;
    // sqlparser rejected the text. PostgreSQL runs a text only if every statement
    // in it parses, so analyse statement by statement, let the fallback recognise
    // the PostgreSQL statements sqlparser does not know, and refuse the whole
    // text if any one statement stays unknown.
    let mut out = Vec::new();
    for piece in fallback::split(tokenize(sql)?) {
        match parse(fallback::table_queries(piece.clone())) {
            Ok(parsed) => {
                let text = (parsed.len() == 1).then(|| fallback::normalized(&piece));
                for s in &parsed {
                    out.push(statement(s, depth, text.as_deref())?);
                }
            }
            Err(error) => match fallback::recognize(&piece) {
                Some(Recognized::Reparse(tokens)) => {
                    let with_spans = tokens.into_iter().map(TokenWithSpan::wrap).collect();
                    let parsed = parse(with_spans).map_err(|_| error)?;
                    let text = (parsed.len() == 1).then(|| fallback::normalized(&piece));
                    for s in &parsed {
                        out.push(statement(s, depth, text.as_deref())?);
                    }
                }
                Some(Recognized::Classified {
                    class,
                    risks,
                    writes,
                }) => {
                    let mut acc = Acc::new(depth);
                    acc.raise(class);
                    acc.risks.extend(risks);
                    acc.writes.extend(writes);
                    let normalized = fallback::normalized(&piece);
                    out.push(acc.finish(&normalized));
                }
                None => return Err(error),
            },
        }
    }
    Ok(out)
}

/// Analyses one parsed statement; `normalized` is its text for the fingerprint
/// when the caller has it from the tokens.
fn statement(
    stmt: &Statement,
    depth: usize,
    normalized: Option<&str>,
) -> Result<StatementAnalysis, String> {
    let mut acc = Acc::new(depth);
    acc.top(stmt)?;
    Ok(match normalized {
        Some(text) => acc.finish(text),
        None => acc.finish(&normalized_sql(stmt)),
    })
}

/// The statement printed back with every literal replaced by `?` and unquoted
/// names folded, for a statement whose own tokens are not at hand.
fn normalized_sql(stmt: &Statement) -> String {
    struct Blank;
    impl VisitorMut for Blank {
        type Break = ();
        fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
            value.value = Value::Placeholder("?".to_owned());
            ControlFlow::Continue(())
        }
        fn pre_visit_ident(&mut self, ident: &mut Ident) -> ControlFlow<()> {
            if ident.quote_style.is_none() {
                ident.value.make_ascii_lowercase();
            }
            ControlFlow::Continue(())
        }
    }
    let mut blank = stmt.clone();
    let _ = VisitMut::visit(&mut blank, &mut Blank);
    blank.to_string()
}

/// A WITH scope: the CTE names a table reference may mean, and for each CTE body
/// about to be visited, the names visible inside it.
struct Scope {
    visible: Vec<String>,
    bodies: Vec<(*const Query, Vec<String>)>,
}

/// What one statement is found to do, gathered while walking its tree.
struct Acc {
    depth: usize,
    classes: BTreeSet<StatementClass>,
    reads: BTreeSet<ObjectRef>,
    writes: BTreeSet<ObjectRef>,
    functions: BTreeSet<String>,
    calls: BTreeSet<gatehouse_schemas::decision::CallName>,
    risks: BTreeSet<Risk>,
    prepared: Option<PreparedOp>,
    scopes: Vec<Scope>,
    /// The table factors that are the target of an UPDATE, DELETE or MERGE: they
    /// appear in the tree where reads do, but are writes.
    targets: HashSet<*const TableFactor>,
    /// A query locks the rows it reads (`FOR UPDATE`, `FOR SHARE`, ...).
    row_locks: bool,
    /// How many queries and DML statements the walk is inside: where a bare
    /// name is a column. Outside them a keyword is a value
    /// (`SET x = on`, `WITH (fastupdate = on)`), not a misread column.
    row_scopes: usize,
}

impl Acc {
    fn new(depth: usize) -> Self {
        Acc {
            depth,
            classes: BTreeSet::new(),
            reads: BTreeSet::new(),
            writes: BTreeSet::new(),
            functions: BTreeSet::new(),
            calls: BTreeSet::new(),
            risks: BTreeSet::new(),
            prepared: None,
            scopes: Vec::new(),
            targets: HashSet::new(),
            row_locks: false,
            row_scopes: 0,
        }
    }

    /// The statement does (also) what `class` names.
    fn raise(&mut self, class: StatementClass) {
        self.classes.insert(class);
    }

    fn finish(mut self, normalized: &str) -> StatementAnalysis {
        if self.row_locks {
            // Which of them a `FOR UPDATE OF a` names is the alias's business;
            // every relation read may be locked.
            self.writes.extend(self.reads.iter().cloned());
        }
        if self.classes.is_empty() || !self.reads.is_empty() {
            self.classes.insert(StatementClass::Read);
        }
        let class = self
            .classes
            .iter()
            .copied()
            .max_by_key(|c| c.rank())
            .unwrap_or(StatementClass::Read);
        let mut analysis = StatementAnalysis {
            class,
            classes: self.classes,
            reads: self.reads,
            writes: self.writes,
            functions: self.functions,
            calls: self.calls,
            risks: self.risks,
            prepared: self.prepared,
            fingerprint: String::new(),
        };
        analysis.fingerprint = fingerprint(normalized, &analysis);
        analysis
    }

    /// A top-level statement. EXPLAIN and PREPARE wrap another statement and are
    /// decided by it; everything else is walked as a tree.
    fn top(&mut self, stmt: &Statement) -> Result<(), String> {
        match stmt {
            Statement::Explain {
                describe_alias: DescribeAlias::Explain,
                analyze,
                options,
                statement,
                ..
            } => {
                if *analyze || explain_runs(options.as_deref()) {
                    // EXPLAIN ANALYZE executes the statement: decided as it.
                    self.raise(StatementClass::Read);
                    self.top(statement)
                } else {
                    let mut inner = Acc::new(self.depth);
                    inner.top(statement)?;
                    self.plan_only(inner);
                    Ok(())
                }
            }
            Statement::Prepare {
                name, statement, ..
            } => {
                self.top(statement)?;
                self.raise(StatementClass::Prepared);
                self.prepared = Some(PreparedOp::Prepare {
                    name: names::ident(name),
                    inner_sql: statement.to_string(),
                });
                Ok(())
            }
            _ => match stmt.visit(self) {
                ControlFlow::Continue(()) => Ok(()),
                ControlFlow::Break(error) => Err(error),
            },
        }
    }

    /// EXPLAIN without ANALYZE: PostgreSQL plans the statement but runs nothing,
    /// so it reads (the catalog and statistics of) what the statement touches.
    fn plan_only(&mut self, inner: Acc) {
        self.raise(StatementClass::Read);
        if inner.classes.contains(&StatementClass::Admin) {
            self.raise(StatementClass::Admin);
        }
        self.reads.extend(inner.reads);
        self.reads.extend(inner.writes);
        self.functions.extend(inner.functions);
        self.calls.extend(inner.calls);
        self.risks.extend(
            inner
                .risks
                .into_iter()
                .filter(|r| !STATEMENT_RISKS.contains(r)),
        );
    }

    fn read(&mut self, name: &ObjectName) {
        self.reads.insert(names::object(name));
    }

    fn write(&mut self, name: &ObjectName) {
        let object = names::object(name);
        // Writing the pg_settings view is set_config() for the row's setting,
        // which the statement's text does not name reliably.
        if object.name == "pg_settings"
            && object.schema.as_deref().is_none_or(|s| s == "pg_catalog")
        {
            self.risks.extend([
                Risk::SearchPathChange,
                Risk::ClientEncodingChange,
                Risk::RoleChange,
            ]);
        }
        self.writes.insert(object);
    }

    fn write_schema(&mut self, name: &ObjectName) {
        self.writes.insert(names::whole_schema(name));
    }

    /// Marks a table factor as the target of the statement being walked.
    fn target(&mut self, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            self.write(name);
        }
        self.targets.insert(factor as *const TableFactor);
    }

    fn drop_risks(&mut self, cascade: bool) {
        self.risks.insert(Risk::Drop);
        if cascade {
            self.risks.insert(Risk::DropCascade);
        }
    }

    fn set_risks(&mut self, setting: &str) {
        self.risks.extend(setting_risks(setting).iter().copied());
    }

    /// Whether an unqualified table reference names a CTE in scope.
    fn is_cte(&self, name: &ObjectName) -> bool {
        name.0.len() == 1
            && self
                .scopes
                .last()
                .is_some_and(|s| s.visible.contains(&names::parts(name)[0]))
    }
}

impl Visitor for Acc {
    type Break = String;

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<String> {
        if is_dml(stmt) {
            self.row_scopes += 1;
        }
        match self.effects(stmt) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<String> {
        if is_dml(stmt) {
            self.row_scopes -= 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        // PostgreSQL never takes an unquoted reserved word as the first part of a
        // table name, but sqlparser does: `FROM ONLY t` becomes table "only"
        // aliased t, `FROM ONLY (t)` a call of a function "only". The real table
        // would vanish from the analysis, so refuse.
        if let Some(ObjectNamePart::Identifier(first)) = relation.0.first()
            && first.quote_style.is_none()
            && names::reserved(&first.value)
        {
            return ControlFlow::Break(format!(
                "sqlparser read the keyword {} as a table name",
                first.value.to_ascii_uppercase()
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if !query.locks.is_empty() {
            // `SELECT ... FOR UPDATE | NO KEY UPDATE | SHARE | KEY SHARE` writes
            // row locks into the rows it reads, and PostgreSQL asks for UPDATE
            // privilege to run it: a write.
            self.row_locks = true;
            self.raise(StatementClass::Write);
        }
        let this = query as *const Query;
        let base = match self.scopes.last() {
            Some(outer) => outer
                .bodies
                .iter()
                .find(|(body, _)| *body == this)
                .map(|(_, visible)| visible.clone())
                .unwrap_or_else(|| outer.visible.clone()),
            None => Vec::new(),
        };
        let mut scope = Scope {
            visible: base.clone(),
            bodies: Vec::new(),
        };
        if let Some(with) = &query.with {
            let ctes: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| names::ident(&c.alias.name))
                .collect();
            for (i, cte) in with.cte_tables.iter().enumerate() {
                // Without RECURSIVE a CTE sees only the ones before it: its own
                // name inside its body is the real table of that name.
                let mut visible = base.clone();
                visible.extend_from_slice(if with.recursive { &ctes } else { &ctes[..i] });
                scope.bodies.push((&*cte.query as *const Query, visible));
                let writes =
                    sqlparser::ast::visit_statements(&*cte.query, |_| ControlFlow::Break(()))
                        .is_break();
                if writes {
                    self.risks.insert(Risk::DataModifyingCte);
                }
            }
            scope.visible.extend(ctes);
        }
        self.scopes.push(scope);
        self.row_scopes += 1;
        // sqlparser reads `TABLE name` without its quoting and swallows the two
        // tokens after an unqualified name, so its tree cannot be trusted.
        let mut bodies = vec![query.body.as_ref()];
        while let Some(body) = bodies.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    bodies.push(left);
                    bodies.push(right);
                }
                SetExpr::Table(_) => {
                    return ControlFlow::Break(
                        "TABLE as part of a larger statement is not supported; use SELECT * FROM"
                            .to_owned(),
                    );
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.scopes.pop();
        self.row_scopes -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        self.select_into(select);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table { name, args, .. } => {
                if let Some(args) = args {
                    // `FROM f(...)`: a set-returning function, not a table.
                    self.call(name, &args.args);
                } else if !self.targets.contains(&(factor as *const TableFactor))
                    && !self.is_cte(name)
                {
                    self.read(name);
                }
            }
            TableFactor::Function { name, args, .. } => self.call(name, args),
            TableFactor::UNNEST { .. } => {
                self.functions.insert("unnest".to_owned());
                let _ = CallNames(&mut self.calls).pre_visit_table_factor(factor);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        // Nor does PostgreSQL take an unquoted reserved word for a column, but
        // sqlparser does: `SELECT INTO t FROM s` (PostgreSQL: create t from s)
        // became a read of a column "into" aliased t. Only where names are
        // columns: a setting's or option's value may be a keyword (`on`).
        let first = match expr {
            _ if self.row_scopes == 0 => None,
            Expr::Identifier(id) => Some(id),
            Expr::CompoundIdentifier(ids) => ids.first(),
            _ => None,
        };
        if let Some(id) = first
            && id.quote_style.is_none()
            && names::reserved(&id.value)
            && !names::VALUE_KEYWORDS.contains(&id.value.to_ascii_lowercase().as_str())
        {
            return ControlFlow::Break(format!(
                "sqlparser read the keyword {} as a column name",
                id.value.to_ascii_uppercase()
            ));
        }
        // Operators and casts (calls are named by `call`).
        self.calls.extend(functions::expr_call(expr));
        if let Expr::Function(f) = expr {
            let args = match &f.args {
                FunctionArguments::List(list) => list.args.as_slice(),
                _ => &[],
            };
            self.call(&f.name, args);
        }
        ControlFlow::Continue(())
    }
}

/// Whether `stmt` is DML, whose expressions name columns.
fn is_dml(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_)
    )
}

/// Whether EXPLAIN's options ask it to run the statement: `(ANALYZE)`,
/// `(ANALYSE)`, `(ANALYZE true|on|1|yes)`. Anything but a clear "off" counts as on.
fn explain_runs(options: Option<&[UtilityOption]>) -> bool {
    options.unwrap_or_default().iter().any(|o| {
        let name = o.name.value.to_ascii_lowercase();
        (name == "analyze" || name == "analyse")
            && match &o.arg {
                None => true,
                Some(arg) => {
                    let text = match arg {
                        Expr::Value(v) => match &v.value {
                            Value::Boolean(b) => b.to_string(),
                            Value::Number(n, _) => n.clone(),
                            Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        Expr::Identifier(id) => id.value.clone(),
                        other => other.to_string(),
                    };
                    !matches!(
                        text.to_ascii_lowercase().as_str(),
                        "false" | "off" | "0" | "no" | "f" | "n"
                    )
                }
            }
    })
}

/// The argument at position `pos`, or named `keyword` (`set_config(setting_name => ...)`).
fn arg<'a>(args: &'a [FunctionArg], pos: usize, keyword: &str) -> Option<&'a Expr> {
    args.iter().enumerate().find_map(|(i, a)| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if i == pos => Some(e),
        FunctionArg::Named {
            name,
            arg: FunctionArgExpr::Expr(e),
            ..
        } if name.value.eq_ignore_ascii_case(keyword) => Some(e),
        FunctionArg::ExprNamed {
            name: Expr::Identifier(name),
            arg: FunctionArgExpr::Expr(e),
            ..
        } if name.value.eq_ignore_ascii_case(keyword) => Some(e),
        _ => None,
    })
}

/// The text of a string literal, seen through casts, parentheses and `||`
/// between literals; `None` for anything computed.
fn string_value(e: &Expr, depth: usize) -> Option<String> {
    if depth > 32 {
        return None;
    }
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s)
            | Value::NationalStringLiteral(s) => Some(s.clone()),
            Value::DollarQuotedString(d) => Some(d.value.clone()),
            _ => None,
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => string_value(inner, depth + 1),
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::StringConcat,
            right,
        } => Some(string_value(left, depth + 1)? + &string_value(right, depth + 1)?),
        _ => None,
    }
}

/// The message for a statement sqlparser parsed into a form this analyser does
/// not decide (another dialect's statement, or one PostgreSQL would reject).
fn unsupported(stmt: &Statement) -> String {
    let debug = format!("{stmt:?}");
    let kind: String = debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("unsupported statement form ({kind}): {stmt}")
}

/// A stable 16-hex-digit hash of the statement with its literals blanked, and of
/// what the analysis found: two statements share a fingerprint only when they
/// differ in literals alone *and* those literals changed nothing in the analysis
/// (`set_config('search_path', ...)` and `set_config('work_mem', ...)` differ).
fn fingerprint(normalized: &str, a: &StatementAnalysis) -> String {
    let facts = serde_json::to_string(&(
        &a.classes,
        &a.reads,
        &a.writes,
        &a.functions,
        &a.risks,
        &a.prepared,
    ))
    .unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(normalized.as_bytes())
        .chain_update([0u8])
        .chain_update(facts.as_bytes())
        .finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    digest[..8]
        .iter()
        .flat_map(|b| {
            [
                HEX[usize::from(b >> 4)] as char,
                HEX[usize::from(b & 15)] as char,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests;
