//! `DataRow` and `COPY ... TO STDOUT` rows written the way PostgreSQL 15
//! writes them (`printtup.c`, `copyto.c`), and read back strictly the way a
//! client reads them (`copyfromparse.c`): the reference a rewrite is judged by.

use arbitrary::Arbitrary;
use gatehouse_decider::results::CopyFormat;

/// A row: each column's value, `None` for NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// A `DataRow` message.
pub fn data_row(cols: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = vec![b'D', 0, 0, 0, 0];
    out.extend((cols.len() as i16).to_be_bytes());
    for c in cols {
        match c {
            None => out.extend((-1i32).to_be_bytes()),
            Some(v) => {
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
        }
    }
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a whole `DataRow` message: its length prefix must cover exactly its
/// bytes, and its columns exactly its body.
pub fn read_data_row(msg: &[u8]) -> Result<Row, String> {
    if msg.first() != Some(&b'D') || msg.len() < 7 {
        return Err(format!("not a DataRow: {msg:?}"));
    }
    let len = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
    if len + 1 != msg.len() {
        return Err(format!(
            "length prefix {len}, message of {} bytes",
            msg.len()
        ));
    }
    let n = i16::from_be_bytes([msg[5], msg[6]]);
    let n = usize::try_from(n).map_err(|_| format!("column count {n}"))?;
    let (row, at) = binary_fields(&msg[7..], n).ok_or("columns overrun the message")?;
    if at != msg.len() - 7 {
        return Err(format!("{} bytes after the columns", msg.len() - 7 - at));
    }
    Ok(row)
}

/// `n` length-prefixed fields at the start of `b`, and where they end.
fn binary_fields(b: &[u8], n: usize) -> Option<(Row, usize)> {
    let mut at = 0;
    let mut row = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len == -1 {
            row.push(None);
        } else {
            let len = usize::try_from(len).ok()?;
            row.push(Some(b.get(at..at + len)?.to_vec()));
            at += len;
        }
    }
    Some((row, at))
}

/// A COPY format as the fuzzer picks it; only options PostgreSQL accepts.
#[derive(Debug, Clone, Arbitrary)]
pub enum FormatSpec {
    Text {
        delimiter: u8,
        null: Vec<u8>,
        header: bool,
    },
    Csv {
        delimiter: u8,
        null: Vec<u8>,
        header: bool,
        quote: u8,
        escape: u8,
    },
    Binary,
}

impl FormatSpec {
    /// The format, or `None` for options PostgreSQL refuses (`copy.c`,
    /// `ProcessCopyOptions`).
    pub fn format(&self) -> Option<CopyFormat> {
        let one_byte = |c: u8| c.is_ascii() && c != b'\n' && c != b'\r' && c != 0;
        match self {
            Self::Binary => Some(CopyFormat::Binary),
            Self::Text {
                delimiter,
                null,
                header,
            } => {
                let d = *delimiter;
                let ok = one_byte(d)
                    && !b"\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(&d)
                    && null_ok(null, &[d])
                    // A backslash in the NULL string other than `\N`'s can
                    // escape the delimiter after it: PostgreSQL writes
                    // streams it cannot read back. Not judged here.
                    && (!null.contains(&b'\\') || null == b"\\N");
                ok.then(|| CopyFormat::Text {
                    delimiter: d,
                    null: null.clone(),
                    header: *header,
                })
            }
            Self::Csv {
                delimiter,
                null,
                header,
                quote,
                escape,
            } => {
                let (d, q, e) = (*delimiter, *quote, *escape);
                let ok =
                    one_byte(d) && one_byte(q) && one_byte(e) && d != q && null_ok(null, &[d, q]);
                ok.then(|| CopyFormat::Csv {
                    delimiter: d,
                    null: null.clone(),
                    header: *header,
                    quote: q,
                    escape: e,
                })
            }
        }
    }
}

fn null_ok(null: &[u8], not_in: &[u8]) -> bool {
    null.len() <= 8
        && null
            .iter()
            .all(|&c| c.is_ascii() && c != b'\n' && c != b'\r' && c != 0)
        && !null.iter().any(|c| not_in.contains(c))
}

/// The whole `COPY ... TO STDOUT` stream of `rows`, headed by `names` when the
/// format has a header. Values hold no NUL byte (no PostgreSQL text does).
pub fn copy_stream(format: &CopyFormat, names: &[Vec<u8>], rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        CopyFormat::Binary => {
            out.extend(b"PGCOPY\n\xff\r\n\0");
            out.extend(0u32.to_be_bytes());
            out.extend(0u32.to_be_bytes());
            for row in rows {
                out.extend((row.len() as i16).to_be_bytes());
                for c in row {
                    match c {
                        None => out.extend((-1i32).to_be_bytes()),
                        Some(v) => {
                            out.extend((v.len() as i32).to_be_bytes());
                            out.extend(v);
                        }
                    }
                }
            }
            out.extend((-1i16).to_be_bytes());
        }
        CopyFormat::Text {
            delimiter,
            null,
            header,
        } => {
            let named: Vec<Option<Vec<u8>>> = names.iter().cloned().map(Some).collect();
            for row in header.then_some(&named).into_iter().chain(rows) {
                for (i, c) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(*delimiter);
                    }
                    match c {
                        None => out.extend(null),
                        Some(v) => text_attribute(v, *delimiter, &mut out),
                    }
                }
                out.push(b'\n');
            }
        }
        CopyFormat::Csv {
            delimiter,
            null,
            header,
            quote,
            escape,
        } => {
            let named: Vec<Option<Vec<u8>>> = names.iter().cloned().map(Some).collect();
            let single = names.len() == 1;
            for row in header.then_some(&named).into_iter().chain(rows) {
                for (i, c) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(*delimiter);
                    }
                    match c {
                        None => out.extend(null),
                        Some(v) => {
                            csv_attribute(v, *delimiter, null, *quote, *escape, single, &mut out)
                        }
                    }
                }
                out.push(b'\n');
            }
        }
    }
    out
}

/// `CopyAttributeOutText`.
fn text_attribute(v: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &c in v {
        let escaped = match c {
            8 => Some(b'b'),
            12 => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            11 => Some(b'v'),
            c if c == b'\\' || c == delimiter => Some(c),
            _ => None,
        };
        match escaped {
            Some(e) => out.extend([b'\\', e]),
            None => out.push(c),
        }
    }
}

/// `CopyAttributeOutCSV` (quoting forced only where PostgreSQL forces it).
fn csv_attribute(
    v: &[u8],
    delimiter: u8,
    null: &[u8],
    quote: u8,
    escape: u8,
    single: bool,
    out: &mut Vec<u8>,
) {
    let needs = v == null
        || (single && v == b"\\.")
        || v.iter()
            .any(|&c| c == delimiter || c == quote || c == b'\n' || c == b'\r');
    if !needs {
        out.extend(v);
        return;
    }
    out.push(quote);
    for &c in v {
        if c == quote || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out.push(quote);
}

/// Reads a whole COPY stream: its header (names) and rows; `Err` when any byte
/// of it is not where the format puts it.
pub fn read_copy_stream(
    format: &CopyFormat,
    ncols: usize,
    data: &[u8],
) -> Result<(Option<Row>, Vec<Row>), String> {
    match format {
        CopyFormat::Binary => {
            let head = data.get(..19).ok_or("no binary header")?;
            if &head[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err("bad signature".into());
            }
            let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]) as usize;
            let mut at = 19 + ext;
            let mut rows = Vec::new();
            loop {
                let n = i16::from_be_bytes(
                    data.get(at..at + 2)
                        .ok_or("no trailer")?
                        .try_into()
                        .unwrap(),
                );
                at += 2;
                if n == -1 {
                    break;
                }
                let n = usize::try_from(n).map_err(|_| format!("tuple of {n} fields"))?;
                let (row, len) =
                    binary_fields(&data[at..], n).ok_or("tuple overruns the stream")?;
                at += len;
                rows.push(row);
            }
            if at != data.len() {
                return Err(format!("{} bytes after the trailer", data.len() - at));
            }
            Ok((None, rows))
        }
        CopyFormat::Text {
            delimiter,
            null,
            header,
        } => {
            let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            if lines.pop() != Some(&b""[..]) {
                return Err("the last row does not end with a newline".into());
            }
            let mut rows = lines
                .iter()
                .map(|l| read_text_row(l, *delimiter, null, ncols));
            let head = if *header {
                Some(rows.next().ok_or("no header")??)
            } else {
                None
            };
            Ok((head, rows.collect::<Result<_, _>>()?))
        }
        CopyFormat::Csv {
            delimiter,
            null,
            header,
            quote,
            escape,
        } => {
            let mut rows = Vec::new();
            let mut at = 0;
            while at < data.len() {
                if ncols == 0 {
                    // A row of no columns is an empty line.
                    if data[at] != b'\n' {
                        return Err("a row of no columns is not empty".into());
                    }
                    rows.push(Vec::new());
                    at += 1;
                    continue;
                }
                let (row, len) = read_csv_row(&data[at..], *delimiter, null, *quote, *escape)?;
                if row.len() != ncols {
                    return Err(format!("row of {} fields, {ncols} columns", row.len()));
                }
                rows.push(row);
                at += len;
            }
            let head = if *header {
                if rows.is_empty() {
                    return Err("no header".into());
                }
                Some(rows.remove(0))
            } else {
                None
            };
            Ok((head, rows))
        }
    }
}

/// `CopyReadAttributesText`: split at unescaped delimiters, the raw field
/// compared with the NULL string, then backslash escapes decoded.
fn read_text_row(line: &[u8], delimiter: u8, null: &[u8], ncols: usize) -> Result<Row, String> {
    if ncols == 0 {
        // A row of no columns is an empty line.
        return if line.is_empty() {
            Ok(Vec::new())
        } else {
            Err(format!("{line:?} for no columns"))
        };
    }
    let mut fields = Vec::new();
    let mut raw = Vec::new();
    let mut value = Vec::new();
    let mut i = 0;
    loop {
        let end = i >= line.len();
        if end || line[i] == delimiter {
            fields.push(if raw == null {
                None
            } else {
                Some(std::mem::take(&mut value))
            });
            raw.clear();
            value.clear();
            if end {
                break;
            }
            i += 1;
            continue;
        }
        let c = line[i];
        raw.push(c);
        i += 1;
        if c != b'\\' {
            value.push(c);
            continue;
        }
        let Some(&e) = line.get(i) else {
            return Err("a backslash ends the row".into());
        };
        raw.push(e);
        i += 1;
        value.push(match e {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' | b'x' => {
                return Err("the reference writer never writes octal or hex escapes".into());
            }
            other => other,
        });
    }
    if fields.len() != ncols {
        return Err(format!("row of {} fields, {ncols} columns", fields.len()));
    }
    Ok(fields)
}

/// `CopyReadAttributesCSV` over one row; its length with the newline.
fn read_csv_row(
    data: &[u8],
    delimiter: u8,
    null: &[u8],
    quote: u8,
    escape: u8,
) -> Result<(Row, usize), String> {
    let mut row = Vec::new();
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut quoted_any = false;
        let mut in_quote = false;
        loop {
            let Some(&c) = data.get(i) else {
                return Err("the last row does not end with a newline".into());
            };
            i += 1;
            if in_quote {
                if c == escape && data.get(i).is_some_and(|&n| n == quote || n == escape) {
                    value.push(data[i]);
                    i += 1;
                } else if c == quote {
                    in_quote = false;
                } else {
                    value.push(c);
                }
            } else if c == quote {
                in_quote = true;
                quoted_any = true;
            } else if c == delimiter || c == b'\n' {
                let is_null = !quoted_any && value == null;
                row.push(if is_null { None } else { Some(value) });
                if c == b'\n' {
                    return Ok((row, i));
                }
                break;
            } else {
                value.push(c);
            }
        }
    }
}
