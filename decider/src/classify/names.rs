//! Names as PostgreSQL resolves them: identifiers folded to lower case unless
//! quoted, qualified names split into schema and object, regclass literals parsed.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::ObjectRef;

/// An identifier as PostgreSQL stores it: quoted ones verbatim, unquoted ones
/// with ASCII letters folded to lower case (what `downcase_identifier` does in a
/// UTF-8 database: non-ASCII letters are left alone).
pub(crate) fn ident(id: &Ident) -> String {
    match id.quote_style {
        Some('"') => id.value.clone(),
        _ => id.value.to_ascii_lowercase(),
    }
}

/// The parts of an object name, each folded as [`ident`] does. A part that is not
/// a plain identifier (a dialect's `IDENTIFIER(...)` function) is rendered as
/// written, so it can never be mistaken for a real name.
pub(crate) fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => ident(id),
            ObjectNamePart::Function(f) => f.to_string(),
        })
        .collect()
}

/// A table-like object: the schema when written, the database prefix of a
/// three-part name dropped (PostgreSQL only accepts the current database there).
pub(crate) fn object(name: &ObjectName) -> ObjectRef {
    from_parts(parts(name))
}

/// [`object`] on already-folded parts.
pub(crate) fn from_parts(mut parts: Vec<String>) -> ObjectRef {
    let name = parts.pop().unwrap_or_default();
    ObjectRef {
        schema: parts.pop(),
        name,
    }
}

/// Every object of a schema (`DROP SCHEMA s`, `GRANT ... ON ALL TABLES IN SCHEMA s`):
/// the schema with `*` as the name.
pub(crate) fn whole_schema(name: &ObjectName) -> ObjectRef {
    ObjectRef {
        schema: Some(parts(name).pop().unwrap_or_default()),
        name: "*".to_owned(),
    }
}

/// A function name: its folded parts joined with dots (`pg_catalog.pg_read_file`).
pub(crate) fn function(name: &ObjectName) -> String {
    parts(name).join(".")
}

/// Parses the text of a regclass literal (`nextval('clinic."Seq"')`) the way
/// PostgreSQL's `regclassin` does: dot-separated identifiers, each folded unless
/// double-quoted. `None` when the text is not a well-formed name.
pub(crate) fn regclass(text: &str) -> Option<ObjectRef> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c.is_whitespace() {
                    break;
                }
                if c == '"' {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('.') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
    if parts.len() > 3 {
        return None;
    }
    Some(from_parts(parts))
}

/// PostgreSQL's reserved key words and the ones that may only name a type or
/// function: neither can stand unquoted as a table name (or its schema).
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Reserved words that stand for a value where an expression may stand
/// (`SELECT current_user`, `SET x = DEFAULT`): sqlparser may hold them as names.
pub(crate) const VALUE_KEYWORDS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "false",
    "localtime",
    "localtimestamp",
    "null",
    "session_user",
    "true",
    "user",
];

/// Whether an unquoted word is one PostgreSQL reserves (see [`RESERVED`]).
pub(crate) fn reserved(word: &str) -> bool {
    RESERVED.contains(&word.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(schema: Option<&str>, name: &str) -> Option<ObjectRef> {
        Some(ObjectRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    #[test]
    fn regclass_literals_fold_like_postgres() {
        assert_eq!(regclass("MySeq"), r(None, "myseq"));
        assert_eq!(regclass("\"MySeq\""), r(None, "MySeq"));
        assert_eq!(regclass("Clinic.\"Seq\""), r(Some("clinic"), "Seq"));
        assert_eq!(regclass(" db.s.q "), r(Some("s"), "q"));
        assert_eq!(regclass("\"a\"\"b\""), r(None, "a\"b"));
        assert_eq!(regclass("\"a.b\""), r(None, "a.b"));
        assert_eq!(regclass(""), None);
        assert_eq!(regclass("a..b"), None);
        assert_eq!(regclass("a b"), None);
        assert_eq!(regclass("\"open"), None);
        assert_eq!(regclass("a.b.c.d"), None);
    }
}
