//! What each kind of statement does beyond what it reads: the classes, the
//! objects written, the functions called and the risks of every statement
//! sqlparser knows, refused where the tree could make it look safer than
//! PostgreSQL would run it.

use super::*;

impl Acc {
    /// What a statement (top-level or nested in a CTE, COPY, ...) does by itself;
    /// the walk then visits its parts.
    pub(super) fn effects(&mut self, stmt: &Statement) -> Result<(), String> {
        use StatementClass as C;
        match stmt {
            // `WITH ... INSERT` is a query around an INSERT: it reads only if the
            // INSERT does (see `finish`).
            Statement::Query(q) => {
                if !matches!(
                    *q.body,
                    SetExpr::Insert(_)
                        | SetExpr::Update(_)
                        | SetExpr::Delete(_)
                        | SetExpr::Merge(_)
                ) {
                    self.raise(C::Read)
                }
            }
            Statement::Insert(insert) => {
                self.raise(C::Write);
                match &insert.table {
                    TableObject::TableName(name) => self.write(name),
                    _ => return Err(unsupported(stmt)),
                }
            }
            Statement::Update(update) => {
                self.raise(C::Write);
                self.target(&update.table.relation);
                if update.selection.as_ref().is_none_or(predicate::always_true) {
                    self.risks.insert(Risk::UpdateWithoutWhere);
                }
            }
            Statement::Delete(delete) => {
                self.raise(C::Write);
                for name in &delete.tables {
                    self.write(name);
                }
                let (sqlparser::ast::FromTable::WithFromKeyword(from)
                | sqlparser::ast::FromTable::WithoutKeyword(from)) = &delete.from;
                for t in from {
                    self.target(&t.relation);
                }
                if delete.selection.as_ref().is_none_or(predicate::always_true) {
                    self.risks.insert(Risk::DeleteWithoutWhere);
                }
            }
            Statement::Merge(merge) => {
                self.raise(C::Write);
                self.target(&merge.table);
                // Rows a clause touches with no condition of its own: all matched
                // rows when ON is always true, all target rows missing from the
                // source for NOT MATCHED BY SOURCE.
                let on_all = predicate::always_true(&merge.on);
                for clause in &merge.clauses {
                    let every_row = clause.predicate.as_ref().is_none_or(predicate::always_true)
                        && match clause.clause_kind {
                            MergeClauseKind::Matched => on_all,
                            MergeClauseKind::NotMatchedBySource => true,
                            _ => false,
                        };
                    if every_row {
                        match clause.action {
                            MergeAction::Delete { .. } => {
                                self.risks.insert(Risk::DeleteWithoutWhere);
                            }
                            MergeAction::Update(_) => {
                                self.risks.insert(Risk::UpdateWithoutWhere);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Statement::Copy {
                source, to, target, ..
            } => {
                match target {
                    CopyTarget::Stdin | CopyTarget::Stdout => {}
                    // A server file or a shell command: admin, whatever the direction.
                    CopyTarget::File { .. } | CopyTarget::Program { .. } => self.raise(C::Admin),
                }
                match (source, to) {
                    (CopySource::Table { table_name, .. }, true) => {
                        self.raise(C::CopyOut);
                        self.read(table_name);
                    }
                    (CopySource::Table { table_name, .. }, false) => {
                        self.raise(C::CopyIn);
                        self.write(table_name);
                    }
                    (CopySource::Query(_), true) => self.raise(C::CopyOut),
                    (CopySource::Query(_), false) => return Err(unsupported(stmt)),
                }
            }
            Statement::CreateTable(create) => {
                // CREATE TABLE AS too: PostgreSQL logs it as DDL, and the rows it
                // reads make it `read` as well (see `finish`).
                self.raise(C::Ddl);
                self.write(&create.name);
                if let Some(
                    CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like),
                ) = &create.like
                {
                    self.read(&like.name);
                }
                if let Some(clone) = &create.clone {
                    self.read(clone);
                }
            }
            Statement::CreateView(view) => {
                self.raise(C::Ddl);
                self.write(&view.name);
            }
            Statement::CreateIndex(index) => {
                self.raise(C::Ddl);
                self.write(&index.table_name);
            }
            Statement::CreateSchema { schema_name, .. } => {
                self.raise(C::Ddl);
                match schema_name {
                    SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => {
                        self.write_schema(name)
                    }
                    SchemaName::UnnamedAuthorization(role) => {
                        self.write_schema(&ObjectName::from(role.clone()))
                    }
                }
            }
            Statement::CreateFunction(f) => {
                self.raise(C::Ddl);
                self.write(&f.name);
                self.language(f.language.as_ref());
                if f.security == Some(FunctionSecurity::Definer) {
                    // Runs with its owner's privileges, whoever calls it.
                    self.risks.insert(Risk::PrivilegeChange);
                }
            }
            Statement::CreateProcedure { name, language, .. } => {
                self.raise(C::Ddl);
                self.write(name);
                self.language(language.as_ref());
            }
            Statement::CreateSequence { name, .. } | Statement::CreateType { name, .. } => {
                self.raise(C::Ddl);
                self.write(name);
            }
            Statement::CreateDomain(d) => {
                self.raise(C::Ddl);
                self.write(&d.name);
            }
            Statement::CreateTrigger(t) => {
                self.raise(C::Ddl);
                self.write(&t.table_name);
            }
            Statement::CreatePolicy(p) => {
                // Row-level security policies are access control.
                self.raise(C::Ddl);
                self.risks.insert(Risk::PrivilegeChange);
                self.write(&p.table_name);
            }
            Statement::AlterPolicy(p) => {
                self.raise(C::Ddl);
                self.risks.insert(Risk::PrivilegeChange);
                self.write(&p.table_name);
            }
            Statement::DropPolicy(p) => {
                self.raise(C::Ddl);
                self.risks.insert(Risk::PrivilegeChange);
                self.drop_risks(p.drop_behavior == Some(DropBehavior::Cascade));
                self.write(&p.table_name);
            }
            Statement::CreateExtension(_)
            | Statement::CreateServer(_)
            | Statement::CreateDatabase { .. }
            | Statement::CreateCollation(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_) => self.raise(C::Ddl),
            Statement::AlterTable(alter) => {
                self.raise(C::Ddl);
                self.write(&alter.name);
                for op in &alter.operations {
                    self.alter_table(op);
                }
            }
            Statement::AlterSchema(alter) => {
                self.raise(C::Ddl);
                self.write_schema(&alter.name);
                if alter
                    .operations
                    .iter()
                    .any(|op| matches!(op, AlterSchemaOperation::OwnerTo { .. }))
                {
                    self.risks.insert(Risk::PrivilegeChange);
                }
            }
            Statement::AlterIndex { name, .. } => {
                self.raise(C::Ddl);
                self.write(name);
            }
            Statement::AlterView(view) => {
                self.raise(C::Ddl);
                self.write(&view.name);
            }
            Statement::AlterFunction(f) => {
                self.raise(C::Ddl);
                self.write(&f.function.name);
                let definer = match &f.operation {
                    AlterFunctionOperation::OwnerTo(_) => true,
                    AlterFunctionOperation::Actions { actions, .. } => actions.iter().any(|a| {
                        matches!(
                            a,
                            AlterFunctionAction::Security {
                                security: FunctionSecurity::Definer,
                                ..
                            }
                        )
                    }),
                    _ => false,
                };
                if definer {
                    self.risks.insert(Risk::PrivilegeChange);
                }
            }
            Statement::AlterType(t) => {
                self.raise(C::Ddl);
                self.write(&t.name);
            }
            Statement::CreateRole(_) | Statement::CreateUser(_) | Statement::AlterUser(_) => {
                self.raise(C::Dcl);
                self.risks.insert(Risk::RoleChange);
            }
            Statement::AlterRole { operation, .. } => {
                self.raise(C::Dcl);
                self.risks.insert(Risk::RoleChange);
                if let AlterRoleOperation::Set { config_name, .. } = operation {
                    // A per-role default reaches every later session of the role.
                    self.set_risks(&names::function(config_name));
                }
            }
            Statement::Drop {
                object_type,
                names: dropped,
                cascade,
                ..
            } => {
                self.drop_risks(*cascade);
                match object_type {
                    ObjectType::Role | ObjectType::User | ObjectType::Group => {
                        self.raise(C::Dcl);
                        self.risks.insert(Risk::RoleChange);
                    }
                    ObjectType::Schema => {
                        self.raise(C::Ddl);
                        for name in dropped {
                            self.write_schema(name);
                        }
                    }
                    ObjectType::Database => self.raise(C::Ddl),
                    _ => {
                        self.raise(C::Ddl);
                        for name in dropped {
                            self.write(name);
                        }
                    }
                }
            }
            Statement::DropFunction(f) => {
                self.raise(C::Ddl);
                self.drop_risks(f.drop_behavior == Some(DropBehavior::Cascade));
                for desc in &f.func_desc {
                    self.write(&desc.name);
                }
            }
            Statement::DropProcedure {
                proc_desc,
                drop_behavior,
                ..
            } => {
                self.raise(C::Ddl);
                self.drop_risks(*drop_behavior == Some(DropBehavior::Cascade));
                for desc in proc_desc {
                    self.write(&desc.name);
                }
            }
            Statement::DropDomain(d) => {
                self.raise(C::Ddl);
                self.drop_risks(d.drop_behavior == Some(DropBehavior::Cascade));
                self.write(&d.name);
            }
            Statement::DropExtension(e) => {
                self.raise(C::Ddl);
                self.drop_risks(e.cascade_or_restrict == Some(ReferentialAction::Cascade));
            }
            Statement::DropTrigger(t) => {
                self.raise(C::Ddl);
                self.drop_risks(t.option == Some(ReferentialAction::Cascade));
                if let Some(table) = &t.table_name {
                    self.write(table);
                }
            }
            Statement::DropOperator(o) => {
                self.raise(C::Ddl);
                self.drop_risks(o.drop_behavior == Some(DropBehavior::Cascade));
            }
            Statement::DropOperatorFamily(o) => {
                self.raise(C::Ddl);
                self.drop_risks(o.drop_behavior == Some(DropBehavior::Cascade));
            }
            Statement::DropOperatorClass(o) => {
                self.raise(C::Ddl);
                self.drop_risks(o.drop_behavior == Some(DropBehavior::Cascade));
            }
            Statement::Truncate(t) => {
                self.raise(C::Ddl);
                self.risks.insert(Risk::Truncate);
                for target in &t.table_names {
                    self.write(&target.name);
                }
            }
            Statement::Comment {
                object_type,
                object_name,
                ..
            } => {
                self.raise(C::Ddl);
                let mut parts = names::parts(object_name);
                if *object_type == CommentObject::Column {
                    parts.pop();
                }
                if !parts.is_empty() {
                    self.writes.insert(names::from_parts(parts));
                }
            }
            Statement::Grant(grant) => {
                self.raise(C::Dcl);
                self.risks.insert(Risk::PrivilegeChange);
                if let Some(objects) = &grant.objects {
                    self.grant_objects(objects);
                }
            }
            Statement::Revoke(revoke) => {
                self.raise(C::Dcl);
                self.risks.insert(Risk::PrivilegeChange);
                if let Some(objects) = &revoke.objects {
                    self.grant_objects(objects);
                }
            }
            Statement::GrantRole(_) | Statement::RevokeRole(_) => {
                // Role membership: the grantee acts with the role's privileges.
                self.raise(C::Dcl);
                self.risks.extend([Risk::PrivilegeChange, Risk::RoleChange]);
            }
            Statement::AlterDefaultPrivileges(a) => {
                self.raise(C::Dcl);
                self.risks.insert(Risk::PrivilegeChange);
                for option in &a.options {
                    if let sqlparser::ast::DefaultPrivilegesOption::InSchema(schemas) = option {
                        for schema in schemas {
                            self.write_schema(schema);
                        }
                    }
                }
            }
            Statement::RefreshMaterializedView(r) => {
                // Re-runs the view's query and replaces its rows; logged as DDL.
                self.raise(C::Ddl);
                self.write(&r.name);
            }
            Statement::CreateRule(r) => {
                // The rule's actions are walked too: a rule that writes makes
                // later statements on the table write where it says.
                self.raise(C::Ddl);
                self.write(&r.table_name);
            }
            Statement::DropRule(r) => {
                self.raise(C::Ddl);
                self.drop_risks(r.drop_behavior == Some(DropBehavior::Cascade));
                self.write(&r.table_name);
            }
            Statement::AlterTrigger(t) => {
                self.raise(C::Ddl);
                self.write(&t.table_name);
            }
            Statement::CreateAggregate(a) => {
                self.raise(C::Ddl);
                self.write(&a.name);
            }
            Statement::CreateForeignTable(t) => {
                self.raise(C::Ddl);
                self.write(&t.name);
            }
            Statement::CreateForeignDataWrapper(_) => self.raise(C::Ddl),
            Statement::CreateUserMapping(_) => {
                // Lets a local role reach another server as some remote user.
                self.raise(C::Ddl);
                self.risks.insert(Risk::PrivilegeChange);
            }
            Statement::Set(set) => self.set(set),
            Statement::Reset(reset) => {
                self.raise(C::Session);
                match &reset.reset {
                    // RESET ALL puts search_path and client_encoding back to their
                    // defaults: a change of what later statements mean.
                    Reset::ALL => {
                        self.risks.insert(Risk::SearchPathChange);
                        self.risks.insert(Risk::ClientEncodingChange);
                    }
                    Reset::SessionAuthorization => {
                        self.risks.insert(Risk::RoleChange);
                    }
                    Reset::ConfigurationParameter(name) => self.set_risks(&names::function(name)),
                }
            }
            Statement::Discard { object_type } => {
                self.raise(C::Session);
                if *object_type == DiscardObject::ALL {
                    // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT,
                    // RESET ALL and DEALLOCATE ALL.
                    self.risks.insert(Risk::RoleChange);
                    self.risks.insert(Risk::SearchPathChange);
                    self.risks.insert(Risk::ClientEncodingChange);
                    self.prepared = Some(PreparedOp::Deallocate { name: None });
                }
            }
            Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowObjects(_)
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. } => self.raise(C::Read),
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => self.raise(C::Transaction),
            Statement::Call(function) => {
                self.raise(C::Procedural);
                let args = match &function.args {
                    FunctionArguments::List(list) => list.args.as_slice(),
                    _ => &[],
                };
                self.call(&function.name, args);
            }
            Statement::Prepare {
                name, statement, ..
            } => {
                // Only reached when nested (PostgreSQL would refuse it): the walk
                // goes on into the inner statement as if it ran.
                self.raise(C::Prepared);
                self.prepared = Some(PreparedOp::Prepare {
                    name: names::ident(name),
                    inner_sql: statement.to_string(),
                });
            }
            Statement::Explain { describe_alias, .. } => {
                if *describe_alias != DescribeAlias::Explain {
                    return Err(unsupported(stmt));
                }
                self.raise(C::Read)
            }
            Statement::Execute {
                name: Some(name),
                immediate: false,
                into,
                using,
                ..
            } if name.0.len() == 1 && into.is_empty() && using.is_empty() => {
                self.raise(C::Prepared);
                self.prepared = Some(PreparedOp::Execute {
                    name: names::parts(name).remove(0),
                });
            }
            Statement::Deallocate { name, .. } => {
                self.raise(C::Prepared);
                let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                self.prepared = Some(PreparedOp::Deallocate {
                    name: (!all).then(|| names::ident(name)),
                });
            }
            Statement::Declare { stmts, .. } => {
                if stmts
                    .iter()
                    .any(|d| d.declare_type != Some(DeclareType::Cursor) || d.for_query.is_none())
                {
                    return Err(unsupported(stmt));
                }
                self.raise(C::Cursor);
            }
            Statement::Fetch { into: None, .. } | Statement::Close { .. } => self.raise(C::Cursor),
            Statement::LISTEN { .. } | Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => {
                self.raise(C::Utility)
            }
            Statement::Vacuum(v) => {
                self.raise(C::Utility);
                if let Some(name) = &v.table_name {
                    self.write(name);
                }
            }
            Statement::Analyze(a) => {
                self.raise(C::Utility);
                if let Some(name) = &a.table_name {
                    self.write(name);
                }
            }
            Statement::Lock(lock) => {
                self.raise(C::Utility);
                for t in &lock.tables {
                    self.write(&t.name);
                }
            }
            Statement::Load { .. } => self.raise(C::Admin),
            // Everything else is another dialect's statement that PostgreSQL would
            // reject, or one this analyser has no rules for: refuse rather than guess.
            _ => return Err(unsupported(stmt)),
        }
        Ok(())
    }

    /// A function or procedure body in an untrusted language (plperlu,
    /// plpython3u, ...) can reach files and processes: admin.
    pub(super) fn language(&mut self, language: Option<&Ident>) {
        if language.is_some_and(|l| functions::untrusted_language(&l.value)) {
            self.raise(StatementClass::Admin);
        }
    }

    pub(super) fn alter_table(&mut self, op: &AlterTableOperation) {
        match op {
            AlterTableOperation::AlterColumn {
                op: AlterColumnOperation::SetDataType { .. },
                ..
            }
            | AlterTableOperation::ChangeColumn { .. }
            | AlterTableOperation::ModifyColumn { .. } => {
                self.risks.insert(Risk::AlterType);
            }
            AlterTableOperation::OwnerTo { .. }
            | AlterTableOperation::DisableRowLevelSecurity
            | AlterTableOperation::EnableRowLevelSecurity
            | AlterTableOperation::ForceRowLevelSecurity
            | AlterTableOperation::NoForceRowLevelSecurity => {
                self.risks.insert(Risk::PrivilegeChange);
            }
            AlterTableOperation::DropColumn { drop_behavior, .. }
            | AlterTableOperation::DropConstraint { drop_behavior, .. } => {
                self.drop_risks(*drop_behavior == Some(DropBehavior::Cascade));
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (sqlparser::ast::RenameTableNameKind::To(name)
                | sqlparser::ast::RenameTableNameKind::As(name)) = table_name;
                self.write(name);
            }
            _ => {}
        }
    }

    pub(super) fn grant_objects(&mut self, objects: &GrantObjects) {
        match objects {
            GrantObjects::Tables(names)
            | GrantObjects::Views(names)
            | GrantObjects::Sequences(names) => {
                for name in names {
                    self.write(name);
                }
            }
            GrantObjects::Schemas(schemas)
            | GrantObjects::AllTablesInSchema { schemas }
            | GrantObjects::AllSequencesInSchema { schemas }
            | GrantObjects::AllViewsInSchema { schemas }
            | GrantObjects::AllMaterializedViewsInSchema { schemas }
            | GrantObjects::AllFunctionsInSchema { schemas } => {
                for schema in schemas {
                    self.write_schema(schema);
                }
            }
            _ => {}
        }
    }

    pub(super) fn set(&mut self, set: &Set) {
        use StatementClass as C;
        match set {
            Set::SingleAssignment { variable, .. } => {
                self.raise(C::Session);
                self.set_risks(&names::function(variable));
            }
            Set::ParenthesizedAssignments { variables, .. } => {
                self.raise(C::Session);
                for v in variables {
                    self.set_risks(&names::function(v));
                }
            }
            Set::MultipleAssignments { assignments } => {
                self.raise(C::Session);
                for a in assignments {
                    self.set_risks(&names::function(&a.name));
                }
            }
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
                self.raise(C::Session);
                self.risks.insert(Risk::RoleChange);
            }
            Set::SetNames { .. } | Set::SetNamesDefault {} => {
                self.raise(C::Session);
                self.risks.insert(Risk::ClientEncodingChange);
            }
            Set::SetTransaction { session: false, .. } => self.raise(C::Transaction),
            // SET SESSION CHARACTERISTICS AS TRANSACTION: a session default.
            Set::SetTransaction { session: true, .. } | Set::SetTimeZone { .. } => {
                self.raise(C::Session)
            }
            Set::SetSessionParam(_) => {
                // An MS-SQL form PostgreSQL rejects; session at least.
                self.raise(C::Session)
            }
        }
    }

    /// A function call, wherever it appears.
    pub(super) fn call(&mut self, name: &ObjectName, args: &[FunctionArg]) {
        let parts = names::parts(name);
        self.functions.insert(parts.join("."));
        self.calls.extend(functions::function_call(name));
        if listed(ADMIN_FUNCTIONS, &parts) {
            self.raise(StatementClass::Admin);
            self.risks.insert(Risk::SideEffectFunction);
        }
        if listed(SIDE_EFFECT_FUNCTIONS, &parts) {
            self.risks.insert(Risk::SideEffectFunction);
        }
        let own_name = parts
            .last()
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_default();
        let first = |keyword: &str| arg(args, 0, keyword).and_then(|e| string_value(e, 0));
        let query_text = QUERY_TEXT_FUNCTIONS.iter().find(|(f, _)| *f == own_name);
        match own_name.as_str() {
            "set_config" => match first("setting_name") {
                Some(setting) => self.set_risks(&setting),
                // A computed setting name could be any of them.
                None => self.risks.extend([
                    Risk::SearchPathChange,
                    Risk::ClientEncodingChange,
                    Risk::RoleChange,
                ]),
            },
            "nextval" | "setval" => {
                if let Some(seq) = first("regclass").and_then(|s| names::regclass(&s)) {
                    self.writes.insert(seq);
                }
            }
            "currval" => {
                if let Some(seq) = first("regclass").and_then(|s| names::regclass(&s)) {
                    self.reads.insert(seq);
                }
            }
            _ if query_text.is_some() => {
                for &pos in query_text.map(|(_, p)| *p).unwrap_or_default() {
                    match arg(args, pos, "query").and_then(|e| string_value(e, 0)) {
                        Some(sql) => self.nested_sql(&sql),
                        // A computed query, or none where one is required: what
                        // it reads cannot be known.
                        None if pos == 0 || args.len() > pos => self.raise(StatementClass::Admin),
                        None => {}
                    }
                }
            }
            _ if listed(TABLE_NAME_FUNCTIONS, &parts) => {
                match first("tbl").and_then(|s| names::regclass(&s)) {
                    Some(table) => {
                        self.reads.insert(table);
                    }
                    None => self.raise(StatementClass::Admin),
                }
            }
            _ if listed(SCHEMA_NAME_FUNCTIONS, &parts) => match first("schema") {
                // A `name` argument: taken exactly as written, no case folding.
                Some(schema) => {
                    self.reads.insert(ObjectRef {
                        schema: Some(schema),
                        name: "*".to_owned(),
                    });
                }
                None => self.raise(StatementClass::Admin),
            },
            _ => {}
        }
    }

    /// SQL text run by a function (`query_to_xml('select ...')`): analysed and
    /// merged into this statement; admin when it cannot be analysed.
    pub(super) fn nested_sql(&mut self, sql: &str) {
        if self.depth >= MAX_NESTED_SQL {
            self.raise(StatementClass::Admin);
            return;
        }
        match analyze_text(sql, self.depth + 1) {
            Analysis::Parsed { statements } => {
                for s in statements {
                    self.classes.extend(s.classes);
                    self.reads.extend(s.reads);
                    self.writes.extend(s.writes);
                    self.functions.extend(s.functions);
                    self.calls.extend(s.calls);
                    self.risks.extend(s.risks);
                }
            }
            Analysis::Unparsed { .. } => self.raise(StatementClass::Admin),
        }
    }

    /// `SELECT ... INTO t`: creates and fills a table, DDL as CREATE TABLE AS is.
    pub(super) fn select_into(&mut self, select: &Select) {
        let Some(into) = &select.into else {
            return;
        };
        self.raise(StatementClass::Ddl);
        for target in &into.targets {
            let parts = match target {
                Expr::Identifier(id) => vec![names::ident(id)],
                Expr::CompoundIdentifier(ids) => ids.iter().map(names::ident).collect(),
                other => vec![other.to_string()],
            };
            self.writes.insert(names::from_parts(parts));
        }
    }
}
