//! Errors of the Azure pieces (the Key Vault client, the credentials), and how one is described
//! in a log line: by kind, status and service code, never by its message, which may quote a
//! response.

use std::path::PathBuf;

use azure_core::error::ErrorKind;

use crate::trust::TrustError;

/// Why the Key Vault source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    /// The vault CA file is unusable.
    #[error("secrets.ca_file: {0}")]
    Trust(#[from] TrustError),
    /// Workload identity is selected but a variable it needs is not set.
    #[error("workload identity needs the environment variable {0}")]
    MissingEnv(&'static str),
    /// The federated token file cannot be read (names the file, never its content).
    #[error("cannot read the federated token file {path} (AZURE_FEDERATED_TOKEN_FILE): {problem}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why, as an I/O error kind or "empty".
        problem: String,
    },
    /// The credential or client could not be built (names the kind, never a value).
    #[error("cannot set up {what}: {kind}")]
    Setup {
        /// What was being built.
        what: &'static str,
        /// The SDK's error kind.
        kind: String,
    },
}

/// A setup failure of `what`, described by kind.
pub(super) fn setup(what: &'static str, err: &azure_core::Error) -> KeyVaultError {
    KeyVaultError::Setup { what, kind: describe(err) }
}

/// The error's kind, status and service code: never its message, which may quote a response.
/// A credential error names the token endpoint's answer (e.g. `http 401 700213`) when it
/// wraps one.
pub(super) fn describe(err: &azure_core::Error) -> String {
    match err.kind() {
        ErrorKind::Credential => {
            let mut inner = err.downcast_ref::<azure_core::Error>();
            while let Some(cause) = inner {
                if !matches!(cause.kind(), ErrorKind::Credential) {
                    return format!("credential unavailable: {}", describe(cause));
                }
                inner = cause.downcast_ref::<azure_core::Error>();
            }
            "credential unavailable".into()
        }
        ErrorKind::HttpResponse { status, error_code, .. } => {
            format!("http {} {}", u16::from(*status), error_code.as_deref().unwrap_or("-"))
        }
        ErrorKind::Connection => "connection failed".into(),
        ErrorKind::Io => "i/o error".into(),
        ErrorKind::DataConversion => "unexpected response".into(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::error::ErrorKind;

    #[test]
    fn a_credential_error_names_the_token_endpoint_s_answer() {
        let inner = azure_core::Error::new(
            ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::Unauthorized,
                error_code: Some("700213".into()),
                raw_response: None,
            },
            "AADSTS700213: No matching federated identity record found",
        );
        let outer = azure_core::Error::with_error(ErrorKind::Credential, inner, "failed");
        assert_eq!(describe(&outer), "credential unavailable: http 401 700213");
        let bare = azure_core::Error::with_message(ErrorKind::Credential, "no file");
        assert_eq!(describe(&bare), "credential unavailable");
    }
}
