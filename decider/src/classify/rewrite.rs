//! PostgreSQL spellings sqlparser 0.64 rejects, respelled as ones it reads that
//! name the same relations and call the same functions: the fallback parses the
//! respelled tokens when the original fails. Each rewrite drops or replaces only
//! tokens that can name no relation and call no function (literals, keywords,
//! column names), so the analysis of the respelled statement is the original's.

use sqlparser::tokenizer::Token;

use super::fallback::is_word;

/// The statement's tokens (whitespace dropped) respelled, or `None` when no
/// rewrite applies.
pub(super) fn respell(t: &[Token]) -> Option<Vec<Token>> {
    let mut out: Vec<Token> = t.to_vec();
    let mut changed = false;
    for rewrite in [
        frame_exclusion,
        frame_offset_casts,
        literal_subscripts,
        current_of,
        search_and_cycle,
        conflict_target,
    ] {
        if let Some(next) = rewrite(&out) {
            out = next;
            changed = true;
        }
    }
    changed.then_some(out)
}

fn word(t: Option<&Token>, w: &str) -> bool {
    t.is_some_and(|t| is_word(t, w))
}

/// The index of the `)` that closes the `(` at `open`.
fn closing(t: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate().skip(open) {
        match tok {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A window frame's `EXCLUDE CURRENT ROW | GROUP | TIES | NO OTHERS` (it picks
/// rows of the frame, nothing else).
fn frame_exclusion(t: &[Token]) -> Option<Vec<Token>> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    let mut changed = false;
    while i < t.len() {
        let after_frame = ["PRECEDING", "FOLLOWING", "ROW"]
            .iter()
            .any(|w| word(out.last(), w));
        if after_frame && is_word(&t[i], "EXCLUDE") {
            let len = if word(t.get(i + 1), "CURRENT") && word(t.get(i + 2), "ROW")
                || word(t.get(i + 1), "NO") && word(t.get(i + 2), "OTHERS")
            {
                3
            } else if word(t.get(i + 1), "GROUP") || word(t.get(i + 1), "TIES") {
                2
            } else {
                0
            };
            if len > 0 {
                i += len;
                changed = true;
                continue;
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    changed.then_some(out)
}

/// `'1 year'::interval PRECEDING` in a RANGE frame: the cast dropped (a type
/// name, read by sqlparser as part of the offset only without it).
fn frame_offset_casts(t: &[Token]) -> Option<Vec<Token>> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    let mut changed = false;
    while i < t.len() {
        if t[i] == Token::DoubleColon {
            let words =
                |len: usize| (1..=len).all(|k| matches!(t.get(i + k), Some(Token::Word(_))));
            let bound = |at: usize| word(t.get(at), "PRECEDING") || word(t.get(at), "FOLLOWING");
            if let Some(len) = [1usize, 2]
                .into_iter()
                .find(|&len| words(len) && bound(i + len + 1))
            {
                i += len + 1;
                changed = true;
                continue;
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    changed.then_some(out)
}

/// `col[1]`, `col[1:2]` as an assignment target or an INSERT column (or before
/// `=`, `,` or `)` anywhere): the subscripts dropped when they hold nothing but
/// numbers. The column is still the one written or read.
fn literal_subscripts(t: &[Token]) -> Option<Vec<Token>> {
    let mut out: Vec<Token> = Vec::with_capacity(t.len());
    let mut i = 0;
    let mut changed = false;
    while i < t.len() {
        if t[i] == Token::LBracket && matches!(out.last(), Some(Token::Word(_))) {
            // Every consecutive literal subscript.
            let mut j = i;
            while t.get(j) == Some(&Token::LBracket) {
                let Some(close) = t[j + 1..].iter().position(|x| *x == Token::RBracket) else {
                    break;
                };
                let inner = &t[j + 1..j + 1 + close];
                let literal = !inner.is_empty()
                    && inner
                        .iter()
                        .all(|x| matches!(x, Token::Number(..) | Token::Colon | Token::Minus));
                if !literal {
                    break;
                }
                j += close + 2;
            }
            if j > i && matches!(t.get(j), Some(Token::Eq | Token::Comma | Token::RParen)) {
                i = j;
                changed = true;
                continue;
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    changed.then_some(out)
}

/// `WHERE CURRENT OF cursor` (UPDATE, DELETE): the cursor's row, spelled as a
/// condition on that row's `ctid` against a parameter, which is what it is.
fn current_of(t: &[Token]) -> Option<Vec<Token>> {
    let at = t.windows(4).position(|w| {
        is_word(&w[0], "WHERE")
            && is_word(&w[1], "CURRENT")
            && is_word(&w[2], "OF")
            && matches!(w[3], Token::Word(_))
    })?;
    let mut out = t[..=at].to_vec();
    out.push(Token::make_word("ctid", None));
    out.push(Token::Eq);
    out.push(Token::Placeholder("$1".into()));
    out.extend_from_slice(&t[at + 4..]);
    Some(out)
}

/// A recursive CTE's `SEARCH {DEPTH | BREADTH} FIRST BY cols SET col` and
/// `CYCLE cols SET col [TO v DEFAULT v] USING col`: they name columns only.
fn search_and_cycle(t: &[Token]) -> Option<Vec<Token>> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    let mut changed = false;
    // Column names and commas from `from`; the index after them.
    let columns = |from: usize| {
        let mut k = from;
        while matches!(t.get(k), Some(Token::Word(_))) {
            k += 1;
            if t.get(k) == Some(&Token::Comma) {
                k += 1;
            } else {
                break;
            }
        }
        k
    };
    let literal = |x: Option<&Token>| {
        matches!(
            x,
            Some(Token::Number(..) | Token::SingleQuotedString(_) | Token::Word(_))
        )
    };
    while i < t.len() {
        let after_cte = out.last() == Some(&Token::RParen);
        if after_cte
            && is_word(&t[i], "SEARCH")
            && (word(t.get(i + 1), "DEPTH") || word(t.get(i + 1), "BREADTH"))
            && word(t.get(i + 2), "FIRST")
            && word(t.get(i + 3), "BY")
        {
            let k = columns(i + 4);
            if k > i + 4 && word(t.get(k), "SET") && matches!(t.get(k + 1), Some(Token::Word(_))) {
                i = k + 2;
                changed = true;
                continue;
            }
        }
        if after_cte && is_word(&t[i], "CYCLE") {
            let k = columns(i + 1);
            if k > i + 1 && word(t.get(k), "SET") && matches!(t.get(k + 1), Some(Token::Word(_))) {
                let mut m = k + 2;
                if word(t.get(m), "TO")
                    && literal(t.get(m + 1))
                    && word(t.get(m + 2), "DEFAULT")
                    && literal(t.get(m + 3))
                {
                    m += 4;
                }
                if word(t.get(m), "USING") && matches!(t.get(m + 1), Some(Token::Word(_))) {
                    i = m + 2;
                    changed = true;
                    continue;
                }
            }
        }
        out.push(t[i].clone());
        i += 1;
    }
    changed.then_some(out)
}

/// `ON CONFLICT (index expressions, opclasses, collations) [WHERE p] DO ...`:
/// the inference target dropped. It only picks the unique index to arbitrate
/// on; PostgreSQL evaluates none of it against rows.
fn conflict_target(t: &[Token]) -> Option<Vec<Token>> {
    let at = t.windows(3).position(|w| {
        is_word(&w[0], "ON") && is_word(&w[1], "CONFLICT") && w[2] == Token::LParen
    })?;
    let open = at + 2;
    let close = closing(t, open)?;
    let mut end = close + 1;
    if word(t.get(end), "WHERE") {
        end += t[end..].iter().position(|x| is_word(x, "DO"))?;
    }
    if !word(t.get(end), "DO") {
        return None;
    }
    let mut out = t[..open].to_vec();
    // sqlparser needs a target for DO UPDATE: a column list it reads.
    out.push(Token::LParen);
    out.push(Token::make_word("ctid", None));
    out.push(Token::RParen);
    out.extend_from_slice(&t[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn respelled(sql: &str) -> Option<String> {
        let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .unwrap()
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect();
        respell(&tokens).map(|t| {
            t.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    #[test]
    fn respellings() {
        assert_eq!(
            respelled("select sum(x) over (rows between 1 preceding and current row exclude no others) from t").as_deref(),
            Some("select sum ( x ) over ( rows between 1 preceding and current row ) from t")
        );
        assert_eq!(
            respelled("select count(*) over (order by d range between '1 day'::interval preceding and current row) from t").as_deref(),
            Some("select count ( * ) over ( order by d range between '1 day' preceding and current row ) from t")
        );
        assert_eq!(
            respelled("update t set a[1:2] = '{1,2}', b[-1][3] = 0 where c[1] = 2").as_deref(),
            Some("update t set a = '{1,2}' , b = 0 where c = 2")
        );
        assert_eq!(respelled("update t set a[i] = 1"), None);
        assert_eq!(
            respelled("delete from t where current of c").as_deref(),
            Some("delete from t where ctid = $1")
        );
        assert_eq!(
            respelled("with recursive r(a) as (select 1) search depth first by a set o cycle a set c to 1 default 0 using p select * from r").as_deref(),
            Some("with recursive r ( a ) as ( select 1 ) select * from r")
        );
        assert_eq!(
            respelled("insert into t values (1) on conflict (lower(a), b collate \"C\") where b > 0 do nothing").as_deref(),
            Some("insert into t values ( 1 ) on conflict ( ctid ) do nothing")
        );
        assert_eq!(respelled("select 1"), None);
    }
}
