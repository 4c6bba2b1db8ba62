//! Content detectors: find social security numbers, payment card numbers,
//! e-mail addresses and phone numbers inside free text, and star them out.
//!
//! Hand-written scanners rather than regular expressions: each is a few
//! lines, a value with no digit and no `@` is skipped with one pass over its
//! bytes, and the card check (Luhn) is not a pattern anyway. Every match is
//! replaced by the same text with each ASCII letter and digit turned into `*`
//! (`***-**-****`, `**** **** **** ****`), so nothing of the match remains and
//! the value keeps its layout.

use gatehouse_schemas::decision::Detector;

/// A matched byte range.
type Span = (usize, usize);

/// `text` with every match of `detectors` starred out; `None` when nothing
/// matched (the value is sent as it came).
pub fn scrub(text: &str, detectors: &[Detector]) -> Option<String> {
    // Only ASCII letters and digits are replaced, by ASCII: still UTF-8.
    scrub_bytes(text.as_bytes(), detectors).and_then(|out| String::from_utf8(out).ok())
}

/// [`scrub`] over bytes in any ASCII-compatible encoding: every detector
/// matches ASCII only, so bytes that are not valid UTF-8 are scanned too
/// (they never count as letters or digits).
pub fn scrub_bytes(b: &[u8], detectors: &[Detector]) -> Option<Vec<u8>> {
    let mut out = scrub_once(b, detectors)?;
    // Starring a match can clear the way for one beside it (a number glued
    // to a starred phone number is no longer glued to a digit): scan again
    // until nothing is found, so nothing a detector finds is shown. Each pass
    // stars at least one digit, so this ends.
    while let Some(again) = scrub_once(&out, detectors) {
        out = again;
    }
    Some(out)
}

/// One pass of every detector over `b`.
fn scrub_once(b: &[u8], detectors: &[Detector]) -> Option<Vec<u8>> {
    if !b.iter().any(|c| c.is_ascii_digit() || *c == b'@') {
        return None;
    }
    let mut spans: Vec<Span> = Vec::new();
    for d in detectors {
        match d {
            Detector::Ssn => ssn(b, &mut spans),
            Detector::Pan => pan(b, &mut spans),
            Detector::Email => email(b, &mut spans),
            Detector::Phone => phone(b, &mut spans),
        }
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = b.to_vec();
    for (s, e) in spans {
        for c in &mut out[s..e] {
            if c.is_ascii_alphanumeric() {
                *c = b'*';
            }
        }
    }
    Some(out)
}

fn digit(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

/// Whether a match may start at `i`: not in the middle of a word or number.
fn starts_clear(b: &[u8], i: usize) -> bool {
    i == 0 || !b[i - 1].is_ascii_alphanumeric()
}

/// Whether a match may end at `e` (exclusive): not followed by a letter or
/// digit, nor by a separator and another digit (`123-45-6789-1`).
fn ends_clear(b: &[u8], e: usize) -> bool {
    match b.get(e) {
        None => true,
        Some(c) if c.is_ascii_alphanumeric() => false,
        Some(b'-') => !digit(b, e + 1),
        Some(_) => true,
    }
}

/// Digits at `i`: how many (up to `max`).
fn digits(b: &[u8], i: usize, max: usize) -> usize {
    b[i.min(b.len())..]
        .iter()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count()
}

/// `ddd-dd-dddd`.
fn ssn(b: &[u8], spans: &mut Vec<Span>) {
    let mut i = 0;
    while i + 11 <= b.len() {
        if digit(b, i)
            && starts_clear(b, i)
            && !(i > 0 && b[i - 1] == b'-' && i > 1 && digit(b, i - 2))
            && digits(b, i, 4) == 3
            && b[i + 3] == b'-'
            && digits(b, i + 4, 3) == 2
            && b[i + 6] == b'-'
            && digits(b, i + 7, 5) == 4
            && ends_clear(b, i + 11)
        {
            spans.push((i, i + 11));
            i += 11;
        } else {
            i += 1;
        }
    }
}

/// Whether `digits` (values 0–9) pass the Luhn check.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// 13–19 digits in groups separated by one space or dash, Luhn-valid. A run
/// longer than a card (a card number followed by another number) is tried
/// shorter, group by group from its end.
fn pan(b: &[u8], spans: &mut Vec<Span>) {
    let mut i = 0;
    while i < b.len() {
        if !(digit(b, i) && starts_clear(b, i)) {
            i += 1;
            continue;
        }
        // Groups: (start, end) of each run of digits.
        let mut groups: Vec<Span> = Vec::new();
        let mut at = i;
        loop {
            let n = digits(b, at, usize::MAX);
            groups.push((at, at + n));
            let next = at + n;
            if matches!(b.get(next), Some(b' ' | b'-')) && digit(b, next + 1) {
                at = next + 1;
            } else {
                break;
            }
        }
        let run_end = groups.last().map_or(i, |g| g.1);
        let mut found = None;
        for k in (1..=groups.len()).rev() {
            let end = groups[k - 1].1;
            // The whole run must end clear; a shorter one ends at a separator.
            if k == groups.len() && !ends_clear(b, end) {
                continue;
            }
            let ds: Vec<u8> = groups[..k]
                .iter()
                .flat_map(|(s, e)| b[*s..*e].iter().map(|c| c - b'0'))
                .collect();
            if (13..=19).contains(&ds.len()) && luhn(&ds) {
                found = Some(end);
                break;
            }
        }
        match found {
            Some(end) => {
                spans.push((i, end));
                i = end;
            }
            None => i = run_end.max(i + 1),
        }
    }
}

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// `local@domain.tld`: a local part, and a domain of at least two labels
/// whose last is two or more letters.
fn email(b: &[u8], spans: &mut Vec<Span>) {
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut s = at;
        while s > 0 && local_char(b[s - 1]) {
            s -= 1;
        }
        while s < at && b[s] == b'.' {
            s += 1;
        }
        if s == at {
            continue;
        }
        // Domain labels.
        let mut e = at + 1;
        let mut last_label = (e, e);
        let mut labels = 0;
        loop {
            let start = e;
            while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'-') {
                e += 1;
            }
            if e == start {
                break;
            }
            labels += 1;
            last_label = (start, e);
            if b.get(e) == Some(&b'.') && b.get(e + 1).is_some_and(u8::is_ascii_alphanumeric) {
                e += 1;
            } else {
                break;
            }
        }
        let tld = &b[last_label.0..last_label.1];
        if labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
            spans.push((s, last_label.1));
        }
    }
}

/// E.164 (`+` and 8–15 digits, single separators between groups) and North
/// American numbers with separators: `(415) 555-2671`, `415-555-2671`,
/// `415.555.2671`, `415 555 2671`, with an optional `1` or `+1` ahead.
fn phone(b: &[u8], spans: &mut Vec<Span>) {
    let mut i = 0;
    while i < b.len() {
        let found = if b[i] == b'+' && starts_clear(b, i) {
            e164(b, i).or_else(|| nanp(b, i))
        } else if (digit(b, i) || b[i] == b'(') && starts_clear(b, i) {
            nanp(b, i)
        } else {
            None
        };
        match found {
            Some(end) => {
                spans.push((i, end));
                i = end;
            }
            None => i += 1,
        }
    }
}

fn e164(b: &[u8], plus: usize) -> Option<usize> {
    if !digit(b, plus + 1) || b[plus + 1] == b'0' {
        return None;
    }
    let mut at = plus + 1;
    let mut count = 0;
    loop {
        let n = digits(b, at, usize::MAX);
        count += n;
        at += n;
        if matches!(b.get(at), Some(b' ' | b'-' | b'.')) && digit(b, at + 1) {
            at += 1;
        } else {
            break;
        }
    }
    ((8..=15).contains(&count) && ends_clear(b, at)).then_some(at)
}

fn nanp(b: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    // Country code: `+1` or `1`, then a separator.
    if b.get(at) == Some(&b'+') {
        at += 1;
        if b.get(at) != Some(&b'1') {
            return None;
        }
    }
    if b.get(at) == Some(&b'1') && matches!(b.get(at + 1), Some(b' ' | b'-' | b'.')) {
        at += 2;
    } else if b.get(start) == Some(&b'+') {
        return None;
    }
    // Area code: `(ddd)` then an optional space, or `ddd` then a separator.
    if b.get(at) == Some(&b'(') {
        if digits(b, at + 1, 4) != 3 || b.get(at + 4) != Some(&b')') {
            return None;
        }
        at += 5;
        if b.get(at) == Some(&b' ') {
            at += 1;
        }
    } else {
        if digits(b, at, 4) != 3 || !matches!(b.get(at + 3), Some(b' ' | b'-' | b'.')) {
            return None;
        }
        at += 4;
    }
    // Exchange and line: `ddd` separator `dddd`.
    if digits(b, at, 4) != 3 || !matches!(b.get(at + 3), Some(b' ' | b'-' | b'.')) {
        return None;
    }
    at += 4;
    if digits(b, at, 5) != 4 {
        return None;
    }
    at += 4;
    ends_clear(b, at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(d: Detector, text: &str) -> Option<String> {
        scrub(text, &[d])
    }

    #[test]
    fn ssn_matches_and_near_misses() {
        assert_eq!(
            one(Detector::Ssn, "ssn 123-45-6789.").as_deref(),
            Some("ssn ***-**-****.")
        );
        assert_eq!(
            one(Detector::Ssn, "123-45-6789,987-65-4321").as_deref(),
            Some("***-**-****,***-**-****")
        );
        for miss in [
            "123-45-678",
            "1234-56-7890",
            "123-456-7890",
            "123-45-67890",
            "a123-45-6789",
            "123-45-6789a",
            "9-123-45-6789",
            "123-45-6789-1",
            "2024-01-15",
            "123456789",
            "no digits here",
        ] {
            assert_eq!(one(Detector::Ssn, miss), None, "{miss}");
        }
    }

    #[test]
    fn luhn_positives_and_negatives() {
        let d = |s: &str| s.bytes().map(|c| c - b'0').collect::<Vec<_>>();
        for ok in [
            "4111111111111111",
            "5500005555555559",
            "378282246310005",
            "6011111111111117",
            "79927398713",
        ] {
            assert!(luhn(&d(ok)), "{ok}");
        }
        for bad in [
            "4111111111111112",
            "5500005555555554",
            "79927398710",
            "1234567812345678",
        ] {
            assert!(!luhn(&d(bad)), "{bad}");
        }
    }

    #[test]
    fn pan_matches_with_separators_and_luhn_only() {
        for (text, want) in [
            ("card 4111111111111111 ok", "card **************** ok"),
            ("4111 1111 1111 1111", "**** **** **** ****"),
            ("4111-1111-1111-1111", "****-****-****-****"),
            ("amex 3782 822463 10005", "amex **** ****** *****"),
            // A card number followed by a number of its own.
            ("4111 1111 1111 1111 2 items", "**** **** **** **** 2 items"),
        ] {
            assert_eq!(one(Detector::Pan, text).as_deref(), Some(want), "{text}");
        }
        for miss in [
            "4111111111111112",        // Luhn fails
            "411111111111",            // 12 digits
            "41111111111111111111111", // 23 digits, no group boundary
            "4111  1111 1111 1111",    // double space splits it: 4 + 12 digits
            "x4111111111111111",       // inside a word
        ] {
            assert_eq!(one(Detector::Pan, miss), None, "{miss}");
        }
    }

    #[test]
    fn email_matches_and_near_misses() {
        assert_eq!(
            one(Detector::Email, "mail ann.secret+x@mail.example.org now").as_deref(),
            Some("mail ***.******+*@****.*******.*** now")
        );
        for miss in [
            "user@localhost",
            "@example.org",
            "a@b.c",
            "x@y.123",
            "no at sign",
        ] {
            assert_eq!(one(Detector::Email, miss), None, "{miss}");
        }
    }

    #[test]
    fn phone_matches_and_near_misses() {
        for (text, want) in [
            ("call +14155552671", "call +***********"),
            ("+44 20 7946 0958", "+** ** **** ****"),
            ("(415) 555-2671", "(***) ***-****"),
            ("415-555-2671", "***-***-****"),
            ("tel 415.555.2671.", "tel ***.***.****."),
            ("1 415 555 2671", "* *** *** ****"),
            ("+1 (415) 555-2671", "+* (***) ***-****"),
        ] {
            assert_eq!(one(Detector::Phone, text).as_deref(), Some(want), "{text}");
        }
        for miss in [
            "4155552671",
            "415-555-26711",
            "123-45-6789",
            "2024-01-15",
            "+0123456789",
            "+1234567",
            "version 1.2.3",
        ] {
            assert_eq!(one(Detector::Phone, miss), None, "{miss}");
        }
    }

    #[test]
    fn nothing_a_detector_finds_is_left_in_what_is_shown() {
        // Found by the `masking` fuzz target: once `+111111433` was starred,
        // `+1-1111114111114` beside it was no longer glued to a digit.
        let all = Detector::ALL;
        for sent in [
            &b"111\xff1\xbb\xff\xfe1+11\x97111\xc9+111111433+1-1111114111114??????33\xcc"[..],
            b"+111111433+1-1111114111114",
        ] {
            let shown = scrub_bytes(sent, &all).expect("a match");
            assert_eq!(
                scrub_bytes(&shown, &all),
                None,
                "{:?}",
                String::from_utf8_lossy(&shown)
            );
        }
    }

    #[test]
    fn values_without_a_match_are_left_alone() {
        let all = Detector::ALL;
        assert_eq!(scrub("plain words only", &all), None);
        assert_eq!(scrub("room 12, floor 3", &all), None);
        assert_eq!(
            scrub(
                "SSN 123-45-6789 card 4111 1111 1111 1111 mail a@b.org",
                &all
            )
            .as_deref(),
            Some("SSN ***-**-**** card **** **** **** **** mail *@*.***")
        );
        // Non-ASCII text around a match stays intact.
        assert_eq!(
            scrub("né 123-45-6789 é", &[Detector::Ssn]).as_deref(),
            Some("né ***-**-**** é")
        );
    }
}
