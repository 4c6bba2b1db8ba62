//! Functions that matter to policy: those that reach files, processes or other
//! servers (admin), those with side effects beyond the statement, and those whose
//! arguments name settings, sequences or SQL text the analyser must look into.

/// Functions that reach files, processes, other backends or other servers: a
/// statement calling one anywhere is class `admin`. Matched case-insensitively on
/// the function's own name whatever schema qualifies it (extensions such as
/// dblink and adminpack are often installed outside `pg_catalog`), except entries
/// with a dot, which name one schema's function (`cron.schedule`). A trailing `*`
/// matches any name with that prefix.
pub const ADMIN_FUNCTIONS: &[&str] = &[
    // Server files (core and adminpack).
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*",
    "pg_file_*",
    "pg_logdir_ls",
    "pg_current_logfile",
    "lo_import",
    "lo_export",
    "pg_import_system_collations",
    // Other backends and the server process.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
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
    "pg_logical_*",
    // Other servers and background work that runs SQL out of sight.
    "dblink*",
    "postgres_fdw_disconnect*",
    "pg_background_*",
    "cron.schedule",
    "cron.schedule_in_database",
    "cron.alter_job",
    // Whole-schema and whole-database dumps (what they read cannot be listed).
    "database_to_xml*",
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
    "pg_notify",
    "pg_stat_reset*",
    "pg_stat_statements_reset",
    "pg_export_snapshot",
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
pub(crate) fn listed(list: &[&str], parts: &[String]) -> bool {
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
