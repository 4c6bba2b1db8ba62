//! The mapping of controls to evidence: `deploy/controls.toml`, built in, or a
//! copy a compliance person extended (`gatehouse report --controls FILE`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The built-in mapping.
pub const BUILT_IN: &str = include_str!("../../deploy/controls.toml");

/// Figures a control section can show.
pub const EVIDENCE: &[&str] = &[
    "integrity",
    "identities",
    "statements",
    "rules",
    "changes",
    "change_authority",
    "refusals",
    "masked",
    "approvals",
    "shadow",
    "transport",
];

/// Exceptions a control section can list.
pub const EXCEPTIONS: &[&str] = &[
    "broken_evidence",
    "open_sessions",
    "never_completed",
    "refusals",
    "decider_unavailable",
    "unapproved_privileged",
    "failed_changes",
    "approval_exceptions",
    "pending_approvals",
    "cleartext_sessions",
    "shadow_blocks",
];

/// One control.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The framework's id.
    pub framework: String,
    /// The control's id in the framework.
    pub id: String,
    /// Its title.
    pub title: String,
    /// What it asks, in one line.
    pub asks: String,
    /// Figures that show it working.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// What an auditor must look at.
    #[serde(default)]
    pub exceptions: Vec<String>,
}

/// The mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controls {
    /// Framework id to its full name.
    pub frameworks: BTreeMap<String, String>,
    /// Every control, in file order.
    pub controls: Vec<Control>,
}

impl Controls {
    /// Parses and checks a mapping; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let c: Controls =
            toml::from_str(text).with_context(|| format!("{origin}: not a controls file"))?;
        for ctl in &c.controls {
            if !c.frameworks.contains_key(&ctl.framework) {
                bail!(
                    "{origin}: control {} names framework {:?}, which [frameworks] does not declare",
                    ctl.id,
                    ctl.framework
                );
            }
            for e in &ctl.evidence {
                if !EVIDENCE.contains(&e.as_str()) {
                    bail!(
                        "{origin}: control {} asks for evidence {e:?}; known: {}",
                        ctl.id,
                        EVIDENCE.join(", ")
                    );
                }
            }
            for e in &ctl.exceptions {
                if !EXCEPTIONS.contains(&e.as_str()) {
                    bail!(
                        "{origin}: control {} asks for exceptions {e:?}; known: {}",
                        ctl.id,
                        EXCEPTIONS.join(", ")
                    );
                }
            }
        }
        Ok(c)
    }

    /// The built-in mapping, or the file given.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        match file {
            None => Self::parse(BUILT_IN, "deploy/controls.toml (built in)"),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// The controls of one framework, or why there are none.
    pub fn of(&self, framework: &str) -> Result<(String, Vec<&Control>)> {
        let Some(name) = self.frameworks.get(framework) else {
            bail!(
                "no framework {framework:?} in the controls file; known: {}",
                self.frameworks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let list: Vec<&Control> = self
            .controls
            .iter()
            .filter(|c| c.framework == framework)
            .collect();
        if list.is_empty() {
            bail!("framework {framework:?} has no [[controls]] entry");
        }
        Ok((name.clone(), list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_mapping_covers_the_four_frameworks() {
        let c = Controls::load(None).unwrap();
        for f in ["soc2", "nist-800-53", "hipaa", "ffiec"] {
            let (_, list) = c.of(f).unwrap();
            assert!(list.len() >= 3, "{f}");
        }
        assert!(c.of("iso27001").is_err());
        let ids: Vec<&str> = c
            .of("nist-800-53")
            .unwrap()
            .1
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        for id in ["AU-3", "AC-2", "IA-4", "CM-7"] {
            assert!(ids.contains(&id), "{id}");
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        let bad = "[frameworks]\nx = \"X\"\n[[controls]]\nframework = \"x\"\nid = \"1\"\ntitle = \"t\"\nasks = \"a\"\nevidence = [\"vibes\"]\n";
        let e = Controls::parse(bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("vibes") && e.contains("integrity"), "{e}");
        let bad = "[frameworks]\n[[controls]]\nframework = \"y\"\nid = \"1\"\ntitle = \"t\"\nasks = \"a\"\n";
        assert!(Controls::parse(bad, "f.toml").is_err());
    }
}
