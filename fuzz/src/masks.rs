//! Masks as fuzz inputs, and what a masked value must look like: each method's
//! promise restated from the policy documentation, not from its code.

use arbitrary::Arbitrary;
use gatehouse_ingress::masking::detect;
use gatehouse_ingress::masking::wire::Kind;
use gatehouse_schemas::decision::{Detector, MaskMethod};

/// A column's mask as the fuzzer picks it.
#[derive(Debug, Clone, Arbitrary)]
pub struct MaskSpec {
    method: MethodSpec,
    kind: KindSpec,
}

#[derive(Debug, Clone, Arbitrary)]
enum MethodSpec {
    Redact,
    Null,
    Partial {
        keep_first: u8,
        keep_last: u8,
    },
    Hash,
    Email,
    Detect {
        ssn: bool,
        pan: bool,
        email: bool,
        phone: bool,
    },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum KindSpec {
    Text,
    Json,
    Jsonb,
    Other,
}

impl MaskSpec {
    /// The mask, for values sent in `binary` format or not.
    pub fn mask(&self, binary: bool) -> (MaskMethod, Kind) {
        let method = match &self.method {
            MethodSpec::Redact => MaskMethod::Redact,
            MethodSpec::Null => MaskMethod::Null,
            MethodSpec::Partial {
                keep_first,
                keep_last,
            } => MaskMethod::Partial {
                keep_first: u32::from(*keep_first % 8),
                keep_last: u32::from(*keep_last % 8),
            },
            MethodSpec::Hash => MaskMethod::Hash,
            MethodSpec::Email => MaskMethod::Email,
            MethodSpec::Detect {
                ssn,
                pan,
                email,
                phone,
            } => {
                let all = [
                    (*ssn, Detector::Ssn),
                    (*pan, Detector::Pan),
                    (*email, Detector::Email),
                    (*phone, Detector::Phone),
                ];
                MaskMethod::Detect {
                    detectors: all.iter().filter(|(on, _)| *on).map(|(_, d)| *d).collect(),
                }
            }
        };
        let kind = match self.kind {
            KindSpec::Text => Kind::Text,
            KindSpec::Json => Kind::Json,
            KindSpec::Jsonb => Kind::Jsonb { binary },
            KindSpec::Other => Kind::Other,
        };
        (method, kind)
    }
}

/// Checks what a masked column shows (`shown`, `None`: NULL) for the value the
/// server sent (`sent`, not NULL). `Err` says what leaked or broke.
pub fn check(
    method: &MaskMethod,
    kind: Kind,
    sent: &[u8],
    shown: Option<&[u8]>,
) -> Result<(), String> {
    if let MaskMethod::Detect { detectors } = method {
        return check_detect(detectors, kind, sent, shown);
    }
    if kind == Kind::Other || *method == MaskMethod::Null {
        return match shown {
            None => Ok(()),
            Some(v) => Err(format!(
                "{method:?} of a {kind:?} value shows {v:?}, not NULL"
            )),
        };
    }
    let shown = shown.ok_or_else(|| format!("{method:?} gave NULL"))?;
    let text = payload(kind, shown)?;
    let sent_text = String::from_utf8_lossy(match kind {
        Kind::Jsonb { binary: true } => sent.get(1..).unwrap_or_default(),
        _ => sent,
    });
    let ok = match method {
        MaskMethod::Redact => text == "****",
        MaskMethod::Hash => text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
        MaskMethod::Email => match sent_text.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => text == format!("****@{domain}"),
            _ => text == "****",
        },
        MaskMethod::Partial {
            keep_first,
            keep_last,
        } => partial_ok(&sent_text, &text, *keep_first as usize, *keep_last as usize),
        MaskMethod::Null | MaskMethod::Detect { .. } => unreachable!("handled above"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{method:?} of {sent_text:?} shows {text:?}"))
    }
}

/// The text a `kind` value carries: itself, or the JSON string it spells.
fn payload(kind: Kind, shown: &[u8]) -> Result<String, String> {
    let json = match kind {
        Kind::Text | Kind::Other => return Ok(String::from_utf8_lossy(shown).into_owned()),
        Kind::Json | Kind::Jsonb { binary: false } => shown,
        Kind::Jsonb { binary: true } => match shown.split_first() {
            Some((1, rest)) => rest,
            _ => return Err(format!("binary jsonb without its version byte: {shown:?}")),
        },
    };
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(format!(
            "not a JSON string: {:?}",
            String::from_utf8_lossy(json)
        )),
    }
}

/// Every letter or digit outside the kept ends is a star; the rest is as sent;
/// a value no longer than the kept ends is starred whole.
fn partial_ok(sent: &str, shown: &str, first: usize, last: usize) -> bool {
    let sent: Vec<char> = sent.chars().collect();
    let shown: Vec<char> = shown.chars().collect();
    let n = sent.len();
    if shown.len() != n {
        return false;
    }
    let all = first + last >= n;
    sent.iter().zip(&shown).enumerate().all(|(i, (s, w))| {
        let kept = !all && (i < first || i >= n - last);
        if kept || !s.is_alphanumeric() {
            s == w
        } else {
            *w == '*'
        }
    })
}

/// Detectors: a text value keeps its layout, only letters and digits become
/// stars, and no detector finds anything in what is shown; other values pass.
fn check_detect(
    detectors: &[Detector],
    kind: Kind,
    sent: &[u8],
    shown: Option<&[u8]>,
) -> Result<(), String> {
    if kind != Kind::Text {
        return match shown {
            Some(v) if v == sent => Ok(()),
            other => Err(format!("detectors changed a {kind:?} value: {other:?}")),
        };
    }
    let shown = shown.ok_or("detectors gave NULL")?;
    if shown.len() != sent.len()
        || sent
            .iter()
            .zip(shown)
            .any(|(s, w)| s != w && !(s.is_ascii_alphanumeric() && *w == b'*'))
    {
        return Err(format!(
            "detectors changed more than letters and digits: {sent:?} -> {shown:?}"
        ));
    }
    match detect::scrub(&String::from_utf8_lossy(shown), detectors) {
        None => Ok(()),
        Some(again) => Err(format!(
            "{detectors:?} still find something in {:?} (sent {:?}): {again:?}",
            String::from_utf8_lossy(shown),
            String::from_utf8_lossy(sent)
        )),
    }
}
