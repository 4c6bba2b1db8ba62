//! The mask methods applied to one value.

use gatehouse_schemas::decision::MaskMethod;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What `redact` shows.
pub const REDACTED: &str = "****";

/// The masked text of `value` (`None`: NULL). `key` keys the `hash` method.
pub fn apply(method: &MaskMethod, value: &str, key: &[u8]) -> Option<String> {
    match method {
        MaskMethod::Redact => Some(REDACTED.to_owned()),
        MaskMethod::Null => None,
        MaskMethod::Partial {
            keep_first,
            keep_last,
        } => Some(partial(value, *keep_first as usize, *keep_last as usize)),
        MaskMethod::Hash => {
            // HMAC accepts a key of any length; `new_from_slice` cannot fail.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
            mac.update(value.as_bytes());
            let out = mac.finalize().into_bytes();
            Some(out.iter().map(|b| format!("{b:02x}")).collect())
        }
        MaskMethod::Email => Some(match value.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => format!("{REDACTED}@{domain}"),
            _ => REDACTED.to_owned(),
        }),
        MaskMethod::Detect { detectors } => {
            Some(super::detect::scrub(value, detectors).unwrap_or_else(|| value.to_owned()))
        }
    }
}

/// Letters and digits become `*` except the first `first` and last `last`
/// characters; separators stay. A value no longer than what would be kept is
/// starred entirely (keeping all of it would show it).
fn partial(value: &str, first: usize, last: usize) -> String {
    let n = value.chars().count();
    let keep_all_masked = first + last >= n;
    value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let kept = !keep_all_masked && (i < first || i >= n - last);
            if kept || !c.is_alphanumeric() { c } else { '*' }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_show_what_they_promise() {
        let key = b"k";
        assert_eq!(
            apply(&MaskMethod::Redact, "123-45-6789", key).unwrap(),
            "****"
        );
        assert_eq!(apply(&MaskMethod::Null, "123-45-6789", key), None);
        let p = MaskMethod::Partial {
            keep_first: 0,
            keep_last: 4,
        };
        assert_eq!(apply(&p, "123-45-6789", key).unwrap(), "***-**-6789");
        assert_eq!(apply(&p, "6789", key).unwrap(), "****");
        let p = MaskMethod::Partial {
            keep_first: 2,
            keep_last: 0,
        };
        assert_eq!(apply(&p, "ab-cd", key).unwrap(), "ab-**");
        assert_eq!(
            apply(&MaskMethod::Email, "ann@example.org", key).unwrap(),
            "****@example.org"
        );
        assert_eq!(apply(&MaskMethod::Email, "nobody", key).unwrap(), "****");
        let h1 = apply(&MaskMethod::Hash, "123-45-6789", key).unwrap();
        let h2 = apply(&MaskMethod::Hash, "123-45-6789", key).unwrap();
        let h3 = apply(&MaskMethod::Hash, "123-45-6789", b"other").unwrap();
        assert_eq!(h1, h2);
        assert_ne!(h1, h3);
        assert_eq!(h1.len(), 64);
        assert!(!h1.contains("6789"));
    }
}
