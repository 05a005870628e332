//! Secrets for logging in: a key's passphrase, a password, a second factor. Each comes from a
//! source named by the user and is fetched afresh for every login, held only as a [`Secret`]
//! (never printed, wiped on drop) for the one call that needs it.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::{ErrorKind, RemoteError};

/// A secret: never printed, wiped from memory on drop.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(s: &mut str) {
    // SAFETY: zero bytes are valid UTF-8; the string is dropped or cleared right after.
    for b in unsafe { s.as_bytes_mut() } {
        // Volatile so the wipe of memory about to be freed is not optimised away.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// How long a secret command may take (a secrets manager may ask its own agent).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a secret comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// A credential file readable by its owner only (`--passphrase-file`, systemd's
    /// `$CREDENTIALS_DIRECTORY`). Its first line is the secret.
    File(PathBuf),
    /// A program and its arguments, run without a shell; the first line of its output is the
    /// secret, used once.
    Command(Vec<String>),
    /// Asked on the terminal each time (foreground only).
    Prompt(String),
    /// Already asked once on the terminal at start-up.
    Given(Secret),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Command(argv) => write!(f, "Command({})", argv.join(" ")),
            SecretSource::Prompt(what) => write!(f, "Prompt({what})"),
            SecretSource::Given(_) => f.write_str("Given(***)"),
        }
    }
}

/// How a source is recorded in the state dir's mount record: where the secret comes from,
/// never the secret (a prompted one is recorded as "ask again").
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Recorded {
    File(PathBuf),
    Command(Vec<String>),
    Prompt(String),
}

impl serde::Serialize for SecretSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SecretSource::File(p) => Recorded::File(p.clone()),
            SecretSource::Command(argv) => Recorded::Command(argv.clone()),
            SecretSource::Prompt(label) => Recorded::Prompt(label.clone()),
            SecretSource::Given(_) => Recorded::Prompt("Passphrase".into()),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretSource, D::Error> {
        Ok(match Recorded::deserialize(d)? {
            Recorded::File(p) => SecretSource::File(p),
            Recorded::Command(argv) => SecretSource::Command(argv),
            Recorded::Prompt(label) => SecretSource::Prompt(label),
        })
    }
}

impl SecretSource {
    /// A command line split as a shell would (quotes, escapes), but run without one.
    pub fn command(line: &str) -> Result<SecretSource, String> {
        let argv = shell_words::split(line).map_err(|e| format!("cannot parse '{line}': {e}"))?;
        if argv.is_empty() {
            return Err("an empty command".into());
        }
        Ok(SecretSource::Command(argv))
    }

    /// Fetches the secret; `what` names it in errors ("the passphrase of key ...").
    pub fn get(&self, what: &str) -> Result<Secret, RemoteError> {
        match self {
            SecretSource::File(path) => read_file(path, what),
            SecretSource::Command(argv) => run_command(argv, what),
            SecretSource::Prompt(label) => {
                prompt(label).map_err(|e| auth_err(format!("cannot ask for {what}: {e}")))
            }
            SecretSource::Given(s) => Ok(s.clone()),
        }
    }
}

fn auth_err(msg: String) -> RemoteError {
    RemoteError::new(ErrorKind::Auth, msg)
}

/// Refuses a secret-bearing file that others may read, as OpenSSH refuses such key files.
pub fn check_private(path: &Path, what: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "refusing {what} {}: permissions {mode:04o} are too open, others can read it \
             (it must be readable by its owner only: chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn read_file(path: &Path, what: &str) -> Result<Secret, RemoteError> {
    check_private(path, "credential file").map_err(auth_err)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| auth_err(format!("cannot read {what} from {}: {e}", path.display())))?;
    Ok(first_line(text))
}

/// The first line, without its line ending; the rest is wiped.
fn first_line(mut text: String) -> Secret {
    let end = text.find(['\n', '\r']).unwrap_or(text.len());
    let line = text[..end].to_string();
    wipe(&mut text);
    Secret::new(line)
}

fn run_command(argv: &[String], what: &str) -> Result<Secret, RemoteError> {
    let shown = argv.first().map_or("", String::as_str);
    let mut child = Command::new(shown)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| auth_err(format!("cannot run {shown} for {what}: {e}")))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.as_mut().map(|o| o.read_to_string(&mut text));
        text
    });
    // Only the tail of stderr is kept for the message: a secret must never land there.
    let err_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = err.as_mut().map(|e| e.read_to_end(&mut text));
        text
    });
    let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT)
        .map_err(|e| auth_err(format!("{shown} (for {what}): {e}")))?;
    let text = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        let mut text = text;
        wipe(&mut text);
        let why = String::from_utf8_lossy(&stderr);
        let why = why.lines().last().unwrap_or("").trim();
        return Err(auth_err(format!(
            "{shown} (for {what}) failed with {status}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        )));
    }
    let secret = first_line(text);
    if secret.expose().is_empty() {
        return Err(auth_err(format!("{shown} (for {what}) printed nothing")));
    }
    Ok(secret)
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s, killed", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One prompt at a time: several connections may need a secret at once.
static TERMINAL: Mutex<()> = Mutex::new(());

/// Asks on the controlling terminal with echo off.
pub fn prompt(label: &str) -> io::Result<Secret> {
    let _one = TERMINAL.lock();
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tty);
    // SAFETY: termios calls on an open terminal descriptor with a zeroed struct to fill.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
        saved
    };
    let answer = (|| {
        write!(tty, "{label}: ")?;
        tty.flush()?;
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(&mut tty), &mut line)?;
        Ok(first_line(line))
    })();
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    answer
}

/// Whether the process can prompt: stdin is a terminal.
pub fn interactive() -> bool {
    // SAFETY: isatty on a standard descriptor.
    unsafe { libc::isatty(0) == 1 }
}

/// Answers a server's keyboard-interactive challenges (a second factor after the key): a
/// prompt that asks for a password gets the password, any other gets the one-time code.
pub struct Responder<'a> {
    pub password: Option<&'a SecretSource>,
    pub otp: Option<&'a SecretSource>,
    /// The first failure to fetch an answer, reported after the attempt.
    pub error: Option<RemoteError>,
    /// How many prompts were answered: none means the server asked nothing we could answer.
    pub answered: usize,
}

impl Responder<'_> {
    fn answer(&mut self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        let (source, what) = if lower.contains("password") && self.password.is_some() {
            (self.password, "the password")
        } else {
            (self.otp, "the one-time code")
        };
        let Some(source) = source else {
            return String::new();
        };
        match source.get(what) {
            Ok(s) => {
                self.answered += 1;
                s.expose().to_string()
            }
            Err(e) => {
                self.error.get_or_insert(e);
                String::new()
            }
        }
    }
}

impl ssh2::KeyboardInteractivePrompt for Responder<'_> {
    fn prompt<'b>(
        &mut self,
        _username: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'b>],
    ) -> Vec<String> {
        prompts.iter().map(|p| self.answer(&p.text)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh2::KeyboardInteractivePrompt;
    use std::borrow::Cow;

    #[test]
    fn secret_is_not_printed() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretSource::Given(s)).contains("hunter2"));
    }

    #[test]
    fn a_recorded_source_never_holds_the_secret() {
        let given = SecretSource::Given(Secret::new("hunter2".into()));
        let text = serde_json::to_string(&given).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let back: SecretSource = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, SecretSource::Prompt(_)));
        let cmd = SecretSource::command("pass show x").unwrap();
        let back: SecretSource =
            serde_json::from_str(&serde_json::to_string(&cmd).unwrap()).unwrap();
        assert!(matches!(back, SecretSource::Command(a) if a == ["pass", "show", "x"]));
    }

    #[test]
    fn file_source_takes_the_first_line_and_refuses_open_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "s3cret word\nignored\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let src = SecretSource::File(p.clone());
        assert_eq!(src.get("x").unwrap().expose(), "s3cret word");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = src.get("x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("0644 are too open"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn command_source_runs_without_a_shell() {
        let src = SecretSource::command("printf '%s\\n' 'a b;$(id)'").unwrap();
        assert_eq!(src.get("x").unwrap().expose(), "a b;$(id)");
        let e = SecretSource::command("sh -c 'echo leaked; echo oops >&2; exit 3'")
            .unwrap()
            .get("the passphrase")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("failed") && msg.contains("oops"), "{msg}");
        assert!(!msg.contains("leaked"), "{msg}");
        let e = SecretSource::command("/nonexistent/x").unwrap().get("x");
        assert!(e.unwrap_err().to_string().contains("cannot run"));
        assert!(SecretSource::command("  ").is_err());
        assert!(SecretSource::command("'unclosed").is_err());
    }

    #[test]
    fn responder_answers_password_and_code_prompts() {
        let pw = SecretSource::Given(Secret::new("pw".into()));
        let otp = SecretSource::command("echo 123456").unwrap();
        let mut r = Responder {
            password: Some(&pw),
            otp: Some(&otp),
            error: None,
            answered: 0,
        };
        let prompts = [
            ssh2::Prompt {
                text: Cow::Borrowed("Password: "),
                echo: false,
            },
            ssh2::Prompt {
                text: Cow::Borrowed("Verification code: "),
                echo: false,
            },
        ];
        assert_eq!(r.prompt("u", "", &prompts), ["pw", "123456"]);
        assert_eq!(r.answered, 2);
        let failing = SecretSource::command("false").unwrap();
        let mut r = Responder {
            password: None,
            otp: Some(&failing),
            error: None,
            answered: 0,
        };
        assert_eq!(r.prompt("u", "", &prompts), ["", ""]);
        assert!(r.error.is_some());
    }
}
