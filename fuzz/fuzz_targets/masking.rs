//! Fuzz target: masking's rewrites of `DataRow` (`masking::wire`) and of
//! `COPY ... TO STDOUT` `CopyData` (`masking::copy`), with every mask method
//! (`masking::method`, `masking::detect`).
//!
//! Rows the server could send are written the way PostgreSQL writes them
//! (`gatehouse_fuzz::pgcopy`), cut into messages at any points, rewritten, and
//! read back strictly: the output must be a valid row stream of the same
//! shape (a `DataRow`'s length prefix and column count match its bytes; a COPY
//! stream parses in its format with nothing left over), every column without a
//! mask unchanged, and every masked column what its method promises
//! (`gatehouse_fuzz::masks::check`): a masked value never survives. Bytes no
//! server would send are fed too: nothing panics, and a rewritten `DataRow`
//! is still well formed.
#![no_main]

use arbitrary::Arbitrary;
use gatehouse_decider::results::CopyFormat;
use gatehouse_fuzz::masks::{MaskSpec, check};
use gatehouse_fuzz::pgcopy::{self, FormatSpec, Row};
use gatehouse_ingress::masking::copy::{ColMask, CopyOut};
use gatehouse_ingress::masking::wire;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-key";

#[derive(Debug, Arbitrary)]
enum Input {
    /// A `DataRow` the server could send.
    DataRow {
        cols: Vec<(Option<Vec<u8>>, Option<MaskSpec>)>,
        binary: bool,
    },
    /// Any bytes as a `DataRow`.
    RawDataRow {
        body: Vec<u8>,
        masks: Vec<Option<MaskSpec>>,
    },
    /// A COPY the server could send, cut into `CopyData` messages at `cuts`.
    Copy {
        format: FormatSpec,
        cols: Vec<Option<MaskSpec>>,
        rows: Vec<Vec<Option<Vec<u8>>>>,
        cuts: Vec<u16>,
        described: bool,
    },
    /// Any bytes as `CopyData` payloads.
    RawCopy {
        format: FormatSpec,
        cols: Vec<Option<MaskSpec>>,
        payloads: Vec<Vec<u8>>,
    },
}

fuzz_target!(|input: Input| match input {
    Input::DataRow { cols, binary } => data_row(&cols, binary),
    Input::RawDataRow { body, masks } => {
        let masks: Vec<ColMask> = masks
            .iter()
            .map(|m| m.as_ref().map(|m| m.mask(false)))
            .collect();
        let mut msg = vec![b'D'];
        msg.extend(
            u32::try_from(body.len() + 4)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        msg.extend(&body);
        if let Some(out) = wire::rewrite_data_row(&msg, &masks, KEY) {
            if let Err(e) = pgcopy::read_data_row(&out) {
                panic!("rewritten DataRow is malformed: {e}");
            }
        }
        let _ = wire::all_null(&msg);
    }
    Input::Copy {
        format,
        cols,
        rows,
        cuts,
        described,
    } => {
        if let Some(format) = format.format() {
            copy(&format, &cols, rows, &cuts, described);
        }
    }
    Input::RawCopy {
        format,
        cols,
        payloads,
    } => {
        if let Some(format) = format.format() {
            let masks: Vec<ColMask> = cols
                .iter()
                .map(|m| m.as_ref().map(|m| m.mask(false)))
                .collect();
            let mut c = CopyOut::new(format, masks.len(), Some(&masks));
            for p in &payloads {
                let _ = c.data(p, KEY);
            }
            let _ = c.leftover();
        }
    }
});

fn data_row(cols: &[(Option<Vec<u8>>, Option<MaskSpec>)], binary: bool) {
    if cols.len() > i16::MAX as usize {
        return;
    }
    let values: Row = cols.iter().map(|(v, _)| v.clone()).collect();
    let masks: Vec<ColMask> = cols
        .iter()
        .map(|(_, m)| m.as_ref().map(|m| m.mask(binary)))
        .collect();
    let msg = pgcopy::data_row(&values);
    let shown = match wire::rewrite_data_row(&msg, &masks, KEY) {
        None => values.clone(),
        Some(out) => {
            pgcopy::read_data_row(&out).unwrap_or_else(|e| panic!("rewritten DataRow: {e}"))
        }
    };
    check_rows(&masks, &[values.clone()], &[values], &[shown], None);
}

fn copy(
    format: &CopyFormat,
    cols: &[Option<MaskSpec>],
    rows: Vec<Vec<Option<Vec<u8>>>>,
    cuts: &[u16],
    described: bool,
) {
    let binary = matches!(format, CopyFormat::Binary);
    let masks: Vec<ColMask> = cols
        .iter()
        .map(|m| m.as_ref().map(|m| m.mask(binary)))
        .collect();
    let n = masks.len();
    // Rows of the announced width; text values hold no NUL (no PostgreSQL text does).
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|mut r| {
            r.resize(n, None);
            for v in r.iter_mut().flatten() {
                if !binary {
                    v.retain(|&b| b != 0);
                }
            }
            r
        })
        .collect();
    let names: Vec<Vec<u8>> = (0..n).map(|i| format!("c{i}").into_bytes()).collect();
    let stream = pgcopy::copy_stream(format, &names, &rows);
    let mut c = CopyOut::new(format.clone(), n, described.then_some(&masks[..]));
    let mut out = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&p| usize::from(p) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    points.push(stream.len());
    for p in points {
        if p < at {
            continue;
        }
        let piece = &stream[at..p];
        match c.data(piece, KEY) {
            None => out.extend_from_slice(piece),
            Some(v) => out.extend(v),
        }
        at = p;
    }
    assert_eq!(c.leftover(), 0, "a whole stream left bytes unsent");
    let (head, shown) = pgcopy::read_copy_stream(format, n, &out).unwrap_or_else(|e| {
        panic!(
            "rewritten COPY stream: {e}\n{:?}",
            String::from_utf8_lossy(&out)
        )
    });
    if let Some(head) = head {
        // A name spelled like the NULL string reads as NULL.
        let null = match format {
            CopyFormat::Text { null, .. } | CopyFormat::Csv { null, .. } => null.clone(),
            CopyFormat::Binary => Vec::new(),
        };
        let head: Vec<Vec<u8>> = head
            .into_iter()
            .map(|h| h.unwrap_or_else(|| null.clone()))
            .collect();
        assert_eq!(head, names, "the header changed");
    }
    // Unmasked columns must read as the server's own stream reads.
    let (_, meant) = pgcopy::read_copy_stream(format, n, &stream)
        .unwrap_or_else(|e| panic!("the reference stream does not read back: {e}"));
    // In text format a value may be spelled like the NULL string.
    let ambiguous = match format {
        CopyFormat::Text { null, .. } if !null.contains(&b'\\') => Some(&null[..]),
        _ => None,
    };
    if described {
        check_rows(&masks, &rows, &meant, &shown, ambiguous);
    } else {
        assert_eq!(shown.len(), rows.len());
        assert!(
            shown.iter().flatten().all(Option::is_none),
            "columns of an undescribed COPY shown"
        );
    }
}

/// Each shown row against the row sent under `masks` (`meant`: as a client
/// reads the unmasked stream; `ambiguous`: a NULL string that a value may be
/// spelled as, which masking then masks as that value).
fn check_rows(
    masks: &[ColMask],
    sent: &[Row],
    meant: &[Row],
    shown: &[Row],
    ambiguous: Option<&[u8]>,
) {
    assert_eq!(sent.len(), shown.len(), "rows lost or added");
    for ((s, m), w) in sent.iter().zip(meant).zip(shown) {
        assert_eq!(s.len(), w.len(), "columns lost or added");
        for (((sv, mv), wv), mask) in s.iter().zip(m).zip(w).zip(masks) {
            let verdict = match (mask, sv) {
                (None, _) => {
                    assert_eq!(mv, wv, "a column without a mask changed");
                    continue;
                }
                // Read as NULL: shown as NULL, or as it was sent.
                (Some((method, kind)), Some(v)) if wv.is_none() && ambiguous == Some(&v[..]) => {
                    check(method, *kind, v, None).or_else(|_| check(method, *kind, v, Some(v)))
                }
                (Some((method, kind)), Some(v)) => check(method, *kind, v, wv.as_deref()),
                (Some(_), None) if wv.is_none() => Ok(()),
                (Some((method, kind)), None) => match ambiguous {
                    Some(null) => check(method, *kind, null, wv.as_deref()),
                    None => Err(format!("a masked NULL shows {wv:?}")),
                },
            };
            if let Err(e) = verdict {
                panic!("{e}");
            }
        }
    }
}
