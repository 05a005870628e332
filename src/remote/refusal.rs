//! What a refused host key tells the user: the exact `ftpsync trust` command that pins the key
//! the server now presents, for every place that connects (the daemon, verify, restore).

use std::path::Path;

use super::error::{HostKeyInfo, HostKeyProblem, RemoteError};
use super::url::Remote;

/// The command that pins `key` for `remote` in `state_dir`: what a refusal tells the user.
pub fn command_hint(remote: &Remote, state_dir: &Path, key: &HostKeyInfo, replace: bool) -> String {
    format!(
        "after checking the fingerprint with the server's administrator, run: ftpsync trust{} \
         --state-dir {} --fingerprint {} {remote}",
        if replace { " --replace" } else { "" },
        shell_quote(&state_dir.display().to_string()),
        key.fingerprint
    )
}

/// A connection error as the user should see it: a refused host key (unknown or changed, not
/// revoked) comes with the command that pins the key the server now presents in `state_dir`.
pub fn explain_refusal(e: RemoteError, remote: &Remote, state_dir: &Path) -> RemoteError {
    match e.host_key_refusal() {
        Some((key, p)) if p != HostKeyProblem::Revoked => {
            let hint = command_hint(remote, state_dir, key, p == HostKeyProblem::Changed);
            e.hint(hint)
        }
        _ => e,
    }
}

/// Quoted for a shell only when needed, so the usual path reads as it is.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        s.to_string()
    } else {
        super::verify::shell_quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_quoted_for_the_shell_only_when_it_needs_it() {
        assert_eq!(shell_quote("/var/lib/ftpsync-x_1"), "/var/lib/ftpsync-x_1");
        assert!(shell_quote("/a b").starts_with('\''));
    }
}
