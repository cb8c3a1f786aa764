//! The kit's verdict: one line per check, with what to fix when it fails.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct Report {
    pub worker: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { name: name.into(), outcome: Outcome::Pass(detail.into()) });
    }

    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { name: name.into(), outcome: Outcome::Fail(detail.into()) });
    }

    /// Passes with `ok` or fails with `problem`.
    pub fn check(&mut self, name: impl Into<String>, verdict: Result<String, String>) {
        match verdict {
            Ok(detail) => self.pass(name, detail),
            Err(problem) => self.fail(name, problem),
        }
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| matches!(c.outcome, Outcome::Fail(_)))
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tilepipe worker conformance, protocol v{}", crate::PROTOCOL_VERSION)?;
        writeln!(f, "worker: {}", self.worker)?;
        writeln!(f)?;
        for check in &self.checks {
            match &check.outcome {
                Outcome::Pass(detail) if detail.is_empty() => writeln!(f, "  PASS  {}", check.name)?,
                Outcome::Pass(detail) => writeln!(f, "  PASS  {}: {detail}", check.name)?,
                Outcome::Fail(problem) => writeln!(f, "  FAIL  {}: {problem}", check.name)?,
            }
        }
        let failed = self.failures().count();
        writeln!(f)?;
        write!(f, "{} passed, {failed} failed", self.checks.len() - failed)?;
        if failed > 0 {
            write!(f, " (docs/protocol.md says what each check expects)")?;
        }
        writeln!(f)
    }
}
