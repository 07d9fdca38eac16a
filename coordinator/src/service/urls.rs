//! `--allow-url`: the URL prefixes a submitted job's tracker URL
//! (`tracking.mlflow`) may point under. The coordinator calls that URL
//! itself, so without a list a submitter could make it reach any address
//! it can (issue 39, item 3). A coordinator that limits locations
//! (`--allow-prefix`) limits tracker URLs too: with no `--allow-url`, a
//! job naming one is refused.

use premem_core::spec::JobSpec;
use url::Url;

use crate::state::{Refusal, Refused};

/// The configured URL prefixes, as given and as parsed.
#[derive(Clone, Debug, Default)]
pub struct AllowedUrls {
    prefixes: Vec<(String, Url)>,
    /// Whether tracker URLs are limited at all (`--allow-url` or
    /// `--allow-prefix` given).
    limited: bool,
}

impl AllowedUrls {
    /// `prefixes` (http or https URLs); `limited`: refuse every tracker URL
    /// outside them even when there are none. `Err` names a bad prefix.
    pub fn new(prefixes: Vec<String>, limited: bool) -> Result<AllowedUrls, String> {
        let parsed = prefixes
            .into_iter()
            .map(|text| {
                let url = web_url(&text).map_err(|why| format!("--allow-url '{text}' {why}"))?;
                Ok((text, url))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(AllowedUrls {
            limited: limited || !parsed.is_empty(),
            prefixes: parsed,
        })
    }

    /// Refuses a job whose tracker URL is outside the prefixes.
    pub fn check(&self, spec: &JobSpec) -> Refused<()> {
        let Some(tracker) = &spec.tracking.mlflow else {
            return Ok(());
        };
        if !self.limited {
            return Ok(());
        }
        let refuse = |why: String| {
            Err(Refusal::Denied(format!(
                "job '{}': tracking.mlflow '{tracker}' {why}",
                spec.run.name
            )))
        };
        let url = match web_url(tracker) {
            Ok(url) => url,
            Err(why) => return refuse(why),
        };
        if self.prefixes.iter().any(|(_, prefix)| under(&url, prefix)) {
            return Ok(());
        }
        let allowed: Vec<&str> = self.prefixes.iter().map(|(t, _)| t.as_str()).collect();
        refuse(if allowed.is_empty() {
            "is refused: this coordinator allows no tracker URL (--allow-url)".into()
        } else {
            format!(
                "is not under an allowed URL of this coordinator ({})",
                allowed.join(", ")
            )
        })
    }
}

/// `text` parsed as the client will call it (scheme and host lowercased,
/// percent-encoded and written-out dot segments applied), if it is an
/// http or https URL without credentials.
fn web_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("is not an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("has credentials in it".into());
    }
    Ok(url)
}

/// Whether `url` is `prefix`'s origin and lies under its path, segment by
/// segment.
fn under(url: &Url, prefix: &Url) -> bool {
    let segments = |u: &Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (path, base) = (segments(url), segments(prefix));
    url.origin() == prefix.origin() && path.starts_with(&base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use premem_core::testing::JobToml;

    fn check(prefixes: &[&str], limited: bool, tracker: &str) -> Result<(), String> {
        let urls = AllowedUrls::new(prefixes.iter().map(|p| p.to_string()).collect(), limited)?;
        let spec = JobToml::default()
            .with(&format!("[tracking]\nmlflow = {tracker:?}"))
            .spec();
        urls.check(&spec).map_err(|r| r.to_string())
    }

    #[test]
    fn a_tracker_url_must_lie_under_an_allowed_url() {
        let p = ["http://mlflow.internal:5000/", "https://track.example/team"];
        for ok in [
            "http://mlflow.internal:5000",
            "http://MLFLOW.internal:5000/api",
            "https://track.example/team/x",
            "https://track.example:443/team",
        ] {
            assert!(
                check(&p, false, ok).is_ok(),
                "{ok}: {:?}",
                check(&p, false, ok)
            );
        }
        for (bad, why) in [
            (
                "http://127.0.0.1:18081/internal",
                "not under an allowed URL",
            ),
            ("http://mlflow.internal:5001", "not under an allowed URL"),
            ("https://mlflow.internal:5000", "not under an allowed URL"),
            ("https://track.example/teamX", "not under an allowed URL"),
            (
                "https://track.example/team/%2e%2e/admin",
                "not under an allowed URL",
            ),
            (
                "https://track.example/team/../admin",
                "not under an allowed URL",
            ),
            ("http://mlflow.internal:5000@evil.example/", "credentials"),
            ("http://u:p@mlflow.internal:5000/", "credentials"),
        ] {
            let err = check(&p, false, bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_limited_coordinator_without_urls_refuses_trackers_and_an_open_one_takes_them() {
        let err = check(&[], true, "http://127.0.0.1:5000").unwrap_err();
        assert!(err.contains("allows no tracker URL"), "{err}");
        assert!(check(&[], false, "http://127.0.0.1:5000").is_ok());
        let bad = AllowedUrls::new(vec!["ftp://x/".into()], false).unwrap_err();
        assert!(bad.contains("--allow-url 'ftp://x/'"), "{bad}");
    }
}
