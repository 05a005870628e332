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

/// The most read from a secret command: a passphrase is short; a flood is refused.
const MAX_OUTPUT: u64 = 64 << 10;
/// The most of its stderr quoted in an error message.
const MAX_STDERR_QUOTE: usize = 200;

/// Runs a secret command in a process group of its own, with the timeout covering its output
/// too: a helper it leaves behind holding the pipe open cannot hang the login.
fn run_command(argv: &[String], what: &str) -> Result<Secret, RemoteError> {
    use std::os::unix::process::CommandExt;
    let shown = argv.first().map_or("", String::as_str);
    let mut child = Command::new(shown)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| auth_err(format!("cannot run {shown} for {what}: {e}")))?;
    let (tx, rx) = crossbeam_channel::bounded::<(bool, Vec<u8>)>(2);
    let pipes: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ];
    for (is_out, pipe) in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let Some(pipe) = pipe else {
                let _ = tx.send((is_out, Vec::new()));
                return;
            };
            // Only the first line of stdout counts: it is sent as soon as it is read. The
            // rest is drained, so a program printing more is not killed by a broken pipe.
            let mut reader = io::BufReader::new(pipe);
            let mut bytes = Vec::new();
            let _ = if is_out {
                io::BufRead::read_until(&mut (&mut reader).take(MAX_OUTPUT), b'\n', &mut bytes)
            } else {
                (&mut reader).take(MAX_OUTPUT).read_to_end(&mut bytes)
            };
            let _ = tx.send((is_out, bytes));
            let _ = io::copy(&mut reader, &mut io::sink());
        });
    }
    let status = wait_with_timeout(&mut child, Instant::now() + COMMAND_TIMEOUT);
    // The child is done and its output is in the pipes; a helper it left behind may hold
    // them open, so take what came within a moment, no more.
    let grace = Instant::now() + Duration::from_millis(500);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_deadline(grace) {
            Ok((true, b)) => out = b,
            Ok((false, b)) => err = b,
            Err(_) => break,
        }
    }
    // Whatever it started goes too (a no-op once they are gone).
    // SAFETY: kill on the process group made for the child above.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let mut text = String::from_utf8(out).unwrap_or_default();
    let status = match status {
        Ok(s) if s.success() => s,
        failed => {
            wipe(&mut text);
            let why = match failed {
                Ok(s) => format!("failed with {s}"),
                Err(e) => e.to_string(),
            };
            return Err(auth_err(format!(
                "{shown} (for {what}) {why}{}",
                stderr_tail(&err)
            )));
        }
    };
    let secret = first_line(text);
    if secret.expose().is_empty() {
        return Err(auth_err(format!(
            "{shown} (for {what}) printed nothing ({status})"
        )));
    }
    Ok(secret)
}

/// The last line of a command's stderr, short and printable, for an error message.
fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if last.is_empty() {
        return String::new();
    }
    let short: String = last.chars().take(MAX_STDERR_QUOTE).collect();
    format!(": {}", short.escape_debug())
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    deadline: Instant,
) -> io::Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill on the child's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "gave no answer within {} s and was killed",
                    COMMAND_TIMEOUT.as_secs()
                ),
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
/// prompt that asks for a password gets the password, only from the password source; any
/// other gets the one-time code. A terminal prompt shows the server's own words.
pub struct Responder<'a> {
    pub password: Option<&'a SecretSource>,
    pub otp: Option<&'a SecretSource>,
    /// The first failure to fetch an answer (or a question we may not answer), reported after
    /// the attempt.
    pub error: Option<RemoteError>,
    /// How many prompts were answered: none means the server asked nothing we could answer.
    pub answered: usize,
    /// Whether the password was sent: password authentication is then not tried again.
    pub sent_password: bool,
}

impl<'a> Responder<'a> {
    pub fn new(password: Option<&'a SecretSource>, otp: Option<&'a SecretSource>) -> Self {
        Responder {
            password,
            otp,
            error: None,
            answered: 0,
            sent_password: false,
        }
    }

    fn answer(&mut self, text: &str) -> String {
        let shown: String = text.trim().chars().take(80).collect::<String>();
        let shown = shown.escape_debug().to_string();
        let asks_password = text.to_ascii_lowercase().contains("password");
        let (source, what, option) = if asks_password {
            (self.password, "the password", "--password-file")
        } else {
            (self.otp, "the one-time code", "--otp-command")
        };
        let Some(source) = source else {
            self.error.get_or_insert(auth_err(format!(
                "the server asks \"{shown}\", and no {option} was given to answer it"
            )));
            return String::new();
        };
        let fetched = match source {
            SecretSource::Prompt(_) => SecretSource::Prompt(shown).get(what),
            other => other.get(what),
        };
        match fetched {
            Ok(s) => {
                self.answered += 1;
                self.sent_password |= asks_password;
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
        // A helper left holding the pipe open does not hang the login past the timeout,
        // and a flood on stderr is cut short in the message.
        let e = SecretSource::command("sh -c 'head -c 100000 /dev/zero | tr \\\\0 x >&2; exit 1'")
            .unwrap()
            .get("x")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{}", e.len());
        let start = Instant::now();
        let ok = SecretSource::command("sh -c 'echo pw; sleep 60 & exit 0'")
            .unwrap()
            .get("x");
        assert_eq!(ok.unwrap().expose(), "pw");
        assert!(start.elapsed() < Duration::from_secs(40));
        let e = SecretSource::command("/nonexistent/x").unwrap().get("x");
        assert!(e.unwrap_err().to_string().contains("cannot run"));
        assert!(SecretSource::command("  ").is_err());
        assert!(SecretSource::command("'unclosed").is_err());
    }

    #[test]
    fn responder_answers_password_and_code_prompts() {
        let pw = SecretSource::Given(Secret::new("pw".into()));
        let otp = SecretSource::command("echo 123456").unwrap();
        let mut r = Responder::new(Some(&pw), Some(&otp));
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
        assert!(r.sent_password);
        // A password prompt is never answered with the code.
        let mut r = Responder::new(None, Some(&otp));
        assert_eq!(r.prompt("u", "", &prompts), ["", "123456"]);
        let e = r.error.unwrap().to_string();
        assert!(
            e.contains("Password:") && e.contains("--password-file"),
            "{e}"
        );
        assert!(!r.sent_password);
        let failing = SecretSource::command("false").unwrap();
        let mut r = Responder::new(None, Some(&failing));
        assert_eq!(r.prompt("u", "", &prompts[1..]), [""]);
        assert!(r.error.is_some());
    }
}
