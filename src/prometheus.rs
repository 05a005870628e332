//! The Prometheus text exposition format (version 0.0.4), as `ftpsync status --prometheus`
//! prints it and `--prometheus-file` writes it for node_exporter's textfile collector: a
//! `# HELP` and a `# TYPE` line before each family's samples, label values escaped.

use crate::report::Status;
use std::collections::BTreeSet;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A text being built; each family is declared once, before its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<String>,
    current: Option<String>,
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Go's float syntax, with the format's spellings of infinity and NaN.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Display never uses an exponent and prints integers without a fraction.
        format!("{v}")
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Exposition {
    /// Declares a family; its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let fresh = self.families.insert(name.to_string());
        debug_assert!(fresh, "family {name} declared twice");
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self.current = Some(name.to_string());
    }

    /// One sample of the family declared last.
    pub fn sample(&mut self, labels: &[(&str, &str)], v: f64) {
        let Some(name) = &self.current else {
            debug_assert!(false, "a sample before any family");
            return;
        };
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k) && !k.starts_with("__"), "{k}");
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value(v));
    }

    /// A family with one sample.
    pub fn metric(&mut self, name: &str, kind: Kind, help: &str, labels: &[(&str, &str)], v: f64) {
        self.family(name, kind, help);
        self.sample(labels, v);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The metrics of one mount, from its status document (`status::live`); `mount` labels them.
pub fn render(doc: &Status, mount: &str) -> String {
    use Kind::{Counter, Gauge};
    let l = [("mount", mount)];
    let mut x = Exposition::default();
    x.metric(
        "ftpsync_daemon_up",
        Gauge,
        "1 when the mount's daemon answered on its control socket; without it no other ftpsync metric of the mount is written.",
        &l,
        if doc.mirror.is_some() { 1.0 } else { 0.0 },
    );
    let Some(m) = &doc.mirror else {
        return x.finish();
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    x.metric(
        "ftpsync_connection_up",
        Gauge,
        "1 when the last attempt to reach the SFTP server succeeded.",
        &l,
        flag(m.connected),
    );
    x.metric(
        "ftpsync_halted",
        Gauge,
        "1 when uploads are stopped by a refused host key or login until someone fixes it.",
        &l,
        flag(m.halted),
    );
    x.metric(
        "ftpsync_pending_hashes",
        Gauge,
        "Closed files waiting to be hashed.",
        &l,
        doc.daemon.pending_hashes.unwrap_or(0) as f64,
    );
    x.metric(
        "ftpsync_pending_paths",
        Gauge,
        "Changed paths waiting to be made equal on the server (not counting those in flight).",
        &l,
        m.pending as f64,
    );
    x.metric(
        "ftpsync_in_flight_paths",
        Gauge,
        "Paths being uploaded or otherwise changed on the server now.",
        &l,
        m.in_flight as f64,
    );
    x.metric(
        "ftpsync_pending_bytes",
        Gauge,
        "Bytes still to upload: waiting files in full, files in flight less what was sent.",
        &l,
        m.pending_bytes as f64,
    );
    x.metric(
        "ftpsync_upload_bytes_per_second",
        Gauge,
        "Upload rate over the last rate_window_seconds (10 s).",
        &l,
        m.upload_rate as f64,
    );
    let eta = match m.eta_seconds {
        Some(s) => s as f64,
        None if m.pending_bytes == 0 => 0.0,
        None => f64::INFINITY,
    };
    x.metric(
        "ftpsync_eta_seconds",
        Gauge,
        "Time to send the pending bytes at the current upload rate (+Inf when nothing is moving).",
        &l,
        eta,
    );
    x.metric(
        "ftpsync_oldest_pending_age_seconds",
        Gauge,
        "Age of the oldest change not yet confirmed on the server (0 when none).",
        &l,
        m.oldest_pending.as_ref().map_or(0.0, |o| o.age_seconds),
    );
    x.metric(
        "ftpsync_confirmed_files_total",
        Counter,
        "Files uploaded and confirmed by SHA-256 on the server since the daemon started.",
        &l,
        m.confirmed as f64,
    );
    x.metric(
        "ftpsync_confirmed_bytes_total",
        Counter,
        "Bytes of the files confirmed since the daemon started.",
        &l,
        m.bytes_confirmed as f64,
    );
    x.metric(
        "ftpsync_sent_bytes_total",
        Counter,
        "Bytes read for uploads since the daemon started (retried and cancelled uploads included).",
        &l,
        m.bytes_sent as f64,
    );
    x.metric(
        "ftpsync_conflicts_total",
        Counter,
        "Server files changed behind ftpsync's back and kept aside as .ftpsync-conflict copies.",
        &l,
        m.conflicts as f64,
    );
    x.metric(
        "ftpsync_failures",
        Gauge,
        "Paths whose last attempt failed (ftpsync status shows why); retried with backoff.",
        &l,
        m.failures.len() as f64,
    );
    x.metric(
        "ftpsync_mirrored_paths",
        Gauge,
        "Paths the manifest records as confirmed on the server.",
        &l,
        m.mirrored_paths as f64,
    );
    if let Some(t) = m.last_confirmed_unix {
        x.metric(
            "ftpsync_last_confirmed_timestamp_seconds",
            Gauge,
            "Unix time of the last file confirmed on the server (absent before the first).",
            &l,
            t,
        );
    }
    if let Some(s) = &m.server {
        x.metric(
            "ftpsync_server_info",
            Gauge,
            "The server of the last connection, its host key and negotiated algorithms (value 1).",
            &[
                ("mount", mount),
                ("remote", &s.remote),
                ("host_key", &s.host_key.fingerprint),
                ("kex", &s.algorithms.kex),
                ("cipher", &s.algorithms.cipher[0]),
            ],
            1.0,
        );
    }
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(doc: serde_json::Value) -> Status {
        serde_json::from_value(doc).expect("a status document")
    }

    #[test]
    fn a_mount_path_with_a_quote_a_backslash_and_a_newline_is_escaped() {
        let mount = "/mnt/a \"b\"\\c\nd";
        assert_eq!(escape_label(mount), r#"/mnt/a \"b\"\\c\nd"#);
        let text = render(&status(json!({"mirror": null})), mount);
        assert_eq!(
            text.lines().last(),
            Some(r#"ftpsync_daemon_up{mount="/mnt/a \"b\"\\c\nd"} 0"#)
        );
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn values_use_the_format_spellings() {
        assert_eq!(value(3.0), "3");
        assert_eq!(value(0.25), "0.25");
        assert_eq!(value(1e21), "1000000000000000000000");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert!(valid_name("ftpsync_x:y_total") && !valid_name("9x") && !valid_name("a-b"));
    }

    #[test]
    fn a_live_mount_gives_every_family_once_help_and_type_first() {
        let doc = json!({
            "daemon": {"pending_hashes": 2},
            "mirror": {"connected": true, "halted": false, "pending": 3, "in_flight": 1,
                       "pending_bytes": 4096, "upload_rate": 2048, "eta_seconds": 2,
                       "oldest_pending": {"path": "a", "age_seconds": 1.5}, "confirmed": 7,
                       "bytes_confirmed": 70, "bytes_sent": 80, "conflicts": 0,
                       "failures": [{"path": "x", "reason": "y"}], "mirrored_paths": 9,
                       "last_confirmed_unix": 1764111111.5,
                       "server": {"remote": "sftp://u@h/p", "host_key": {"fingerprint": "SHA256:x"},
                                  "algorithms": {"kex": "curve25519-sha256", "cipher": ["aes256-gcm@openssh.com", "aes256-gcm@openssh.com"]}}},
        });
        let text = render(&status(doc), "/mnt/x");
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        let unique: BTreeSet<&String> = declared.iter().collect();
        assert_eq!(unique.len(), declared.len());
        assert!(text.contains("ftpsync_pending_bytes{mount=\"/mnt/x\"} 4096\n"));
        assert!(text.contains("ftpsync_oldest_pending_age_seconds{mount=\"/mnt/x\"} 1.5\n"));
        assert!(text.contains("ftpsync_failures{mount=\"/mnt/x\"} 1\n"));
        assert!(text
            .contains("ftpsync_last_confirmed_timestamp_seconds{mount=\"/mnt/x\"} 1764111111.5\n"));
        assert!(text.contains("# TYPE ftpsync_confirmed_files_total counter\n"));
        assert!(text.contains(
            "ftpsync_server_info{mount=\"/mnt/x\",remote=\"sftp://u@h/p\",host_key=\"SHA256:x\",kex=\"curve25519-sha256\",cipher=\"aes256-gcm@openssh.com\"} 1\n"
        ));
    }
}
