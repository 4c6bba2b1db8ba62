//! A report as one self-contained HTML file: inline CSS, no script, no network;
//! reads on screen and prints on A4 or Letter (each control starts a page).

use std::fmt::Write;

use super::integrity::thousands;
use super::report::{Figure, Report, Table};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --ink:#1d2430; --muted:#5b6472; --line:#d9dee5; --soft:#f4f6f8; --ok:#17663a; --okbg:#e7f4ec;
        --warn:#8a5a00; --warnbg:#fdf3dc; --bad:#9b1c1c; --badbg:#fde8e8; --accent:#23416b; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); font:14px/1.5 "Helvetica Neue", Helvetica, Arial, "Liberation Sans", sans-serif; background:#fff; }
main { max-width: 1080px; margin: 0 auto; padding: 32px 40px 64px; }
header.cover { border-bottom: 3px solid var(--accent); padding-bottom: 16px; margin-bottom: 20px; }
.kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--muted); margin: 0; }
h1 { font-size: 28px; margin: 4px 0 8px; color: var(--accent); }
h2 { font-size: 20px; margin: 0 0 4px; color: var(--accent); }
h3 { font-size: 15px; margin: 18px 0 4px; }
dl.meta { display:grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0 0; font-size: 13px; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; word-break: break-all; }
.verdict { border-radius: 6px; padding: 14px 18px; margin: 18px 0; border: 1px solid; }
.verdict .label { font-weight: 700; font-size: 16px; display:block; margin-bottom: 4px; }
.verdict.ok { background: var(--okbg); border-color: #9fd3b2; color: var(--ok); }
.verdict.warn { background: var(--warnbg); border-color: #efcf85; color: var(--warn); }
.verdict.bad { background: var(--badbg); border-color: #f1a9a9; color: var(--bad); }
.verdict p { margin: 0; color: var(--ink); }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap: 10px; margin: 16px 0 24px; }
.card { border:1px solid var(--line); border-radius: 6px; padding: 10px 12px; background: var(--soft); }
.card .num { font-size: 22px; font-weight: 700; display:block; }
.card .what { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 4px; font-size: 12.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td { overflow-wrap: anywhere; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td code, .sql { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11.5px; word-break: break-all; }
nav.toc table td:first-child { white-space: nowrap; }
section.control { border-top: 1px solid var(--line); padding-top: 20px; margin-top: 28px; }
.asks { color: var(--muted); margin: 0 0 8px; font-style: italic; }
.figure { margin: 10px 0 16px; }
.figure p.summary { margin: 2px 0 4px; }
.repro { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11px; color: var(--muted);
         background: var(--soft); border-left: 3px solid var(--line); padding: 4px 8px; margin: 4px 0 0; word-break: break-all; }
.repro b { font-family: inherit; color: var(--ink); font-weight: 600; }
.more { font-size: 12px; color: var(--muted); margin: 2px 0; }
.badge { display:inline-block; border-radius: 10px; padding: 1px 9px; font-size: 12px; font-weight: 600; }
.badge.ok { background: var(--okbg); color: var(--ok); } .badge.warn { background: var(--warnbg); color: var(--warn); }
.badge.bad { background: var(--badbg); color: var(--bad); }
.none { color: var(--ok); margin: 2px 0; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 10px; }
@page { size: auto; margin: 16mm 14mm; }
@media print {
  body { font-size: 11px; } main { max-width: none; padding: 0; }
  section.control { break-before: page; border-top: 0; margin-top: 0; }
  table, .figure, .verdict { break-inside: avoid; }
  tr { break-inside: avoid; }
  th { background: #eef1f4 !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .verdict, .badge, .card { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

fn table(out: &mut String, t: &Table, show: usize) {
    if t.total == 0 {
        out.push_str("<p class=\"none\">None.</p>");
        return;
    }
    let numeric: Vec<bool> = (0..t.columns.len())
        .map(|i| {
            !t.rows.is_empty()
                && t.rows.iter().all(|r| {
                    r.get(i).is_some_and(|c| {
                        !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == ',')
                    })
                })
        })
        .collect();
    out.push_str("<table><thead><tr>");
    for (c, num) in t.columns.iter().zip(&numeric) {
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if *num { " class=\"num\"" } else { "" },
            esc(c)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for r in t.rows.iter().take(show) {
        out.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let col = t.columns.get(i).map(String::as_str).unwrap_or("");
            if col == "SQL" || col == "Digest of what was read" || col == "Object" {
                let _ = write!(out, "<td><code>{}</code></td>", esc(cell));
            } else if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(out, "<td class=\"num\">{}</td>", esc(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(cell));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    let shown = t.rows.len().min(show) as u64;
    if t.total > shown {
        let _ = write!(
            out,
            "<p class=\"more\">{} of {} rows shown; the command below lists {}.</p>",
            thousands(shown),
            thousands(t.total),
            if t.more() > 0 {
                "the first of them"
            } else {
                "them all"
            }
        );
    }
}

fn figure(out: &mut String, f: &Figure, show: usize, exception: bool) {
    let badge = if !exception {
        String::new()
    } else if f.table.total == 0 {
        " <span class=\"badge ok\">none</span>".into()
    } else {
        format!(
            " <span class=\"badge warn\">{}</span>",
            thousands(f.table.total)
        )
    };
    let _ = write!(
        out,
        "<div class=\"figure\" id=\"{}\"><h3>{}{badge}</h3><p class=\"summary\">{}</p>",
        esc(&f.name),
        esc(&f.title),
        esc(&f.summary)
    );
    table(out, &f.table, show);
    let _ = write!(
        out,
        "<p class=\"repro\"><b>Reproduce:</b> {}</p></div>",
        esc(&f.reproduce)
    );
}

/// Renders a report; tables show at most `show` rows (the JSON has them all).
pub fn render(r: &Report, show: usize) -> String {
    let i = &r.integrity;
    let mut out = String::new();
    let title = format!("{} — evidence report", r.framework_name);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&title)
    );
    let period = match (&i.since, &i.until) {
        (Some(s), Some(u)) => format!("{s} to {u}"),
        (Some(s), None) => format!("from {s}"),
        (None, Some(u)) => format!("until {u}"),
        (None, None) => "all recorded sessions".into(),
    };
    let _ = write!(
        out,
        "<header class=\"cover\"><p class=\"kicker\">Gatehouse · database access by machine identities</p><h1>{}</h1><dl class=\"meta\"><dt>Period</dt><dd>{}</dd><dt>Evidence</dt><dd>{}</dd><dt>Digest</dt><dd><code>{}</code></dd><dt>Signing keys</dt><dd>{}</dd><dt>Generated</dt><dd>{} by Gatehouse {}</dd></dl></header>",
        esc(&title),
        esc(&period),
        esc(&i.store),
        esc(&i.digest),
        esc(&i.keys.join(", ")),
        esc(&r.generated),
        esc(&r.gatehouse)
    );
    let (class, label) = if !i.intact {
        ("bad", "The evidence is broken")
    } else if i.complete {
        ("ok", "The evidence is complete and intact")
    } else {
        ("warn", "The evidence is intact but not complete")
    };
    let _ = write!(
        out,
        "<div class=\"verdict {class}\" id=\"integrity\"><span class=\"label\">{label}</span><p>{}</p><p class=\"repro\"><b>Reproduce:</b> {}</p></div>",
        esc(&i.sentence),
        esc(&i.reproduce)
    );
    if !i.intact {
        let mut t = Table {
            columns: ["Session", "Break", "Seqs", "Object", "Detail"]
                .map(String::from)
                .to_vec(),
            rows: Vec::new(),
            total: i.breaks.total,
        };
        for b in &i.breaks.rows {
            t.rows.push(vec![
                b.session.clone(),
                b.kind.clone(),
                b.seqs.clone().unwrap_or_default(),
                b.key.clone(),
                b.detail.clone(),
            ]);
        }
        out.push_str("<h3>Breaks</h3>");
        table(&mut out, &t, show);
    }
    let s = &r.summary;
    out.push_str("<div class=\"cards\">");
    for (num, label) in s.tiles() {
        // The number is its own element; the noun follows it in `label`.
        let what = label.split_once(' ').map_or("", |(_, w)| w);
        let _ = write!(
            out,
            "<div class=\"card\"><span class=\"num\">{}</span><span class=\"what\">{what}</span></div>",
            thousands(num)
        );
    }
    out.push_str("</div>");
    out.push_str("<nav class=\"toc\"><h2>Controls</h2><table><thead><tr><th>Control</th><th>Title</th><th>Exceptions</th></tr></thead><tbody>");
    for sec in &r.sections {
        let c = &sec.control;
        let badge = if sec.exception_count == 0 {
            "<span class=\"badge ok\">none</span>".to_owned()
        } else {
            format!(
                "<span class=\"badge warn\">{}</span>",
                thousands(sec.exception_count)
            )
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"#c-{}\">{}</a></td><td>{}</td><td>{badge}</td></tr>",
            esc(&c.id),
            esc(&c.id),
            esc(&c.title)
        );
    }
    out.push_str("</tbody></table></nav>");
    for sec in &r.sections {
        let c = &sec.control;
        let _ = write!(
            out,
            "<section class=\"control\" id=\"c-{}\"><p class=\"kicker\">{}</p><h2>{} {}</h2><p class=\"asks\">Asks: {}</p>",
            esc(&c.id),
            esc(&r.framework_name),
            esc(&c.id),
            esc(&c.title),
            esc(&c.asks)
        );
        out.push_str("<h3 style=\"margin-top:10px\">What the evidence shows</h3>");
        for f in &sec.evidence {
            figure(&mut out, f, show, false);
        }
        let _ = write!(
            out,
            "<h3>Exceptions {}</h3>",
            if sec.exception_count == 0 {
                "<span class=\"badge ok\">none</span>".to_owned()
            } else {
                format!(
                    "<span class=\"badge warn\">{}</span>",
                    thousands(sec.exception_count)
                )
            }
        );
        for f in &sec.exceptions {
            figure(&mut out, f, show, true);
        }
        out.push_str("</section>");
    }
    let _ = writeln!(
        out,
        "<footer>Made by <code>{}</code>. Every figure counts only records whose signatures, hashes and chains verify; each can be reproduced with the command beneath it.</footer></main></body></html>",
        esc(&r.reproduce)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
