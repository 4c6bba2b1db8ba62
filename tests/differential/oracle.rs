//! PostgreSQL's own account of a statement: whether `log_statement` logs it as
//! `ddl` or `mod`, whether it wrote (a transaction id assigned, or rows counted
//! in `pg_stat_xact_all_tables`), whether it ran DDL (an event trigger), and
//! whether it changed a setting (`pg_settings`).
//!
//! Each statement runs the way psql's autocommit runs it, so that a script's
//! later statements find its earlier ones' objects: outside a transaction block
//! it runs inside `BEGIN ... COMMIT` (observed before the commit, `ROLLBACK` on
//! error); inside the script's own block, inside a savepoint (and an error
//! fails the script's block, as it would under psql). A statement PostgreSQL
//! will not run in a block (VACUUM, CREATE DATABASE, ...) runs bare and is
//! known by its log level alone.
//!
//! The log level is read without running the statement: sent inside a failed
//! transaction, PostgreSQL parses it, logs it per `log_statement` (which a
//! `client_min_messages = log` session receives as a notice), and refuses it.
//! (Both settings are set outside the failed transaction: its failure undoes
//! what was set inside it.) Settings are compared where their source is not
//! the default, so that a library defining settings as it loads (plpgsql on
//! its first call) changes nothing, while SET and RESET do.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

/// What the scratch cluster's template database gets before any script: the
/// probe's helpers (security definer, for scripts that switch to a
/// non-superuser role) and an event trigger that notes DDL, wherever it runs.
pub const HELPERS: &str = r#"
CREATE SCHEMA gh_differential;
GRANT USAGE ON SCHEMA gh_differential TO PUBLIC;
CREATE FUNCTION gh_differential.probe(level text) RETURNS void LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT set_config('gh.saved', current_setting('log_statement') || ',' || current_setting('client_min_messages'), false),
               set_config('log_statement', level, false), set_config('client_min_messages', 'log', false) $$;
CREATE FUNCTION gh_differential.unprobe() RETURNS void LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT set_config('log_statement', split_part(current_setting('gh.saved'), ',', 1), false),
               set_config('client_min_messages', split_part(current_setting('gh.saved'), ',', 2), false) $$;
CREATE FUNCTION gh_differential.state(OUT xid text, OUT ddl text, OUT settings text, OUT tuples bigint)
  LANGUAGE sql SECURITY DEFINER AS $$
  SELECT pg_current_xact_id_if_assigned()::text,
         coalesce(current_setting('gh.ddl', true), ''),
         (SELECT md5(string_agg(name || '=' || coalesce(setting, ''), ',' ORDER BY name))
            FROM pg_settings
           WHERE source <> 'default'
             AND name NOT IN ('log_statement', 'client_min_messages', 'transaction_isolation',
                              'transaction_read_only', 'transaction_deferrable')
             AND name NOT LIKE 'gh.%'),
         (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
            FROM pg_stat_xact_all_tables) $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA gh_differential TO PUBLIC;
CREATE FUNCTION gh_differential.note_ddl() RETURNS event_trigger LANGUAGE plpgsql
  AS $$ BEGIN PERFORM set_config('gh.ddl', tg_tag, true); END $$;
CREATE EVENT TRIGGER gh_differential_ddl ON ddl_command_start
  EXECUTE FUNCTION gh_differential.note_ddl();
"#;

/// How long one round trip may take before the run is declared stuck.
const ROUND_TRIP: Duration = Duration::from_secs(180);

/// The `log_statement` level PostgreSQL gives a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Not logged by `ddl` nor `mod` (a query, a utility statement...).
    All,
    /// Logged by `mod` (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM...).
    Mod,
    /// Logged by `ddl`.
    Ddl,
}

/// How the statement ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Without error.
    Ok,
    /// With this SQLSTATE.
    Error(String),
    /// Not run (why).
    NotRun(&'static str),
}

/// PostgreSQL's account of one statement.
#[derive(Debug, Clone)]
pub struct Observed {
    /// How it ran.
    pub outcome: Outcome,
    /// Its log level (`None`: it did not parse, or could not be probed).
    pub log: Option<LogLevel>,
    /// It wrote something.
    pub wrote: bool,
    /// The tag of DDL it ran (an event trigger saw it), if any.
    pub ddl_event: Option<String>,
    /// It changed a setting of the session.
    pub setting_changed: bool,
    /// It ran outside any transaction block (nothing but its log level is known).
    pub bare: bool,
}

impl Observed {
    fn not_run(why: &'static str) -> Self {
        Observed {
            outcome: Outcome::NotRun(why),
            log: None,
            wrote: false,
            ddl_event: None,
            setting_changed: false,
            bare: false,
        }
    }

    /// Whether PostgreSQL says the statement changed something.
    pub fn changed(&self) -> bool {
        self.wrote
            || self.ddl_event.is_some()
            || self.setting_changed
            || matches!(self.log, Some(LogLevel::Mod | LogLevel::Ddl))
    }
}

/// How the statement is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A simple query.
    Simple,
    /// `COPY ... FROM STDIN`, with rows from the script.
    CopyIn,
    /// `COPY ... TO STDOUT`.
    CopyOut,
}

/// The state of `gh_differential.state()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    xid: Option<String>,
    ddl: String,
    settings: String,
    tuples: i64,
}

/// A session on one database, as psql's would be.
pub struct Session {
    /// The connection.
    pub client: Client,
    notices: UnboundedReceiver<tokio_postgres::error::DbError>,
    /// The script opened a transaction block (BEGIN) that is still open.
    pub in_block: bool,
    /// The first row of the last statement run as a simple query, column name
    /// to value (for `\gset`).
    pub last_row: Option<Vec<(String, Option<String>)>>,
}

fn state_of(messages: &[SimpleQueryMessage]) -> Option<State> {
    messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.columns().len() == 4 => Some(State {
            xid: r.get(0).map(str::to_owned),
            ddl: r.get(1).unwrap_or_default().to_owned(),
            settings: r.get(2).unwrap_or_default().to_owned(),
            tuples: r.get(3).and_then(|t| t.parse().ok()).unwrap_or(0),
        }),
        _ => None,
    })
}

/// The first row of a result, column name to value.
fn first_row(messages: &[SimpleQueryMessage]) -> Option<Vec<(String, Option<String>)>> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                .collect(),
        ),
        _ => None,
    })
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("client: {e}"))
}

impl Session {
    /// Connects to `url`, collecting the server's notices.
    pub async fn connect(url: &str) -> Session {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let (tx, notices): (UnboundedSender<_>, _) = unbounded_channel();
        tokio::spawn(async move {
            let mut messages = std::pin::pin!(futures_util::stream::poll_fn(
                move |cx| connection.poll_message(cx)
            ));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notice(n) = m {
                    let _ = tx.send(n);
                }
            }
        });
        Session {
            client,
            notices,
            in_block: false,
            last_row: None,
        }
    }

    /// Runs a simple query, bounded in time (a stuck run fails the test).
    pub async fn simple(
        &self,
        sql: &str,
    ) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
        tokio::time::timeout(ROUND_TRIP, self.client.simple_query(sql))
            .await
            .unwrap_or_else(|_| panic!("no answer to {sql:?} in {ROUND_TRIP:?}"))
    }

    fn drain(&mut self) -> Vec<String> {
        let mut logged = Vec::new();
        while let Ok(n) = self.notices.try_recv() {
            if n.severity() == "LOG" && n.message().starts_with("statement: ") {
                logged.push(n.message().to_owned());
            }
        }
        logged
    }

    /// Whether `sql` is logged at `level` (`mod` or `ddl`): `None` when the
    /// probe itself could not run (the script's block has failed).
    async fn logged_at(&mut self, sql: &str, level: &str) -> Option<bool> {
        self.drain();
        let (open, close) = if self.in_block {
            (
                "SAVEPOINT gh_probe",
                "ROLLBACK TO gh_probe; RELEASE gh_probe",
            )
        } else {
            ("BEGIN", "ROLLBACK")
        };
        if self
            .simple(&format!("SELECT gh_differential.probe('{level}')"))
            .await
            .is_err()
        {
            // The script's own block had failed before: nothing can be probed.
            return None;
        }
        let failed = self
            .simple(&format!("{open}; SELECT 1/0"))
            .await
            .err()
            .map(|e| sqlstate(&e));
        if failed.as_deref() != Some("22012") {
            let _ = self.simple(close).await;
            let _ = self.simple("SELECT gh_differential.unprobe()").await;
            return None;
        }
        self.drain();
        let refused = self.simple(sql).await;
        let logged = !self.drain().is_empty();
        self.simple(close).await.expect("end of the probe");
        self.simple("SELECT gh_differential.unprobe()")
            .await
            .expect("end of the probe");
        match refused {
            // 25P02: parsed, logged if its level says so, and refused.
            Err(e) if sqlstate(&e) == "25P02" => Some(logged),
            // A syntax error: PostgreSQL never got as far as logging it.
            Err(_) => Some(false),
            // Statements allowed in a failed block (ROLLBACK, ...) never get here.
            Ok(_) => Some(logged),
        }
    }

    /// The statement's log level.
    pub async fn log_level(&mut self, sql: &str) -> Option<LogLevel> {
        if !self.logged_at(sql, "mod").await? {
            return Some(LogLevel::All);
        }
        Some(if self.logged_at(sql, "ddl").await? {
            LogLevel::Ddl
        } else {
            LogLevel::Mod
        })
    }

    async fn send(
        &mut self,
        sql: &str,
        wire: Wire,
        copy_rows: &mut dyn FnMut() -> String,
    ) -> Result<(), tokio_postgres::Error> {
        match wire {
            Wire::Simple => {
                let messages = self.simple(sql).await?;
                self.last_row = first_row(&messages);
                Ok(())
            }
            Wire::CopyIn => {
                let sink = self.client.copy_in::<_, bytes::Bytes>(sql).await?;
                let mut sink = Box::pin(sink);
                // The server takes rows: now, and only now, they are not SQL.
                sink.send(bytes::Bytes::from(copy_rows())).await?;
                sink.as_mut().finish().await.map(drop)
            }
            Wire::CopyOut => {
                let stream = self.client.copy_out(sql).await?;
                let mut stream = Box::pin(stream);
                while let Some(chunk) = stream.next().await {
                    chunk?;
                }
                Ok(())
            }
        }
    }

    /// A transaction-control statement (BEGIN, COMMIT, SAVEPOINT, ...): run
    /// bare, and the script's block state follows it.
    pub async fn control(&mut self, sql: &str, opens: Option<bool>) -> Observed {
        let outcome = match self.simple(sql).await {
            Ok(_) => {
                if let Some(open) = opens {
                    self.in_block = open;
                }
                Outcome::Ok
            }
            Err(e) => Outcome::Error(sqlstate(&e)),
        };
        Observed {
            outcome,
            log: Some(LogLevel::All),
            wrote: false,
            ddl_event: None,
            setting_changed: false,
            bare: true,
        }
    }

    /// Runs `sql` and observes it. `copy_rows` supplies a COPY FROM STDIN's
    /// rows, asked for only once the server is ready for them.
    pub async fn run(
        &mut self,
        sql: &str,
        wire: Wire,
        copy_rows: &mut dyn FnMut() -> String,
    ) -> Observed {
        let log = self.log_level(sql).await;
        if log.is_none() {
            // The script's block has failed: psql's statement would fail too.
            let mut o = Observed::not_run("the script's transaction block had failed");
            if let Err(e) = self.simple(sql).await {
                o.outcome = Outcome::Error(sqlstate(&e));
            }
            return o;
        }
        let (open, release) = if self.in_block {
            ("SAVEPOINT gh_run", "RELEASE gh_run")
        } else {
            ("BEGIN", "COMMIT")
        };
        let before = self
            .simple(&format!(
                "{open}; SELECT set_config('gh.ddl', '', true); SELECT * FROM gh_differential.state()"
            ))
            .await
            .ok()
            .and_then(|m| state_of(&m));
        let Some(before) = before else {
            let _ = self
                .simple(if self.in_block {
                    "ROLLBACK TO gh_run"
                } else {
                    "ROLLBACK"
                })
                .await;
            return Observed {
                log,
                ..Observed::not_run("the observation could not start")
            };
        };
        let sent = self.send(sql, wire, copy_rows).await;
        match sent {
            Ok(()) => {
                let after = self
                    .simple("SELECT * FROM gh_differential.state()")
                    .await
                    .ok()
                    .and_then(|m| state_of(&m))
                    .unwrap_or_default();
                let committed = self.simple(release).await;
                let wrote =
                    (before.xid.is_none() && after.xid.is_some()) || after.tuples > before.tuples;
                Observed {
                    outcome: match committed {
                        Ok(_) => Outcome::Ok,
                        // A deferred constraint, say: the statement's work is undone.
                        Err(e) => Outcome::Error(sqlstate(&e)),
                    },
                    log,
                    wrote,
                    ddl_event: (!after.ddl.is_empty()).then_some(after.ddl),
                    setting_changed: before.settings != after.settings,
                    bare: false,
                }
            }
            Err(e) => {
                let state = sqlstate(&e);
                if self.in_block {
                    // Undo the statement, then fail the script's block as psql's
                    // statement would have.
                    let _ = self.simple("ROLLBACK TO gh_run; RELEASE gh_run").await;
                    let _ = self.simple("SELECT 1/0").await;
                } else {
                    let _ = self.simple("ROLLBACK").await;
                }
                // 25001: not in a transaction block; 2D000: a procedure that
                // commits. psql runs them bare; so does this, observing nothing.
                if (state == "25001" || state == "2D000") && !self.in_block {
                    let outcome = match self.send(sql, wire, copy_rows).await {
                        Ok(()) => Outcome::Ok,
                        Err(e) => Outcome::Error(sqlstate(&e)),
                    };
                    return Observed {
                        outcome,
                        log,
                        wrote: false,
                        ddl_event: None,
                        setting_changed: false,
                        bare: true,
                    };
                }
                Observed {
                    outcome: Outcome::Error(state),
                    log,
                    wrote: false,
                    ddl_event: None,
                    setting_changed: false,
                    bare: false,
                }
            }
        }
    }
}

/// Proves on a known statement of each kind that the oracles see what they
/// must: were they blind, the property could never fail.
pub async fn self_check(s: &mut Session) {
    fn nothing() -> String {
        String::new()
    }
    let nothing = &mut nothing;
    let o = s
        .run(
            "CREATE TABLE gh_self_check (a int)",
            Wire::Simple,
            &mut *nothing,
        )
        .await;
    assert_eq!(
        (&o.outcome, o.log),
        (&Outcome::Ok, Some(LogLevel::Ddl)),
        "{o:?}"
    );
    assert_eq!(o.ddl_event.as_deref(), Some("CREATE TABLE"), "{o:?}");
    assert!(o.wrote, "{o:?}");
    let o = s
        .run(
            "INSERT INTO gh_self_check VALUES (1)",
            Wire::Simple,
            &mut *nothing,
        )
        .await;
    assert!(
        o.wrote && o.log == Some(LogLevel::Mod) && o.ddl_event.is_none(),
        "{o:?}"
    );
    let o = s
        .run("COPY gh_self_check FROM STDIN", Wire::CopyIn, &mut || {
            "2\n3\n".into()
        })
        .await;
    assert!(o.wrote && o.log == Some(LogLevel::Mod), "{o:?}");
    let o = s
        .run(
            "SELECT count(*) FROM gh_self_check",
            Wire::Simple,
            &mut *nothing,
        )
        .await;
    assert!(
        !o.changed() && o.outcome == Outcome::Ok && o.log == Some(LogLevel::All),
        "{o:?}"
    );
    assert_eq!(
        s.last_row.as_ref().and_then(|r| r[0].1.clone()).as_deref(),
        Some("3")
    );
    let o = s
        .run(
            "SELECT set_config('work_mem', '1MB', false)",
            Wire::Simple,
            &mut *nothing,
        )
        .await;
    assert!(o.setting_changed && !o.wrote, "{o:?}");
    // Inside the script's own block, a write after another is still seen.
    s.control("BEGIN", Some(true)).await;
    s.run(
        "INSERT INTO gh_self_check VALUES (4)",
        Wire::Simple,
        &mut *nothing,
    )
    .await;
    let o = s
        .run(
            "UPDATE gh_self_check SET a = 5 WHERE a = 4",
            Wire::Simple,
            &mut *nothing,
        )
        .await;
    assert!(o.wrote, "{o:?}");
    let o = s.run("SELECT 1/0", Wire::Simple, &mut *nothing).await;
    assert_eq!(o.outcome, Outcome::Error("22012".into()));
    // ... and an error fails the block, as under psql.
    let o = s.run("SELECT 1", Wire::Simple, &mut *nothing).await;
    assert!(
        matches!(o.outcome, Outcome::NotRun(_) | Outcome::Error(_)),
        "{o:?}"
    );
    s.control("ROLLBACK", Some(false)).await;
    let o = s
        .run("VACUUM gh_self_check", Wire::Simple, &mut *nothing)
        .await;
    assert!(o.bare && o.outcome == Outcome::Ok, "{o:?}");
    let o = s
        .run("DROP TABLE gh_self_check", Wire::Simple, &mut *nothing)
        .await;
    assert_eq!((o.outcome, o.log), (Outcome::Ok, Some(LogLevel::Ddl)));
    let o = s.run("SELECT 1 +", Wire::Simple, &mut *nothing).await;
    assert_eq!(o.outcome, Outcome::Error("42601".into()));
    s.simple("RESET work_mem").await.unwrap();
}
