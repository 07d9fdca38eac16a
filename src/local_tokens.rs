//! The tokens of a [`crate::local_cluster::LocalCluster`]: one per role,
//! fresh for each start, so that every child holds only its own role's
//! (a trainer cannot lease tasks, an evaluator cannot submit jobs) and the
//! dashboard's URL carries a read-only one (issue 39, item 14). The
//! coordinator reads them from files of the workdir only its user can
//! read.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use premem_proto::Role;

/// A token for each role.
#[derive(Clone, Debug)]
pub struct RoleTokens {
    pub submit: String,
    pub read: String,
    pub trainer: String,
    pub evaluator: String,
}

impl RoleTokens {
    /// Fresh random tokens, written to `dir/<role>` (mode 0600); returns
    /// them and the coordinator's arguments naming the files.
    pub fn create(dir: &Path) -> Result<(RoleTokens, Vec<String>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let fresh = || format!("{:032x}", rand::random::<u128>());
        let tokens = RoleTokens {
            submit: fresh(),
            read: fresh(),
            trainer: fresh(),
            evaluator: fresh(),
        };
        let mut args = vec![];
        for (role, token) in [
            ("submit", &tokens.submit),
            ("read", &tokens.read),
            ("trainer", &tokens.trainer),
            ("evaluator", &tokens.evaluator),
        ] {
            let file = dir.join(role);
            write_private(&file, token)?;
            args.push(format!("--{role}-token-file"));
            args.push(file.to_string_lossy().into_owned());
        }
        Ok((tokens, args))
    }

    /// The token of `role`.
    pub fn of(&self, role: Role) -> &str {
        match role {
            Role::Submit => &self.submit,
            Role::Read => &self.read,
            Role::Trainer => &self.trainer,
            Role::Evaluator => &self.evaluator,
        }
    }
}

/// Writes `token` to `file`, readable by its owner only (an older, wider
/// file is replaced).
fn write_private(file: &Path, token: &str) -> Result<()> {
    let _ = std::fs::remove_file(file);
    let mut out = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    writeln!(out, "{token}").with_context(|| format!("writing {}", file.display()))
}
