//! Fuzz target: the statement-shape scanner (`gatehouse_decider::shape`),
//! differential against sqlparser's tokenizer (`shape::tokenizer_shape`).
//!
//! The verdict cache shares one verdict among texts of one shape, which is
//! sound only if the scanner never puts together two texts the tokenizer
//! tells apart (texts that differ in more than literal values). Each input is
//! checked three ways:
//! - as two texts (split at the first NUL byte): equal shapes imply equal
//!   tokenizer shapes;
//! - against variants of itself with its literal values changed;
//! - against every text seen earlier in this process with the same shape
//!   (both texts are printed when that fails, since the crash input alone
//!   does not reproduce it).
//!
//! And nothing panics.
#![no_main]

use std::collections::HashMap;
use std::sync::Mutex;

use gatehouse_decider::shape::{shape, tokenizer_shape};
use libfuzzer_sys::fuzz_target;

/// Texts seen per shape, with the tokenizer's shape; bounded.
static SEEN: Mutex<Option<HashMap<String, (String, Option<String>)>>> = Mutex::new(None);
const SEEN_MAX: usize = 200_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\0').unwrap_or((text, ""));
    let sa = check_alone(a);
    if !b.is_empty() {
        let sb = check_alone(b);
        if sa.is_some() && sa == sb {
            assert_eq!(
                tokenizer_shape(a),
                tokenizer_shape(b),
                "{a:?} and {b:?} share shape {sa:?}"
            );
        }
    }
    if let Some(s) = &sa {
        for v in literal_variants(a) {
            if shape(&v).as_ref() == Some(s) {
                assert_eq!(
                    tokenizer_shape(a),
                    tokenizer_shape(&v),
                    "{a:?} and {v:?} share shape {s:?}"
                );
            }
        }
        remember(a, s);
    }
});

/// The shape of one text (a text with a shape the tokenizer cannot read is
/// decided by its exact text, refused as unparsed: what matters is that every
/// other text of that shape is unreadable too, which the pair checks see).
fn check_alone(text: &str) -> Option<String> {
    shape(text)
}

/// `text` with its digits changed, and with the letters inside its
/// single-quoted strings changed: other literal values, the same statement.
fn literal_variants(text: &str) -> Vec<String> {
    let digits: String = text
        .chars()
        .map(|c| match c {
            '0'..='8' => char::from(c as u8 + 1),
            '9' => '0',
            c => c,
        })
        .collect();
    let mut in_string = false;
    let strings: String = text
        .chars()
        .map(|c| {
            if c == '\'' {
                in_string = !in_string;
                c
            } else if in_string && c.is_ascii_alphabetic() {
                if c == 'z' { 'a' } else { 'z' }
            } else {
                c
            }
        })
        .collect();
    vec![digits, strings]
}

fn remember(text: &str, s: &str) {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    let reference = tokenizer_shape(text);
    match seen.get(s) {
        Some((first, r)) => assert_eq!(
            *r, reference,
            "{first:?} and {text:?} share shape {s:?}; the tokenizer tells them apart"
        ),
        None if seen.len() < SEEN_MAX => {
            seen.insert(s.to_owned(), (text.to_owned(), reference));
        }
        None => {}
    }
}
