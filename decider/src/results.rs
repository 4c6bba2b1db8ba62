//! Statements whose result rows reach the client by another road than their
//! own `RowDescription` and `DataRow`s — `COPY ... TO STDOUT`, `DECLARE`/
//! `FETCH`/`CLOSE` of a SQL cursor — as the ingress needs them to mask those
//! rows: the query whose description gives a COPY's columns, its row format,
//! and the cursor each statement opens, reads or closes.

use sqlparser::ast::{
    CloseCursor, CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
    DiscardObject, Statement,
};

use crate::classify::names;
pub use gatehouse_schemas::decision::{CopyFormat, ResultOp};

/// Each statement's [`ResultOp`] (as the decision carries them: empty when
/// every statement's is `Other`). A text that does not parse has none: no
/// statement of it was masked as one of these (the decider refuses it, or
/// lets it through unparsed by an explicit rule).
pub fn result_ops(statements: &[Statement]) -> Vec<ResultOp> {
    let ops: Vec<ResultOp> = statements.iter().map(op).collect();
    if ops.iter().all(|o| *o == ResultOp::Other) {
        return Vec::new();
    }
    ops
}

fn op(s: &Statement) -> ResultOp {
    match s {
        Statement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } => {
            let Some(format) = copy_format(options, legacy_options) else {
                return ResultOp::Other;
            };
            let probe = match source {
                CopySource::Table {
                    table_name,
                    columns,
                } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
                CopySource::Table {
                    table_name,
                    columns,
                } => format!(
                    "SELECT {} FROM {table_name}",
                    columns
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CopySource::Query(q) => q.to_string(),
            };
            ResultOp::CopyOut { probe, format }
        }
        Statement::Declare { stmts, .. } => match stmts.iter().find(|d| d.for_query.is_some()) {
            Some(d) => match d.names.first() {
                Some(n) => ResultOp::Declare {
                    name: names::ident(n),
                    hold: d.hold == Some(true),
                },
                None => ResultOp::Other,
            },
            None => ResultOp::Other,
        },
        Statement::Fetch { name, .. } => ResultOp::Fetch {
            name: names::ident(name),
        },
        Statement::Close { cursor } => match cursor {
            CloseCursor::All => ResultOp::Close { name: None },
            CloseCursor::Specific { name } => ResultOp::Close {
                name: Some(names::ident(name)),
            },
        },
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => ResultOp::Close { name: None },
        _ => ResultOp::Other,
    }
}

/// The row format of a COPY's options; `None` for options masking does not
/// follow (a multi-byte delimiter or quote, an unknown format).
pub fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Option<CopyFormat> {
    let byte = |c: char| u8::try_from(c).ok().filter(u8::is_ascii);
    let mut format = "text".to_owned();
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    let mut quote = None;
    let mut escape = None;
    for o in options {
        match o {
            CopyOption::Format(f) => format = f.value.to_ascii_lowercase(),
            CopyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = Some(byte(*c)?),
            CopyOption::Escape(c) => escape = Some(byte(*c)?),
            CopyOption::Encoding(_) => return None,
            CopyOption::Freeze(_)
            | CopyOption::ForceQuote(_)
            | CopyOption::ForceNotNull(_)
            | CopyOption::ForceNull(_) => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => format = "binary".into(),
            CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyLegacyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
            CopyLegacyOption::Csv(csv) => {
                format = "csv".into();
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = Some(byte(*q)?),
                        CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e)?),
                        CopyLegacyCsvOption::ForceQuote(_)
                        | CopyLegacyCsvOption::ForceNotNull(_) => {}
                    }
                }
            }
            // Options of other dialects: PostgreSQL refuses them itself.
            _ => return None,
        }
    }
    match format.as_str() {
        "text" => Some(CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
            null: null.unwrap_or_else(|| b"\\N".to_vec()),
            header,
        }),
        "csv" => {
            let quote = quote.unwrap_or(b'"');
            Some(CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                null: null.unwrap_or_default(),
                header,
                quote,
                escape: escape.unwrap_or(quote),
            })
        }
        "binary" => Some(CopyFormat::Binary),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_of(sql: &str) -> Vec<ResultOp> {
        let parsed = crate::parsed::Parsed::read(sql, false).unwrap();
        result_ops(parsed.statements.as_ref().unwrap())
    }

    #[test]
    fn copies_and_cursors_are_recognised() {
        let ops = ops_of(
            "copy clinic.patients (id, ssn) to stdout with (format csv, header); \
             copy (select upper(ssn) from clinic.patients) to stdout binary; \
             COPY clinic.patients TO STDOUT; \
             declare C cursor with hold for select ssn from clinic.patients; \
             fetch 2 from c; close all; select 1",
        );
        assert_eq!(
            ops[0],
            ResultOp::CopyOut {
                probe: "SELECT id, ssn FROM clinic.patients".into(),
                format: CopyFormat::Csv {
                    delimiter: b',',
                    null: Vec::new(),
                    header: true,
                    quote: b'"',
                    escape: b'"'
                }
            }
        );
        assert!(matches!(
            &ops[1],
            ResultOp::CopyOut { probe, format: CopyFormat::Binary } if probe.starts_with("SELECT upper(ssn)")
        ));
        assert!(matches!(
            &ops[2],
            ResultOp::CopyOut { probe, format: CopyFormat::Text { delimiter: b'\t', header: false, .. } }
                if probe == "SELECT * FROM clinic.patients"
        ));
        assert_eq!(
            ops[3],
            ResultOp::Declare {
                name: "c".into(),
                hold: true
            }
        );
        assert_eq!(ops[4], ResultOp::Fetch { name: "c".into() });
        assert_eq!(ops[5], ResultOp::Close { name: None });
        assert_eq!(ops[6], ResultOp::Other);
        // COPY FROM and COPY TO a file are not result rows: nothing to carry.
        assert!(ops_of("copy t to '/tmp/x'; copy t from stdin").is_empty());
        assert!(ops_of("select ssn from clinic.patients").is_empty());
    }
}
