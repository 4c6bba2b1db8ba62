//! A report as Markdown (GitHub-flavoured tables), for tickets and wikis.

use std::fmt::Write;

use super::integrity::thousands;
use super::report::{Figure, Report, Table};

fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

/// A table, at most `show` rows, with how many were left out.
pub fn table(out: &mut String, t: &Table, show: usize) {
    if t.total == 0 {
        out.push_str("None.\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "| {} |",
        t.columns
            .iter()
            .map(|c| cell(c))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(t.columns.len()));
    for r in t.rows.iter().take(show) {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    let shown = t.rows.len().min(show) as u64;
    if t.total > shown {
        let _ = writeln!(
            out,
            "\n{} of {} rows shown.",
            thousands(shown),
            thousands(t.total)
        );
    }
    out.push('\n');
}

fn figure(out: &mut String, f: &Figure, show: usize, exception: bool) {
    let count = if exception {
        format!(" ({})", thousands(f.table.total))
    } else {
        String::new()
    };
    let _ = writeln!(out, "#### {}{count}\n\n{}\n", f.title, f.summary);
    table(out, &f.table, show);
    let _ = writeln!(out, "Reproduce: `{}`\n", f.reproduce);
}

/// Renders a report.
pub fn render(r: &Report, show: usize) -> String {
    let i = &r.integrity;
    let mut out = String::new();
    let _ = writeln!(out, "# {} — evidence report\n", r.framework_name);
    let _ = writeln!(
        out,
        "- Period: {} to {}\n- Evidence: {}\n- Digest: `{}`\n- Generated: {} by Gatehouse {}\n",
        i.since.as_deref().unwrap_or("the beginning"),
        i.until.as_deref().unwrap_or("now"),
        i.store,
        i.digest,
        r.generated,
        r.gatehouse
    );
    let label = if !i.intact {
        "**BROKEN**"
    } else if i.complete {
        "**Complete and intact**"
    } else {
        "**Intact, not complete**"
    };
    let _ = writeln!(
        out,
        "> {label}: {}\n>\n> Reproduce: `{}`\n",
        i.sentence, i.reproduce
    );
    let s = &r.summary;
    let tiles: Vec<String> = s.tiles().into_iter().map(|(_, label)| label).collect();
    let _ = writeln!(out, "{}\n", tiles.join(" · "));
    out.push_str("| Control | Title | Exceptions |\n|---|---|---|\n");
    for sec in &r.sections {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            cell(&sec.control.id),
            cell(&sec.control.title),
            if sec.exception_count == 0 {
                "none".to_owned()
            } else {
                thousands(sec.exception_count)
            }
        );
    }
    out.push('\n');
    for sec in &r.sections {
        let c = &sec.control;
        let _ = writeln!(
            out,
            "## {} {}\n\n*Asks:* {}\n\n### What the evidence shows\n",
            c.id, c.title, c.asks
        );
        for f in &sec.evidence {
            figure(&mut out, f, show, false);
        }
        let _ = writeln!(out, "### Exceptions\n");
        for f in &sec.exceptions {
            figure(&mut out, f, show, true);
        }
    }
    let _ = writeln!(out, "---\nMade by `{}`.", r.reproduce);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_keep_their_pipes_escaped() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        let mut out = String::new();
        let t = Table {
            columns: vec!["A".into()],
            rows: vec![vec!["1".into()], vec!["2".into()]],
            total: 5,
        };
        table(&mut out, &t, 1);
        assert!(
            out.contains("| 1 |") && !out.contains("| 2 |") && out.contains("1 of 5 rows shown"),
            "{out}"
        );
    }
}
