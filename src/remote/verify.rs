//! Remote hashing: the commands run over an exec channel, how names are quoted for them, and
//! how their output is parsed. Pure functions; the channel handling lives in `connection`.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// How the remote copy of a file is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Exec when the server allows it (probed once per connection), read-back otherwise.
    #[default]
    Auto,
    /// A hash command over an exec channel; fail if the server does not allow it.
    Exec,
    /// Read the file back over SFTP and hash it here.
    Readback,
}

impl FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<VerifyMode, String> {
        match s {
            "auto" => Ok(VerifyMode::Auto),
            "exec" => Ok(VerifyMode::Exec),
            "readback" => Ok(VerifyMode::Readback),
            _ => Err(format!(
                "unknown verify mode '{s}' (expected auto, exec or readback)"
            )),
        }
    }
}

/// A remote hash command that passed the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashTool {
    /// `openssl dgst -sha256 -r`: about 4x faster than coreutils where SHA-NI is missing.
    Openssl,
    /// coreutils `sha256sum`.
    Sha256sum,
}

impl HashTool {
    /// The command prefix; the quoted absolute paths follow. Paths are always absolute (the
    /// root is), so none can be taken for an option; `--` is still given where understood.
    pub fn command(self) -> &'static str {
        match self {
            HashTool::Openssl => "openssl dgst -sha256 -r",
            HashTool::Sha256sum => "sha256sum --",
        }
    }
}

/// The method actually used to verify a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMethod {
    Exec(HashTool),
    Readback,
}

impl fmt::Display for VerifyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyMethod::Exec(HashTool::Openssl) => f.write_str("exec:openssl"),
            VerifyMethod::Exec(HashTool::Sha256sum) => f.write_str("exec:sha256sum"),
            VerifyMethod::Readback => f.write_str("readback"),
        }
    }
}

/// SHA-256 of nothing: what the probe must print for /dev/null.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The probe's path: always present, always empty.
pub const PROBE_PATH: &[u8] = b"/dev/null";

/// Most paths per exec, and most command bytes (well under any ARG_MAX and sshd's limits).
pub const BATCH_FILES: usize = 256;
pub const BATCH_BYTES: usize = 64 * 1024;

/// Whether a path can be hashed over exec. ssh2 takes the command as `&str`, so a path that is
/// not UTF-8 cannot be sent; a path with a newline would make the output ambiguous for openssl
/// (sha256sum escapes it, openssl does not). Such paths are hashed by read-back instead.
pub fn exec_safe(path: &[u8]) -> bool {
    !path.contains(&b'\n') && std::str::from_utf8(path).is_ok()
}

/// Quotes one argument for a POSIX shell: inside single quotes every byte is literal except the
/// single quote itself, which becomes `'\''` (close, escaped quote, reopen).
pub fn shell_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The full command line for one batch of exec-safe paths.
pub fn command_line(tool: HashTool, paths: &[&str]) -> String {
    let mut cmd = tool.command().to_string();
    for p in paths {
        cmd.push(' ');
        cmd.push_str(&shell_quote(p));
    }
    cmd
}

/// Splits `lens` (path lengths, in order) into consecutive batches that respect the file and
/// command-size limits. A single over-long path still gets a batch of its own.
pub fn batches(lens: &[usize], max_files: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &len) in lens.iter().enumerate() {
        // Quotes, a space and some '\'' expansions: a generous estimate.
        let cost = len + len / 4 + 4;
        if i > start && (i - start >= max_files || bytes + cost > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += cost;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Parses the output of `sha256sum` or `openssl dgst -sha256 -r` for `expected` paths, in
/// order. Each line must be 64 hex digits, a space, a space or '*', then exactly the expected
/// path (sha256sum escapes `\` and newlines and marks such lines with a leading `\`). Anything
/// else is a refusal: the hashes are matched to paths by order AND by name, so no output a
/// hostile name could provoke is taken for another file's hash.
pub fn parse_hash_output(out: &[u8], expected: &[&[u8]]) -> Result<Vec<[u8; 32]>, String> {
    let body = out
        .strip_suffix(b"\n")
        .ok_or_else(|| format!("output does not end with a newline: {}", preview(out)))?;
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.len() != expected.len() {
        return Err(format!(
            "expected {} lines of output, got {}: {}",
            expected.len(),
            lines.len(),
            preview(out)
        ));
    }
    lines
        .iter()
        .zip(expected)
        .map(|(line, want)| parse_line(line, want))
        .collect()
}

fn parse_line(line: &[u8], want: &[u8]) -> Result<[u8; 32], String> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    if line.len() < 66 {
        return Err(format!("malformed line: {}", preview(line)));
    }
    let (hex_part, rest) = line.split_at(64);
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut hash)
        .map_err(|_| format!("not a SHA-256 hex digest: {}", preview(line)))?;
    let name = match rest {
        [b' ', b' ' | b'*', name @ ..] => name,
        _ => return Err(format!("malformed line: {}", preview(line))),
    };
    let name = if escaped {
        unescape(name).ok_or_else(|| format!("bad escape in line: {}", preview(line)))?
    } else {
        name.to_vec()
    };
    if name != want {
        return Err(format!(
            "output names {} where {} was expected",
            super::error::display_path(&name),
            super::error::display_path(want)
        ));
    }
    Ok(hash)
}

/// Undoes coreutils' file name escaping (`\\`, `\n`, `\r`).
fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut it = name.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match it.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

/// The start of some output, escaped, for an error message.
fn preview(out: &[u8]) -> String {
    let cut = &out[..out.len().min(200)];
    super::error::display_path(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(cmd: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        out.stdout
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        for s in [
            "plain",
            "it's",
            "''",
            "$(touch /tmp/should-not-exist)",
            "`id`",
            "a b\tc",
            "-n",
            "\\",
            "x\ry",
            "; echo hi",
            "\"dq\"",
            "*?[a]",
            "~root",
            "!",
        ] {
            let out = run_sh(&format!("printf '%s' {}", shell_quote(s)));
            assert_eq!(out, s.as_bytes(), "round trip of {s:?}");
        }
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn parses_both_tools() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let out = format!("{h}  /r/a b\n{h} */r/it's\n");
        let got = parse_hash_output(out.as_bytes(), &[b"/r/a b", b"/r/it's"]).unwrap();
        assert_eq!(got, vec![EMPTY_SHA256, EMPTY_SHA256]);
    }

    #[test]
    fn parses_coreutils_escapes() {
        let h = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
        let out = format!("\\{h}  /r/x\\ny\\\\z\n");
        let got = parse_hash_output(out.as_bytes(), &[b"/r/x\ny\\z"]).unwrap();
        assert_eq!(hex::encode(got[0]), h);
    }

    #[test]
    fn refuses_anything_unexpected() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: Vec<(String, Vec<&[u8]>)> = vec![
            // The sftp-only refusal of a ForceCommand server.
            (
                "This service allows sftp connections only.\n".into(),
                vec![b"/dev/null"],
            ),
            (format!("{h}  /r/a\n"), vec![b"/r/b"]),
            (format!("{h}  /r/a\n"), vec![b"/r/a", b"/r/b"]),
            (format!("{h}  /r/a"), vec![b"/r/a"]),
            (format!("{}  /r/a\n", &h[..63]), vec![b"/r/a"]),
            (format!("{}g  /r/a\n", &h[..63]), vec![b"/r/a"]),
            (format!("{h}x /r/a\n"), vec![b"/r/a"]),
            (format!("\\{h}  /r/a\\q\n"), vec![b"/r/a\\q"]),
            (String::new(), vec![]),
        ];
        for (out, want) in cases {
            assert!(
                parse_hash_output(out.as_bytes(), &want).is_err(),
                "accepted {out:?}"
            );
        }
    }

    /// The real tools, run through a real shell, on hostile names: quoting, coreutils'
    /// backslash escapes and openssl's raw output all meet the parser.
    #[test]
    fn real_tools_on_hostile_names() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        let names = [
            "it's",
            "back\\slash",
            "cr\rhere",
            "$(touch pwned)",
            "-rf",
            "ünï cödé",
            " sp ",
        ];
        let paths: Vec<String> = names.iter().map(|n| format!("{base}/{n}")).collect();
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, vec![i as u8; i * 100]).unwrap();
        }
        let want: Vec<[u8; 32]> = (0..names.len())
            .map(|i| Sha256::digest(vec![i as u8; i * 100]).into())
            .collect();
        let strs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let bytes: Vec<&[u8]> = paths.iter().map(|p| p.as_bytes()).collect();
        for tool in [HashTool::Sha256sum, HashTool::Openssl] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(command_line(tool, &strs))
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{tool:?}: {:?}", out);
            let got =
                parse_hash_output(&out.stdout, &bytes).unwrap_or_else(|e| panic!("{tool:?}: {e}"));
            assert_eq!(got, want, "{tool:?}");
        }
        assert!(!dir.path().join("pwned").exists());
    }

    #[test]
    fn batching_respects_limits() {
        assert_eq!(batches(&[10; 5], 2, 1000), vec![0..2, 2..4, 4..5]);
        assert_eq!(batches(&[300, 300, 300], 10, 1000), vec![0..2, 2..3]);
        assert_eq!(batches(&[5000, 1], 10, 1000), vec![0..1, 1..2]);
        assert!(batches(&[], 10, 1000).is_empty());
    }

    #[test]
    fn exec_safety() {
        assert!(exec_safe(b"/r/it's $(x)"));
        assert!(!exec_safe(b"/r/a\nb"));
        assert!(!exec_safe(b"/r/\xff"));
    }
}
