//! `COPY ... TO STDOUT` rows under a mask: the `CopyData` stream re-cut into
//! whole rows (PostgreSQL sends one row per message in text and CSV, but the
//! binary header rides with the first row, and nothing in the protocol
//! promises either), each masked column rewritten, lengths recomputed.
//! <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9>

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use gatehouse_decider::results::CopyFormat;
use gatehouse_schemas::decision::MaskMethod;

use super::wire::{Kind, Replacement, replacement};

/// One column's mask, as it travels (`None`: shown as it is).
pub type ColMask = Option<(MaskMethod, Kind)>;

/// Bytes of the binary signature, flags and header-extension length.
const BINARY_HEADER: usize = 11 + 4 + 4;
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The rows of one `COPY ... TO STDOUT` in flight.
#[derive(Debug)]
pub struct CopyOut {
    format: CopyFormat,
    masks: Vec<ColMask>,
    /// Bytes of a row not complete yet.
    pending: Vec<u8>,
    /// The header (column names, or the binary signature) is still to come.
    header: bool,
    /// The binary trailer passed: anything after it is not a row.
    ended: bool,
}

impl CopyOut {
    /// A COPY of `columns` columns (from `CopyOutResponse`) with each column's
    /// mask; `masks` of another width (or none: the columns could not be
    /// described) make every column NULL.
    pub fn new(format: CopyFormat, columns: usize, masks: Option<&[ColMask]>) -> Self {
        let masks = match masks {
            Some(m) if m.len() == columns => m.to_vec(),
            _ => vec![Some((MaskMethod::Null, Kind::Other)); columns],
        };
        let header = match &format {
            CopyFormat::Text { header, .. } | CopyFormat::Csv { header, .. } => *header,
            CopyFormat::Binary => true,
        };
        Self {
            format,
            masks,
            pending: Vec::new(),
            header,
            ended: false,
        }
    }

    /// The payload of one `CopyData`. `None`: forward the message as it came
    /// (it holds whole rows that need no change); `Some`: the payload to send
    /// instead (empty: send nothing yet, the row continues in the next message).
    pub fn data(&mut self, payload: &[u8], key: &[u8]) -> Option<Vec<u8>> {
        let joined: Cow<'_, [u8]> = if self.pending.is_empty() {
            Cow::Borrowed(payload)
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(payload);
            Cow::Owned(v)
        };
        let data = &joined[..];
        let mut at = 0;
        let mut out: Option<Vec<u8>> = None;
        while at < data.len() {
            if self.ended {
                // Nothing follows the trailer in a valid stream: not shown.
                out.get_or_insert_with(|| data[..at].to_vec());
                at = data.len();
                break;
            }
            let Some((end, row)) = self.row(&data[at..], key) else {
                break;
            };
            match row {
                None => {
                    if let Some(o) = &mut out {
                        o.extend_from_slice(&data[at..at + end]);
                    }
                }
                Some(new) => {
                    out.get_or_insert_with(|| data[..at].to_vec())
                        .extend_from_slice(&new);
                }
            }
            at += end;
        }
        if at < data.len() {
            self.pending = data[at..].to_vec();
            out.get_or_insert_with(|| data[..at].to_vec());
        }
        match (out, joined) {
            (Some(o), _) => Some(o),
            // Whole rows, all unchanged, but part of them was held back.
            (None, Cow::Owned(v)) => Some(v),
            (None, Cow::Borrowed(_)) => None,
        }
    }

    /// Bytes of an unfinished row at `CopyDone`: never shown (a valid stream
    /// has none).
    pub fn leftover(&self) -> usize {
        self.pending.len()
    }

    /// The first row of `data`: its length and its rewritten bytes (`None`:
    /// unchanged); `None` when `data` holds no whole row.
    fn row(&mut self, data: &[u8], key: &[u8]) -> Option<(usize, Option<Vec<u8>>)> {
        match self.format.clone() {
            CopyFormat::Binary => self.binary_row(data, key),
            CopyFormat::Text {
                delimiter, null, ..
            } => {
                let end = data.iter().position(|&b| b == b'\n')? + 1;
                if std::mem::take(&mut self.header) {
                    return Some((end, None));
                }
                let fields = split_text(&data[..end - 1], delimiter);
                Some((
                    end,
                    self.rewrite_delimited(&fields, delimiter, &null, None, key),
                ))
            }
            CopyFormat::Csv {
                delimiter,
                null,
                quote,
                escape,
                ..
            } => {
                let (end, fields) = split_csv(data, delimiter, quote, escape)?;
                if std::mem::take(&mut self.header) {
                    return Some((end, None));
                }
                let newline = &data[end - 1..end];
                let mut row =
                    self.rewrite_delimited(&fields, delimiter, &null, Some((quote, escape)), key);
                if let Some(r) = &mut row {
                    r.pop();
                    r.extend_from_slice(newline);
                }
                Some((end, row))
            }
        }
    }

    /// A text or CSV row from its raw fields (`csv`: quote and escape).
    fn rewrite_delimited(
        &self,
        fields: &[&[u8]],
        delimiter: u8,
        null: &[u8],
        csv: Option<(u8, u8)>,
        key: &[u8],
    ) -> Option<Vec<u8>> {
        // What is surely NULL. CSV quotes a value spelled like the NULL string.
        // Text format writes a value spelled like it as it is (`NULL 'x'`
        // and the value `x` are one field), unless the NULL string holds a
        // backslash (a value's backslashes are doubled): a masked column then
        // masks the field as a value, or a chosen NULL string would tell
        // which rows hold exactly that value.
        let is_null = |f: &[u8]| {
            f == null
                && match csv {
                    Some((q, _)) => f.first() != Some(&q),
                    None => null.contains(&b'\\'),
                }
        };
        if fields.len() != self.masks.len() {
            // Not the row shape announced: every column NULL.
            let mut out = Vec::new();
            for i in 0..self.masks.len() {
                if i > 0 {
                    out.push(delimiter);
                }
                out.extend_from_slice(null);
            }
            out.push(b'\n');
            return Some(out);
        }
        let reps: Vec<Replacement> = fields
            .iter()
            .zip(&self.masks)
            .map(|(f, m)| match m {
                Some((method, kind)) if !is_null(f) => {
                    let value = match csv {
                        None => unescape_text(f),
                        Some((q, e)) => unquote_csv(f, q, e),
                    };
                    replacement(&value, method, *kind, key)
                }
                _ => None,
            })
            .collect();
        if reps.iter().all(Option::is_none) {
            return None;
        }
        let mut out = Vec::new();
        for (i, (f, r)) in fields.iter().zip(&reps).enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            match r {
                None => out.extend_from_slice(f),
                Some(None) => out.extend_from_slice(null),
                Some(Some(v)) => match csv {
                    None => escape_text(v, delimiter, &mut out),
                    Some((q, e)) => quote_csv(v, q, e, &mut out),
                },
            }
        }
        out.push(b'\n');
        Some(out)
    }

    fn binary_row(&mut self, data: &[u8], key: &[u8]) -> Option<(usize, Option<Vec<u8>>)> {
        if self.header {
            let fixed = data.get(..BINARY_HEADER)?;
            if &fixed[..11] != SIGNATURE {
                // Not a COPY BINARY stream: nothing of it is shown.
                self.header = false;
                self.ended = true;
                return Some((data.len(), Some(Vec::new())));
            }
            let ext = u32::from_be_bytes([fixed[15], fixed[16], fixed[17], fixed[18]]) as usize;
            let end = BINARY_HEADER.checked_add(ext)?;
            data.get(..end)?;
            self.header = false;
            return Some((end, None));
        }
        let n = i16::from_be_bytes([*data.first()?, *data.get(1)?]);
        if n == -1 {
            self.ended = true;
            return Some((2, None));
        }
        let mut at = 2;
        let mut cols: Vec<Option<&[u8]>> = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for _ in 0..n {
            let len = data.get(at..at + 4)?;
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len < 0 {
                cols.push(None);
            } else {
                let len = usize::try_from(len).ok()?;
                cols.push(Some(data.get(at..at + len)?));
                at += len;
            }
        }
        let shape_ok = cols.len() == self.masks.len();
        let reps: Vec<Replacement> = if shape_ok {
            cols.iter()
                .zip(&self.masks)
                .map(|(c, m)| match (c, m) {
                    (Some(v), Some((method, kind))) => replacement(v, method, *kind, key),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        if shape_ok && reps.iter().all(Option::is_none) {
            return Some((at, None));
        }
        let mut out = BytesMut::new();
        out.put_i16(i16::try_from(self.masks.len()).unwrap_or(i16::MAX));
        for i in 0..self.masks.len() {
            // Not the row shape announced: every column NULL.
            let col = if shape_ok {
                cols.get(i).copied().flatten()
            } else {
                None
            };
            let value: Option<&[u8]> = match (col, reps.get(i)) {
                (None, _) | (Some(_), Some(Some(None))) => None,
                (Some(v), None | Some(None)) => Some(v),
                (Some(_), Some(Some(Some(new)))) => Some(new.as_slice()),
            };
            match value {
                None => out.put_i32(-1),
                Some(v) => {
                    out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    out.put_slice(v);
                }
            }
        }
        Some((at, Some(out.to_vec())))
    }
}

/// A `CopyData` message carrying `payload`.
pub fn copy_data(payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(payload.len() + 5);
    out.put_u8(b'd');
    out.put_u32(u32::try_from(payload.len() + 4).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out
}

/// Text-format fields: split at delimiters not escaped by a backslash.
fn split_text(row: &[u8], delimiter: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < row.len() {
        if row[i] == b'\\' {
            i += 2;
            continue;
        }
        if row[i] == delimiter {
            out.push(&row[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&row[start.min(row.len())..]);
    out
}

/// The value of a text-format field (its backslash escapes decoded).
fn unescape_text(f: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'\\' || i + 1 == f.len() {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < f.len() && f[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(f[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// A value written as a text-format field.
fn escape_text(v: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &c in v {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter != b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            11 => out.extend_from_slice(b"\\v"),
            c if c == delimiter => {
                out.push(b'\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// The first CSV row of `data`: its length (newline included) and raw fields
/// (quotes kept); `None` when no whole row is there.
fn split_csv(data: &[u8], delimiter: u8, quote: u8, escape: u8) -> Option<(usize, Vec<&[u8]>)> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        if quoted {
            if c == escape && escape != quote && data.get(i + 1).is_some() {
                i += 2;
                continue;
            }
            if c == quote {
                quoted = false;
            }
        } else if c == quote {
            quoted = true;
        } else if c == delimiter {
            fields.push(&data[start..i]);
            start = i + 1;
        } else if c == b'\n' {
            let mut field_end = i;
            if field_end > start && data[field_end - 1] == b'\r' {
                field_end -= 1;
            }
            fields.push(&data[start..field_end]);
            return Some((i + 1, fields));
        }
        i += 1;
    }
    None
}

/// The value of a CSV field (quotes removed, escapes decoded).
fn unquote_csv(f: &[u8], quote: u8, escape: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.len());
    let mut quoted = false;
    let mut i = 0;
    while i < f.len() {
        let c = f[i];
        if quoted {
            if c == escape && f.get(i + 1).is_some_and(|n| *n == quote || *n == escape) {
                out.push(f[i + 1]);
                i += 2;
                continue;
            }
            if c == quote {
                quoted = false;
            } else {
                out.push(c);
            }
        } else if c == quote {
            quoted = true;
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// A value written as a quoted CSV field (never mistaken for NULL).
fn quote_csv(v: &[u8], quote: u8, escape: u8, out: &mut Vec<u8>) {
    out.push(quote);
    for &c in v {
        if c == quote || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"k";

    fn partial() -> ColMask {
        Some((
            MaskMethod::Partial {
                keep_first: 0,
                keep_last: 4,
            },
            Kind::Text,
        ))
    }

    fn text() -> CopyFormat {
        CopyFormat::Text {
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            header: false,
        }
    }

    #[test]
    fn text_rows_are_masked_across_and_within_messages() {
        let masks = [None, partial(), Some((MaskMethod::Redact, Kind::Other))];
        let mut c = CopyOut::new(text(), 3, Some(&masks));
        // One row per message, as PostgreSQL sends it.
        assert_eq!(
            c.data(b"1\t123-45-6789\t1970\n", KEY).unwrap(),
            b"1\t***-**-6789\t\\N\n"
        );
        // A row that needs nothing: forwarded as it came.
        assert_eq!(c.data(b"3\t\\N\t\\N\n", KEY), None);
        // Split across messages, then two rows in one.
        assert_eq!(c.data(b"2\t987-6", KEY).unwrap(), b"");
        assert_eq!(
            c.data(b"5-4321\t1980\n4\t111-22-3333\t\\N\n", KEY).unwrap(),
            b"2\t***-**-4321\t\\N\n4\t***-**-3333\t\\N\n"
        );
        assert_eq!(c.leftover(), 0);
        // Escapes: a tab and a backslash in the value are decoded, then the
        // masked value is written escaped.
        let mut c = CopyOut::new(text(), 1, Some(&[Some((MaskMethod::Hash, Kind::Text))]));
        let a = c.data(b"12\\t3\n", KEY).unwrap();
        let b = method_hash("12\t3");
        assert_eq!(a, format!("{b}\n").into_bytes());
    }

    #[test]
    fn a_value_spelled_like_the_null_string_is_masked() {
        // Found by the `masking` fuzz target: under `NULL 'x'` (or `NULL ''`)
        // the value `x` is written `x`, so passing what looks like NULL would
        // show which rows hold exactly the NULL string chosen.
        let format = |null: &[u8]| CopyFormat::Text {
            delimiter: b',',
            null: null.to_vec(),
            header: false,
        };
        let masks = [None, partial()];
        let mut c = CopyOut::new(format(b"123-45-6789"), 2, Some(&masks));
        assert_eq!(c.data(b"1,123-45-6789\n", KEY).unwrap(), b"1,***-**-6789\n");
        let mut c = CopyOut::new(
            format(b""),
            2,
            Some(&[None, Some((MaskMethod::Redact, Kind::Text))]),
        );
        assert_eq!(c.data(b"1,\n", KEY).unwrap(), b"1,****\n");
        // A NULL string with a backslash is never a value's spelling.
        let mut c = CopyOut::new(text(), 2, Some(&masks));
        assert_eq!(c.data(b"1\t\\N\n", KEY), None);
    }

    #[test]
    fn detectors_rewrite_only_copy_rows_with_a_match() {
        use gatehouse_schemas::decision::Detector;
        let detect = MaskMethod::Detect {
            detectors: vec![Detector::Ssn, Detector::Pan],
        };
        let masks = [None, Some((detect.clone(), Kind::Text))];
        let mut c = CopyOut::new(text(), 2, Some(&masks));
        // Nothing found: the message passes as it came.
        assert_eq!(c.data(b"1\troom 12\\tfloor 3\n", KEY), None);
        // Only the matches are starred; escapes are kept intact.
        assert_eq!(
            c.data(b"2\tssn 123-45-6789\\tcard 4111-1111-1111-1111\n", KEY)
                .unwrap(),
            // (a tab in a value is written as backslash-tab, which COPY
            // reads back as the same tab)
            b"2\tssn ***-**-****\\\tcard ****-****-****-****\n"
        );
        let csv = CopyFormat::Csv {
            delimiter: b',',
            null: Vec::new(),
            quote: b'"',
            escape: b'"',
            header: false,
        };
        let mut c = CopyOut::new(csv, 2, Some(&masks));
        assert_eq!(c.data(b"1,\"a, b\"\n", KEY), None);
        assert_eq!(
            c.data(b"2,\"x 123-45-6789, \"\"y\"\"\"\n", KEY).unwrap(),
            b"2,\"x ***-**-****, \"\"y\"\"\"\n"
        );
    }

    fn method_hash(v: &str) -> String {
        super::super::method::apply(&MaskMethod::Hash, v, KEY).unwrap()
    }

    #[test]
    fn csv_quotes_newlines_and_header() {
        let format = CopyFormat::Csv {
            delimiter: b',',
            null: Vec::new(),
            header: true,
            quote: b'"',
            escape: b'"',
        };
        let mut c = CopyOut::new(format, 2, Some(&[None, partial()]));
        assert_eq!(c.data(b"id,ssn\n", KEY), None, "header passes");
        // A quoted value with a delimiter, a quote and a newline, split mid-quote.
        assert_eq!(c.data(b"\"a,\"\"b\n", KEY).unwrap(), b"");
        assert_eq!(
            c.data(b"c\",\"123-45-6789\"\n", KEY).unwrap(),
            b"\"a,\"\"b\nc\",\"***-**-6789\"\n"
        );
        // NULL (unquoted empty) stays NULL; empty string (quoted) is masked.
        assert_eq!(c.data(b"x,\n", KEY), None);
        assert_eq!(c.data(b"x,\"\"\n", KEY).unwrap(), b"x,\"\"\n");
        // A masked non-text column becomes NULL.
        let mut c = CopyOut::new(
            CopyFormat::Csv {
                delimiter: b',',
                null: Vec::new(),
                header: false,
                quote: b'"',
                escape: b'"',
            },
            2,
            Some(&[
                None,
                Some((
                    MaskMethod::Partial {
                        keep_first: 0,
                        keep_last: 4,
                    },
                    Kind::Other,
                )),
            ]),
        );
        assert_eq!(c.data(b"1,1970\n", KEY).unwrap(), b"1,\n");
    }

    fn binary_tuple(cols: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (cols.len() as i16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                None => out.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend((v.len() as i32).to_be_bytes());
                    out.extend(*v);
                }
            }
        }
        out
    }

    #[test]
    fn binary_header_rides_with_the_first_row() {
        let mut header = SIGNATURE.to_vec();
        header.extend(0u32.to_be_bytes());
        header.extend(0u32.to_be_bytes());
        let mut first = header.clone();
        first.extend(binary_tuple(&[
            Some(&7i32.to_be_bytes()),
            Some(b"123-45-6789"),
        ]));
        let mut c = CopyOut::new(CopyFormat::Binary, 2, Some(&[None, partial()]));
        let mut want = header.clone();
        want.extend(binary_tuple(&[
            Some(&7i32.to_be_bytes()),
            Some(b"***-**-6789"),
        ]));
        assert_eq!(c.data(&first, KEY).unwrap(), want);
        // A row split in two, then the trailer.
        let row = binary_tuple(&[Some(&8i32.to_be_bytes()), Some(b"987-65-4321")]);
        assert_eq!(c.data(&row[..9], KEY).unwrap(), b"");
        let mut rest = row[9..].to_vec();
        rest.extend((-1i16).to_be_bytes());
        let mut want = binary_tuple(&[Some(&8i32.to_be_bytes()), Some(b"***-**-4321")]);
        want.extend((-1i16).to_be_bytes());
        assert_eq!(c.data(&rest, KEY).unwrap(), want);
        // Unknown columns: all NULL.
        let mut c = CopyOut::new(CopyFormat::Binary, 2, None);
        let mut want = header;
        want.extend(binary_tuple(&[None, None]));
        assert_eq!(c.data(&first, KEY).unwrap(), want);
    }
}
