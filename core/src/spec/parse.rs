//! The edges where a job spec enters a process: TOML from a file, JSON
//! from the coordinator. A syntax error, an unknown key or a wrong type is
//! [`SpecError::Parse`] (with its line); a value that cannot be used is
//! [`SpecError::Job`], naming the file, the line of the key and the key.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::spec::check::Unchecked;
use crate::spec::error::SpecError;
use crate::spec::job::JobSpec;

/// The text of a spec file; the error names the file.
pub fn read_spec_file(path: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.into(),
        source,
    })
}

/// Parses TOML text whose origin is `origin` (named in the error, with the
/// line of a syntax error, unknown key, wrong type or unusable value).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, SpecError> {
    toml::from_str(text).map_err(|e| SpecError::Parse {
        path: origin.into(),
        message: e.to_string().trim_end().to_string(),
    })
}

impl JobSpec {
    pub fn from_file(path: &Path) -> Result<JobSpec, SpecError> {
        Self::from_toml(&read_spec_file(path)?, path)
    }

    /// Parses and checks a job spec file's text; `origin` names the file.
    pub fn from_toml(text: &str, origin: &Path) -> Result<JobSpec, SpecError> {
        let Unchecked(spec) = parse_toml(text, origin)?;
        spec.check().map_err(|error| SpecError::Job {
            path: origin.into(),
            line: line_of(text, &error.key()),
            error,
        })?;
        Ok(spec)
    }

    /// Parses and checks a spec sent as JSON (a job submitted to the
    /// coordinator, or the one it stored): `origin` names the text in a
    /// parse error; a value that cannot be used names the job
    /// (`job 'name': …`), as the text was valid JSON of a spec.
    pub fn from_json(text: &str, origin: &Path) -> Result<JobSpec, SpecError> {
        let Unchecked(spec) = serde_json::from_str(text).map_err(|e| SpecError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })?;
        spec.check().map_err(|error| SpecError::Job {
            path: format!("job '{}'", spec.run.name).into(),
            line: None,
            error,
        })?;
        Ok(spec)
    }
}

/// The 1-based line where the dotted `key` (`train.lr`) is set in the TOML
/// `text`, or else the line of its nearest enclosing table that is.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for part in key.split('.') {
        let Some((name, value)) = table.get_key_value(part) else {
            break;
        };
        found = Some(name.span().start);
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found.map(|at| text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_on_its_line_or_its_table_s() {
        let text = "[run]\nname = \"t\"\n\n[train]\nbatch_size = 8\nlr = 0.0\n";
        assert_eq!(line_of(text, "train.lr"), Some(6));
        assert_eq!(line_of(text, "train.epochs"), Some(4), "absent: its table");
        assert_eq!(line_of(text, "run.name"), Some(2));
        assert_eq!(line_of(text, "eval.limit"), None, "no such table");
        let dotted = "train.lr = 0.0\n";
        assert_eq!(line_of(dotted, "train.lr"), Some(1));
    }
}
