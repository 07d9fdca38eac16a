//! A location (a run output, a dataset, a model file) read the way the store
//! opens it: percent-encoding decoded and dot segments applied as the URL
//! parser does (`%2e%2e` is `..`), so two spellings of one place compare
//! equal and a prefix check sees where the store will really write.

use std::path::{Component, Path, PathBuf};

/// Where a location points once parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local path (plain or `file://`): absolute, with `.` and `..`
    /// applied lexically.
    Local(PathBuf),
    /// An object-store URL: scheme, bucket (host) and the decoded segments
    /// of its path.
    Remote {
        scheme: String,
        bucket: String,
        segments: Vec<String>,
    },
}

/// Whether `location` names a URL (`scheme://…`) rather than a path.
pub fn is_url(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
}

impl Location {
    /// Parses `location` as [`crate::Store::open`] does; a relative local
    /// path is taken from the working directory.
    pub fn parse(location: &str) -> Result<Location, String> {
        if !is_url(location) {
            return Ok(Location::Local(normal(Path::new(location))));
        }
        let url = url::Url::parse(location).map_err(|e| format!("is not a URL: {e}"))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|_| "is a file:// URL without an absolute path".to_string())?;
            return Ok(Location::Local(normal(&path)));
        }
        let path = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| format!("has a path the store refuses: {e}"))?;
        Ok(Location::Remote {
            scheme: url.scheme().to_string(),
            bucket: url.host_str().unwrap_or_default().to_string(),
            segments: path.parts().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// The same location with a local path's symbolic links followed (as
    /// far as the path exists).
    pub fn resolved(&self) -> Location {
        match self {
            Location::Local(path) => Location::Local(resolved(path)),
            remote => remote.clone(),
        }
    }

    /// Whether `other` is this location or lies below it (whole components
    /// only: `/a/bc` is not below `/a/b`).
    pub fn contains(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Local(outer), Location::Local(inner)) => inner.starts_with(outer),
            (
                Location::Remote {
                    scheme,
                    bucket,
                    segments,
                },
                Location::Remote {
                    scheme: s,
                    bucket: b,
                    segments: inner,
                },
            ) => scheme == s && bucket == b && inner.starts_with(segments),
            _ => false,
        }
    }
}

/// `path` made absolute with `.` and `..` applied lexically.
fn normal(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> PathBuf {
        match Location::parse(text).unwrap() {
            Location::Local(path) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn spellings_of_one_place_parse_alike() {
        for same in [
            "/P/share/run",
            "file:///P/share/run",
            "file:///P/share/%72un",
            "file:///P/share/x/%2e%2e/run",
            "file:///P/share/x/%2E%2E/run/",
            "/P/share/./x/../run",
        ] {
            assert_eq!(local(same), PathBuf::from("/P/share/run"), "{same}");
        }
        let remote = |t: &str| Location::parse(t).unwrap();
        assert_eq!(
            remote("s3://premem/runs/%2e%2e/other"),
            remote("s3://premem/other")
        );
        assert!(!remote("s3://premem/runs").contains(&remote("s3://premem/runs/%2e%2e/other")));
        assert!(remote("s3://premem/runs").contains(&remote("s3://premem/runs/a/")));
        assert!(!remote("s3://premem/runs").contains(&remote("s3://premem/runs-x")));
        assert!(!remote("s3://premem/runs").contains(&remote("gs://premem/runs/a")));
    }

    /// One spelling of `segments` under `scheme`: each character maybe
    /// percent-encoded (either case), `x/..` and `.` segments maybe inserted
    /// (written out or encoded), maybe a trailing slash.
    fn spelling(scheme: &str, segments: &[String], choices: &[u8]) -> String {
        let mut pick = choices.iter().cycle().copied();
        let mut out = String::from(scheme);
        for segment in segments {
            match pick.next().unwrap() % 4 {
                // A plain path is not decoded: its dot segments are written out.
                0 | 1 if scheme.is_empty() => out.push_str("/x/.."),
                0 => out.push_str("/x/%2e%2e"),
                1 => out.push_str("/y/%2E%2e"),
                2 if scheme.is_empty() => out.push_str("/./z/.."),
                2 => out.push_str("/%2e"),
                _ => {}
            }
            out.push('/');
            for c in segment.chars() {
                match (pick.next().unwrap() % 3, scheme.is_empty()) {
                    (0, false) => out.push_str(&format!("%{:02x}", c as u32)),
                    (1, false) => out.push_str(&format!("%{:02X}", c as u32)),
                    _ => out.push(c),
                }
            }
        }
        if pick.next().unwrap() % 2 == 0 {
            out.push('/');
        }
        out
    }

    proptest::proptest! {
        /// Every spelling of a place parses to that place, for plain paths,
        /// `file://` (either case) and `s3://`.
        #[test]
        fn every_spelling_of_a_place_parses_to_it(
            segments in proptest::collection::vec("[a-z0-9_-]{1,6}", 1..5),
            choices in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            scheme in proptest::sample::select(vec!["", "file://", "FILE://", "s3://bucket"]),
        ) {
            let plain = format!("{scheme}/{}", segments.join("/"));
            let spelled = spelling(scheme, &segments, &choices);
            let (a, b) = (Location::parse(&plain).unwrap(), Location::parse(&spelled).unwrap());
            proptest::prop_assert_eq!(&a, &b, "{} vs {}", plain, spelled);
            proptest::prop_assert!(a.contains(&b) && b.contains(&a));
        }
    }
}
