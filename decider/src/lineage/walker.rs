//! The walk of one query: its FROM scopes entered and left, each output
//! traced to the table columns it reads, and where each value goes.

use super::*;

impl Walker {
    /// Records that the values of `node` go towards (or are computed with)
    /// `sources`.
    pub(super) fn record_values<V: Visit>(&mut self, node: &V, sources: BTreeSet<Source>) {
        let mut c = ValueCollector {
            at: &self.at,
            out: Vec::new(),
            opaque: 0,
        };
        let _ = node.visit(&mut c);
        if !c.out.is_empty() {
            self.out.values.push((sources, c.out));
        }
    }

    /// Every source an output list reads becomes a predicate use (its values are
    /// copied somewhere the mask does not follow).
    pub(super) fn copied(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Output(o) => {
                    for s in &o.reads {
                        self.out.predicates.insert((s.clone(), Use::Other));
                    }
                }
                Item::Star(t) => {
                    self.out
                        .predicates
                        .insert((Source::WholeRow(t.clone()), Use::Other));
                }
            }
        }
    }

    pub(super) fn cte(&self, name: &str) -> Option<&Vec<Item>> {
        self.ctes.iter().rev().find_map(|m| m.get(name))
    }

    /// The output items of view `obj` read through its definition, named by
    /// its columns; `None` when it is not a view the walk knows. A view that
    /// cannot be read through sets [`StatementLineage::unreadable_view`] and
    /// yields no items (its own name still stands for all it holds).
    pub(super) fn inline_view(&mut self, obj: &ObjectRef) -> Option<Vec<Item>> {
        let def = match self.views.find(obj) {
            Lookup::None => return None,
            Lookup::Found(def) => def,
            Lookup::Ambiguous(names) => {
                self.out.unreadable_view = Some(format!(
                    "{obj} may name any of the views {}; qualify it with its schema",
                    names.join(", ")
                ));
                return Some(Vec::new());
            }
        };
        let name = &def.name;
        if self.view_depth >= MAX_VIEW_DEPTH {
            self.out.unreadable_view = Some(format!(
                "view {name} nests views more than {MAX_VIEW_DEPTH} deep"
            ));
            return Some(Vec::new());
        }
        let query = match &def.query {
            Ok(q) => q,
            Err(e) => {
                self.out.unreadable_view = Some(format!(
                    "Gatehouse could not read the definition of view {name} ({e})"
                ));
                return Some(Vec::new());
            }
        };
        // The definition sees none of the statement's CTEs (its names are
        // schema-qualified anyway) and carries none of its value tokens.
        let ctes = std::mem::take(&mut self.ctes);
        let at = std::mem::take(&mut self.at);
        let before = self.out.unsupported.take();
        self.view_depth += 1;
        let mut items = self.query(query, &[]);
        self.view_depth -= 1;
        let _ = query.visit(&mut CallNames(&mut self.out.calls));
        self.ctes = ctes;
        self.at = at;
        self.out.unsupported = match self.out.unsupported.take() {
            Some(why) => Some(format!("{why} (in view {name})")),
            None => before,
        };
        if items.len() != def.columns.len() || items.iter().any(|i| matches!(i, Item::Star(_))) {
            self.out.unreadable_view = Some(format!(
                "Gatehouse could not pair the columns of view {name} with its definition"
            ));
            return Some(Vec::new());
        }
        for (item, column) in items.iter_mut().zip(&def.columns) {
            if let Item::Output(o) = item {
                o.name = Some(column.clone());
                o.reads.insert(Source::Column {
                    tables: vec![obj.clone()],
                    column: column.clone(),
                });
            }
        }
        Some(items)
    }

    /// A query's output items; `outer`: scopes of enclosing queries.
    pub(super) fn query(&mut self, q: &Query, outer: &[&[Entry]]) -> Vec<Item> {
        let pushed = if let Some(with) = &q.with {
            self.ctes.push(BTreeMap::new());
            for cte in &with.cte_tables {
                let name = names::ident(&cte.alias.name);
                if with.recursive {
                    // A recursive CTE reads itself: give it no outputs first,
                    // then what its body reads.
                    self.ctes
                        .last_mut()
                        .map(|m| m.insert(name.clone(), Vec::new()));
                }
                let mut items = self.query(&cte.query, outer);
                rename(&mut items, &cte.alias.columns);
                self.ctes.last_mut().map(|m| m.insert(name, items));
            }
            true
        } else {
            false
        };
        let order: Vec<&Expr> = match &q.order_by {
            Some(ob) => match &ob.kind {
                OrderByKind::Expressions(exprs) => exprs.iter().map(|e| &e.expr).collect(),
                OrderByKind::All(_) => {
                    self.out.unsupported = Some("ORDER BY ALL".into());
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let items = match &*q.body {
            // ORDER BY of a plain SELECT sees its FROM.
            SetExpr::Select(s) => self.select(s, outer, &order),
            body => {
                let items = self.set_expr(body, outer);
                for e in &order {
                    self.order_by_output(e, &items, None);
                }
                items
            }
        };
        if pushed {
            self.ctes.pop();
        }
        items
    }

    /// ORDER BY of a query: an output name or position orders by that output.
    pub(super) fn order_by_output(&mut self, e: &Expr, items: &[Item], from: Option<&[&[Entry]]>) {
        let by_output = match e {
            Expr::Identifier(id) => {
                let n = names::ident(id);
                items.iter().find_map(|i| match i {
                    Item::Output(o) if o.name.as_deref() == Some(n.as_str()) => Some(o.clone()),
                    _ => None,
                })
            }
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|k| k.checked_sub(1))
                    .and_then(|k| items.get(k))
                    .and_then(|i| match i {
                        Item::Output(o) => Some(o.clone()),
                        Item::Star(_) => None,
                    }),
                _ => None,
            },
            _ => None,
        };
        match by_output {
            Some(o) => {
                for s in o.reads {
                    self.out.predicates.insert((s, Use::Other));
                }
            }
            None if from.is_some() => {
                if let Some(scopes) = from {
                    self.predicate(e, scopes, Use::Other);
                }
            }
            None => {
                // ORDER BY of a set operation names its outputs; anything else
                // is taken to read all of them (safe).
                let mut reads = BTreeSet::new();
                for i in items {
                    match i {
                        Item::Output(o) => reads.extend(o.reads.iter().cloned()),
                        Item::Star(t) => {
                            reads.insert(Source::WholeRow(t.clone()));
                        }
                    }
                }
                if expr_is_constant(e) {
                    return;
                }
                for s in reads {
                    self.out.predicates.insert((s, Use::Other));
                }
            }
        }
    }

    pub(super) fn set_expr(&mut self, body: &SetExpr, outer: &[&[Entry]]) -> Vec<Item> {
        match body {
            SetExpr::Select(s) => self.select(s, outer, &[]),
            SetExpr::Query(q) => self.query(q, outer),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                let l = self.set_expr(left, outer);
                let r = self.set_expr(right, outer);
                let all = matches!(set_quantifier, SetQuantifier::All)
                    && matches!(op, SetOperator::Union);
                let merged = merge_positional(&l, &r);
                if merged.is_none() {
                    self.out.unsupported =
                        Some("a set operation over * (its columns cannot be paired)".into());
                }
                let items = merged.unwrap_or_default();
                if !all {
                    // UNION, INTERSECT and EXCEPT compare rows for equality.
                    for i in &items {
                        if let Item::Output(o) = i {
                            for s in &o.reads {
                                self.out.predicates.insert((s.clone(), Use::Equality));
                            }
                        }
                    }
                }
                items
            }
            SetExpr::Values(v) => {
                let width = v.rows.first().map_or(0, |r| r.content.len());
                let mut items = vec![Output::default(); width];
                for row in &v.rows {
                    for (i, e) in row.content.iter().enumerate() {
                        let (reads, _) = self.expr(e, &[], outer);
                        self.record_values(e, reads.clone());
                        if let Some(o) = items.get_mut(i) {
                            o.reads.extend(reads);
                        }
                    }
                }
                items.into_iter().map(Item::Output).collect()
            }
            SetExpr::Table(t) => {
                let Some(name) = &t.table_name else {
                    return Vec::new();
                };
                let obj = ObjectRef {
                    schema: t.schema_name.as_ref().map(|s| s.value.clone()),
                    name: name.value.clone(),
                };
                self.out.tables.insert(obj.clone());
                match self.inline_view(&obj) {
                    Some(items) => items,
                    None => vec![Item::Star(obj)],
                }
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                let inner = statement(s, &self.at, &self.views);
                self.out.tables.extend(inner.tables);
                self.out.values.extend(inner.values);
                self.out.predicates.extend(inner.predicates);
                if inner.unsupported.is_some() {
                    self.out.unsupported = inner.unsupported;
                }
                if inner.unreadable_view.is_some() {
                    self.out.unreadable_view = inner.unreadable_view;
                }
                inner.items
            }
        }
    }

    pub(super) fn select(&mut self, s: &Select, outer: &[&[Entry]], order: &[&Expr]) -> Vec<Item> {
        let scope = self.from(&s.from, outer);
        if !s.lateral_views.is_empty() || !s.connect_by.is_empty() {
            self.out.unsupported = Some("LATERAL VIEW / CONNECT BY".into());
        }
        for e in s.selection.iter().chain(&s.having).chain(&s.qualify) {
            self.predicate(e, &with(outer, &scope), Use::Other);
        }
        if let GroupByExpr::Expressions(exprs, _) = &s.group_by {
            for e in exprs {
                let u = if is_column(e) {
                    Use::Equality
                } else {
                    Use::Other
                };
                self.predicate(e, &with(outer, &scope), u);
            }
        } else {
            self.out.unsupported = Some("GROUP BY ALL".into());
        }
        let items = self.projection(&s.projection, &scope, outer);
        match &s.distinct {
            Some(Distinct::Distinct) => {
                for i in &items {
                    match i {
                        Item::Output(o) => {
                            for src in &o.reads {
                                self.out.predicates.insert((src.clone(), Use::Equality));
                            }
                        }
                        Item::Star(t) => {
                            self.out
                                .predicates
                                .insert((Source::WholeRow(t.clone()), Use::Equality));
                        }
                    }
                }
            }
            Some(Distinct::On(exprs)) => {
                for e in exprs {
                    self.predicate(e, &with(outer, &scope), Use::Other);
                }
            }
            Some(Distinct::All) | None => {}
        }
        if s.into.is_some() {
            self.copied(&items);
        }
        let scopes = with(outer, &scope);
        for e in order {
            self.order_by_output(e, &items, Some(&scopes));
        }
        items
    }

    /// The entries a FROM list brings into scope, recording join predicates.
    pub(super) fn from(&mut self, from: &[TableWithJoins], outer: &[&[Entry]]) -> Vec<Entry> {
        let mut scope = Vec::new();
        for twj in from {
            let e = self.factor(&twj.relation, outer, &scope);
            scope.extend(e);
            for j in &twj.joins {
                self.join(j, outer, &mut scope);
            }
        }
        scope
    }

    pub(super) fn join(&mut self, j: &Join, outer: &[&[Entry]], scope: &mut Vec<Entry>) {
        let e = self.factor(&j.relation, outer, scope);
        scope.extend(e);
        let constraint = match &j.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c)
            | JoinOperator::CrossJoin(c)
            | JoinOperator::Semi(c)
            | JoinOperator::LeftSemi(c)
            | JoinOperator::RightSemi(c)
            | JoinOperator::Anti(c)
            | JoinOperator::LeftAnti(c)
            | JoinOperator::RightAnti(c) => c,
            _ => {
                self.out.unsupported = Some("this kind of join".into());
                return;
            }
        };
        match constraint {
            JoinConstraint::On(e) => self.predicate(e, &with(outer, scope), Use::Other),
            JoinConstraint::Using(cols) => {
                for c in cols {
                    let col = names::parts(c).pop().unwrap_or_default();
                    for s in resolve_column(&col, None, &with(outer, scope)) {
                        self.out.predicates.insert((s, Use::Equality));
                    }
                }
            }
            JoinConstraint::Natural => {
                // Joins on every column of the same name: unknown without the
                // catalog, so on all of them.
                for e in scope.iter() {
                    for s in entry_sources(e) {
                        self.out.predicates.insert((s, Use::Equality));
                    }
                }
            }
            JoinConstraint::None => {}
            // `USING (...) AS x` names the joined columns anew: not traced.
            JoinConstraint::UsingAlias(..) => {
                self.out.unsupported = Some("a join alias (USING ... AS)".into());
            }
        }
    }

    pub(super) fn factor(
        &mut self,
        f: &TableFactor,
        outer: &[&[Entry]],
        left: &[Entry],
    ) -> Vec<Entry> {
        match f {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    self.out.unsupported = Some("a table function in FROM".into());
                    return Vec::new();
                }
                let obj = names::object(name);
                if obj.schema.is_none()
                    && let Some(items) = self.cte(&obj.name).cloned()
                {
                    let mut items = items;
                    if let Some(a) = alias {
                        rename(&mut items, &a.columns);
                    }
                    return vec![Entry {
                        alias: alias
                            .as_ref()
                            .map_or(obj.name.clone(), |a| names::ident(&a.name)),
                        kind: EntryKind::Derived(items),
                    }];
                }
                self.out.tables.insert(obj.clone());
                if let Some(mut items) = self.inline_view(&obj) {
                    if let Some(a) = alias {
                        rename(&mut items, &a.columns);
                    }
                    return vec![Entry {
                        alias: alias
                            .as_ref()
                            .map_or(obj.name.clone(), |a| names::ident(&a.name)),
                        kind: EntryKind::View(obj, items),
                    }];
                }
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    // Renamed columns of a table: which is which needs the
                    // catalog's column order.
                    self.out.unsupported = Some("column aliases on a table".into());
                }
                vec![Entry {
                    alias: alias
                        .as_ref()
                        .map_or(obj.name.clone(), |a| names::ident(&a.name)),
                    kind: EntryKind::Table(obj),
                }]
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let scopes: Vec<&[Entry]> = if *lateral {
                    with(outer, left)
                } else {
                    outer.to_vec()
                };
                let mut items = self.query(subquery, &scopes);
                if let Some(a) = alias {
                    rename(&mut items, &a.columns);
                }
                vec![Entry {
                    alias: alias
                        .as_ref()
                        .map_or_else(String::new, |a| names::ident(&a.name)),
                    kind: EntryKind::Derived(items),
                }]
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    self.out.unsupported = Some("an aliased parenthesized join".into());
                }
                self.from(std::slice::from_ref(table_with_joins), outer)
            }
            _ => {
                self.out.unsupported = Some("this kind of FROM item".into());
                Vec::new()
            }
        }
    }

    /// Output items of a SELECT list or RETURNING over `scope`.
    pub(super) fn projection(
        &mut self,
        items: &[SelectItem],
        scope: &[Entry],
        outer: &[&[Entry]],
    ) -> Vec<Item> {
        let mut out = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let (reads, direct) = self.expr(e, scope, outer);
                    self.record_values(e, reads.clone());
                    out.push(Item::Output(Output {
                        name: output_name(e),
                        reads,
                        direct,
                    }));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let (reads, direct) = self.expr(expr, scope, outer);
                    self.record_values(expr, reads.clone());
                    out.push(Item::Output(Output {
                        name: Some(names::ident(alias)),
                        reads,
                        direct,
                    }));
                }
                SelectItem::ExprWithAliases { expr, .. } => {
                    let (reads, _) = self.expr(expr, scope, outer);
                    self.record_values(expr, reads.clone());
                    out.push(Item::Output(Output {
                        name: None,
                        reads,
                        direct: false,
                    }));
                }
                SelectItem::Wildcard(opts) => {
                    if opts.opt_exclude.is_some()
                        || opts.opt_except.is_some()
                        || opts.opt_replace.is_some()
                        || opts.opt_rename.is_some()
                    {
                        self.out.unsupported = Some("* with modifiers".into());
                    }
                    for e in scope {
                        out.extend(entry_items(e));
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        let parts = names::parts(name);
                        match find_entry(&parts, scope) {
                            Some(e) => out.extend(entry_items(e)),
                            None => {
                                self.out.unsupported = Some(format!("{}.*", parts.join(".")));
                            }
                        }
                    }
                    SelectItemQualifiedWildcardKind::Expr(_) => {
                        self.out.unsupported = Some("(expression).*".into());
                    }
                },
            }
        }
        out
    }

    /// Records what `e` reads as predicate uses.
    pub(super) fn predicate(&mut self, e: &Expr, scopes: &[&[Entry]], u: Use) {
        // `a.x = b.y` between two columns is an equality use; anything else is
        // looked at part by part.
        if let Expr::BinaryOp { left, op, right } = e {
            if *op == sqlparser::ast::BinaryOperator::Eq && is_column(left) && is_column(right) {
                for side in [left, right] {
                    let (reads, _) = self.expr(side, &[], scopes);
                    for s in reads {
                        self.out.predicates.insert((s, Use::Equality));
                    }
                }
                return;
            }
            if *op == sqlparser::ast::BinaryOperator::And {
                self.predicate(left, scopes, u);
                self.predicate(right, scopes, u);
                return;
            }
        }
        if let Expr::Nested(inner) = e {
            return self.predicate(inner, scopes, u);
        }
        let (reads, _) = self.expr(e, &[], scopes);
        self.record_values(e, reads.clone());
        for s in reads {
            self.out.predicates.insert((s, u));
        }
    }

    pub(super) fn unsupported_if_reads(
        &mut self,
        on: &sqlparser::ast::OnInsert,
        scopes: &[&[Entry]],
        what: &str,
    ) {
        let mut c = Collector::default();
        let _ = on.visit(&mut c);
        if !c.idents.is_empty() || !c.queries.is_empty() {
            // ON CONFLICT DO UPDATE SET x = excluded.ssn: copied.
            for (parts, _) in c.idents {
                let col = parts.last().cloned().unwrap_or_default();
                for s in resolve_column(&col, None, scopes) {
                    self.out.predicates.insert((s, Use::Other));
                }
            }
            if !c.queries.is_empty() {
                self.out.unsupported = Some(what.into());
            }
        }
    }

    /// What an expression reads, and whether it is a bare column passed through.
    /// `scope` is the innermost FROM; `outer` the enclosing ones.
    pub(super) fn expr(
        &mut self,
        e: &Expr,
        scope: &[Entry],
        outer: &[&[Entry]],
    ) -> (BTreeSet<Source>, bool) {
        let scopes = with(outer, scope);
        let mut c = Collector::default();
        let _ = e.visit(&mut c);
        let mut reads = BTreeSet::new();
        let mut direct = is_column(e);
        for (parts, whole_args) in &c.idents {
            let found = if *whole_args {
                // `f(p.*)` or `f(*)`.
                match parts.as_slice() {
                    [] => scopes
                        .iter()
                        .flat_map(|s| s.iter())
                        .flat_map(entry_sources)
                        .collect(),
                    _ => match scopes.iter().rev().find_map(|s| find_entry(parts, s)) {
                        Some(en) => entry_sources(en),
                        None => unresolved(parts, &scopes),
                    },
                }
            } else {
                resolve(parts, &scopes, &mut direct)
            };
            reads.extend(found);
        }
        // What goes into a function with effects beyond the statement.
        for arg in &c.effects {
            let (into, _) = self.expr(arg, scope, outer);
            for s in into {
                self.out.predicates.insert((s, Use::Effect));
            }
        }
        for q in &c.queries {
            let items = self.query(q, &scopes);
            direct = false;
            for i in items {
                match i {
                    Item::Output(o) => reads.extend(o.reads),
                    Item::Star(t) => {
                        reads.insert(Source::WholeRow(t));
                    }
                }
            }
        }
        (reads, direct)
    }
}
