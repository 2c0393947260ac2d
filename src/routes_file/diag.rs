//! Diagnostics: `file:line:col: message`, collected all at once.

use super::yaml::Pos;
use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as meant (e.g. a route that can loop).
    Warning,
}

/// One problem in a routes file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// Where in the file.
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and, where possible, what would be right. Never a secret.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Pos { line, col } = self.pos;
        match self.severity {
            Severity::Error => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            Severity::Warning => write!(f, "{}:{line}:{col}: warning: {}", self.file, self.message),
        }
    }
}

/// A growing list of diagnostics for one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            file: file.into(),
            items: Vec::new(),
        }
    }

    /// Records an error at `pos`, unless one is already recorded there: the
    /// first is the cause (an unset `${VAR}`), and a later check of the same
    /// value ("url must be an absolute URL") would only repeat it.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        if self.has_error_at(pos) {
            return;
        }
        self.push(pos, Severity::Error, message.into());
    }

    /// Records a warning at `pos`.
    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, Severity::Warning, message.into());
    }

    fn push(&mut self, pos: Pos, severity: Severity, message: String) {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            pos,
            severity,
            message,
        });
    }

    /// True when at least one error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// True when an error was already recorded at `pos` (a later check of
    /// the same value would only repeat the cause).
    pub fn has_error_at(&self, pos: Pos) -> bool {
        self.items
            .iter()
            .any(|d| d.severity == Severity::Error && d.pos == pos)
    }

    /// All diagnostics, sorted by position (the order a reader scans the file).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by_key(|d| (d.pos.line, d.pos.col, d.severity == Severity::Warning));
        self.items.dedup();
        self.items
    }
}

/// The known name closest to `wanted`, if one is close enough to be a typo.
pub fn nearest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(wanted, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// "; did you mean `x`?" or "; known X: a, b, c".
pub fn suggestion(wanted: &str, known: &[&str], what: &str) -> String {
    match nearest(wanted, known.iter().copied()) {
        Some(k) => format!("; did you mean \"{k}\"?"),
        None if known.is_empty() => format!("; no {what} are defined"),
        None => format!("; known {what}: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_but_not_strangers() {
        let known = ["team-slack", "ops-jira", "clickup-api"];
        assert_eq!(nearest("team-slak", known), Some("team-slack"));
        assert_eq!(nearest("jira", known), None);
        assert_eq!(nearest("sorce", ["source", "send"]), Some("source"));
    }

    #[test]
    fn diagnostics_print_as_file_line_col() {
        let mut d = Diagnostics::new("routes.yaml");
        d.warning(Pos { line: 3, col: 1 }, "w");
        d.error(Pos { line: 1, col: 5 }, "e");
        let out: Vec<String> = d.into_sorted().iter().map(|d| d.to_string()).collect();
        assert_eq!(out, ["routes.yaml:1:5: e", "routes.yaml:3:1: warning: w"]);
    }
}
