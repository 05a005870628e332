//! The status document (doc/CONTRACTS.md, `ftpsync status --json`) as types: the engine fills
//! [`Mirror`], the control socket carries it, and `status`, `--watch`, Prometheus, `flush`'s
//! progress line and `unmount` read the same fields by name, so a field renamed or retyped on
//! one side is a compile error on the other, not a silent `null`.
//!
//! Optional fields are `Option`s that serialize as `null`, as the contract spells them; the
//! journal part (`journal`, `pending`, `hashes`) is absent from the live view, which reads no
//! journal. A field missing from what is read takes its default: a reply from an older daemon
//! still reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A path as text (lossy UTF-8) and as its exact bytes in hex: the one JSON form of a path,
/// everywhere a path is written as JSON (status, control replies, verify, the audit log).
/// A path that is one field among others is written the same way by [`with_paths`]: `KEY`
/// the text, `KEY_hex` the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathName {
    pub path: String,
    pub path_hex: String,
}

impl PathName {
    pub fn of(p: &[u8]) -> PathName {
        PathName {
            path: String::from_utf8_lossy(p).into_owned(),
            path_hex: hex::encode(p),
        }
    }

    /// The exact bytes; the lossy text when the hex is missing (an older daemon) or damaged.
    pub fn bytes(&self) -> Vec<u8> {
        match hex::decode(&self.path_hex) {
            Ok(b) if !b.is_empty() || self.path.is_empty() => b,
            _ => self.path.clone().into_bytes(),
        }
    }
}

/// `fields` (a JSON object) with each path of `paths` added in the one JSON form: `KEY` its
/// text (lossy UTF-8), `KEY_hex` its exact bytes.
pub fn with_paths(paths: &[(&str, &[u8])], fields: Value) -> Value {
    let mut doc = match fields {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    for (key, p) in paths {
        let name = PathName::of(p);
        doc.insert(key.to_string(), Value::String(name.path));
        doc.insert(format!("{key}_hex"), Value::String(name.path_hex));
    }
    Value::Object(doc)
}

/// The whole document: what the daemon reports, and (one-shot view only) the journal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub state_dir: String,
    /// The mount record; None before the first mount.
    pub mount: Option<MountRecord>,
    pub daemon: Daemon,
    /// None when no daemon runs or it did not answer.
    pub mirror: Option<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalInfo>,
    /// Journal records not yet checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingRecord>>,
    /// The latest hash of every file, confirmed or journaled since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Vec<HashEntry>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MountRecord {
    pub mountpoint: String,
    pub local_dir: String,
    pub remote: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Daemon {
    pub running: bool,
    pub pid: Option<u32>,
    pub pending_hashes: Option<usize>,
    /// Errors answered to the kernel since the daemon started.
    pub errors_answered: Option<u64>,
    pub open_for_writing: Option<OpenFiles>,
}

/// Files open for writing: how many paths, and the first ones in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenFiles {
    pub count: usize,
    pub paths: Vec<PathName>,
}

impl OpenFiles {
    /// `count` files, of which `paths` are named.
    pub fn of<P: AsRef<[u8]>>(count: usize, paths: &[P]) -> OpenFiles {
        OpenFiles {
            count,
            paths: paths.iter().map(|p| PathName::of(p.as_ref())).collect(),
        }
    }
}

/// The sync engine's state. Counters are since the daemon started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Mirror {
    /// `connecting`, `connected`, `retrying: <error>` or `halted: <error>`.
    pub connection: String,
    pub connected: bool,
    pub halted: bool,
    /// Paths waiting, not counting those in flight.
    pub pending: u64,
    pub pending_bytes: u64,
    pub in_flight: u64,
    pub upload_rate: u64,
    pub rate_window_seconds: u64,
    pub eta_seconds: Option<u64>,
    pub oldest_pending: Option<Oldest>,
    pub confirmed: u64,
    pub bytes_sent: u64,
    pub bytes_confirmed: u64,
    pub confirmed_last_hour: LastHour,
    /// RFC 3339.
    pub last_confirmed: Option<String>,
    pub last_confirmed_unix: Option<f64>,
    pub conflicts: u64,
    pub mirrored_paths: u64,
    pub applied_seq: u64,
    pub failures: Vec<Failure>,
    pub remote_only: Vec<String>,
    pub server: Option<Server>,
    pub bwlimit: Option<u64>,
}

impl Mirror {
    /// Paths not yet equal on the server, waiting or in flight.
    pub fn paths_left(&self) -> u64 {
        self.pending + self.in_flight
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Oldest {
    #[serde(flatten)]
    pub name: PathName,
    /// In 0.1 s steps.
    pub age_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LastHour {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Failure {
    #[serde(flatten)]
    pub name: PathName,
    pub reason: String,
}

/// The server of the current session and what was negotiated with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    pub remote: String,
    pub host_key: HostKey,
    pub auth: String,
    pub capabilities: Capabilities,
    pub algorithms: Algorithms,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostKey {
    #[serde(rename = "type")]
    pub key_type: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub symlinks: String,
    /// `kept` or `ignored`.
    pub permissions: String,
    pub fsync: bool,
    pub verify: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Algorithms {
    pub kex: String,
    pub host_key: String,
    /// Client to server, server to client.
    pub cipher: [String; 2],
    pub mac: [String; 2],
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalInfo {
    pub records: usize,
    pub applied_seq: u64,
    pub next_seq: u64,
    pub torn_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PendingRecord {
    pub seq: u64,
    pub op: String,
    #[serde(flatten)]
    pub name: PathName,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HashEntry {
    #[serde(flatten)]
    pub name: PathName,
    pub size: u64,
    pub sha256: String,
    /// 0 for a hash the manifest holds (confirmed, no order).
    pub seq: u64,
    pub confirmed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_path_is_written_one_way_and_read_back_exactly() {
        for p in [
            &b"a/b.txt"[..],
            b"caf\xc3\xa9",
            b"bad\xff\xfename",
            b"a\nb",
            b"",
        ] {
            let v = json!(PathName::of(p));
            let back: PathName = serde_json::from_value(v).expect("reads");
            assert_eq!(back.bytes(), p);
        }
        assert_eq!(
            json!(PathName::of(b"x\xff")),
            json!({"path": "x\u{fffd}", "path_hex": "78ff"})
        );
        assert_eq!(
            with_paths(&[("from", b"a"), ("to", b"b\xff")], json!({"n": 1})),
            json!({"n": 1, "from": "a", "from_hex": "61", "to": "b\u{fffd}", "to_hex": "62ff"})
        );
    }
}
