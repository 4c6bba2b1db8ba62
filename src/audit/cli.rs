//! The answer commands: `report`, `who-changed`, `access review` (flattened
//! into the top level of `gatehouse`), and the runs of `policy suggest` and
//! `policy replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use gatehouse_decider::Policy;

use super::controls::{Controls, EVIDENCE, EXCEPTIONS};
use super::facts::Facts;
use super::report::{Builder, Report};
use super::suggest::Suggest;
use super::{Scope, access, block_on, html, markdown, replay, rfc3339, who_changed};

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One self-contained HTML file (prints well).
    Html,
    /// JSON: every figure's table, for machines.
    Json,
    /// Markdown.
    Md,
}

/// The answer subcommands (flattened into the top level of `gatehouse`).
#[derive(Debug, Subcommand)]
pub enum AnswerCommand {
    /// A report per control of a framework: verifies the evidence first and
    /// says whether it is complete and intact, then for each control what it
    /// asks, what the evidence shows, the exceptions, and the command that
    /// reproduces each figure. Exits 1 when the evidence is broken (the
    /// report is written all the same, and says so at the top).
    Report {
        /// soc2, nist-800-53, hipaa or ffiec (or one your --controls file declares).
        #[arg(long, required_unless_present = "only")]
        framework: Option<String>,
        /// What the report covers.
        #[command(flatten)]
        scope: Scope,
        /// Output format.
        #[arg(long, value_enum, default_value = "html")]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// A controls file of your own (see deploy/controls.toml, built in).
        #[arg(long)]
        controls: Option<PathBuf>,
        /// Print one figure or exception list only, by its name in the
        /// controls file (what each figure's "reproduce" command does).
        #[arg(long)]
        only: Option<String>,
        /// Rows kept per list (changes, refusals, ...); past this they are counted.
        #[arg(long, default_value_t = 500)]
        rows: usize,
        /// Rows shown per table in HTML and Markdown (JSON has all kept rows).
        #[arg(long, default_value_t = 25)]
        show: usize,
    },
    /// Every statement that ran and wrote to TABLE (`accounts`, `public.accounts`,
    /// `hr.*`): who, CI context, the rule or approval (and approver) that
    /// allowed it, rows affected, when.
    WhoChanged {
        /// The table, schema-qualified or not; globs allowed.
        table: String,
        /// What to read.
        #[command(flatten)]
        scope: Scope,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List at most this many (the rest are counted).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Access reviews.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
}

/// `gatehouse access ...`
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Per identity and role: first and last use, sessions, statements by
    /// class, refusals; identities not seen lately, roles nobody assumed
    /// (--config), and rules that allowed nothing (--policy): least-privilege
    /// candidates. The period defaults to the last 90 days.
    Review {
        /// What to read.
        #[command(flatten)]
        scope: Scope,
        /// Identities whose last use is older than this are listed as inactive.
        #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
        inactive: Duration,
        /// The gateway config: its roles, and its policy.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The policy (default: the one the config names).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn days(n: u64) -> Option<SystemTime> {
    SystemTime::now().checked_sub(Duration::from_secs(n * 86_400))
}

fn write_to(out_file: Option<&Path>, out: &mut impl Write, text: &str) -> Result<()> {
    match out_file {
        Some(p) => std::fs::write(p, text).with_context(|| format!("write {}", p.display())),
        None => Ok(out.write_all(text.as_bytes())?),
    }
}

/// Runs an answer command; returns the exit code.
pub fn run(cmd: AnswerCommand, out: &mut impl Write) -> Result<i32> {
    block_on(run_async(cmd, out))
}

async fn run_async(cmd: AnswerCommand, out: &mut impl Write) -> Result<i32> {
    match cmd {
        AnswerCommand::Report {
            framework,
            scope,
            format,
            out: out_file,
            controls,
            only,
            rows,
            show,
        } => {
            let controls = Controls::load(controls.as_deref())?;
            let selected = match &framework {
                Some(f) => Some(controls.of(f)?),
                None => None,
            };
            if let Some(o) = &only
                && !EVIDENCE.contains(&o.as_str())
                && !EXCEPTIONS.contains(&o.as_str())
            {
                bail!(
                    "no figure {o:?}; figures: {}; exceptions: {}",
                    EVIDENCE.join(", "),
                    EXCEPTIONS.join(", ")
                );
            }
            let scope = scope.fixed(None);
            let (integrity, facts) = scope.read(Facts::new(rows)).await?;
            let b = Builder {
                facts: &facts,
                integrity: &integrity,
                scope: &scope,
            };
            let code = if integrity.intact { 0 } else { 1 };
            if let Some(name) = only {
                let fig = if EVIDENCE.contains(&name.as_str()) {
                    b.evidence(&name)
                } else {
                    b.exception(&name)
                };
                let text = match format {
                    Format::Md => {
                        let mut s = format!(
                            "{}\n\n## {}\n\n{}\n\n",
                            integrity.sentence, fig.title, fig.summary
                        );
                        markdown::table(&mut s, &fig.table, usize::MAX);
                        s
                    }
                    _ => {
                        let v = serde_json::json!({"evidence": integrity, "figure": fig});
                        serde_json::to_string_pretty(&v)? + "\n"
                    }
                };
                write_to(out_file.as_deref(), out, &text)?;
                return Ok(code);
            }
            let (framework_name, list) = selected.expect("required unless --only");
            let framework = framework.expect("required unless --only");
            let report = Report {
                reproduce: scope.command(&format!("report --framework {framework}")),
                framework,
                framework_name,
                generated: rfc3339(SystemTime::now()),
                gatehouse: env!("CARGO_PKG_VERSION").into(),
                summary: b.summary(),
                sections: list.iter().map(|c| b.section(c)).collect(),
                integrity: integrity.clone(),
            };
            let text = match format {
                Format::Html => html::render(&report, show),
                Format::Md => markdown::render(&report, show),
                Format::Json => serde_json::to_string_pretty(&report)? + "\n",
            };
            write_to(out_file.as_deref(), out, &text)?;
            if let Some(p) = &out_file {
                eprintln!("{}\nwrote {}", integrity.sentence, p.display());
            }
            Ok(code)
        }
        AnswerCommand::WhoChanged {
            table,
            scope,
            json,
            limit,
        } => {
            let scope = scope.fixed(None);
            let (integrity, w) = scope
                .read(who_changed::WhoChanged::new(&table, limit))
                .await?;
            who_changed::print(out, &table, &integrity, &w, json)?;
            Ok(if integrity.intact { 0 } else { 1 })
        }
        AnswerCommand::Access {
            command:
                AccessCommand::Review {
                    scope,
                    inactive,
                    config,
                    policy,
                    json,
                },
        } => {
            let scope = scope.fixed(days(90));
            let (integrity, facts) = scope.read(Facts::new(0)).await?;
            let intact = integrity.intact;
            let until = scope.until.expect("fixed");
            let r = access::review(
                integrity,
                &facts,
                until,
                inactive,
                config.as_deref(),
                policy.as_deref(),
            )?;
            access::print(out, &r, json)?;
            Ok(if intact { 0 } else { 1 })
        }
    }
}

/// `gatehouse policy suggest`: writes `<out>/policy.toml` and
/// `<out>/policy.tests.toml`; returns the exit code.
pub fn suggest(
    role: &str,
    scope: Scope,
    current: Option<&Path>,
    out_dir: &Path,
    out: &mut impl Write,
) -> Result<i32> {
    block_on(async {
        let scope = scope.fixed(days(30));
        let search_path = match current {
            Some(p) => Policy::load(p)?.search_path,
            None => vec!["public".into()],
        };
        let (integrity, s) = scope.read(Suggest::new(role, search_path)).await?;
        if s.runs == 0 {
            bail!(
                "role {role} ran nothing in the evidence read ({}): nothing to learn from",
                integrity.sentence
            );
        }
        let header = format!(
            "Suggested by `{}`\nfrom {} statements of role {role} in {} sessions.\n{}\nLeast privilege: each rule allows exactly the classes, objects, functions and risks seen, for the identities seen. Review before use.",
            scope.command(&format!(
                "policy suggest --role {}",
                super::shell_word(role)
            )),
            s.runs,
            s.sessions(),
            integrity.sentence
        );
        let suggestion = s.finish(&header, current, "policy.toml")?;
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("create {}", out_dir.display()))?;
        let policy_file = out_dir.join("policy.toml");
        let tests_file = out_dir.join("policy.tests.toml");
        std::fs::write(&policy_file, &suggestion.policy)
            .with_context(|| format!("write {}", policy_file.display()))?;
        std::fs::write(&tests_file, &suggestion.tests)
            .with_context(|| format!("write {}", tests_file.display()))?;
        writeln!(out, "{}", integrity.sentence)?;
        writeln!(
            out,
            "wrote {} ({} rules from {} statements of role {role}) and {} ({} cases)",
            policy_file.display(),
            suggestion.rules,
            s.runs,
            tests_file.display(),
            suggestion.cases
        )?;
        for sql in &s.unparsed {
            writeln!(
                out,
                "not covered (Gatehouse cannot parse it; it ran under allow_unparsed): {sql}"
            )?;
        }
        for f in &suggestion.failing {
            writeln!(out, "case left out: {f}")?;
        }
        Ok(if integrity.intact && suggestion.failing.is_empty() {
            0
        } else {
            1
        })
    })
}

/// `gatehouse policy replay`; returns the exit code (1 with `strict` when a
/// statement that ran would now be blocked, or when the evidence is broken).
pub fn replay(
    policy: &Path,
    scope: Scope,
    json: bool,
    strict: bool,
    out: &mut impl Write,
) -> Result<i32> {
    block_on(async {
        let policy = Policy::load(policy)?;
        let scope = scope.fixed(days(7));
        let (integrity, r) = scope.read(replay::Replay::new(policy)).await?;
        replay::print(out, &integrity, &r, json)?;
        Ok(if !integrity.intact || (strict && r.newly_blocked() > 0) {
            1
        } else {
            0
        })
    })
}
