//! A script read the way psql reads it: statements end at a semicolon outside
//! quotes, dollar quotes, comments, parentheses and `BEGIN ATOMIC ... END`;
//! a backslash outside those starts a meta-command that runs to the end of the
//! line; `:name`, `:'name'` and `:"name"` are psql variables. Modelled on psql's
//! own scanner (`src/fe_utils/psqlscan.l`, `src/bin/psql/psqlscanslash.l`).
//!
//! The reader is pulled one item at a time, because what follows a `COPY ...
//! FROM STDIN` depends on the server: rows up to `\.` when the COPY started,
//! more SQL when it failed (psql does the same).

/// How psql sends a statement: the meta-command that ended it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendAs {
    /// `;`, `\g`, `\gx`, or the end of the file.
    Run,
    /// `\gset [prefix]`: run, and store the one row's columns as variables.
    Gset(String),
    /// `\gdesc`: described, never run.
    Describe,
    /// `\gexec`: run, then each value of the result run as a statement.
    Gexec,
}

/// A variable reference in a statement, by byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    /// Where it starts (the `:`).
    pub start: usize,
    /// Just past its end.
    pub end: usize,
    /// The variable's name.
    pub name: String,
    /// `:name` (None), `:'name'` (Some('\'')) or `:"name"` (Some('"')).
    pub quote: Option<char>,
}

/// One thing the script asks psql to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A statement.
    Sql {
        /// Its text as written, variables unsubstituted, without the `;`.
        text: String,
        /// The line it starts on (1-based).
        line: usize,
        /// Its psql variables.
        vars: Vec<VarRef>,
        /// How it is sent.
        send: SendAs,
    },
    /// A meta-command other than those that send a statement.
    Meta {
        /// The command without its backslash (`set`, `if`, `c`, ...).
        command: String,
        /// Its arguments, unquoted, variables substituted by [`Reader::meta_args`].
        args: Vec<String>,
        /// The line it is on.
        line: usize,
    },
}

/// The reader: a cursor over one script.
pub struct Reader<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_char(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn var_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The meta-commands that send the query buffer.
fn sends(command: &str) -> Option<SendAs> {
    Some(match command {
        "g" | "gx" | "crosstabview" | "watch" => SendAs::Run,
        "gdesc" => SendAs::Describe,
        "gexec" => SendAs::Gexec,
        "gset" => SendAs::Gset(String::new()),
        _ => return None,
    })
}

impl<'a> Reader<'a> {
    /// A reader at the start of `src`.
    pub fn new(src: &'a str) -> Self {
        Reader {
            src,
            pos: 0,
            line: 1,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn at(&self, i: usize) -> u8 {
        self.bytes().get(i).copied().unwrap_or(0)
    }

    fn advance_to(&mut self, to: usize) {
        let to = to.min(self.src.len());
        self.line += self.bytes()[self.pos..to]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        self.pos = to;
    }

    /// The rows of a `COPY ... FROM STDIN` that the server accepted: the lines
    /// after the statement up to (not including) a line `\.`, or to the end.
    pub fn copy_data(&mut self) -> String {
        // The data starts on the line after the statement's semicolon.
        let rest = &self.src[self.pos..];
        let start = match rest.find('\n') {
            Some(i) => self.pos + i + 1,
            None => self.src.len(),
        };
        self.advance_to(start);
        let mut data = String::new();
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let (line, next) = match rest.find('\n') {
                Some(i) => (&rest[..i], self.pos + i + 1),
                None => (rest, self.src.len()),
            };
            self.advance_to(next);
            if line.trim_end_matches('\r') == "\\." {
                break;
            }
            data.push_str(line);
            data.push('\n');
        }
        data
    }

    /// The next item, or `None` at the end of the script.
    pub fn next_item(&mut self) -> Option<Item> {
        let b = self.bytes();
        let mut start: Option<(usize, usize)> = None; // (byte, line) of the text
        let mut vars = Vec::new();
        let mut paren = 0usize;
        // For `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END`.
        let mut words: Vec<u8> = Vec::new();
        let mut word_count = 0usize;
        let mut begin_depth = 0usize;
        let mut i = self.pos;
        let finish = |r: &mut Self, from: Option<(usize, usize)>, end: usize, vars, send| {
            from.map(|(s, line)| Item::Sql {
                text: r.src[s..end].trim_end().to_owned(),
                line,
                vars,
                send,
            })
        };
        while i < b.len() {
            let c = b[i];
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
                b'-' if self.at(i + 1) == b'-' => {
                    // A comment to the end of the line; psql keeps comments
                    // inside a statement, drops those before it.
                    let end = b[i..]
                        .iter()
                        .position(|x| *x == b'\n')
                        .map_or(b.len(), |p| i + p);
                    i = end;
                }
                b'/' if self.at(i + 1) == b'*' => {
                    let mut depth = 0usize;
                    let mut j = i;
                    while j < b.len() {
                        if b[j] == b'/' && self.at(j + 1) == b'*' {
                            depth += 1;
                            j += 2;
                        } else if b[j] == b'*' && self.at(j + 1) == b'/' {
                            depth -= 1;
                            j += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            j += 1;
                        }
                    }
                    i = j;
                }
                b'\'' => {
                    self.mark(&mut start, i);
                    // E'...' takes backslash escapes (the E was read as a word).
                    let escapes = i > 0
                        && matches!(b[i - 1], b'e' | b'E')
                        && (i < 2 || !ident_char(b[i - 2]));
                    i = self.skip_quoted(i, b'\'', escapes);
                }
                b'"' => {
                    self.mark(&mut start, i);
                    i = self.skip_quoted(i, b'"', false);
                }
                b'$' if !(i > 0 && ident_char(b[i - 1])) => {
                    self.mark(&mut start, i);
                    // `$tag$` opens a dollar quote; `$1` is a parameter.
                    let mut j = i + 1;
                    if ident_start(self.at(j)) {
                        while ident_char(self.at(j)) && self.at(j) != b'$' {
                            j += 1;
                        }
                    }
                    if self.at(j) == b'$' && !self.at(i + 1).is_ascii_digit() {
                        let tag = &self.src[i..=j];
                        i = match self.src[j + 1..].find(tag) {
                            Some(p) => j + 1 + p + tag.len(),
                            None => b.len(),
                        };
                    } else {
                        i += 1;
                    }
                }
                b':' if self.at(i + 1) == b':' => {
                    self.mark(&mut start, i);
                    i += 2;
                }
                b':' => {
                    self.mark(&mut start, i);
                    let (quote, name_at) = match self.at(i + 1) {
                        q @ (b'\'' | b'"') => (Some(q as char), i + 2),
                        _ => (None, i + 1),
                    };
                    let mut j = name_at;
                    while var_char(self.at(j)) {
                        j += 1;
                    }
                    let closed = match quote {
                        Some(q) => self.at(j) == q as u8,
                        None => true,
                    };
                    if j > name_at && closed {
                        let end = if quote.is_some() { j + 1 } else { j };
                        vars.push(VarRef {
                            start: i - start.map_or(i, |s| s.0),
                            end: end - start.map_or(i, |s| s.0),
                            name: self.src[name_at..j].to_owned(),
                            quote,
                        });
                        i = end;
                    } else {
                        i += 1;
                    }
                }
                b'(' => {
                    self.mark(&mut start, i);
                    paren += 1;
                    i += 1;
                }
                b')' => {
                    self.mark(&mut start, i);
                    paren = paren.saturating_sub(1);
                    i += 1;
                }
                b';' if paren == 0 && begin_depth == 0 => {
                    let item = finish(self, start, i, vars, SendAs::Run);
                    self.advance_to(i + 1);
                    match item {
                        Some(item) => return Some(item),
                        // An empty statement: psql sends nothing.
                        None => return self.next_item(),
                    }
                }
                b'\\' => {
                    // A meta-command: its name, then arguments to the end of
                    // the line (or to a `\\` separator).
                    let mut j = i + 1;
                    while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'\\' {
                        j += 1;
                    }
                    let command = self.src[i + 1..j].to_owned();
                    let end = b[j..]
                        .iter()
                        .position(|x| *x == b'\n')
                        .map_or(b.len(), |p| j + p);
                    let args_text = self.src[j..end].to_owned();
                    if command == ";" || command.is_empty() {
                        // `\;`: a semicolon that does not send.
                        self.mark(&mut start, i);
                        i = j;
                        continue;
                    }
                    if let Some(send) = sends(&command) {
                        let send = match send {
                            SendAs::Gset(_) => SendAs::Gset(
                                args_text.split_whitespace().next().unwrap_or("").to_owned(),
                            ),
                            other => other,
                        };
                        let item = finish(self, start, i, vars, send);
                        self.advance_to(end);
                        match item {
                            Some(item) => return Some(item),
                            // `\g` with an empty buffer repeats the previous
                            // statement; nothing new to analyse.
                            None => return self.next_item(),
                        }
                    }
                    if start.is_some() {
                        // psql keeps the buffer across most meta-commands; the
                        // regression scripts never rely on it. Send what there is.
                        let item = finish(self, start, i, vars, SendAs::Run);
                        self.advance_to(i);
                        return item;
                    }
                    let line = self.line_of(i);
                    self.advance_to(end);
                    return Some(Item::Meta {
                        command,
                        args: split_args(&args_text),
                        line,
                    });
                }
                _ => {
                    self.mark(&mut start, i);
                    if ident_start(c) {
                        let mut j = i;
                        while j < b.len() && ident_char(b[j]) {
                            j += 1;
                        }
                        let w = self.src[i..j].to_ascii_lowercase();
                        let first = w.as_bytes()[0];
                        if ["create", "function", "procedure", "or", "replace"]
                            .contains(&w.as_str())
                            && words.len() == word_count
                            && word_count < 4
                        {
                            words.push(first);
                        }
                        word_count += 1;
                        let routine = words.first() == Some(&b'c')
                            && (matches!(words.get(1), Some(b'f' | b'p'))
                                || (words.get(1) == Some(&b'o')
                                    && words.get(2) == Some(&b'r')
                                    && matches!(words.get(3), Some(b'f' | b'p'))));
                        if routine && paren == 0 {
                            match w.as_str() {
                                "begin" => begin_depth += 1,
                                "case" if begin_depth >= 1 => begin_depth += 1,
                                "end" => begin_depth = begin_depth.saturating_sub(1),
                                _ => {}
                            }
                        }
                        i = j;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        let item = finish(self, start, b.len(), vars, SendAs::Run);
        self.advance_to(b.len());
        item
    }

    /// The line byte `i` is on (`i` at or after the cursor).
    fn line_of(&self, i: usize) -> usize {
        self.line
            + self.bytes()[self.pos..i]
                .iter()
                .filter(|x| **x == b'\n')
                .count()
    }

    /// Notes that the statement's text starts at `i`, unless it already has.
    fn mark(&self, start: &mut Option<(usize, usize)>, i: usize) {
        if start.is_none() {
            *start = Some((i, self.line_of(i)));
        }
    }

    /// The index just past a quoted string or name that opens at `open`.
    fn skip_quoted(&self, open: usize, quote: u8, escapes: bool) -> usize {
        let b = self.bytes();
        let mut j = open + 1;
        while j < b.len() {
            if escapes && b[j] == b'\\' {
                j += 2;
            } else if b[j] == quote {
                if self.at(j + 1) == quote {
                    j += 2;
                } else {
                    return j + 1;
                }
            } else {
                j += 1;
            }
        }
        b.len()
    }
}

/// A meta-command's arguments: words, `'quoted'` (with `''` and backslash
/// escapes) and `"quoted"` (kept quoted), `:var` left for the caller.
fn split_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = current.take() {
                    out.push(w);
                }
            }
            '\\' if chars.peek() == Some(&'\\') => break,
            '\'' => {
                let w = current.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            w.push('\'');
                        }
                        '\'' => break,
                        '\\' => match chars.next() {
                            Some('n') => w.push('\n'),
                            Some('t') => w.push('\t'),
                            Some(o) => w.push(o),
                            None => {}
                        },
                        o => w.push(o),
                    }
                }
            }
            o => current.get_or_insert_with(String::new).push(o),
        }
    }
    if let Some(w) = current {
        out.push(w);
    }
    out
}

/// `text` with its variables replaced by their values, as psql does: an
/// unknown variable stays as written; `:'v'` becomes a string literal and
/// `:"v"` a quoted name.
pub fn substitute(text: &str, vars: &[VarRef], value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for v in vars {
        out.push_str(&text[at..v.start]);
        match (value(&v.name), v.quote) {
            (Some(x), None) => out.push_str(&x),
            (Some(x), Some('\'')) => {
                out.push('\'');
                out.push_str(&x.replace('\'', "''"));
                out.push('\'');
            }
            (Some(x), Some(_)) => {
                out.push('"');
                out.push_str(&x.replace('"', "\"\""));
                out.push('"');
            }
            (None, _) => out.push_str(&text[v.start..v.end]),
        }
        at = v.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A meta-command argument with `:var` references replaced (an argument that
/// is exactly `:name` or starts with one).
pub fn meta_arg(arg: &str, value: impl Fn(&str) -> Option<String>) -> String {
    match arg.strip_prefix(':') {
        Some(name) if !name.is_empty() && name.bytes().all(var_char) => {
            value(name).unwrap_or_else(|| arg.to_owned())
        }
        _ => arg.to_owned(),
    }
}

/// psql's reading of a boolean (`\if`): a prefix of true/false/yes/no, on/off, 1/0.
pub fn boolean(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    let prefix = |word: &str| word.starts_with(&v);
    if prefix("true") || prefix("yes") || v == "on" || v == "1" {
        Some(true)
    } else if prefix("false") || prefix("no") || v == "off" || v == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<String> {
        let mut r = Reader::new(src);
        let mut out = Vec::new();
        while let Some(item) = r.next_item() {
            match item {
                Item::Sql { text, .. } => out.push(text),
                Item::Meta { command, .. } => out.push(format!("\\{command}")),
            }
        }
        out
    }

    #[test]
    fn splits_like_psql() {
        assert_eq!(
            texts(
                "select ';' ; select $$;$$; select $a$ $$; $a$;\n-- c;\nselect 1 /* ; /* ; */ */ ;"
            ),
            [
                "select ';'",
                "select $$;$$",
                "select $a$ $$; $a$",
                "select 1 /* ; /* ; */ */"
            ]
        );
        assert_eq!(
            texts("select E'\\';' ; select 'a''b;'"),
            ["select E'\\';'", "select 'a''b;'"]
        );
        assert_eq!(
            texts(
                "create rule r as on insert to t do (insert into a values (1); insert into b values (2));"
            ),
            [
                "create rule r as on insert to t do (insert into a values (1); insert into b values (2))"
            ]
        );
        assert_eq!(
            texts(
                "create function f() returns int begin atomic select 1; select case when true then 1 end; end;\nselect 2;"
            ),
            [
                "create function f() returns int begin atomic select 1; select case when true then 1 end; end",
                "select 2"
            ]
        );
        assert_eq!(texts("begin; select 1; end;"), ["begin", "select 1", "end"]);
        assert_eq!(
            texts("\\set x 1\nselect :x \\gset\nselect $1;"),
            ["\\set", "select :x", "select $1"]
        );
        assert_eq!(
            texts("select a::int, \"x;\"\n;;"),
            ["select a::int, \"x;\""]
        );
    }

    #[test]
    fn copy_data_is_read_on_demand() {
        let src = "copy t from stdin;\n1\tx\n2\ty\n\\.\nselect 1;";
        let mut r = Reader::new(src);
        assert!(matches!(r.next_item(), Some(Item::Sql { .. })));
        assert_eq!(r.copy_data(), "1\tx\n2\ty\n");
        match r.next_item() {
            Some(Item::Sql { text, line, .. }) => {
                assert_eq!((text.as_str(), line), ("select 1", 5))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn variables_are_substituted() {
        let mut r = Reader::new("select :a, :'b', :\"c\", :d, a::int, x[1:2];");
        let Some(Item::Sql { text, vars, .. }) = r.next_item() else {
            panic!()
        };
        let value = |n: &str| (n != "d" && n != "2").then(|| format!("{n}'\""));
        assert_eq!(
            substitute(&text, &vars, value),
            "select a'\", 'b''\"', \"c'\"\"\", :d, a::int, x[1:2]"
        );
        assert_eq!(split_args("x 'a b' :c 'it''s'"), ["x", "a b", ":c", "it's"]);
        assert_eq!(boolean("t"), Some(true));
        assert_eq!(boolean("off"), Some(false));
    }
}
