//! Result data kept for replay (`[roles.NAME.results]`): per statement, the
//! column names and row count of each result set and, with `record = "rows"`,
//! the rows themselves as the client received them (after masking), bounded
//! per statement by `max_rows` and `max_bytes`.
//!
//! An `Execute`'s rows carry no description of their own: they are named by
//! the columns a `Describe` of their portal or statement answered with (kept
//! in the session's name registry) and decoded by the result formats their
//! `Bind` asked for.

use std::sync::Arc;

use crate::config::{ResultRecord, ResultsConfig};
use crate::protocol::codec;
use crate::protocol::messages;
use crate::protocol::names::Names;

/// One finished result set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<String>,
    /// Kept rows: text values as sent; binary ones decoded for text, integer
    /// and boolean types, else `\x` hex; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows returned, kept or not.
    pub count: u64,
    /// Whether rows were left out.
    pub truncated: bool,
}

/// One session's capture settings (present only when its role records results).
#[derive(Debug)]
pub struct Capture {
    cfg: ResultsConfig,
}

/// A `Describe` awaiting its answer.
#[derive(Debug, Clone)]
pub struct Described {
    portal: bool,
    name: String,
}

/// A statement's results, as they arrive.
#[derive(Debug, Default)]
pub struct Collecting {
    /// For an `Execute`: the portal it runs, its statement and result formats.
    portal: Option<(String, String, Arc<[i16]>)>,
    /// The open result set: names, formats, rows.
    open: Option<Open>,
    done: Vec<ResultSet>,
    kept_rows: usize,
    kept_bytes: usize,
}

#[derive(Debug)]
struct Open {
    columns: Columns,
    formats: Arc<[i16]>,
    set: ResultSet,
}

/// A `RowDescription`'s names and type OIDs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    names: Vec<String>,
    types: Vec<u32>,
}

/// What capture keeps with a pipeline entry.
#[derive(Debug, Default)]
pub enum Note {
    /// Nothing.
    #[default]
    None,
    /// A `Describe`: its answer names columns.
    Describe(Described),
    /// A `Query` or `Execute`: its results are collected.
    Collect(Box<Collecting>),
}

impl Capture {
    /// Capture for a role, or `None` when it records no result data.
    pub fn new(cfg: ResultsConfig) -> Option<Box<Capture>> {
        (cfg.record != ResultRecord::None).then(|| Box::new(Capture { cfg }))
    }

    /// Whether `DataRow` bodies are needed (rows are kept).
    pub fn rows(&self) -> bool {
        self.cfg.record == ResultRecord::Rows
    }

    /// A client message of type `tag` is sent: what its answer will need.
    pub fn note(&self, names: &Names, tag: u8, body: &[u8]) -> Note {
        match tag {
            codec::QUERY => Note::Collect(Box::default()),
            codec::EXECUTE => {
                let portal = codec::execute_portal(body).map(lossy).unwrap_or_default();
                let (statement, formats) = names
                    .portal(&portal)
                    .map(|p| (p.statement.clone(), p.formats.clone()))
                    .unwrap_or_else(|| (String::new(), Arc::from(Vec::new())));
                Note::Collect(Box::new(Collecting {
                    portal: Some((portal, statement, formats)),
                    ..Collecting::default()
                }))
            }
            codec::DESCRIBE => match codec::target(body) {
                Some((kind, name)) => Note::Describe(Described {
                    portal: kind == b'P',
                    name: lossy(name),
                }),
                None => Note::None,
            },
            _ => Note::None,
        }
    }

    /// A `RowDescription` answered `Describe` `d`.
    pub fn described(&self, names: &mut Names, d: &Described, body: &[u8]) {
        let Some((columns, _)) = row_description(body) else {
            return;
        };
        if d.portal {
            names.describe_portal(&d.name, columns.into());
        } else {
            names.describe_statement(&d.name, columns.into());
        }
    }

    /// A `RowDescription` of a `Query`'s next result set.
    pub fn description(&self, c: &mut Collecting, body: &[u8]) {
        c.close();
        if let Some((columns, formats)) = row_description(body) {
            c.open = Some(Open {
                columns,
                formats: formats.into(),
                set: ResultSet::default(),
            });
        }
    }

    /// A `DataRow` (`body`: empty unless rows are kept).
    pub fn row(&self, names: &Names, c: &mut Collecting, body: &[u8]) {
        if c.open.is_none() {
            // An Execute's rows: named by the Describe of its portal or its
            // statement, decoded by the formats its Bind asked for.
            let (columns, formats) = match &c.portal {
                Some((portal, statement, formats)) => (
                    names
                        .portal(portal)
                        .and_then(|p| p.columns.clone())
                        .or_else(|| names.statement(statement).and_then(|s| s.columns.clone())),
                    formats.clone(),
                ),
                None => (None, Arc::from(Vec::new())),
            };
            c.open = Some(Open {
                columns: columns.map(|c| Columns::clone(&c)).unwrap_or_default(),
                formats,
                set: ResultSet::default(),
            });
        }
        let keep = self.rows();
        let (max_rows, max_bytes) = (self.cfg.max_rows, self.cfg.max_bytes);
        let Some(open) = c.open.as_mut() else { return };
        open.set.count += 1;
        if !keep {
            open.set.truncated = true;
            return;
        }
        let row = match data_row(body, &open.formats, &open.columns.types) {
            Some(row) => row,
            None => {
                open.set.truncated = true;
                return;
            }
        };
        let bytes: usize = row.iter().flatten().map(String::len).sum();
        if c.kept_rows >= max_rows || c.kept_bytes + bytes > max_bytes {
            open.set.truncated = true;
            return;
        }
        if open.columns.names.is_empty() {
            open.columns.names = (1..=row.len()).map(|i| format!("column{i}")).collect();
        }
        c.kept_rows += 1;
        c.kept_bytes += bytes;
        open.set.rows.push(row);
    }
}

impl Collecting {
    /// The open result set ends (a command tag, a suspended portal, an error).
    pub fn close(&mut self) {
        if let Some(mut open) = self.open.take() {
            open.set.columns = open.columns.names;
            self.done.push(open.set);
        }
    }

    /// The finished result sets.
    pub fn finish(mut self) -> Vec<ResultSet> {
        self.close();
        self.done
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Names and format codes of a `RowDescription` body.
fn row_description(body: &[u8]) -> Option<(Columns, Vec<i16>)> {
    let cols = messages::row_description(body)?;
    let formats = cols.iter().map(|c| c.format).collect();
    let (names, types) = cols.into_iter().map(|c| (c.name, c.type_oid)).unzip();
    Some((Columns { names, types }, formats))
}

/// The values of a `DataRow` body: text as sent; binary ones (by `formats`, as
/// a `Bind` or `RowDescription` gives them) decoded by type where the type is
/// text, integer or boolean, else `\x` hex.
fn data_row(body: &[u8], formats: &[i16], types: &[u32]) -> Option<Vec<Option<String>>> {
    let values = messages::data_row(body)?;
    Some(
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let value = value?;
                let binary = match formats.len() {
                    0 => false,
                    1 => formats[0] == 1,
                    _ => formats.get(i).is_some_and(|&f| f == 1),
                };
                Some(if binary {
                    binary_text(value, types.get(i).copied().unwrap_or(0))
                } else {
                    String::from_utf8_lossy(value).into_owned()
                })
            })
            .collect(),
    )
}

/// A binary-format value as text: by its type OID (`pg_type.dat`) where the
/// binary form is simple, else `\x` hex.
fn binary_text(value: &[u8], type_oid: u32) -> String {
    const TEXT_TYPES: [u32; 5] = [25, 1043, 1042, 19, 705];
    match (type_oid, value.len()) {
        (t, _) if TEXT_TYPES.contains(&t) => return String::from_utf8_lossy(value).into_owned(),
        (16, 1) => return if value[0] == 0 { "f" } else { "t" }.to_owned(),
        (21, 2) => return i16::from_be_bytes([value[0], value[1]]).to_string(),
        (23, 4) => {
            return i32::from_be_bytes([value[0], value[1], value[2], value[3]]).to_string();
        }
        (20, 8) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(value);
            return i64::from_be_bytes(b).to_string();
        }
        _ => {}
    }
    format!("\\x{}", gatehouse_schemas::hex(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    /// Columns of type text, but those named `n` (int4) and `b` (bytea).
    fn row_desc(cols: &[(&str, i16)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(cols.len() as i16);
        for (name, format) in cols {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(match *name {
                "n" => 23,
                "b" => 17,
                _ => 25,
            });
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(*format);
        }
        b.to_vec()
    }

    fn data(values: &[Option<&[u8]>]) -> Vec<u8> {
        crate::protocol::messages::values_body(values)
    }

    fn names_with(statement: &str, portal: &str, formats: &[i16]) -> Names {
        use crate::protocol::names::{Mask, Portal, Prepared, Statement};
        let prepared = Arc::new(Prepared {
            sql: "select".into(),
            decision: None,
            approval: None,
        });
        let mut names = Names::default();
        names.name_statement(
            statement,
            Statement {
                prepared: prepared.clone(),
                sql_prepare: false,
                mask: Mask::Clear,
                ddl: false,
                columns: None,
            },
        );
        names.bind(
            portal,
            Portal {
                prepared: Some(prepared),
                statement: statement.into(),
                params: Vec::new(),
                digest: None,
                formats: formats.into(),
                mask: Mask::Clear,
                ddl: false,
                columns: None,
            },
        );
        names
    }

    fn capture(record: ResultRecord, max_rows: usize, max_bytes: usize) -> Box<Capture> {
        Capture::new(ResultsConfig {
            record,
            max_rows,
            max_bytes,
        })
        .unwrap()
    }

    fn collecting(note: Note) -> Box<Collecting> {
        match note {
            Note::Collect(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn none_captures_nothing() {
        assert!(Capture::new(ResultsConfig::default()).is_none());
    }

    #[test]
    fn query_result_sets_are_kept_within_bounds() {
        let names = Names::default();
        let cap = capture(ResultRecord::Rows, 2, 1024);
        let mut c = collecting(Note::Collect(Box::default()));
        cap.description(&mut c, &row_desc(&[("id", 0), ("ssn", 0)]));
        for (id, ssn) in [(&b"1"[..], &b"***-**-6789"[..]), (b"2", b"x"), (b"3", b"y")] {
            cap.row(&names, &mut c, &data(&[Some(id), Some(ssn)]));
        }
        c.close();
        cap.description(&mut c, &row_desc(&[("n", 0)]));
        cap.row(&names, &mut c, &data(&[None]));
        let sets = c.finish();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].columns, ["id", "ssn"]);
        assert_eq!(
            sets[0].rows,
            [
                vec![Some("1".into()), Some("***-**-6789".into())],
                vec![Some("2".into()), Some("x".into())]
            ]
        );
        assert_eq!((sets[0].count, sets[0].truncated), (3, true));
        // The bound is per statement: the second set keeps nothing more.
        assert_eq!(
            (sets[1].count, sets[1].truncated, sets[1].rows.len()),
            (1, true, 0)
        );
    }

    #[test]
    fn byte_bound_and_counts_only() {
        let names = Names::default();
        let cap = capture(ResultRecord::Rows, 100, 4);
        let mut c = collecting(Note::Collect(Box::default()));
        cap.description(&mut c, &row_desc(&[("v", 0)]));
        cap.row(&names, &mut c, &data(&[Some(b"abc")]));
        cap.row(&names, &mut c, &data(&[Some(b"de")]));
        let sets = c.finish();
        assert_eq!(sets[0].rows, [vec![Some("abc".to_owned())]]);
        assert!(sets[0].truncated);

        let cap = capture(ResultRecord::Counts, 100, 1024);
        assert!(!cap.rows());
        let mut c = collecting(Note::Collect(Box::default()));
        cap.description(&mut c, &row_desc(&[("v", 0)]));
        cap.row(&names, &mut c, b"");
        cap.row(&names, &mut c, b"");
        let sets = c.finish();
        assert_eq!(sets[0].columns, ["v"]);
        assert_eq!((sets[0].count, sets[0].rows.len()), (2, 0));
    }

    #[test]
    fn execute_rows_are_named_by_describe_and_decoded_by_bind_formats() {
        let cap = capture(ResultRecord::Rows, 100, 1024);
        let mut names = names_with("s1", "", &[0, 1, 1, 1]);
        let Note::Describe(d) = cap.note(&names, codec::DESCRIBE, b"Ss1\0") else {
            panic!()
        };
        cap.described(
            &mut names,
            &d,
            &row_desc(&[("id", 0), ("n", 0), ("s", 0), ("b", 0)]),
        );
        let mut c = collecting(cap.note(&names, codec::EXECUTE, b"\0\0\0\0\0"));
        cap.row(
            &names,
            &mut c,
            &data(&[
                Some(b"7"),
                Some(&[0xff, 0xff, 0xff, 0xf7]),
                Some(b"abc"),
                Some(&[1, 0xab]),
            ]),
        );
        let sets = c.finish();
        assert_eq!(sets[0].columns, ["id", "n", "s", "b"]);
        assert_eq!(
            sets[0].rows,
            [vec![
                Some("7".to_owned()),
                Some("-9".to_owned()),
                Some("abc".to_owned()),
                Some("\\x01ab".to_owned())
            ]]
        );
        // Never described: columns are numbered.
        let names = names_with("s2", "p", &[]);
        let mut c = collecting(cap.note(&names, codec::EXECUTE, b"p\0\0\0\0\0"));
        cap.row(&names, &mut c, &data(&[Some(b"a")]));
        assert_eq!(c.finish()[0].columns, ["column1"]);
    }
}
