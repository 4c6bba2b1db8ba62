//! Decoders of the backend message bodies Gatehouse reads (after type and
//! length): `RowDescription`, `DataRow`, `ErrorResponse`/`NoticeResponse`
//! fields and `CommandComplete` tags. One decoder each, shared by masking and
//! evidence; they borrow from the body and never panic on malformed input.
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>

/// A NUL-terminated string at the start of `b`, and the bytes after it.
pub fn take_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

/// A NUL-terminated string at the start of `b` (all of `b` without one), lossy.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `N` big-endian bytes at the start of `b`, and the rest.
pub fn take<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
    Some((b.get(..N)?.try_into().ok()?, b.get(N..)?))
}

/// One column of a `RowDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Table OID (0: not a table column).
    pub table: u32,
    /// Attribute number within the table.
    pub attribute: i16,
    /// Type OID.
    pub type_oid: u32,
    /// Format code (0 text, 1 binary).
    pub format: i16,
}

/// The columns of a `RowDescription` body.
pub fn row_description(body: &[u8]) -> Option<Vec<Column>> {
    let (n, mut rest) = take::<2>(body)?;
    let n = usize::try_from(i16::from_be_bytes(n)).ok()?;
    let mut out = Vec::with_capacity(n.min(body.len() / 19 + 1));
    for _ in 0..n {
        let (name, r) = take_cstr(rest)?;
        let (table, r) = take::<4>(r)?;
        let (attribute, r) = take::<2>(r)?;
        let (type_oid, r) = take::<4>(r)?;
        // Type size and modifier.
        let (_, r) = take::<6>(r)?;
        let (format, r) = take::<2>(r)?;
        rest = r;
        out.push(Column {
            name: String::from_utf8_lossy(name).into_owned(),
            table: u32::from_be_bytes(table),
            attribute: i16::from_be_bytes(attribute),
            type_oid: u32::from_be_bytes(type_oid),
            format: i16::from_be_bytes(format),
        });
    }
    Some(out)
}

/// The values of a `DataRow` body (`None`: NULL).
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (n, mut rest) = take::<2>(body)?;
    let n = usize::try_from(i16::from_be_bytes(n)).ok()?;
    let mut values = Vec::with_capacity(n.min(body.len() / 4 + 1));
    for _ in 0..n {
        let (len, r) = take::<4>(rest)?;
        let len = i32::from_be_bytes(len);
        if len < 0 {
            values.push(None);
            rest = r;
        } else {
            let len = usize::try_from(len).ok()?;
            values.push(Some(r.get(..len)?));
            rest = &r[len..];
        }
    }
    Some(values)
}

/// The fields of an `ErrorResponse` or `NoticeResponse` body: type byte and
/// value, up to the terminator (or the first malformed field).
pub fn fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&code, tail) = rest.split_first()?;
        if code == 0 {
            return None;
        }
        let (value, tail) = take_cstr(tail)?;
        rest = tail;
        Some((code, value))
    })
}

/// The SQLSTATE (`C` field) of an `ErrorResponse` body.
pub fn sqlstate(body: &[u8]) -> Option<String> {
    fields(body)
        .find(|(code, _)| *code == b'C')
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The row count a command tag carries (`SELECT 5`, `INSERT 0 3`, `UPDATE 2`).
pub fn tag_rows(tag: &str) -> Option<u64> {
    let (_, last) = tag.rsplit_once(' ')?;
    last.parse().ok()
}

/// A `DataRow` body (or a binary COPY tuple: the same layout) of `values`.
#[cfg(test)]
pub(crate) fn values_body(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => out.extend((-1i32).to_be_bytes()),
            Some(v) => {
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(*v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(state: &str) -> Vec<u8> {
        let mut b = b"SERROR\0C".to_vec();
        b.extend_from_slice(state.as_bytes());
        b.extend_from_slice(b"\0Mboom\0\0");
        b
    }

    #[test]
    fn reads_sqlstate_fields_and_tag_counts() {
        assert_eq!(sqlstate(&error("42501")).as_deref(), Some("42501"));
        assert_eq!(sqlstate(b"SERROR\0\0"), None);
        assert_eq!(sqlstate(b"SERROR"), None, "unterminated");
        let body = error("22012");
        let got: Vec<(u8, &[u8])> = fields(&body).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (b'M', &b"boom"[..]));
        assert_eq!(tag_rows("INSERT 0 3"), Some(3));
        assert_eq!(tag_rows("BEGIN"), None);
        assert_eq!(tag_rows("SELECT 12"), Some(12));
    }

    #[test]
    fn row_descriptions_and_rows_decode_and_refuse_truncation() {
        let mut body = 2i16.to_be_bytes().to_vec();
        for (name, table, att, ty, fmt) in [("id", 7u32, 1i16, 23u32, 0i16), ("ssn", 7, 2, 25, 1)] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&att.to_be_bytes());
            body.extend_from_slice(&ty.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&fmt.to_be_bytes());
        }
        let cols = row_description(&body).unwrap();
        assert_eq!(cols[1].name, "ssn");
        assert_eq!(
            (
                cols[1].table,
                cols[1].attribute,
                cols[1].type_oid,
                cols[1].format
            ),
            (7, 2, 25, 1)
        );
        assert_eq!(row_description(&body[..body.len() - 1]), None);

        let row = values_body(&[Some(b"7"), None, Some(b"")]);
        assert_eq!(
            data_row(&row).unwrap(),
            vec![Some(&b"7"[..]), None, Some(&b""[..])]
        );
        assert_eq!(data_row(&row[..6]), None);
        // A declared count far beyond the body does not reserve for it.
        assert_eq!(data_row(&i16::MAX.to_be_bytes()), None);
    }
}
