//! `gatehouse approvals watch`: a terminal view of pending requests where an
//! approver approves (`a`) or denies (`d`) the selected one with a key press.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{ApprovalRecord, ApproverDecision, Choice};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState, Wrap};

use crate::approvals_cli::{Backend, Connection, ci_line};

/// How often the list is read again.
const REFRESH: Duration = Duration::from_secs(1);

/// What the keyboard is doing.
enum Mode {
    /// Moving and deciding.
    Browse,
    /// Typing the comment of a decision (`A`, `D`).
    Comment(Choice, String),
}

struct View {
    records: Vec<ApprovalRecord>,
    table: TableState,
    status: String,
    mode: Mode,
}

/// Runs the view until `q` (or Esc, Ctrl-C).
pub fn run(rt: &tokio::runtime::Runtime, conn: &Connection) -> Result<i32> {
    let backend = rt.block_on(Backend::connect(conn))?;
    // Read once before taking over the terminal: a bad token or an unreachable
    // service is an ordinary error message, not a broken screen.
    let records = rt.block_on(backend.query(&conn.token, None))?;
    let mut view = View {
        records,
        table: TableState::default(),
        status: "a approve · d deny · A/D with a comment · ↑/↓ select · q quit".into(),
        mode: Mode::Browse,
    };
    view.fix_selection();
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> Result<()> {
        let mut refreshed = Instant::now();
        loop {
            terminal.draw(|f| draw(f, &mut view))?;
            let wait = REFRESH.saturating_sub(refreshed.elapsed());
            if event::poll(wait)?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                match &mut view.mode {
                    Mode::Browse => match k.code {
                        _ if ctrl_c => return Ok(()),
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Up | KeyCode::Char('k') => view.table.select_previous(),
                        KeyCode::Down | KeyCode::Char('j') => view.table.select_next(),
                        KeyCode::Char('a') => {
                            view.decide(rt, &backend, conn, Choice::Approve, None)
                        }
                        KeyCode::Char('d') => view.decide(rt, &backend, conn, Choice::Deny, None),
                        KeyCode::Char('A') if view.selected().is_some() => {
                            view.mode = Mode::Comment(Choice::Approve, String::new());
                        }
                        KeyCode::Char('D') if view.selected().is_some() => {
                            view.mode = Mode::Comment(Choice::Deny, String::new());
                        }
                        _ => {}
                    },
                    Mode::Comment(choice, text) => match k.code {
                        _ if ctrl_c => return Ok(()),
                        KeyCode::Esc => view.mode = Mode::Browse,
                        KeyCode::Enter => {
                            let (choice, text) = (*choice, std::mem::take(text));
                            view.mode = Mode::Browse;
                            let comment = (!text.trim().is_empty()).then_some(text);
                            view.decide(rt, &backend, conn, choice, comment);
                        }
                        KeyCode::Backspace => {
                            text.pop();
                        }
                        KeyCode::Char(c) if text.len() < 500 => text.push(c),
                        _ => {}
                    },
                }
                view.fix_selection();
                continue;
            }
            if refreshed.elapsed() >= REFRESH {
                view.refresh(rt, &backend, conn);
                refreshed = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result.map(|()| 0)
}

impl View {
    fn selected(&self) -> Option<&ApprovalRecord> {
        self.table.selected().and_then(|i| self.records.get(i))
    }

    fn fix_selection(&mut self) {
        match (self.table.selected(), self.records.len()) {
            (_, 0) => self.table.select(None),
            (None, _) => self.table.select(Some(0)),
            (Some(i), n) if i >= n => self.table.select(Some(n - 1)),
            _ => {}
        }
    }

    fn refresh(&mut self, rt: &tokio::runtime::Runtime, backend: &Backend, conn: &Connection) {
        let keep = self.selected().map(|r| r.request.id);
        match rt.block_on(backend.query(&conn.token, None)) {
            Ok(records) => {
                self.records = records;
                if let Some(id) = keep
                    && let Some(i) = self.records.iter().position(|r| r.request.id == id)
                {
                    self.table.select(Some(i));
                }
            }
            Err(e) => self.status = format!("cannot list requests: {e}"),
        }
        self.fix_selection();
    }

    /// Sends the decision on the selected request, once (see [`Backend::decide`]).
    fn decide(
        &mut self,
        rt: &tokio::runtime::Runtime,
        backend: &Backend,
        conn: &Connection,
        decision: Choice,
        comment: Option<String>,
    ) {
        let Some(r) = self.selected() else {
            self.status = "no request selected".into();
            return;
        };
        let id = r.request.id;
        let d = ApproverDecision {
            v: SCHEMA_VERSION,
            request: id,
            // The statement on the screen is the one decided.
            statement_hash: r.request.statement_hash.clone(),
            decision,
            comment,
            token: conn.token.clone(),
        };
        self.status = match rt.block_on(backend.decide(&d)) {
            Ok(reply) if reply.accepted => {
                format!("{id}: {}", reply.state.map_or("decided", |s| s.name()))
            }
            Ok(reply) => format!("{id}: refused: {}", reply.error.as_deref().unwrap_or("?")),
            Err(e) => format!("{id}: {e}"),
        };
        self.refresh(rt, backend, conn);
    }
}

fn time_left(deadline_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let left = deadline_ms.saturating_sub(now) / 1000;
    if left == 0 {
        "expired".into()
    } else {
        format!("{}m{:02}s", left / 60, left % 60)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn draw(f: &mut ratatui::Frame<'_>, view: &mut View) {
    let [list, detail, status] = Layout::vertical([
        Constraint::Min(5),
        Constraint::Length(9),
        Constraint::Length(3),
    ])
    .areas(f.area());
    let rows = view.records.iter().map(|r| {
        let q = &r.request;
        Row::new(vec![
            q.id.to_string()[..8].to_owned(),
            time_left(q.deadline_ms),
            q.requester.subject.clone(),
            format!(
                "{} run {}",
                q.ci.repository.as_deref().unwrap_or("-"),
                q.ci.run_id.as_deref().unwrap_or("-")
            ),
            one_line(&q.sql),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(32),
            Constraint::Length(24),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["id", "left", "requester", "ci", "statement"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(Block::new().borders(Borders::ALL).title(format!(
        " pending approval requests: {} ",
        view.records.len()
    )));
    f.render_stateful_widget(table, list, &mut view.table);

    let lines: Vec<Line<'_>> = match view.selected() {
        None => vec![Line::from("no pending requests of your groups")],
        Some(r) => {
            let q = &r.request;
            let mut l = vec![
                Line::from(format!("request   {}", q.id)),
                Line::from(format!(
                    "requester {} ({}) on role {}",
                    q.requester.subject, q.requester.issuer, q.role
                )),
                Line::from(ci_line(&q.ci)),
                Line::from(format!(
                    "rule      {} ({}); approvers {}; until {}",
                    q.rule.as_deref().unwrap_or("?"),
                    q.reason,
                    q.approvers,
                    q.deadline
                )),
                Line::from(format!("statement {}", one_line(&q.sql))),
            ];
            if let Some(p) = &q.params {
                l.push(Line::from(format!(
                    "params    {}",
                    serde_json::to_string(p).unwrap_or_default()
                )));
            }
            l
        }
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::new().borders(Borders::ALL).title(" selected ")),
        detail,
    );
    let footer = match &view.mode {
        Mode::Browse => view.status.clone(),
        Mode::Comment(c, text) => format!(
            "{} with comment (Enter sends, Esc cancels): {text}",
            if *c == Choice::Approve {
                "approve"
            } else {
                "deny"
            }
        ),
    };
    f.render_widget(
        Paragraph::new(footer).block(Block::new().borders(Borders::ALL)),
        status,
    );
}
