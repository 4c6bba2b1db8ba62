//! Functions that matter to policy: those that reach files, processes or other
//! servers (admin), those with side effects beyond the statement, those that
//! read relations named at run time, and those whose arguments name settings,
//! sequences or SQL text the analyser must look into; and the names through
//! which a statement may run a function at all ([`CallName`]s), which the
//! ingress resolves in the upstream catalog.
//!
//! The lists of PostgreSQL's own functions were reviewed against `pg_proc` of
//! PostgreSQL 15; `tests/builtins.rs` runs that derivation against a real
//! server and fails when it finds a function no list here (nor its list of
//! functions reviewed as harmless) names.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use gatehouse_schemas::decision::{CallKind, CallName};
use sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, DataType, Expr, ObjectName, ObjectNamePart, Statement,
    TableFactor, Visitor,
};

use super::names;

/// Functions that reach files, processes, other backends or other servers, or
/// change the server's state (WAL, replication, configuration, catalogs): a
/// statement calling one anywhere is class `admin`. Matched case-insensitively on
/// the function's own name whatever schema qualifies it (extensions such as
/// dblink and adminpack are often installed outside `pg_catalog`), except entries
/// with a dot, which name one schema's function (`cron.schedule`). A trailing `*`
/// matches any name with that prefix.
pub const ADMIN_FUNCTIONS: &[&str] = &[
    // Server files (core and adminpack).
    "pg_read_file*",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*",
    "pg_file_*",
    "pg_logdir_ls",
    "pg_current_logfile",
    "lo_import",
    "lo_export",
    "pg_import_system_collations",
    // The server's configuration files and build, memory and shared memory.
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_show_all_file_settings",
    "pg_config",
    "pg_get_backend_memory_contexts",
    "pg_get_shmem_allocations",
    // Other backends and the server process.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile*",
    "pg_promote",
    "pg_log_backend_memory_contexts",
    // WAL, backups and replication.
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_replication_origin_*",
    "pg_show_replication_origin_status",
    "pg_logical_*",
    // Catalog surgery for initdb, pg_upgrade and extension scripts.
    "pg_nextoid",
    "pg_stop_making_pinned_objects",
    "pg_extension_config_dump",
    "binary_upgrade_*",
    // Other servers and background work that runs SQL out of sight.
    "dblink*",
    "postgres_fdw_disconnect*",
    "pg_background_*",
    "cron.schedule",
    "cron.schedule_in_database",
    "cron.alter_job",
    // Whole-database dumps (what they read cannot be listed; relation
    // readers too).
    "database_to_xml*",
];

/// Functions that read relations (or run SQL text, or fetch from a cursor)
/// chosen at run time, returning their rows: what they read is not in the
/// statement's text for masking to follow (a literal query or table name is
/// analysed too, see `QUERY_TEXT_FUNCTIONS`, but a cursor, a computed name or
/// a whole schema are not). A masked caller is refused them; any other caller
/// needs a rule that names them in `functions` (or `trusted_functions`).
pub const RELATION_READING_FUNCTIONS: &[&str] = &[
    "query_to_xml*",
    "cursor_to_xml*",
    "table_to_xml*",
    "schema_to_xml*",
    "database_to_xml*",
    "ts_stat",
    "ts_rewrite",
    // Decoded WAL: the rows of every table changed (admin too).
    "pg_logical_slot_get_*",
    "pg_logical_slot_peek_*",
    // tablefunc's crosstab runs its query text.
    "crosstab*",
];

/// Functions with effects beyond the statement's result (sleeping, advancing
/// sequences, changing settings, taking session locks, writing large objects,
/// notifying listeners). Every admin function counts too.
pub const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "pg_sleep*",
    "nextval",
    "setval",
    "set_config",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "lo_*",
    "be_lo_*",
    "loread",
    "lowrite",
    "pg_notify",
    "pg_stat_reset*",
    "pg_stat_statements_reset",
    "pg_export_snapshot",
    // Index maintenance on a table named by its argument.
    "brin_summarize_*",
    "brin_desummarize_range",
    "gin_clean_pending_list",
];

/// Relations that show the values of table columns outside any output column
/// masking can follow: the planner's statistics (most common values,
/// histogram bounds) and other sessions' statement texts. Matched on the
/// relation's own name, whatever schema qualifies it (pg_stat_statements is
/// installed where its extension was created).
pub const STATISTICS_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stat_activity",
    "pg_stat_statements",
];

/// Functions that show what [`STATISTICS_RELATIONS`] show.
pub const STATISTICS_FUNCTIONS: &[&str] = &[
    "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
    "pg_mcv_list_items",
    "pg_stat_statements",
];

/// Functions that run the text of a query given as an argument, with the
/// positions of the arguments that are query text (core, and tablefunc's
/// crosstab). Other extensions' functions that run SQL text are only seen by
/// name.
pub(super) const QUERY_TEXT_FUNCTIONS: &[(&str, &[usize])] = &[
    ("query_to_xml", &[0]),
    ("query_to_xmlschema", &[0]),
    ("query_to_xml_and_xmlschema", &[0]),
    ("ts_stat", &[0]),
    ("crosstab", &[0, 1]),
    ("crosstab2", &[0]),
    ("crosstab3", &[0]),
    ("crosstab4", &[0]),
];

/// Functions whose first argument names a table whose rows they return.
pub(super) const TABLE_NAME_FUNCTIONS: &[&str] = &[
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
];

/// Functions whose first argument names a schema whose tables they all return.
pub(super) const SCHEMA_NAME_FUNCTIONS: &[&str] = &[
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
];

/// Built-in types by name: the base, pseudo, range and multirange types of
/// `pg_catalog` in PostgreSQL 15 (arrays are named by their element type).
/// Type names have no overloading and `pg_catalog` is searched first (the
/// policy's assumption, see `Policy::resolve`), so a cast to one of these
/// unqualified names runs built-in functions only and is not looked up.
pub const BUILTIN_TYPES: &[&str] = &[
    "_record",
    "aclitem",
    "any",
    "anyarray",
    "anycompatible",
    "anycompatiblearray",
    "anycompatiblemultirange",
    "anycompatiblenonarray",
    "anycompatiblerange",
    "anyelement",
    "anyenum",
    "anymultirange",
    "anynonarray",
    "anyrange",
    "bit",
    "bool",
    "box",
    "bpchar",
    "bytea",
    "char",
    "cid",
    "cidr",
    "circle",
    "cstring",
    "date",
    "datemultirange",
    "daterange",
    "event_trigger",
    "fdw_handler",
    "float4",
    "float8",
    "gtsvector",
    "index_am_handler",
    "inet",
    "int2",
    "int4",
    "int4multirange",
    "int4range",
    "int8",
    "int8multirange",
    "int8range",
    "internal",
    "interval",
    "json",
    "jsonb",
    "jsonpath",
    "language_handler",
    "line",
    "lseg",
    "macaddr",
    "macaddr8",
    "money",
    "name",
    "numeric",
    "nummultirange",
    "numrange",
    "oid",
    "path",
    "pg_brin_bloom_summary",
    "pg_brin_minmax_multi_summary",
    "pg_ddl_command",
    "pg_dependencies",
    "pg_lsn",
    "pg_mcv_list",
    "pg_ndistinct",
    "pg_node_tree",
    "pg_snapshot",
    "point",
    "polygon",
    "record",
    "refcursor",
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
    "table_am_handler",
    "text",
    "tid",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "trigger",
    "tsm_handler",
    "tsmultirange",
    "tsquery",
    "tsrange",
    "tstzmultirange",
    "tstzrange",
    "tsvector",
    "txid_snapshot",
    "unknown",
    "uuid",
    "varbit",
    "varchar",
    "void",
    "xid",
    "xid8",
    "xml",
];

/// Names that PostgreSQL's grammar turns into expressions of its own when
/// written unquoted and unqualified (`current_timestamp`, `coalesce(...)`):
/// they never call a function of that name, so they are not looked up.
const GRAMMAR_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_role",
    "current_user",
    "session_user",
    "user",
    "current_catalog",
    "coalesce",
    "greatest",
    "least",
    "nullif",
    "grouping",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
];

/// The name through which a call of `name` (in an expression, in `FROM`, by
/// `CALL`) runs a function; `None` for the grammar's own constructs.
pub(crate) fn function_call(name: &ObjectName) -> Option<CallName> {
    let keyword = match &name.0[..] {
        [ObjectNamePart::Identifier(id)] => {
            id.quote_style.is_none()
                && GRAMMAR_FUNCTIONS.contains(&id.value.to_ascii_lowercase().as_str())
        }
        _ => false,
    };
    if keyword {
        return None;
    }
    let mut parts = names::parts(name);
    let own = parts.pop()?;
    Some(CallName {
        kind: CallKind::Function,
        schema: parts.pop(),
        name: own,
    })
}

/// The operator through which a binary operator may run a function not
/// built into PostgreSQL: one written with a symbol sqlparser does not know
/// as one of PostgreSQL's own (`#=#`), or `OPERATOR(schema.op)`. Operators
/// spelled with PostgreSQL's own symbols are taken as built in.
pub(crate) fn operator_call(op: &BinaryOperator) -> Option<CallName> {
    match op {
        // Symbols sqlparser knows from other dialects, none of them
        // PostgreSQL's own: a user's operator if anything.
        BinaryOperator::Spaceship => Some(CallName {
            kind: CallKind::Operator,
            schema: None,
            name: "<=>".to_owned(),
        }),
        BinaryOperator::DuckIntegerDivide => Some(CallName {
            kind: CallKind::Operator,
            schema: None,
            name: "//".to_owned(),
        }),
        BinaryOperator::Custom(symbol) => Some(CallName {
            kind: CallKind::Operator,
            schema: None,
            name: symbol.clone(),
        }),
        BinaryOperator::PGCustomBinaryOperator(parts) => {
            let (symbol, qualifier) = parts.split_last()?;
            Some(CallName {
                kind: CallKind::Operator,
                // Written bare inside OPERATOR(...): folded like an identifier.
                schema: qualifier.last().map(|s| s.to_ascii_lowercase()),
                name: symbol.clone(),
            })
        }
        _ => None,
    }
}

/// The type through which a cast (or a typed literal) to `data_type` may run
/// a function not built into PostgreSQL: a type that is not one of
/// [`BUILTIN_TYPES`] (an array by its element type).
pub(crate) fn type_call(data_type: &DataType) -> Option<CallName> {
    match data_type {
        DataType::Custom(name, _) => {
            let mut parts = names::parts(name);
            let own = parts.pop()?;
            let schema = parts.pop();
            let builtin = match schema.as_deref() {
                None => BUILTIN_TYPES.contains(&own.as_str()),
                Some(s) => s == "pg_catalog",
            };
            (!builtin).then_some(CallName {
                kind: CallKind::Type,
                schema,
                name: own,
            })
        }
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(t, _)
            | ArrayElemTypeDef::AngleBracket(t)
            | ArrayElemTypeDef::Parenthesis(t)
            | ArrayElemTypeDef::Qualified(t, _),
        ) => type_call(t),
        _ => None,
    }
}

/// The name an expression node (not its children) may run a function
/// through: a call, a custom operator, a cast to a type not built in.
pub(crate) fn expr_call(e: &Expr) -> Option<CallName> {
    match e {
        Expr::Function(f) => function_call(&f.name),
        Expr::BinaryOp { op, .. }
        | Expr::AnyOp { compare_op: op, .. }
        | Expr::AllOp { compare_op: op, .. } => operator_call(op),
        Expr::Cast { data_type, .. } => type_call(data_type),
        Expr::TypedString(t) => type_call(&t.data_type),
        _ => None,
    }
}

/// Collects every [`CallName`] of a tree: calls in expressions, table
/// functions in `FROM`, `CALL`, custom operators, casts to types not built in.
pub(crate) struct CallNames<'a>(pub(crate) &'a mut BTreeSet<CallName>);

impl Visitor for CallNames<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        self.0.extend(expr_call(e));
        ControlFlow::Continue(())
    }
    fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        match f {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.0.extend(function_call(name)),
            // `FROM unnest(...)`: a call of `unnest` like any other.
            TableFactor::UNNEST { .. } => {
                self.0.insert(CallName {
                    kind: CallKind::Function,
                    schema: None,
                    name: "unnest".to_owned(),
                });
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if let Statement::Call(f) = s {
            self.0.extend(function_call(&f.name));
        }
        ControlFlow::Continue(())
    }
}

/// Procedural languages that reach the server's files and processes.
const UNTRUSTED_LANGUAGES: &[&str] = &[
    "plperlu",
    "plpythonu",
    "plpython2u",
    "plpython3u",
    "pltclu",
    "plsh",
    "plrustu",
    "c",
];

/// Whether `language` (a DO block's or a function's) is untrusted.
pub(super) fn untrusted_language(language: &str) -> bool {
    UNTRUSTED_LANGUAGES.contains(&language.to_ascii_lowercase().as_str())
}

/// Whether `list` holds the function `parts` (folded name parts, schema first).
pub fn listed(list: &[&str], parts: &[String]) -> bool {
    let Some(name) = parts.last().map(|n| n.to_ascii_lowercase()) else {
        return false;
    };
    let qualified = parts
        .len()
        .checked_sub(2)
        .map(|i| format!("{}.{name}", parts[i].to_ascii_lowercase()));
    list.iter().any(|entry| {
        let target = if entry.contains('.') {
            match &qualified {
                Some(q) => q.as_str(),
                None => return false,
            }
        } else {
            name.as_str()
        };
        match entry.strip_suffix('*') {
            Some(prefix) => target.starts_with(prefix),
            None => target == *entry,
        }
    })
}

/// The risks a setting changes, by its name (case-insensitive, as GUC names are).
pub(super) fn setting_risks(name: &str) -> &'static [crate::Risk] {
    use crate::Risk;
    match name.to_ascii_lowercase().as_str() {
        "search_path" => &[Risk::SearchPathChange],
        // How the server reads the bytes of later statements: the encoding, and
        // whether backslashes escape in ordinary string literals.
        "client_encoding" | "names" | "standard_conforming_strings" | "backslash_quote" => {
            &[Risk::ClientEncodingChange]
        }
        "role" | "session_authorization" => &[Risk::RoleChange],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Vec<String> {
        name.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn admin_functions_match_any_schema_and_case() {
        for f in [
            "pg_read_file",
            "pg_catalog.pg_read_file",
            "PG_READ_FILE",
            "public.dblink_exec",
            "dblink",
            "ext.pg_ls_dir",
            "pg_logical_slot_get_changes",
            "cron.schedule",
            "CRON.SCHEDULE",
        ] {
            assert!(listed(ADMIN_FUNCTIONS, &p(f)), "{f}");
        }
        for f in [
            "pg_read",
            "read_file",
            "schedule",
            "other.schedule",
            "now",
            "lo_get",
        ] {
            assert!(!listed(ADMIN_FUNCTIONS, &p(f)), "{f}");
        }
        assert!(listed(SIDE_EFFECT_FUNCTIONS, &p("lo_get")));
        assert!(listed(SIDE_EFFECT_FUNCTIONS, &p("pg_catalog.pg_sleep_for")));
    }

    #[test]
    fn setting_names_are_case_insensitive() {
        assert_eq!(
            setting_risks("SEARCH_PATH"),
            &[crate::Risk::SearchPathChange]
        );
        assert_eq!(setting_risks("Role"), &[crate::Risk::RoleChange]);
        assert!(setting_risks("work_mem").is_empty());
    }
}
