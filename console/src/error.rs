//! Error classes that decide the CLI's exit code: 2 for bad input, 1 for a failed operation.

use std::fmt;

/// Bad usage or invalid input, found before or by the server (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for an `anyhow::Error` that exits with status 2.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// An error answer from the coordinator, or no answer at all.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status, `None` when the coordinator could not be reached.
    pub status: Option<u16>,
    /// The server's error id (`not_found`, `invalid_params`, ...), empty when unknown.
    pub id: String,
    pub message: String,
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub fn exit_code(&self) -> i32 {
        // The server rejected the input itself: the same class as local validation.
        if self.status == Some(422) || self.id == "invalid_params" {
            2
        } else if matches!(self.status, Some(401 | 403 | 429)) {
            // Not allowed: a script can tell a credential problem from a failure.
            3
        } else {
            1
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Exit code for an error that ended a command.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return api.exit_code();
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_exit_codes() {
        assert_eq!(exit_code(&usage("bad")), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
        let api = |status, id: &str| {
            anyhow::Error::new(ApiError {
                status,
                id: id.into(),
                message: "m".into(),
            })
        };
        assert_eq!(exit_code(&api(Some(422), "invalid_params")), 2);
        assert_eq!(exit_code(&api(Some(404), "not_found")), 1);
        assert_eq!(exit_code(&api(None, "")), 1);
        assert_eq!(exit_code(&usage("bad").context("while deploying")), 2);
    }
}
