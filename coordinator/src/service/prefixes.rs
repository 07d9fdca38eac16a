//! `--allow-prefix`: where submitted jobs may read and write. With
//! prefixes configured, every location a job names (its run output, its
//! datasets, its model files) must lie under one of them, or the
//! submission is refused before anything is opened: the refusal says
//! nothing about what exists outside them. Without prefixes, a submitter
//! may name anything the coordinator's hosts can reach.

use std::path::{Component, Path};

use premem_core::spec::JobSpec;
use premem_core::storage::location::{Location, is_url};

use crate::state::{Refusal, Refused};

/// The configured prefixes: directories (absolute) and object-store URL
/// prefixes, as given and as parsed.
#[derive(Clone, Debug, Default)]
pub struct AllowedPrefixes(Vec<(String, Location)>);

/// `location` as the store will open it, or why it is refused before any
/// comparison: a relative path, a `.` or `..` written out, or a text the
/// store would not open.
fn place(location: &str) -> Result<Location, String> {
    match location
        .strip_prefix("file://")
        .or((!is_url(location)).then_some(location))
    {
        Some(path) => {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err("is not an absolute path".into());
            }
            if path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err("has a '.' or '..' component".into());
            }
        }
        None => {
            let (_, rest) = location.split_once("://").expect("a URL");
            if rest.split('/').any(|s| s == ".." || s == ".") {
                return Err("has a '.' or '..' segment".into());
            }
        }
    }
    Location::parse(location)
}

impl AllowedPrefixes {
    /// Checks each prefix; `Err` names the first that is not an absolute
    /// directory or a URL prefix.
    pub fn new(prefixes: Vec<String>) -> Result<AllowedPrefixes, String> {
        let parsed = prefixes.into_iter().map(|prefix| {
            let place = place(&prefix).map_err(|why| format!("--allow-prefix '{prefix}' {why}"))?;
            Ok((prefix, place))
        });
        Ok(AllowedPrefixes(parsed.collect::<Result<_, String>>()?))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `location` lies under `prefix`, both as the store opens them
    /// (decoded, dot segments applied; component-wise), local paths also
    /// after following symlinks.
    fn under(location: &Location, prefix: &Location) -> bool {
        prefix.contains(location) && prefix.resolved().contains(&location.resolved())
    }

    fn allows(&self, job: &str, setting: &str, location: &str) -> Refused<()> {
        let refuse = |why: String| {
            Err(Refusal::Denied(format!(
                "job '{job}': {setting} '{location}' {why}"
            )))
        };
        let place = match place(location) {
            Ok(place) => place,
            Err(why) => return refuse(why),
        };
        if self.0.iter().any(|(_, prefix)| Self::under(&place, prefix)) {
            return Ok(());
        }
        let prefixes: Vec<&str> = self.0.iter().map(|(text, _)| text.as_str()).collect();
        refuse(format!(
            "is not under an allowed prefix of this coordinator ({})",
            prefixes.join(", ")
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

    #[test]
    fn percent_encoded_dot_segments_do_not_escape() {
        let p = ["/X/allowed", "s3://premem/runs"];
        for escape in [
            "file:///X/allowed/%2e%2e/ESC",
            "file:///X/allowed/%2E%2E/ESC",
            "file:///X/allowed/.%2e/ESC",
            "FILE:///X/allowed/%2e%2e/ESC",
            "file:///X/allowed/..%2f..%2fESC",
            "s3://premem/runs/%2e%2e/other",
            "s3://premem/runs/%2E%2e/other/",
        ] {
            let refused = allowed(&p, escape);
            assert!(refused.is_err(), "{escape} was allowed");
        }
        assert!(allowed(&p, "file:///X/allowed/%72un").is_ok());
        assert!(allowed(&p, "s3://premem/runs/a%20b/").is_ok());
    }

    /// What the store opens for `location`: the local directory it creates
    /// (resolved), or the bucket and object path of a URL; `None` when it
    /// opens nothing there.
    fn store_target(location: &str) -> Option<String> {
        if location.to_ascii_lowercase().starts_with("s3://") {
            let url = url::Url::parse(location).ok()?;
            let path = object_store::path::Path::from_url_path(url.path()).ok()?;
            return Some(format!("s3://{}/{path}", url.host_str()?));
        }
        let store = premem_core::Store::open(location).ok()?;
        Some(store.url().to_string())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever the spelling (percent-encoding in either case, dot
        /// segments, a symlink out, a trailing slash, a scheme in capitals),
        /// an allowed location is one the store opens under the prefix.
        #[test]
        fn an_allowed_location_is_opened_under_its_prefix(
            scheme in proptest::sample::select(vec!["", "file://", "FILE://", "s3://premem"]),
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "a", "..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e", "%72un", "link", "..%2f..%2fout",
            ]), 1..5),
            slash in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            let inside = root.join("allowed");
            std::fs::create_dir_all(&inside).unwrap();
            std::fs::create_dir_all(root.join("elsewhere")).unwrap();
            std::os::unix::fs::symlink(root.join("elsewhere"), inside.join("link")).unwrap();
            let base = if scheme.starts_with("s3") {
                "/runs".to_string()
            } else {
                inside.display().to_string()
            };
            let prefix = format!("{scheme}{base}");
            let location = format!("{prefix}/{}{}", parts.join("/"), if slash { "/" } else { "" });
            let under = store_target(&prefix).unwrap();
            if allowed(&[&prefix], &location).is_ok()
                && let Some(target) = store_target(&location)
            {
                proptest::prop_assert!(
                    target == under || target.starts_with(&format!("{under}/")),
                    "{location} is allowed under {prefix}, but the store opens {target}"
                );
            }
        }
    }
}
