//! Column lineage of a parsed statement: for each output column, which table
//! columns it reads; and which table columns the statement compares, filters,
//! groups, orders or copies on. Masking uses it to find derived outputs that
//! carry a masked value (`upper(ssn)`, `row_to_json(p)`) and statements that
//! would let a caller infer one (`WHERE ssn LIKE '123%'`).
//!
//! Without the catalog, an unqualified column in a FROM of several tables could
//! belong to any of them: the lineage then names all of them (the safe reading
//! for masking: it may mask or refuse more, never less).
//!
//! A view whose definition the ingress looked up ([`Views`]) is read as the
//! derived table `(definition) AS name (its columns)`, to any depth, so that
//! every rule above holds through views; its own name is kept beside what its
//! columns read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::rc::Rc;

use sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Distinct, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Join, JoinConstraint, JoinOperator, ObjectName,
    OnConflictAction, OnInsert, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, SetOperator, SetQuantifier, Statement, TableFactor,
    TableObject, TableWithJoins, Value, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use gatehouse_schemas::decision::CallName;

use crate::ObjectRef;
use crate::classify::{ADMIN_FUNCTIONS, CallNames, SIDE_EFFECT_FUNCTIONS, names};
use crate::parsed::Parsed;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Column `column` of one of `tables` (several when the text cannot tell).
    Column {
        /// The candidate tables, as written (unqualified names unresolved).
        tables: Vec<ObjectRef>,
        /// The column, folded.
        column: String,
    },
    /// Every column of a table: a whole-row reference (`row_to_json(p)`,
    /// `count(p.*)`, `p` compared as a row).
    WholeRow(ObjectRef),
}

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Its name, when the text gives one (alias or bare column).
    pub name: Option<String>,
    /// What it reads.
    pub reads: BTreeSet<Source>,
    /// A bare column passed through from a table, which PostgreSQL reports with
    /// its table OID and attribute number in `RowDescription`.
    pub direct: bool,
}

/// One item of an output list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One column.
    Output(Output),
    /// Every column of a table (`*`, `p.*`): how many the text does not say;
    /// all of them direct.
    Star(ObjectRef),
}

/// How a predicate uses a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// Compared for equality with another column (`a.x = b.y`, `USING`,
    /// `GROUP BY`, `DISTINCT`, set operations): equal hashes show as much.
    Equality,
    /// Anything else: filtered, ordered, compared with a value, copied into a
    /// table, or passed to a function in a predicate.
    Other,
    /// Passed to a function with effects beyond the statement's result
    /// ([`crate::classify::SIDE_EFFECT_FUNCTIONS`], admin functions): stored in
    /// a setting, sent to listeners, written to a large object, taken as a lock
    /// key, wherever the output list puts the call.
    Effect,
}

/// The lineage of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementLineage {
    /// Output columns in order (SELECT list, RETURNING).
    pub items: Vec<Item>,
    /// Columns the statement uses other than by outputting them.
    pub predicates: BTreeSet<(Source, Use)>,
    /// Every table named, as written.
    pub tables: BTreeSet<ObjectRef>,
    /// Whether the statement has bind parameters (`$1`).
    pub has_params: bool,
    /// Set when the statement holds something the lineage cannot follow; a
    /// statement that may touch a masked column is then refused.
    pub unsupported: Option<String>,
    /// Where the text's values go: each entry names the columns a group of
    /// value tokens (by ordinal, see [`crate::values`]) is written to, compared
    /// with or computed with. A value in no entry goes somewhere the lineage
    /// does not follow (a function's argument, an option, a statement of
    /// another kind), and evidence withholds it under a mask.
    pub values: Vec<(BTreeSet<Source>, Vec<u32>)>,
    /// Set when the statement reads a view the lineage could not read through
    /// (its definition does not parse, its columns cannot be paired with its
    /// outputs, views nest too deep, a name fits several views). What such a
    /// view reads is unknown, so the statement is refused for any caller a mask
    /// rule applies to, whatever tables it seems to touch.
    pub unreadable_view: Option<String>,
    /// Every name through which the statement, and the views it reads
    /// through, may run a function (calls in expressions, in FROM, by `CALL`;
    /// custom operators; casts to types not built in), as written. What a
    /// function not built into PostgreSQL does with the values it reads is
    /// unknown; the ingress tells those apart in the catalog.
    pub calls: BTreeSet<CallName>,
}

pub use gatehouse_schemas::decision::{MAX_VIEW_DEPTH, relation_name};

/// View definitions looked up in the upstream catalog (see
/// [`gatehouse_schemas::decision::DecisionRequest::views`]), parsed.
#[derive(Debug, Default)]
pub struct Views {
    defs: Vec<Rc<ViewDef>>,
}

#[derive(Debug)]
struct ViewDef {
    name: ObjectRef,
    columns: Vec<String>,
    query: Result<Query, String>,
}

enum Lookup {
    None,
    Found(Rc<ViewDef>),
    Ambiguous(Vec<String>),
}

impl Views {
    /// Parses each definition (a definition that does not parse is kept as
    /// such: a statement reading it is refused for a masked caller). A key
    /// that is no schema-qualified name is kept as a view nothing can read.
    pub fn new(views: &BTreeMap<String, gatehouse_schemas::decision::ViewDefinition>) -> Views {
        let dialect = PostgreSqlDialect {};
        let defs = views
            .iter()
            .map(|(key, def)| {
                let name = names::regclass(key)
                    .filter(|n| n.schema.is_some())
                    .unwrap_or_else(|| ObjectRef {
                        schema: Some(String::new()),
                        name: key.clone(),
                    });
                let query = Parser::parse_sql(&dialect, &def.query)
                    .map_err(|e| e.to_string())
                    .and_then(|mut v| match (v.pop(), v.is_empty()) {
                        (Some(Statement::Query(q)), true) => Ok(*q),
                        _ => Err("not one query".to_owned()),
                    });
                Rc::new(ViewDef {
                    name,
                    columns: def.columns.clone(),
                    query,
                })
            })
            .collect();
        Views { defs }
    }

    /// The view a name written in a statement names: a qualified name names
    /// that view; an unqualified one the view of that name in any schema (the
    /// session's search_path is not known here).
    fn find(&self, obj: &ObjectRef) -> Lookup {
        let found: Vec<&Rc<ViewDef>> = self
            .defs
            .iter()
            .filter(|d| {
                d.name.name == obj.name && (obj.schema.is_none() || d.name.schema == obj.schema)
            })
            .collect();
        match found[..] {
            [] => Lookup::None,
            [one] => Lookup::Found(one.clone()),
            _ => Lookup::Ambiguous(found.iter().map(|d| d.name.to_string()).collect()),
        }
    }
}

/// Lineage of each statement of a text. `Err`: the text does not parse.
pub fn lineage(sql: &str) -> Result<Vec<StatementLineage>, String> {
    lineage_with(sql, &Rc::new(Views::default()))
}

/// [`lineage`], reading the views in `views` through their definitions.
pub fn lineage_with(sql: &str, views: &Rc<Views>) -> Result<Vec<StatementLineage>, String> {
    lineage_of(&Parsed::read(sql, true)?, views)
}

/// The lineage of a text already read with its values (see [`crate::parsed`]).
pub(crate) fn lineage_of(
    parsed: &Parsed<'_>,
    views: &Rc<Views>,
) -> Result<Vec<StatementLineage>, String> {
    let at: HashMap<(u64, u64), u32> = parsed
        .values
        .iter()
        .flatten()
        .zip(0u32..)
        .map(|(v, i)| (v.location, i))
        .collect();
    let at = Rc::new(at);
    let statements = parsed.statements.as_ref().map_err(Clone::clone)?;
    Ok(statements
        .iter()
        .map(|s| statement(s, &at, views))
        .collect())
}

/// Value tokens by where the tokenizer put them.
type ValuesAt = Rc<HashMap<(u64, u64), u32>>;

/// Functions known to compute a value from their arguments and do nothing
/// else with them: a value passed to any other function may be stored or sent
/// anywhere, so evidence withholds it under a mask.
const PURE_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "octet_length",
    "substr",
    "substring",
    "left",
    "right",
    "lpad",
    "rpad",
    "replace",
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "abs",
    "round",
    "ceil",
    "floor",
    "trunc",
    "mod",
    "now",
    "date_trunc",
    "date_part",
    "extract",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "make_date",
    "age",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "string_agg",
    "array_agg",
    "format",
    "split_part",
    "strpos",
    "position",
    "md5",
];

/// Collects the value tokens of a tree, except those passed to a function not
/// in [`PURE_FUNCTIONS`].
struct ValueCollector<'a> {
    at: &'a HashMap<(u64, u64), u32>,
    out: Vec<u32>,
    opaque: usize,
}

fn opaque_call(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => {
            let name = names::function(&f.name);
            let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
            !PURE_FUNCTIONS.contains(&name)
        }
        _ => false,
    }
}

impl Visitor for ValueCollector<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if opaque_call(e) {
            self.opaque += 1;
        }
        ControlFlow::Continue(())
    }
    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if opaque_call(e) {
            self.opaque -= 1;
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<()> {
        if self.opaque == 0
            && let Some(i) = self.at.get(&(v.span.start.line, v.span.start.column))
        {
            self.out.push(*i);
        }
        ControlFlow::Continue(())
    }
}

/// A named thing in a FROM clause.
#[derive(Debug, Clone)]
struct Entry {
    /// The name it is referred to by (alias, else table name).
    alias: String,
    kind: EntryKind,
}

#[derive(Debug, Clone)]
enum EntryKind {
    Table(ObjectRef),
    Derived(Vec<Item>),
    /// A view read through its definition: its columns as a derived table's,
    /// each also reading the view's own column of that name (what a rule
    /// naming the view's columns masks, and the table's reading should the
    /// name resolve to a table after all).
    View(ObjectRef, Vec<Item>),
}

#[derive(Default)]
struct Walker {
    out: StatementLineage,
    /// Visible CTEs, innermost last.
    ctes: Vec<BTreeMap<String, Vec<Item>>>,
    /// The text's value tokens.
    at: ValuesAt,
    /// Views read through their definitions.
    views: Rc<Views>,
    /// How many views deep the walk is.
    view_depth: usize,
}

fn statement(s: &Statement, at: &ValuesAt, views: &Rc<Views>) -> StatementLineage {
    let mut w = Walker {
        at: at.clone(),
        views: views.clone(),
        ..Walker::default()
    };
    match s {
        Statement::Query(q) => {
            w.out.items = w.query(q, &[]);
        }
        Statement::Insert(ins) => {
            if let TableObject::TableName(name) = &ins.table {
                let t = names::object(name);
                w.out.tables.insert(t.clone());
                // A write into a view writes the columns it shows.
                let kind = match w.inline_view(&t) {
                    Some(items) => EntryKind::View(t.clone(), items),
                    None => EntryKind::Table(t.clone()),
                };
                let scope = vec![Entry {
                    alias: ins
                        .table_alias
                        .as_ref()
                        .map_or(t.name.clone(), |a| names::ident(&a.alias)),
                    kind,
                }];
                // Where each value goes: the listed columns, else the table's
                // own order, which only the catalog knows (any of its columns).
                let listed: Vec<BTreeSet<Source>> = ins
                    .columns
                    .iter()
                    .map(|c| write_target(&scope[0], &names::parts(c).pop().unwrap_or_default()))
                    .collect();
                let whole = entry_sources(&scope[0]);
                let target = |i: usize| listed.get(i).cloned().unwrap_or_else(|| whole.clone());
                if let Some(src) = &ins.source {
                    // Whatever the source reads is copied into the table.
                    let items = w.query(src, &[]);
                    w.copied(&items);
                    match &*src.body {
                        SetExpr::Values(v) if src.with.is_none() => {
                            for row in &v.rows {
                                for (i, e) in row.content.iter().enumerate() {
                                    w.record_values(e, target(i));
                                }
                            }
                        }
                        _ => {
                            let all: BTreeSet<Source> = if listed.is_empty() {
                                whole.clone()
                            } else {
                                listed.iter().flatten().cloned().collect()
                            };
                            w.record_values(&**src, all);
                        }
                    }
                }
                for a in &ins.assignments {
                    w.predicate(&a.value, &[&scope], Use::Other);
                    w.record_values(&a.value, assignment_targets(&a.target, &scope[0]));
                }
                match &ins.on {
                    Some(OnInsert::OnConflict(oc)) => {
                        // Whether a row conflicts tells whether a value is there.
                        if let Some(ConflictTarget::Columns { columns: cols, .. }) =
                            &oc.conflict_target
                        {
                            for c in cols {
                                for s in write_target(&scope[0], &names::ident(c)) {
                                    w.out.predicates.insert((s, Use::Other));
                                }
                            }
                        }
                        if let OnConflictAction::DoUpdate(du) = &oc.action {
                            // `excluded` is the row the caller proposed: its own
                            // values, which read no stored column.
                            let mut scope = scope.clone();
                            scope.push(Entry {
                                alias: "excluded".into(),
                                kind: EntryKind::Derived(Vec::new()),
                            });
                            for a in &du.assignments {
                                w.predicate(&a.value, &[&scope], Use::Other);
                                w.record_values(&a.value, assignment_targets(&a.target, &scope[0]));
                            }
                            if let Some(sel) = &du.selection {
                                w.predicate(sel, &[&scope], Use::Other);
                            }
                        }
                    }
                    Some(on) => {
                        w.unsupported_if_reads(on, &[&scope], "INSERT ... ON DUPLICATE KEY")
                    }
                    None => {}
                }
                if let Some(r) = &ins.returning {
                    w.out.items = w.projection(r, &scope, &[]);
                }
            } else {
                w.out.unsupported = Some("INSERT into a table function".into());
            }
        }
        Statement::Update(u) => {
            let mut scope = w.from(std::slice::from_ref(&u.table), &[]);
            if let Some(sqlparser::ast::UpdateTableFromKind::AfterSet(f))
            | Some(sqlparser::ast::UpdateTableFromKind::BeforeSet(f)) = &u.from
            {
                scope.extend(w.from(f, &[]));
            }
            // The updated table, or view (which writes the columns it shows).
            let target = scope
                .first()
                .filter(|e| matches!(e.kind, EntryKind::Table(_) | EntryKind::View(..)))
                .cloned();
            for a in &u.assignments {
                w.predicate(&a.value, &[&scope], Use::Other);
                if let Some(t) = &target {
                    w.record_values(&a.value, assignment_targets(&a.target, t));
                }
            }
            if let Some(sel) = &u.selection {
                w.predicate(sel, &[&scope], Use::Other);
            }
            if let Some(r) = &u.returning {
                w.out.items = w.projection(r, &scope, &[]);
            }
        }
        Statement::Delete(d) => {
            let tables = match &d.from {
                sqlparser::ast::FromTable::WithFromKeyword(t)
                | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
            };
            let mut scope = w.from(tables, &[]);
            if let Some(using) = &d.using {
                scope.extend(w.from(using, &[]));
            }
            if let Some(sel) = &d.selection {
                w.predicate(sel, &[&scope], Use::Other);
            }
            if let Some(r) = &d.returning {
                w.out.items = w.projection(r, &scope, &[]);
            }
        }
        Statement::CreateTable(ct) => {
            if let Some(q) = &ct.query {
                let items = w.query(q, &[]);
                w.copied(&items);
            }
        }
        Statement::CreateView(cv) => {
            // A view stores the query, not its values: reading it is masked
            // like any table.
            let _ = w.query(&cv.query, &[]);
            w.out.predicates.clear();
        }
        Statement::Explain {
            statement, analyze, ..
        } => {
            // EXPLAIN prints a plan, not values; EXPLAIN ANALYZE runs it, and
            // a write among it may copy values.
            let inner = self::statement(statement, at, views);
            w.out.tables = inner.tables;
            w.out.values = inner.values;
            if *analyze {
                w.out.predicates = inner.predicates;
                w.out.unsupported = inner.unsupported;
                w.out.unreadable_view = inner.unreadable_view;
            }
        }
        Statement::Prepare { statement, .. } => {
            // PREPARE runs nothing itself, but a protocol-level `Bind` of its
            // name runs what it prepares with no decision of its own: the
            // statement is decided, and its rows are masked, as what it
            // prepares.
            return self::statement(statement, at, views);
        }
        Statement::Declare { stmts, .. } => {
            // The cursor's rows come back through FETCH, masked with this
            // statement's output lineage (the ingress keeps it per cursor).
            for d in stmts {
                if let Some(q) = &d.for_query {
                    w.out.items = w.query(q, &[]);
                }
            }
        }
        Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => {
            let items = match source {
                sqlparser::ast::CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let t = names::object(table_name);
                    w.out.tables.insert(t.clone());
                    if columns.is_empty() {
                        vec![Item::Star(t)]
                    } else {
                        columns
                            .iter()
                            .map(|c| {
                                let column = names::ident(c);
                                Item::Output(Output {
                                    name: Some(column.clone()),
                                    reads: BTreeSet::from([Source::Column {
                                        tables: vec![t.clone()],
                                        column,
                                    }]),
                                    direct: true,
                                })
                            })
                            .collect()
                    }
                }
                sqlparser::ast::CopySource::Query(q) => w.query(q, &[]),
            };
            if *to {
                if !matches!(target, sqlparser::ast::CopyTarget::Stdout) {
                    // A server file or program: the values go where no mask follows.
                    w.copied(&items);
                } else if options
                    .iter()
                    .any(|o| matches!(o, sqlparser::ast::CopyOption::Encoding(_)))
                {
                    // Rows re-encoded by the server: their bytes are not
                    // Gatehouse's to split.
                    w.out.unsupported = Some("COPY ... TO with ENCODING".into());
                } else if crate::results::copy_format(options, legacy_options).is_none() {
                    w.out.unsupported = Some("COPY ... TO with these options".into());
                } else {
                    w.out.items = items;
                }
            }
        }
        _ => {
            // Statements that return no rows of table data (SET, BEGIN, DDL,
            // ...): their table references, for the record.
            let _ = s.visit(&mut TableCollector(&mut w.out.tables));
        }
    }
    let mut params = false;
    let _ = s.visit(&mut ParamFinder(&mut params));
    w.out.has_params = params;
    let _ = s.visit(&mut CallNames(&mut w.out.calls));
    w.out
}

struct TableCollector<'a>(&'a mut BTreeSet<ObjectRef>);

impl Visitor for TableCollector<'_> {
    type Break = ();
    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.0.insert(names::object(relation));
        ControlFlow::Continue(())
    }
}

struct ParamFinder<'a>(&'a mut bool);

impl Visitor for ParamFinder<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr
            && matches!(v.value, Value::Placeholder(_))
        {
            *self.0 = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// The columns an assignment's value is written to.
fn assignment_targets(target: &AssignmentTarget, e: &Entry) -> BTreeSet<Source> {
    let names: Vec<&ObjectName> = match target {
        AssignmentTarget::ColumnName(n) => vec![n],
        AssignmentTarget::Tuple(ns) => ns.iter().collect(),
    };
    names
        .into_iter()
        .flat_map(|n| write_target(e, &names::parts(n).pop().unwrap_or_default()))
        .collect()
}

/// What a value written to column `col` of a table or view reaches: the
/// table's column; through a view, the columns the view's column shows (every
/// column the view reads when its column shows none of them).
fn write_target(e: &Entry, col: &str) -> BTreeSet<Source> {
    let found = column_of(e, col);
    match &e.kind {
        EntryKind::View(..) if found.len() <= 1 => {
            found.union(&entry_sources(e)).cloned().collect()
        }
        _ => found,
    }
}

mod scope;
mod walker;
use scope::{
    Collector, column_of, entry_items, entry_sources, expr_is_constant, find_entry, is_column,
    merge_positional, output_name, rename, resolve, resolve_column, unresolved, with,
};

#[cfg(test)]
mod tests;
