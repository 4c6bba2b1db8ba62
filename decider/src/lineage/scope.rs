//! How a name resolves in the scopes of a query (the tables and subqueries of
//! its FROM, innermost last) to the columns it reads, and the names and
//! subqueries one expression reads.

use super::*;

/// `outer` scopes plus `inner`, innermost last.
pub(super) fn with<'a>(outer: &[&'a [Entry]], inner: &'a [Entry]) -> Vec<&'a [Entry]> {
    let mut v = outer.to_vec();
    v.push(inner);
    v
}

pub(super) fn rename(items: &mut [Item], columns: &[sqlparser::ast::TableAliasColumnDef]) {
    for (item, c) in items.iter_mut().zip(columns) {
        if let Item::Output(o) = item {
            o.name = Some(names::ident(&c.name));
        }
    }
}

pub(super) fn output_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(names::ident(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(names::ident),
        _ => None,
    }
}

pub(super) fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_column(inner),
        _ => false,
    }
}

pub(super) fn expr_is_constant(e: &Expr) -> bool {
    let mut c = Collector::default();
    let _ = e.visit(&mut c);
    c.idents.is_empty() && c.queries.is_empty()
}

/// Pairs the outputs of two set-operation branches; `None` when a `*` of
/// unknown width makes the pairing unknowable.
pub(super) fn merge_positional(l: &[Item], r: &[Item]) -> Option<Vec<Item>> {
    if l.iter().chain(r).any(|i| matches!(i, Item::Star(_))) {
        return None;
    }
    Some(
        l.iter()
            .zip(r)
            .map(|(a, b)| match (a, b) {
                (Item::Output(a), Item::Output(b)) => Item::Output(Output {
                    name: a.name.clone(),
                    reads: a.reads.union(&b.reads).cloned().collect(),
                    direct: false,
                }),
                _ => Item::Output(Output::default()),
            })
            .collect(),
    )
}

/// The items a `*` over an entry yields.
pub(super) fn entry_items(e: &Entry) -> Vec<Item> {
    match &e.kind {
        EntryKind::Table(t) => vec![Item::Star(t.clone())],
        EntryKind::Derived(items) | EntryKind::View(_, items) => items.clone(),
    }
}

/// Everything an entry's row holds.
pub(super) fn entry_sources(e: &Entry) -> BTreeSet<Source> {
    match &e.kind {
        EntryKind::Table(t) => [Source::WholeRow(t.clone())].into(),
        EntryKind::Derived(items) => sources_of(items),
        EntryKind::View(t, items) => {
            let mut out = sources_of(items);
            out.insert(Source::WholeRow(t.clone()));
            out
        }
    }
}

fn sources_of(items: &[Item]) -> BTreeSet<Source> {
    items
        .iter()
        .flat_map(|i| match i {
            Item::Output(o) => o.reads.iter().cloned().collect::<Vec<_>>(),
            Item::Star(t) => vec![Source::WholeRow(t.clone())],
        })
        .collect()
}

/// The entry a qualifier names: `p` (alias or table name) or `clinic.patients`.
pub(super) fn find_entry<'a>(qualifier: &[String], scope: &'a [Entry]) -> Option<&'a Entry> {
    match qualifier {
        [name] => scope.iter().find(|e| &e.alias == name),
        [schema, name] => scope.iter().find(|e| match &e.kind {
            EntryKind::Table(t) | EntryKind::View(t, _) => {
                t.schema.as_deref() == Some(schema) && &t.name == name
            }
            EntryKind::Derived(_) => false,
        }),
        _ => None,
    }
}

/// Column `col` of whatever has it in `scopes` (all candidates when unsure).
pub(super) fn resolve_column(
    col: &str,
    _qualifier: Option<&[String]>,
    scopes: &[&[Entry]],
) -> BTreeSet<Source> {
    let mut out = BTreeSet::new();
    for scope in scopes {
        for e in scope.iter() {
            out.extend(column_of(e, col));
        }
    }
    out
}

pub(super) fn column_of(e: &Entry, col: &str) -> BTreeSet<Source> {
    match &e.kind {
        EntryKind::Table(t) => [Source::Column {
            tables: vec![t.clone()],
            column: col.to_owned(),
        }]
        .into(),
        EntryKind::View(t, items) => {
            let mut out = column_of(
                &Entry {
                    alias: String::new(),
                    kind: EntryKind::Derived(items.clone()),
                },
                col,
            );
            out.insert(Source::Column {
                tables: vec![t.clone()],
                column: col.to_owned(),
            });
            out
        }
        EntryKind::Derived(items) => {
            let mut out = BTreeSet::new();
            for i in items {
                match i {
                    Item::Output(o) if o.name.as_deref() == Some(col) => {
                        out.extend(o.reads.iter().cloned())
                    }
                    Item::Output(_) => {}
                    Item::Star(t) => {
                        out.insert(Source::Column {
                            tables: vec![t.clone()],
                            column: col.to_owned(),
                        });
                    }
                }
            }
            out
        }
    }
}

/// A name the scopes do not explain: any column of that name anywhere, and any
/// whole row (the safe reading).
pub(super) fn unresolved(parts: &[String], scopes: &[&[Entry]]) -> BTreeSet<Source> {
    let col = parts.last().cloned().unwrap_or_default();
    let mut out = resolve_column(&col, None, scopes);
    if out.is_empty() && parts.len() >= 2 {
        out.insert(Source::Column {
            tables: vec![crate::classify::names::from_parts(
                parts[..parts.len() - 1].to_vec(),
            )],
            column: col,
        });
    }
    out
}

/// What a (possibly qualified) name in an expression reads.
pub(super) fn resolve(
    parts: &[String],
    scopes: &[&[Entry]],
    direct: &mut bool,
) -> BTreeSet<Source> {
    match parts {
        [] => BTreeSet::new(),
        [col] => {
            let mut out = resolve_column(col, None, scopes);
            // `p` alone may be a whole-row reference to `p`.
            for s in scopes.iter().rev() {
                if let Some(e) = find_entry(parts, s) {
                    *direct = false;
                    out.extend(entry_sources(e));
                }
            }
            if out.is_empty() {
                *direct = false;
            }
            out
        }
        _ => {
            let (qual, col) = parts.split_at(parts.len() - 1);
            let col = &col[0];
            // `p.ssn`, `clinic.patients.ssn`; `(p).ssn` spelled p.ssn too.
            for s in scopes.iter().rev() {
                if let Some(e) = find_entry(qual, s) {
                    if let EntryKind::Derived(items) | EntryKind::View(_, items) = &e.kind
                        && !items.iter().any(|i| match i {
                            Item::Output(o) => o.name.as_deref() == Some(col.as_str()) && o.direct,
                            Item::Star(_) => true,
                        })
                    {
                        *direct = false;
                    }
                    return column_of(e, col);
                }
            }
            if qual.len() > 1
                && let Some(e) = scopes
                    .iter()
                    .rev()
                    .find_map(|s| find_entry(&qual[qual.len() - 1..], s))
            {
                return column_of(e, col);
            }
            *direct = false;
            unresolved(parts, scopes)
        }
    }
}

/// Names and subqueries of one expression, not descending into subqueries.
#[derive(Default)]
pub(super) struct Collector {
    /// Each name read: its parts, and whether it is a `f(p.*)` / `f(*)` argument.
    pub(super) idents: Vec<(Vec<String>, bool)>,
    pub(super) queries: Vec<Query>,
    /// The arguments of calls to functions with effects beyond the statement.
    pub(super) effects: Vec<Expr>,
    pub(super) depth: usize,
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.queries.push(query.clone());
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        match expr {
            Expr::Identifier(id) => self.idents.push((vec![names::ident(id)], false)),
            Expr::CompoundIdentifier(ids) => self
                .idents
                .push((ids.iter().map(names::ident).collect(), false)),
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    let parts = names::parts(&f.name);
                    let effect = crate::classify::listed_function(SIDE_EFFECT_FUNCTIONS, &parts)
                        || crate::classify::listed_function(ADMIN_FUNCTIONS, &parts);
                    for a in &list.args {
                        let arg = match a {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        if effect && let FunctionArgExpr::Expr(e) = arg {
                            self.effects.push(e.clone());
                        }
                        match arg {
                            FunctionArgExpr::QualifiedWildcard(name) => {
                                self.idents.push((names::parts(name), true));
                            }
                            FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                                let count = names::function(&f.name);
                                if count != "count" && count != "pg_catalog.count" {
                                    self.idents.push((Vec::new(), true));
                                }
                            }
                            FunctionArgExpr::Expr(_) => {}
                        }
                    }
                }
            }
            Expr::QualifiedWildcard(name, _) => {
                self.idents.push((names::parts(name), true));
            }
            Expr::Wildcard(_) => self.idents.push((Vec::new(), true)),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
