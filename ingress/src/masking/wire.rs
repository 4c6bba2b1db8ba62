//! The wire messages masking reads and rewrites: `RowDescription`, `Bind`
//! result formats, `DataRow`, `ErrorResponse`/`NoticeResponse`.
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>

use bytes::{BufMut, BytesMut};
use gatehouse_schemas::decision::MaskMethod;

use super::{detect, method};

/// One result column, as masking needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Table OID (0: not a table column).
    pub table: u32,
    /// Attribute number.
    pub column: i16,
    /// Type OID.
    pub type_oid: u32,
    /// Format code (0 text, 1 binary).
    pub format: i16,
    /// The mask its origin column carries, once resolved.
    pub origin_method: Option<MaskMethod>,
}

/// How a masked value is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// text, varchar, bpchar, name, unknown: the text itself, either format.
    Text,
    /// json: the masked text as a JSON string, either format.
    Json,
    /// jsonb: as json; in binary, after the version byte 1.
    Jsonb {
        /// Binary format.
        binary: bool,
    },
    /// Any other type: NULL (a number or date has no masked spelling).
    Other,
}

/// Type OIDs from `pg_type.dat`.
const TEXT_TYPES: [u32; 5] = [25, 1043, 1042, 19, 705];
const JSON: u32 = 114;
const JSONB: u32 = 3802;

impl Kind {
    /// The kind of a column of type `oid` sent in binary (or text) format.
    pub fn of(oid: u32, binary: bool) -> Self {
        if TEXT_TYPES.contains(&oid) {
            Self::Text
        } else if oid == JSON {
            Self::Json
        } else if oid == JSONB {
            Self::Jsonb { binary }
        } else {
            Self::Other
        }
    }
}

/// A NUL-terminated string at the start of `b`.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn take_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

fn take<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
    Some((b.get(..N)?.try_into().ok()?, &b[N..]))
}

/// The fields of a `RowDescription` body.
pub fn row_description(body: &[u8]) -> Option<Vec<Field>> {
    let (n, mut rest) = take::<2>(body)?;
    let n = i16::from_be_bytes(n);
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let (_name, r) = take_cstr(rest)?;
        let (table, r) = take::<4>(r)?;
        let (column, r) = take::<2>(r)?;
        let (type_oid, r) = take::<4>(r)?;
        let (_size, r) = take::<2>(r)?;
        let (_typmod, r) = take::<4>(r)?;
        let (format, r) = take::<2>(r)?;
        rest = r;
        out.push(Field {
            table: u32::from_be_bytes(table),
            column: i16::from_be_bytes(column),
            type_oid: u32::from_be_bytes(type_oid),
            format: i16::from_be_bytes(format),
            origin_method: None,
        });
    }
    Some(out)
}

/// A `Bind` body's portal, statement and result format codes.
pub fn bind_formats(body: &[u8]) -> Option<(String, String, Vec<i16>)> {
    let (portal, rest) = take_cstr(body)?;
    let (statement, rest) = take_cstr(rest)?;
    let (n, mut rest) = take::<2>(rest)?;
    for _ in 0..i16::from_be_bytes(n) {
        rest = take::<2>(rest)?.1;
    }
    let (n, r) = take::<2>(rest)?;
    rest = r;
    for _ in 0..i16::from_be_bytes(n) {
        let (len, r) = take::<4>(rest)?;
        let len = i32::from_be_bytes(len);
        rest = if len > 0 {
            r.get(usize::try_from(len).ok()?..)?
        } else {
            r
        };
    }
    let (n, mut rest) = take::<2>(rest)?;
    let mut formats = Vec::new();
    for _ in 0..i16::from_be_bytes(n) {
        let (f, r) = take::<2>(rest)?;
        formats.push(i16::from_be_bytes(f));
        rest = r;
    }
    Some((
        String::from_utf8_lossy(portal).into_owned(),
        String::from_utf8_lossy(statement).into_owned(),
        formats,
    ))
}

/// The masked value of one column, as it goes on the wire (`None`: NULL).
pub fn masked_value(value: &[u8], method: &MaskMethod, kind: Kind, key: &[u8]) -> Option<Vec<u8>> {
    let text = match kind {
        Kind::Other => return None,
        Kind::Jsonb { binary: true } => String::from_utf8_lossy(value.get(1..).unwrap_or_default()),
        Kind::Text | Kind::Json | Kind::Jsonb { .. } => String::from_utf8_lossy(value),
    };
    let masked = method::apply(method, &text, key)?;
    Some(match kind {
        Kind::Text | Kind::Other => masked.into_bytes(),
        Kind::Json | Kind::Jsonb { binary: false } => {
            serde_json::Value::String(masked).to_string().into_bytes()
        }
        Kind::Jsonb { binary: true } => {
            let mut v = vec![1u8];
            v.extend(serde_json::Value::String(masked).to_string().into_bytes());
            v
        }
    })
}

/// What one non-NULL value becomes under a mask: `None` unchanged (a content
/// detector found nothing), `Some(None)` NULL, `Some(Some(bytes))` replaced.
pub type Replacement = Option<Option<Vec<u8>>>;

/// The [`Replacement`] of one non-NULL value. Content detectors scan text
/// values only; any other value under them is left as it is.
pub fn replacement(value: &[u8], method: &MaskMethod, kind: Kind, key: &[u8]) -> Replacement {
    if let MaskMethod::Detect { detectors } = method {
        if kind != Kind::Text {
            return None;
        }
        // Scanned as bytes: a value that is not UTF-8 (which a UTF8 server
        // never sends) is not waved through unscanned.
        return detect::scrub_bytes(value, detectors).map(Some);
    }
    Some(masked_value(value, method, kind, key))
}

/// Rewrites a whole `DataRow` message; `None` when no masked column holds a
/// value (the row is forwarded as it came, without a copy).
pub fn rewrite_data_row(
    msg: &[u8],
    masks: &[Option<(MaskMethod, Kind)>],
    key: &[u8],
) -> Option<BytesMut> {
    let body = msg.get(5..)?;
    let (n, mut rest) = take::<2>(body)?;
    let n = i16::from_be_bytes(n);
    let mut cols: Vec<Option<&[u8]>> = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let (len, r) = take::<4>(rest)?;
        let len = i32::from_be_bytes(len);
        if len < 0 {
            cols.push(None);
            rest = r;
        } else {
            let len = usize::try_from(len).ok()?;
            cols.push(Some(r.get(..len)?));
            rest = &r[len..];
        }
    }
    let reps: Vec<Replacement> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| match (c, masks.get(i).and_then(Option::as_ref)) {
            (Some(v), Some((m, kind))) => replacement(v, m, *kind, key),
            _ => None,
        })
        .collect();
    if reps.iter().all(Option::is_none) {
        return None;
    }
    let mut out = BytesMut::with_capacity(msg.len());
    out.put_u8(b'D');
    out.put_u32(0);
    out.put_i16(n);
    for (c, r) in cols.iter().zip(&reps) {
        let v: Option<&[u8]> = match (c, r) {
            (None, _) | (Some(_), Some(None)) => None,
            (Some(v), None) => Some(v),
            (Some(_), Some(Some(new))) => Some(new.as_slice()),
        };
        match v {
            None => out.put_i32(-1),
            Some(v) => {
                out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                out.put_slice(v);
            }
        }
    }
    let len = u32::try_from(out.len() - 1).unwrap_or(u32::MAX);
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

/// A `DataRow` with every column NULL (rows whose shape masking cannot know).
pub fn all_null(msg: &[u8]) -> BytesMut {
    let n = msg
        .get(5..7)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]));
    let mut out = BytesMut::with_capacity(7 + 4 * usize::try_from(n).unwrap_or(0));
    out.put_u8(b'D');
    out.put_u32(6 + 4 * u32::try_from(n).unwrap_or(0));
    out.put_i16(n);
    for _ in 0..n {
        out.put_i32(-1);
    }
    out
}

/// An `ErrorResponse` or `NoticeResponse` (`tag`) of a statement under a mask,
/// with its text replaced: PostgreSQL may echo a value in the message, detail,
/// hint or context (`invalid input syntax for type integer: "123-45-6789"`).
/// Severity and SQLSTATE stay.
pub fn scrub_error(tag: u8, body: &[u8]) -> BytesMut {
    let mut keep: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut rest = body;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let Some((v, r)) = take_cstr(r) else { break };
        if matches!(t, b'S' | b'V' | b'C') {
            keep.push((t, v.to_vec()));
        }
        rest = r;
    }
    keep.push((
        b'M',
        b"details withheld by Gatehouse: the statement reads masked columns, and the server's message could show a masked value"
            .to_vec(),
    ));
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_u32(0);
    for (t, v) in keep {
        out.put_u8(t);
        out.put_slice(&v);
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = u32::try_from(out.len() - 1).unwrap_or(u32::MAX);
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = vec![b'D', 0, 0, 0, 0];
        out.extend((cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                None => out.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend((v.len() as i32).to_be_bytes());
                    out.extend(*v);
                }
            }
        }
        let len = (out.len() - 1) as u32;
        out[1..5].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn data_rows_are_rewritten_with_correct_lengths() {
        let row = data_row(&[Some(b"1"), Some(b"123-45-6789"), Some(b"42")]);
        let masks = [
            None,
            Some((
                MaskMethod::Partial {
                    keep_first: 0,
                    keep_last: 4,
                },
                Kind::Text,
            )),
            Some((MaskMethod::Redact, Kind::Other)),
        ];
        let out = rewrite_data_row(&row, &masks, b"k").unwrap();
        assert_eq!(
            &out[..],
            &data_row(&[Some(b"1"), Some(b"***-**-6789"), None])[..]
        );
        // Nothing to mask in this row: forwarded as it came.
        let row = data_row(&[Some(b"1"), None, None]);
        assert!(rewrite_data_row(&row, &masks, b"k").is_none());
        // jsonb in binary keeps its version byte and stays valid JSON.
        let row = data_row(&[Some(b"\x01\"123-45-6789\"")]);
        let out = rewrite_data_row(
            &row,
            &[Some((MaskMethod::Redact, Kind::Jsonb { binary: true }))],
            b"k",
        )
        .unwrap();
        assert_eq!(&out[..], &data_row(&[Some(b"\x01\"****\"")])[..]);
        assert_eq!(
            &all_null(&data_row(&[Some(b"x"), None]))[..],
            &data_row(&[None, None])[..]
        );
    }

    #[test]
    fn detectors_rewrite_only_rows_with_a_match() {
        use gatehouse_schemas::decision::Detector;
        let detect = MaskMethod::Detect {
            detectors: vec![Detector::Ssn, Detector::Pan],
        };
        let masks = [
            Some((detect.clone(), Kind::Text)),
            Some((detect.clone(), Kind::Other)),
        ];
        let row = data_row(&[Some(b"ssn 123-45-6789 ok"), Some(b"123-45-6789")]);
        let out = rewrite_data_row(&row, &masks, b"k").unwrap();
        // Only the match is starred; a non-text value under detectors stays.
        assert_eq!(
            &out[..],
            &data_row(&[Some(b"ssn ***-**-**** ok"), Some(b"123-45-6789")])[..]
        );
        // Nothing found: no rewrite, the row is forwarded without a copy.
        let row = data_row(&[Some(b"room 12, floor 3"), Some(b"4111111111111111")]);
        assert!(rewrite_data_row(&row, &masks, b"k").is_none());
        let row = data_row(&[Some(b"no digits at all"), None]);
        assert!(rewrite_data_row(&row, &masks, b"k").is_none());
        // Bytes that are not UTF-8 are scanned all the same.
        let row = data_row(&[Some(b"\xe9 123-45-6789"), None]);
        let out = rewrite_data_row(&row, &masks, b"k").unwrap();
        assert_eq!(&out[..], &data_row(&[Some(b"\xe9 ***-**-****"), None])[..]);
    }

    #[test]
    fn errors_keep_their_sqlstate_and_lose_their_text() {
        let mut body = Vec::new();
        for (t, v) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"123-45-6789\"",
            ),
            (b'W', "SQL function with 123-45-6789"),
        ] {
            body.push(t);
            body.extend(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let out = scrub_error(b'E', &body);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("6789"));
        assert!(text.contains("22P02"));
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
    }
}
