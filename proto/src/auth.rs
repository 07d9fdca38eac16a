//! Who may call what. Every call carries a bearer token; the server knows
//! each token's roles ([`RequireToken`]) and each RPC needs one role
//! ([`require`]). The cluster token holds every role; a role token only
//! its own, so a trainer's token cannot submit jobs or forge results, and
//! a dashboard's cannot change anything (docs/security.md).

use std::fmt;
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::AUTHORIZATION;

/// One part of the protocol a token may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// SubmitJob, CancelJob (and what Read may).
    Submit,
    /// GetStatus and `/metrics`.
    Read,
    /// RegisterTrainer, Rendezvous, TrainerHeartbeat, ReportCheckpoint,
    /// TrainerFinished, AssignTrainer.
    Trainer,
    /// LeaseTask, RenewLease, CompleteTask, FailTask.
    Evaluator,
}

impl Role {
    pub const EVERY: [Role; 4] = [Role::Submit, Role::Read, Role::Trainer, Role::Evaluator];

    pub fn name(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Trainer => "trainer",
            Role::Evaluator => "evaluator",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The roles a token holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub const ALL: Roles = Roles(0b1111);

    pub fn only(role: Role) -> Roles {
        // Submitting includes watching what was submitted.
        match role {
            Role::Submit => Roles(Role::Submit.bit() | Role::Read.bit()),
            role => Roles(role.bit()),
        }
    }

    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    pub fn holds(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::EVERY
            .iter()
            .filter(|r| self.holds(**r))
            .map(|r| r.name())
            .collect();
        f.write_str(&names.join(", "))
    }
}

/// Checks the bearer token of every request on the server (in constant
/// time, against every known token) and hands its roles to the service in
/// the request's extensions.
#[derive(Clone)]
pub struct RequireToken(Arc<Vec<(Vec<u8>, Roles)>>);

impl RequireToken {
    /// One token holding every role.
    pub fn new(token: &str) -> RequireToken {
        RequireToken::with_roles([(token.to_string(), Roles::ALL)])
    }

    /// Tokens and their roles; a token given twice holds both roles.
    pub fn with_roles(tokens: impl IntoIterator<Item = (String, Roles)>) -> RequireToken {
        let mut known: Vec<(Vec<u8>, Roles)> = vec![];
        for (token, roles) in tokens {
            let bearer = format!("Bearer {token}").into_bytes();
            match known.iter_mut().find(|(b, _)| *b == bearer) {
                Some((_, held)) => *held = held.union(roles),
                None => known.push((bearer, roles)),
            }
        }
        RequireToken(Arc::new(known))
    }

    /// The roles of an `authorization` header's value; `None`: no token
    /// known. Every token is compared, whichever matches.
    pub fn roles_of(&self, authorization: &[u8]) -> Option<Roles> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for (bearer, roles) in self.0.iter() {
            if bool::from(authorization.ct_eq(bearer)) {
                found = Some(*roles);
            }
        }
        found
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(given) = request.metadata().get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing authorization metadata: every call needs 'Bearer <token>'",
            ));
        };
        let roles = self
            .roles_of(given.as_bytes())
            .ok_or_else(|| Status::unauthenticated("wrong token"))?;
        request.extensions_mut().insert(roles);
        Ok(request)
    }
}

/// Refuses `call` with PERMISSION_DENIED unless the request's token holds
/// `role` (a request that passed no [`RequireToken`] holds none).
pub fn require<T>(request: &Request<T>, role: Role, call: &str) -> Result<(), Status> {
    let roles = request
        .extensions()
        .get::<Roles>()
        .copied()
        .unwrap_or_default();
    if roles.holds(role) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{call} needs a token with the {} role; this one holds: {}",
        role.name(),
        if roles == Roles::default() {
            "none".to_string()
        } else {
            roles.to_string()
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(check: &mut RequireToken, token: Option<&str>) -> Result<Roles, Status> {
        let mut request = Request::new(());
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        let request = check.call(request)?;
        Ok(*request.extensions().get::<Roles>().unwrap())
    }

    #[test]
    fn each_token_gets_its_own_roles_and_others_are_refused() {
        let mut check = RequireToken::with_roles([
            ("cluster-token-000".to_string(), Roles::ALL),
            ("trainer-token-000".to_string(), Roles::only(Role::Trainer)),
            ("submit-token-0000".to_string(), Roles::only(Role::Submit)),
            (
                "submit-token-0000".to_string(),
                Roles::only(Role::Evaluator),
            ),
        ]);
        assert_eq!(
            call(&mut check, Some("cluster-token-000")).unwrap(),
            Roles::ALL
        );
        let trainer = call(&mut check, Some("trainer-token-000")).unwrap();
        assert!(trainer.holds(Role::Trainer) && !trainer.holds(Role::Submit));
        assert!(!trainer.holds(Role::Read) && !trainer.holds(Role::Evaluator));
        let both = call(&mut check, Some("submit-token-0000")).unwrap();
        assert_eq!(both.to_string(), "submit, read, evaluator");
        let wrong = call(&mut check, Some("trainer-token-001")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing = call(&mut check, None).unwrap_err();
        assert!(missing.message().contains("Bearer"), "{missing:?}");
    }

    #[test]
    fn a_call_needs_its_role() {
        let mut request = Request::new(());
        request.extensions_mut().insert(Roles::only(Role::Read));
        assert!(require(&request, Role::Read, "GetStatus").is_ok());
        let denied = require(&request, Role::Submit, "SubmitJob").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied
                .message()
                .contains("SubmitJob needs a token with the submit role; this one holds: read"),
            "{denied:?}"
        );
        let bare = require(&Request::new(()), Role::Read, "GetStatus").unwrap_err();
        assert!(bare.message().ends_with("holds: none"), "{bare:?}");
    }
}
