//! `--allow-prefix`: where submitted jobs may read and write. With
//! prefixes configured, every location a job names (its run output, its
//! datasets, its model files) must lie under one of them, or the
//! submission is refused before anything is opened: the refusal says
//! nothing about what exists outside them. Without prefixes, a submitter
//! may name anything the coordinator's hosts can reach.

use std::path::{Component, Path, PathBuf};

use premem_core::spec::JobSpec;

use crate::state::{Refusal, Refused};

/// The configured prefixes: directories (absolute) and object-store URL
/// prefixes.
#[derive(Clone, Debug, Default)]
pub struct AllowedPrefixes(Vec<String>);

/// A location split into what is compared: an absolute path, or a URL
/// without `.` and `..` segments.
enum Place {
    Local(PathBuf),
    Url(String),
}

fn is_url(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
}

/// `location` as a place to compare, or why it cannot be compared.
fn place(location: &str) -> Result<Place, &'static str> {
    let local = location.strip_prefix("file://").or(if is_url(location) {
        None
    } else {
        Some(location)
    });
    match local {
        Some(path) => {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err("is not an absolute path");
            }
            if path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err("has a '.' or '..' component");
            }
            Ok(Place::Local(path.components().collect()))
        }
        None => {
            let (_, rest) = location.split_once("://").expect("a URL");
            if rest.split('/').any(|s| s == ".." || s == ".") {
                return Err("has a '.' or '..' segment");
            }
            Ok(Place::Url(location.trim_end_matches('/').to_string()))
        }
    }
}

/// The nearest existing ancestor of `path`, resolved (symlinks followed),
/// with the rest of `path` appended.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = vec![];
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

impl AllowedPrefixes {
    /// Checks each prefix; `Err` names the first that is not an absolute
    /// directory or a URL prefix.
    pub fn new(prefixes: Vec<String>) -> Result<AllowedPrefixes, String> {
        for prefix in &prefixes {
            place(prefix).map_err(|why| format!("--allow-prefix '{prefix}' {why}"))?;
        }
        Ok(AllowedPrefixes(prefixes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `location` lies under `prefix` (component-wise for paths,
    /// after following symlinks; segment-wise for URLs).
    fn under(location: &Place, prefix: &str) -> bool {
        match (location, place(prefix)) {
            (Place::Local(path), Ok(Place::Local(prefix))) => {
                path.starts_with(&prefix) && resolved(path).starts_with(resolved(&prefix))
            }
            (Place::Url(url), Ok(Place::Url(prefix))) => {
                url == &prefix || url.starts_with(&format!("{prefix}/"))
            }
            _ => false,
        }
    }

    fn allows(&self, job: &str, setting: &str, location: &str) -> Refused<()> {
        let refuse = |why: String| {
            Err(Refusal::Denied(format!(
                "job '{job}': {setting} '{location}' {why}"
            )))
        };
        let place = match place(location) {
            Ok(place) => place,
            Err(why) => return refuse(why.to_string()),
        };
        if self.0.iter().any(|prefix| Self::under(&place, prefix)) {
            return Ok(());
        }
        refuse(format!(
            "is not under an allowed prefix of this coordinator ({})",
            self.0.join(", ")
        ))
    }

    /// Refuses a job that names a location outside the prefixes (nothing
    /// is checked when none are configured).
    pub fn check(&self, spec: &JobSpec) -> Refused<()> {
        if self.is_empty() {
            return Ok(());
        }
        let name = &spec.run.name;
        let mut locations = vec![("run.output", spec.run.output.as_str())];
        locations.push(("data.train.path", spec.data.train.path.as_str()));
        if let Some(test) = &spec.data.test {
            locations.push(("data.test.path", test.path.as_str()));
        }
        for (setting, value) in [
            ("model.base", &spec.model.base),
            ("model.config", &spec.model.config),
            ("model.tokenizer", &spec.model.tokenizer),
        ] {
            if let Some(value) = value {
                locations.push((setting, value.as_str()));
            }
        }
        for (setting, location) in locations {
            self.allows(name, setting, location)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(prefixes: &[&str], location: &str) -> Result<(), String> {
        let prefixes = AllowedPrefixes::new(prefixes.iter().map(|p| p.to_string()).collect())?;
        prefixes
            .allows("job", "run.output", location)
            .map_err(|r| r.to_string())
    }

    #[test]
    fn locations_must_lie_under_a_prefix() {
        let p = ["/data/premem", "s3://bucket/runs/"];
        assert!(allowed(&p, "/data/premem/runs/a").is_ok());
        assert!(allowed(&p, "/data/premem").is_ok());
        assert!(allowed(&p, "file:///data/premem/x").is_ok());
        assert!(allowed(&p, "s3://bucket/runs/a").is_ok());
        for (outside, why) in [
            ("/data/premem-other/a", "not under an allowed prefix"),
            ("/data/premem/../../etc", "'..'"),
            ("/", "not under"),
            ("runs/a", "not an absolute path"),
            ("s3://bucket/runs-x/a", "not under"),
            ("s3://bucket/runs/../secret", "'..'"),
            ("gs://bucket/runs/a", "not under"),
        ] {
            let refused = allowed(&p, outside).unwrap_err();
            assert!(refused.contains(why), "{outside}: {refused}");
            assert!(refused.contains("run.output"), "{refused}");
        }
        assert!(AllowedPrefixes::new(vec!["relative".into()]).is_err());
    }

    #[test]
    fn a_symlink_out_of_a_prefix_is_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (inside, outside) = (root.join("allowed"), root.join("elsewhere"));
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("link")).unwrap();
        let prefix = [inside.to_str().unwrap()];
        let real = inside.join("real/new");
        assert!(allowed(&prefix, real.to_str().unwrap()).is_ok());
        let escape = inside.join("link/new");
        let refused = allowed(&prefix, escape.to_str().unwrap()).unwrap_err();
        assert!(refused.contains("not under"), "{refused}");
    }
}
