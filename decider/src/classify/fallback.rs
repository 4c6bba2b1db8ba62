//! Work on the token stream: refuse statements nested too deeply to walk safely,
//! split a text into statements when sqlparser rejects the whole, and recognise
//! the PostgreSQL statements sqlparser 0.63 cannot parse but policy must still
//! decide (DO, ALTER SYSTEM, CHECKPOINT, MOVE, ...). Anything not recognised here
//! stays unparsed, and is blocked unless a rule allows unparsed SQL.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use crate::{ObjectRef, Risk, StatementClass};

/// How many tokens may stand in one chain (operators, set operations, casts,
/// subscripts) summed over the enclosing parentheses. The parser builds such
/// chains without recursion but walking, printing and dropping them recurses
/// once per link; 10,000 keeps that well inside a 2 MiB thread stack.
pub(super) const MAX_CHAIN: usize = 10_000;

/// Refuses token streams whose expression chains could nest deeper than
/// [`MAX_CHAIN`]. A comma ends an expression, so it resets its level's count;
/// UNION/EXCEPT/INTERSECT chains run across commas and are counted apart.
pub(crate) fn check_nesting(tokens: &[TokenWithSpan]) -> Result<(), String> {
    // Per open parenthesis: (tokens since the last comma, set operations).
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let mut total = 0usize;
    for t in tokens {
        let top = levels.len() - 1;
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::SemiColon => {
                levels.truncate(1);
                levels[0] = (0, 0);
                total = 0;
            }
            Token::Comma => {
                total -= levels[top].0;
                levels[top].0 = 0;
            }
            Token::LParen | Token::LBracket => {
                levels[top].0 += 1;
                total += 1;
                levels.push((0, 0));
            }
            Token::RParen | Token::RBracket => {
                if levels.len() > 1
                    && let Some((run, setops)) = levels.pop()
                {
                    total -= run + setops;
                }
            }
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT
                ) =>
            {
                levels[top].1 += 1;
                total += 1;
            }
            _ => {
                levels[top].0 += 1;
                total += 1;
            }
        }
        if total > MAX_CHAIN {
            return Err(format!(
                "statement too deeply nested to analyse (more than {MAX_CHAIN} chained terms)"
            ));
        }
    }
    Ok(())
}

/// Splits a token stream at its semicolons (the tokenizer has already kept the
/// ones inside strings, quoted identifiers, comments and dollar quotes), dropping
/// pieces that hold nothing but whitespace and comments.
pub(super) fn split(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    for t in tokens {
        match t.token {
            Token::SemiColon | Token::EOF => pieces.push(std::mem::take(&mut piece)),
            _ => piece.push(t),
        }
    }
    pieces.push(piece);
    pieces.retain(|p| p.iter().any(|t| !matches!(t.token, Token::Whitespace(_))));
    pieces
}

/// `TABLE [ONLY] name [*]` where a query may stand inside a statement (after
/// `AS`, `(`, `UNION`/`INTERSECT`/`EXCEPT [ALL | DISTINCT]`) is PostgreSQL's
/// `SELECT * FROM name`; sqlparser rejects it there, or reads it wrongly. The
/// tokens with each such query spelled out; unchanged when there is none.
pub(crate) fn table_queries(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let is_table = |t: &TokenWithSpan| is_word(&t.token, "TABLE");
    if !tokens.iter().any(is_table) {
        return tokens;
    }
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len() + 4);
    let mut i = 0;
    while i < tokens.len() {
        let prev = out.iter().rev().find(|t| significant(t)).map(|t| &t.token);
        let after_set_op = |t: &Token| {
            ["UNION", "INTERSECT", "EXCEPT"]
                .iter()
                .any(|w| is_word(t, w))
        };
        let opens_query = match prev {
            Some(Token::LParen) => true,
            Some(t) if is_word(t, "AS") || after_set_op(t) => true,
            Some(t) if is_word(t, "ALL") || is_word(t, "DISTINCT") => out
                .iter()
                .rev()
                .filter(|t| significant(t))
                .nth(1)
                .is_some_and(|t| after_set_op(&t.token)),
            _ => false,
        };
        if opens_query && is_table(&tokens[i]) {
            // The name: `a`, `a.b` or `a.b.c`, after an optional ONLY, before an
            // optional `*`.
            let rest: Vec<(usize, &Token)> = tokens[i + 1..]
                .iter()
                .enumerate()
                .filter(|(_, t)| significant(t))
                .map(|(k, t)| (i + 1 + k, &t.token))
                .take(8)
                .collect();
            let mut k = usize::from(rest.first().is_some_and(|(_, t)| is_word(t, "ONLY")));
            let mut name = Vec::new();
            while let Some((_, Token::Word(w))) = rest.get(k) {
                if w.quote_style.is_none() && super::names::reserved(&w.value) {
                    break;
                }
                name.push(rest[k].1.clone());
                k += 1;
                if matches!(rest.get(k), Some((_, Token::Period))) && name.len() < 3 {
                    name.push(Token::Period);
                    k += 1;
                } else {
                    break;
                }
            }
            if !name.is_empty() && name.last() != Some(&Token::Period) {
                let mut end = rest[k - 1].0 + 1;
                if matches!(rest.get(k), Some((_, Token::Mul))) {
                    end = rest[k].0 + 1;
                }
                let spelled = [
                    Token::make_keyword("SELECT"),
                    Token::Mul,
                    Token::make_keyword("FROM"),
                ];
                for t in spelled.into_iter().chain(name) {
                    out.push(TokenWithSpan::wrap(t));
                    out.push(TokenWithSpan::wrap(Token::Whitespace(
                        sqlparser::tokenizer::Whitespace::Space,
                    )));
                }
                i = end;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// What the fallback makes of a statement sqlparser rejected.
#[derive(Debug)]
pub(super) enum Recognized {
    /// An equivalent spelling sqlparser does parse (`EXPLAIN ANALYSE` →
    /// `EXPLAIN ANALYZE`, `SET SCHEMA 'x'` → `SET search_path TO 'x'`,
    /// `TABLE t` → `SELECT * FROM t`): parse these tokens and analyse the result.
    Reparse(Vec<Token>),
    /// A statement classified from its leading keywords alone.
    Classified {
        class: StatementClass,
        risks: Vec<Risk>,
        writes: Vec<ObjectRef>,
    },
}

/// Recognises a statement sqlparser cannot parse, from its tokens.
pub(super) fn recognize(tokens: &[TokenWithSpan]) -> Option<Recognized> {
    let t: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |i: usize, w: &str| t.get(i).is_some_and(|t| is_word(t, w));
    let classified = |class, risks: &[Risk]| {
        Some(Recognized::Classified {
            class,
            risks: risks.to_vec(),
            writes: Vec::new(),
        })
    };
    let first = t.first()?;
    if is_word(first, "DO") {
        let language = do_block(&t[1..])?;
        let class = if super::functions::untrusted_language(&language) {
            StatementClass::Admin
        } else {
            StatementClass::Procedural
        };
        return classified(class, &[]);
    }
    if is_word(first, "CHECKPOINT") && t.len() == 1 {
        return classified(StatementClass::Admin, &[]);
    }
    if word(0, "ALTER") && word(1, "SYSTEM") {
        // `ALTER SYSTEM SET|RESET name ...`: admin whatever it sets; the setting's
        // own risk too, since it reaches every later session.
        let risks = match t.get(3) {
            Some(Token::Word(w)) => super::functions::setting_risks(&w.value),
            _ => &[],
        };
        return classified(StatementClass::Admin, risks);
    }
    if is_word(first, "MOVE") {
        return classified(StatementClass::Cursor, &[]);
    }
    if (word(0, "PREPARE") && word(1, "TRANSACTION")
        || (word(0, "COMMIT") || word(0, "ROLLBACK")) && word(1, "PREPARED"))
        && t.len() == 3
        && is_string(t[2])
    {
        return classified(StatementClass::Transaction, &[]);
    }
    if word(0, "EXPLAIN") && word(1, "ANALYSE") {
        let mut out: Vec<Token> = t.iter().map(|t| (*t).clone()).collect();
        out[1] = Token::make_keyword("ANALYZE");
        return Some(Recognized::Reparse(out));
    }
    if word(0, "SET") {
        // `SET [SESSION | LOCAL] SCHEMA 'name'` is `SET search_path TO 'name'`.
        let at = if word(1, "SESSION") || word(1, "LOCAL") {
            2
        } else {
            1
        };
        if word(at, "SCHEMA") && t.len() == at + 2 && is_string(t[at + 1]) {
            let mut out: Vec<Token> = t[..at].iter().map(|t| (*t).clone()).collect();
            out.push(Token::make_word("search_path", None));
            out.push(Token::make_keyword("TO"));
            out.push(t[at + 1].clone());
            return Some(Recognized::Reparse(out));
        }
        // `SET [SESSION | LOCAL] ROLE TO name`: `SET ROLE name` in other words.
        if word(at, "ROLE") && t.len() == at + 3 && (word(at + 1, "TO") || *t[at + 1] == Token::Eq)
        {
            let mut out: Vec<Token> = t.iter().map(|t| (*t).clone()).collect();
            out.remove(at + 1);
            return Some(Recognized::Reparse(out));
        }
        // `SET CONSTRAINTS {ALL | name [, ...]} {DEFERRED | IMMEDIATE}`: when
        // the transaction checks its deferrable constraints.
        if word(1, "CONSTRAINTS")
            && (word(t.len() - 1, "DEFERRED") || word(t.len() - 1, "IMMEDIATE"))
            && (t.len() == 4 && word(2, "ALL")
                || t.len() > 3
                    && t[2..t.len() - 1]
                        .iter()
                        .all(|t| matches!(t, Token::Word(_) | Token::Period | Token::Comma)))
        {
            return classified(StatementClass::Transaction, &[]);
        }
        return None;
    }
    if word(0, "TABLE") {
        // `TABLE [ONLY] name [*]` is `SELECT * FROM name`.
        let mut rest = &t[1..];
        if rest.first().is_some_and(|t| is_word(t, "ONLY")) {
            rest = &rest[1..];
        }
        if rest.last() == Some(&&Token::Mul) {
            rest = &rest[..rest.len() - 1];
        }
        let name_shaped = !rest.is_empty()
            && rest.len() % 2 == 1
            && rest.iter().enumerate().all(|(i, t)| {
                if i % 2 == 1 {
                    **t == Token::Period
                } else {
                    matches!(t, Token::Word(_))
                }
            });
        if !name_shaped {
            return None;
        }
        let mut out = vec![
            Token::make_keyword("SELECT"),
            Token::Mul,
            Token::make_keyword("FROM"),
        ];
        out.extend(rest.iter().map(|t| (*t).clone()));
        return Some(Recognized::Reparse(out));
    }
    if word(0, "COPY") {
        // `FREEZE on`, `HEADER off`: PostgreSQL's boolean spellings in COPY
        // options, which sqlparser only takes as TRUE/FALSE.
        let mut out: Vec<Token> = t.iter().map(|t| (*t).clone()).collect();
        let mut changed = false;
        for i in 1..out.len() {
            if (is_word(&out[i - 1], "FREEZE") || is_word(&out[i - 1], "HEADER"))
                && let Some(b) = boolean_word(&out[i])
            {
                out[i] = Token::make_keyword(if b { "TRUE" } else { "FALSE" });
                changed = true;
            }
        }
        return changed.then_some(Recognized::Reparse(out));
    }
    if word(0, "VACUUM") || word(0, "ANALYZE") || word(0, "ANALYSE") {
        // `VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] [(options)] [table [(cols)], ...]`.
        let mut i = 1;
        while t.get(i).is_some_and(|t| {
            ["FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"]
                .iter()
                .any(|w| is_word(t, w))
        }) {
            i += 1;
        }
        if t.get(i) == Some(&&Token::LParen) {
            i = skip_parens(&t, i)?;
        }
        let tables = table_list(&t[i..])?;
        let (risks, writes) = (Vec::new(), tables);
        return Some(Recognized::Classified {
            class: StatementClass::Utility,
            risks,
            writes,
        });
    }
    if word(0, "CLUSTER") {
        // `CLUSTER [VERBOSE] [table [USING index]]`.
        let mut i = 1;
        if word(i, "VERBOSE") {
            i += 1;
        }
        let end = t[i..]
            .iter()
            .position(|t| is_word(t, "USING"))
            .map_or(t.len(), |p| i + p);
        if end < t.len() && !(end + 2 == t.len() && matches!(t[end + 1], Token::Word(_))) {
            return None;
        }
        let writes = table_list(&t[i..end])?;
        // PostgreSQL logs CLUSTER as DDL: it rewrites the table.
        return Some(Recognized::Classified {
            class: StatementClass::Ddl,
            risks: Vec::new(),
            writes,
        });
    }
    if word(0, "REINDEX") {
        // `REINDEX [(options)] {INDEX | TABLE | SCHEMA | DATABASE | SYSTEM} [CONCURRENTLY] [name]`.
        let mut i = 1;
        if t.get(i) == Some(&&Token::LParen) {
            i = skip_parens(&t, i)?;
        }
        let table = word(i, "TABLE");
        if !["INDEX", "TABLE", "SCHEMA", "DATABASE", "SYSTEM"]
            .iter()
            .any(|w| word(i, w))
        {
            return None;
        }
        i += 1;
        if word(i, "CONCURRENTLY") {
            i += 1;
        }
        let names = table_list(&t[i..])?;
        if names.len() > 1 {
            return None;
        }
        return Some(Recognized::Classified {
            class: StatementClass::Utility,
            risks: Vec::new(),
            writes: if table { names } else { Vec::new() },
        });
    }
    if word(0, "REFRESH") && word(1, "MATERIALIZED") && word(2, "VIEW") {
        // `REFRESH MATERIALIZED VIEW [CONCURRENTLY] name [WITH [NO] DATA]`:
        // re-runs the view's query and replaces its rows.
        let mut i = 3;
        if word(i, "CONCURRENTLY") {
            i += 1;
        }
        let mut end = t.len();
        if word(end.saturating_sub(2), "WITH") && word(end - 1, "DATA") {
            end -= 2;
        } else if end >= 3 && word(end - 3, "WITH") && word(end - 2, "NO") && word(end - 1, "DATA")
        {
            end -= 3;
        }
        let names = table_list(&t[i.min(end)..end])?;
        if names.len() != 1 {
            return None;
        }
        return Some(Recognized::Classified {
            class: StatementClass::Ddl,
            risks: Vec::new(),
            writes: names,
        });
    }
    if word(0, "ALTER") && word(1, "DEFAULT") && word(2, "PRIVILEGES") {
        let writes = schemas_after_in_schema(&t);
        return Some(Recognized::Classified {
            class: StatementClass::Dcl,
            risks: vec![Risk::PrivilegeChange],
            writes,
        });
    }
    if word(0, "REASSIGN") && word(1, "OWNED") {
        return classified(
            StatementClass::Dcl,
            &[Risk::RoleChange, Risk::PrivilegeChange],
        );
    }
    if word(0, "DROP") && word(1, "OWNED") {
        let mut risks = vec![Risk::Drop, Risk::PrivilegeChange];
        if t.iter().any(|t| is_word(t, "CASCADE")) {
            risks.push(Risk::DropCascade);
        }
        return Some(Recognized::Classified {
            class: StatementClass::Dcl,
            risks,
            writes: Vec::new(),
        });
    }
    if word(0, "GRANT") || word(0, "REVOKE") {
        // Forms sqlparser rejects, chiefly role membership (`GRANT admin TO bob`):
        // without a top-level ON it is a role grant.
        let on = t.iter().any(|t| is_word(t, "ON"));
        let risks: &[Risk] = if on {
            &[Risk::PrivilegeChange]
        } else {
            &[Risk::PrivilegeChange, Risk::RoleChange]
        };
        return classified(StatementClass::Dcl, risks);
    }
    if (word(0, "CREATE") || word(0, "ALTER") || word(0, "DROP"))
        && (word(1, "ROLE") || word(1, "USER") || word(1, "GROUP"))
    {
        let risks: &[Risk] = if word(0, "DROP") {
            &[Risk::RoleChange, Risk::Drop]
        } else {
            &[Risk::RoleChange]
        };
        return classified(StatementClass::Dcl, risks);
    }
    let owned: Vec<Token> = t.iter().map(|t| (*t).clone()).collect();
    super::rewrite::respell(&owned).map(Recognized::Reparse)
}

/// `DO [LANGUAGE name] 'body' [LANGUAGE name]`: the language (plpgsql when
/// not given), or `None` when the tokens are not a DO block.
fn do_block(rest: &[&Token]) -> Option<String> {
    let mut language = None;
    let mut body = false;
    let mut i = 0;
    while i < rest.len() {
        if is_word(rest[i], "LANGUAGE") && language.is_none() {
            language = Some(match rest.get(i + 1)? {
                Token::Word(w) => fold(w),
                Token::SingleQuotedString(s) => s.clone(),
                Token::DollarQuotedString(s) => s.value.clone(),
                _ => return None,
            });
            i += 2;
        } else if is_string(rest[i]) && !body {
            body = true;
            i += 1;
        } else {
            return None;
        }
    }
    body.then(|| language.unwrap_or_else(|| "plpgsql".to_owned()))
}

/// The index just past the parenthesized group that opens at `open`.
fn skip_parens(t: &[&Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate().skip(open) {
        match tok {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `name [(columns)], ...` where each name is `a`, `a.b` or `a.b.c`; `None` for
/// anything else.
fn table_list(t: &[&Token]) -> Option<Vec<ObjectRef>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let mut parts = Vec::new();
        loop {
            match t.get(i)? {
                Token::Word(w) if w.quote_style.is_some() || !super::names::reserved(&w.value) => {
                    parts.push(fold(w))
                }
                _ => return None,
            }
            i += 1;
            if t.get(i) == Some(&&Token::Period) {
                i += 1;
            } else {
                break;
            }
        }
        if parts.len() > 3 {
            return None;
        }
        out.push(super::names::from_parts(parts));
        if t.get(i) == Some(&&Token::LParen) {
            i = skip_parens(t, i)?;
        }
        match t.get(i) {
            None => break,
            Some(Token::Comma) => i += 1,
            Some(_) => return None,
        }
    }
    Some(out)
}

/// PostgreSQL's spellings of a boolean option value.
fn boolean_word(t: &Token) -> Option<bool> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => match w.value.to_ascii_lowercase().as_str() {
            "on" | "true" => Some(true),
            "off" | "false" => Some(false),
            _ => None,
        },
        Token::Number(n, _) if n == "1" => Some(true),
        Token::Number(n, _) if n == "0" => Some(false),
        _ => None,
    }
}

/// The schemas named by `IN SCHEMA a, b` in ALTER DEFAULT PRIVILEGES.
fn schemas_after_in_schema(t: &[&Token]) -> Vec<ObjectRef> {
    let Some(at) = t
        .windows(2)
        .position(|w| is_word(w[0], "IN") && is_word(w[1], "SCHEMA"))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for tok in &t[at + 2..] {
        match tok {
            Token::Comma => {}
            Token::Word(w)
                if w.quote_style.is_none()
                    && matches!(w.keyword, Keyword::GRANT | Keyword::REVOKE) =>
            {
                break;
            }
            Token::Word(w) => out.push(ObjectRef {
                schema: Some(fold(w)),
                name: "*".to_owned(),
            }),
            _ => break,
        }
    }
    out
}

fn fold(w: &Word) -> String {
    match w.quote_style {
        Some('"') => w.value.clone(),
        _ => w.value.to_ascii_lowercase(),
    }
}

/// An unquoted word, compared case-insensitively.
pub(super) fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn is_string(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::NationalStringLiteral(_)
    )
}

/// The statement's tokens with literals and parameters replaced by `?`, unquoted
/// words upper-cased, comments and whitespace dropped: the text its fingerprint
/// hashes.
pub(super) fn normalized(tokens: &[TokenWithSpan]) -> String {
    let mut out = String::new();
    for t in tokens {
        push_normalized(&mut out, &t.token);
    }
    out
}

/// [`normalized`] for each statement of a token stream, split at semicolons as
/// [`split`] does.
pub(crate) fn normalized_pieces(tokens: &[TokenWithSpan]) -> Vec<String> {
    let mut pieces = vec![String::with_capacity(tokens.len() * 4)];
    for t in tokens {
        match t.token {
            Token::SemiColon => pieces.push(String::new()),
            _ => push_normalized(pieces.last_mut().expect("never empty"), &t.token),
        }
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

fn push_normalized(out: &mut String, token: &Token) {
    if matches!(token, Token::Whitespace(_) | Token::EOF) {
        return;
    }
    if !out.is_empty() {
        out.push(' ');
    }
    match token {
        Token::Word(w) if w.quote_style.is_none() => {
            out.extend(w.value.chars().map(|c| c.to_ascii_uppercase()));
        }
        Token::Number(..) | Token::Placeholder(_) => out.push('?'),
        t if is_string(t) => out.push('?'),
        Token::Comma => out.push(','),
        Token::Period => out.push('.'),
        Token::Eq => out.push('='),
        Token::LParen => out.push('('),
        Token::RParen => out.push(')'),
        Token::Mul => out.push('*'),
        t => {
            use std::fmt::Write;
            // Writing into a String cannot fail.
            let _ = write!(out, "{t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap()
    }

    fn class(sql: &str) -> Option<StatementClass> {
        match recognize(&tokens(sql))? {
            Recognized::Classified { class, .. } => Some(class),
            Recognized::Reparse(_) => None,
        }
    }

    #[test]
    fn nesting_counts_chains_not_width() {
        let chain = |n: usize| format!("SELECT 1{}", "+1".repeat(n));
        assert!(check_nesting(&tokens(&chain(MAX_CHAIN / 3))).is_ok());
        assert!(check_nesting(&tokens(&chain(MAX_CHAIN))).is_err());
        // Parentheses do not reset the chain they sit in.
        let parens = format!("SELECT (1){}", "+(1)".repeat(MAX_CHAIN / 2));
        assert!(check_nesting(&tokens(&parens)).is_err());
        // Commas and semicolons do.
        let wide = format!("SELECT {}", vec!["1 + 1"; MAX_CHAIN].join(", "));
        assert!(check_nesting(&tokens(&wide)).is_ok());
        let many = "SELECT 1 + 1 + 1;".repeat(MAX_CHAIN);
        assert!(check_nesting(&tokens(&many)).is_ok());
        // Set operations chain across the commas of their select lists.
        let unions = format!("SELECT 1{}", " UNION SELECT 1, 2".repeat(MAX_CHAIN + 1));
        assert!(check_nesting(&tokens(&unions)).is_err());
    }

    #[test]
    fn split_keeps_quoted_semicolons() {
        let pieces = split(tokens(
            "SELECT ';'; /* ; */ SELECT $$;$$ ;; -- ;\n SELECT \"a;b\"; ",
        ));
        assert_eq!(pieces.len(), 3);
        assert_eq!(
            normalized_pieces(&tokens("select 1; SELECT 'x' -- c\n;;")),
            vec!["SELECT ?", "SELECT ?"]
        );
    }

    #[test]
    fn table_queries_are_spelled_out() {
        let text = |sql: &str| {
            table_queries(tokens(sql))
                .iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            text("create table x as table only s.t *"),
            "create table x as SELECT * FROM s . t"
        );
        assert_eq!(
            text("select 1 union all (table t) except table u order by 1"),
            "select 1 union all ( SELECT * FROM t ) except SELECT * FROM u order by 1"
        );
        // A column labelled `table`, and TABLE in DDL, stay as they are.
        assert_eq!(text("select 1 as table from t"), "select 1 as table from t");
        assert_eq!(
            text("lock table t; truncate table t"),
            "lock table t ; truncate table t"
        );
    }

    #[test]
    fn do_blocks() {
        assert_eq!(
            class("DO $$ BEGIN END $$"),
            Some(StatementClass::Procedural)
        );
        assert_eq!(class("DO 'begin end'"), Some(StatementClass::Procedural));
        assert_eq!(
            class("DO LANGUAGE plpgsql $x$ begin end $x$"),
            Some(StatementClass::Procedural)
        );
        assert_eq!(
            class("DO $$ x $$ LANGUAGE PLPERLU"),
            Some(StatementClass::Admin)
        );
        assert_eq!(
            class("DO LANGUAGE \"plpython3u\" 'x'"),
            Some(StatementClass::Admin)
        );
        assert_eq!(class("DO"), None);
        assert_eq!(class("DO $$ a $$ $$ b $$"), None);
        assert_eq!(class("DO LANGUAGE plpgsql"), None);
        assert_eq!(class("DO $$ a $$ LANGUAGE"), None);
        assert_eq!(class("DO $$ a $$; DELETE FROM t"), None);
    }

    #[test]
    fn only_known_shapes_are_recognized() {
        assert_eq!(class("CHECKPOINT"), Some(StatementClass::Admin));
        assert_eq!(class("CHECKPOINT now"), None);
        assert_eq!(class("alter system set x = 1"), Some(StatementClass::Admin));
        assert_eq!(class("MOVE LAST IN c"), Some(StatementClass::Cursor));
        assert_eq!(
            class("PREPARE TRANSACTION 'x'"),
            Some(StatementClass::Transaction)
        );
        assert_eq!(class("PREPARE TRANSACTION x"), None);
        assert_eq!(
            class("REFRESH MATERIALIZED VIEW mv"),
            Some(StatementClass::Ddl)
        );
        assert_eq!(class("REFRESH MATERIALIZED VIEW a, b"), None);
        assert_eq!(class("CLUSTER t"), Some(StatementClass::Ddl));
        assert_eq!(class("CLUSTER t USING i j"), None);
        assert_eq!(
            class("VACUUM (FULL, ANALYZE) a, b (c)"),
            Some(StatementClass::Utility)
        );
        assert_eq!(class("VACUUM t WHERE x"), None);
        assert_eq!(class("VACUUM (FULL"), None);
        assert_eq!(
            class("REINDEX (VERBOSE) DATABASE d"),
            Some(StatementClass::Utility)
        );
        assert_eq!(class("REINDEX TABLE a, b"), None);
        assert!(matches!(
            recognize(&tokens("TABLE a.b.c")),
            Some(Recognized::Reparse(_))
        ));
        assert!(recognize(&tokens("TABLE t ORDER BY 1")).is_none());
        assert!(recognize(&tokens("SET SCHEMA 'a', 'b'")).is_none());
    }
}
