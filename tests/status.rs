//! `ftpsync status` as people use it, over a real FUSE mount and a real OpenSSH sshd: the live
//! figures during a large upload, the Prometheus text format (checked line by line by a strict
//! parser of the format), the textfile writer, and `--watch`.

mod common;

use common::{ftpsync, pattern, Mount, BIN};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const MIB: u64 = 1 << 20;

/// One sample: its metric name, labels (unescaped) and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// A float as the format allows it (Go's ParseFloat syntax, NaN and signed Inf spelled out).
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => return Ok(f64::NAN),
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut n = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return Err(format!("bad value {s:?}"));
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return Err(format!("bad exponent in {s:?}"));
        }
    }
    if i != b.len() {
        return Err(format!("bad value {s:?}"));
    }
    s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
}

/// `{a="x",b="y"}` (the braces stripped by the caller) into unescaped labels.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or(format!("label without '=' in {s:?}"))?;
        let name = &rest[..eq];
        if !valid_label_name(name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} value not quoted in {s:?}"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in label {name}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err("raw newline in a label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or(format!("unterminated label value in {s:?}"))?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &rest[end..];
        // Labels are separated by commas; a trailing comma is allowed.
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err(format!("expected ',' between labels in {s:?}")),
        }
    }
    Ok(labels)
}

/// Parses the Prometheus text exposition format (0.0.4) strictly: every line is a HELP, a
/// TYPE (a valid type), another comment, or a sample with a valid name, well-formed and
/// properly escaped labels, a float value and an optional integer timestamp. Every sample's
/// family has a TYPE and HELP before it, a family's lines form one group, HELP and TYPE come at
/// most once per family, no series appears twice, counters are not negative.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut sampled: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    let mut samples = Vec::new();
    let mut enter = |family: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if finished.contains(family) {
                return Err(format!("the lines of {family} are not one group"));
            }
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            *current = Some(family.to_string());
        }
        Ok(())
    };
    for (no, line) in text.split_terminator('\n').enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", no + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.first().copied() {
                Some("HELP") => {
                    let name = words.get(1).copied().unwrap_or("");
                    if !valid_metric_name(name) {
                        return Err(err(format!("bad metric name {name:?} in HELP")));
                    }
                    let doc = words.get(2).copied().unwrap_or("");
                    let mut it = doc.chars();
                    while let Some(c) = it.next() {
                        if c == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
                            return Err(err("bad escape in HELP".into()));
                        }
                    }
                    if !helps.insert(name.to_string()) {
                        return Err(err(format!("second HELP for {name}")));
                    }
                    enter(name, &mut current).map_err(err)?;
                }
                Some("TYPE") => {
                    let name = words.get(1).copied().unwrap_or("");
                    let kind = words.get(2).copied().unwrap_or("");
                    if !valid_metric_name(name) {
                        return Err(err(format!("bad metric name {name:?} in TYPE")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("bad type {kind:?}")));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(err(format!("second TYPE for {name}")));
                    }
                    if sampled.contains(name) {
                        return Err(err(format!("TYPE of {name} after its samples")));
                    }
                    enter(name, &mut current).map_err(err)?;
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => {
                // The closing brace is the first one outside a quoted value.
                let (mut quoted, mut escaped, mut close) = (false, false, None);
                for (i, c) in after.char_indices() {
                    match (quoted, escaped, c) {
                        (true, true, _) => escaped = false,
                        (true, false, '\\') => escaped = true,
                        (_, false, '"') => quoted = !quoted,
                        (false, _, '}') => {
                            close = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or_else(|| err("unclosed labels".into()))?;
                (
                    parse_labels(&after[..close]).map_err(err)?,
                    &after[close + 1..],
                )
            }
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let fields: Vec<&str> = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?
            .split(' ')
            .collect();
        let value = match fields.as_slice() {
            [v] => parse_value(v).map_err(err)?,
            [v, ts] => {
                ts.parse::<i64>()
                    .map_err(|e| err(format!("bad timestamp: {e}")))?;
                parse_value(v).map_err(err)?
            }
            _ => return Err(err("expected a value and an optional timestamp".into())),
        };
        let family = [
            name,
            name.strip_suffix("_bucket").unwrap_or(name),
            name.strip_suffix("_sum").unwrap_or(name),
            name.strip_suffix("_count").unwrap_or(name),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .ok_or_else(|| err(format!("sample of {name} without a TYPE before it")))?;
        if !helps.contains(family) {
            return Err(err(format!("sample of {name} without a HELP before it")));
        }
        let kind = &types[family];
        if family != name && !["histogram", "summary"].contains(&kind.as_str()) {
            return Err(err(format!(
                "{name} is not a sample of the {kind} {family}"
            )));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("a negative or NaN counter".into()));
        }
        enter(family, &mut current).map_err(err)?;
        sampled.insert(family.to_string());
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(err("a series given twice".into()));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The value of the one sample named `name`, checking its `mount` label.
fn metric(samples: &[Sample], name: &str, mount: &Path) -> Option<f64> {
    let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
    assert!(found.len() <= 1, "{name} given {} times", found.len());
    found.first().map(|s| {
        assert_eq!(
            s.labels.get("mount").map(String::as_str),
            Some(mount.to_str().unwrap()),
            "{name}"
        );
        s.value
    })
}

fn prometheus(m: &Mount, target: &Path) -> Vec<Sample> {
    let out = ftpsync([
        "status".as_ref(),
        target.as_os_str(),
        "--prometheus".as_ref(),
    ]);
    out.assert_ok();
    parse_prometheus(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not the Prometheus text format: {e}\n{}\nlog:\n{}",
            out.stdout,
            m.log_tail()
        )
    })
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn the_parser_is_strict_and_mount_labels_survive_quotes_backslashes_and_newlines() {
    let good = "# HELP a_total Counts \\\\ things.\\n\n# TYPE a_total counter\n\
                a_total{m=\"x\",n=\"y\\\"\\\\\\n\",} 1.5e3 1700000000000\n\
                # a plain comment\n# TYPE b gauge\n# HELP b B.\nb +Inf\nb{l=\"1\"} NaN\n";
    let s = parse_prometheus(good).expect("valid");
    assert_eq!(s[0].labels["n"], "y\"\\\n");
    assert_eq!(s[0].value, 1500.0);
    for (bad, why) in [
        ("a 1\n", "no TYPE"),
        ("# TYPE a gauge\na 1\n", "no HELP"),
        ("# HELP a x\n# TYPE a gauge\na 1", "no final newline"),
        ("# HELP a x\n# TYPE a gauges\na 1\n", "bad type"),
        ("# HELP a x\n# TYPE a gauge\na 1\na 2\n", "duplicate series"),
        (
            "# HELP a x\n# TYPE a gauge\na{l=\"1\",l=\"2\"} 1\n",
            "duplicate label",
        ),
        ("# HELP a x\n# TYPE a gauge\na{l=\"\\t\"} 1\n", "bad escape"),
        ("# HELP a x\n# TYPE a gauge\na{l=1} 1\n", "unquoted"),
        (
            "# HELP a x\n# TYPE a gauge\na{1l=\"1\"} 1\n",
            "bad label name",
        ),
        ("# HELP a x\n# TYPE a gauge\na 1,5\n", "bad float"),
        ("# HELP a x\n# TYPE a gauge\na inf\n", "Go's spelling only"),
        ("# HELP a x\n# TYPE a gauge\na-b 1\n", "bad metric name"),
        ("# HELP a x\n# TYPE a counter\na -1\n", "negative counter"),
        ("# HELP a x\na 1\n# TYPE a gauge\n", "TYPE after samples"),
        (
            "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na{l=\"2\"} 2\n",
            "family not grouped",
        ),
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted ({why}): {bad:?}");
    }

    let mount = "/mnt/a \"quoted\" back\\slash\nnewline";
    let text = ftpsync::prometheus::render(&ftpsync::report::Status::default(), mount);
    let s = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "ftpsync_daemon_up");
    assert_eq!(s[0].labels["mount"], mount, "unescapes to the same path");
}

#[test]
fn status_during_a_large_upload_shows_pending_bytes_falling_a_rate_and_valid_prometheus() {
    let mut m = Mount::builder().arg("--bwlimit").arg("2M").mount();
    let size = 24 * MIB; // 12 s at 2 MiB/s
    fs::write(m.path("big.bin"), pattern(11, size as usize)).expect("write");

    let first = m.wait_mirror_status(Duration::from_secs(30), "the upload under way", |s| {
        u(&s["bytes_sent"]) > 0 && u(&s["pending_bytes"]) > 0
    });
    let p0 = u(&first["pending_bytes"]);
    assert!(p0 <= size, "{first}");
    let later = m.wait_mirror_status(
        Duration::from_secs(30),
        "pending bytes falling by 2 MiB, with a rate and a time left",
        |s| {
            let p = u(&s["pending_bytes"]);
            p > 0 && p + 2 * MIB <= p0 && u(&s["upload_rate"]) > 0 && s["eta_seconds"].is_u64()
        },
    );
    let rate = u(&later["upload_rate"]);
    assert!(rate <= 3 * MIB, "--bwlimit 2M, yet {rate} bytes/s: {later}");
    let oldest = &later["oldest_pending"];
    assert_eq!(oldest["path"], "big.bin", "{later}");
    assert!(
        oldest["age_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{later}"
    );
    assert_eq!(later["connected"], true, "{later}");
    assert_eq!(later["halted"], false, "{later}");
    assert_eq!(later["rate_window_seconds"], 10, "{later}");

    let human = ftpsync(["status".as_ref(), m.mnt.as_os_str()]);
    human.assert_ok();
    for want in [
        "remote:   connected",
        "pending:  1 path (",
        ", uploading at ",
        " left",
        "oldest pending change: ",
        "(big.bin)",
        "confirmed in the last hour: ",
        "failures: none",
    ] {
        assert!(
            human.stdout.contains(want),
            "no {want:?} in:\n{}",
            human.stdout
        );
    }

    let s = prometheus(&m, &m.mnt);
    assert_eq!(metric(&s, "ftpsync_daemon_up", &m.mnt), Some(1.0));
    assert_eq!(metric(&s, "ftpsync_connection_up", &m.mnt), Some(1.0));
    assert_eq!(metric(&s, "ftpsync_halted", &m.mnt), Some(0.0));
    let pending = metric(&s, "ftpsync_pending_bytes", &m.mnt).unwrap();
    assert!(pending > 0.0 && pending < p0 as f64, "{pending}");
    assert!(metric(&s, "ftpsync_upload_bytes_per_second", &m.mnt).unwrap() > 0.0);
    assert!(metric(&s, "ftpsync_sent_bytes_total", &m.mnt).unwrap() > 0.0);
    assert!(metric(&s, "ftpsync_oldest_pending_age_seconds", &m.mnt).unwrap() > 0.0);
    assert_eq!(metric(&s, "ftpsync_in_flight_paths", &m.mnt), Some(1.0));
    assert_eq!(metric(&s, "ftpsync_failures", &m.mnt), Some(0.0));
    assert!(metric(&s, "ftpsync_server_info", &m.mnt).is_some());

    m.flush();
    let done = m.mirror_status();
    assert_eq!(u(&done["pending_bytes"]), 0, "{done}");
    assert!(done["eta_seconds"].is_null(), "{done}");
    assert!(done["oldest_pending"].is_null(), "{done}");
    assert_eq!(u(&done["confirmed_last_hour"]["files"]), 1, "{done}");
    assert_eq!(u(&done["confirmed_last_hour"]["bytes"]), size, "{done}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = done["last_confirmed_unix"]
        .as_f64()
        .expect("a confirmation");
    assert!((now - 120.0..=now + 1.0).contains(&last), "{done}");

    let s = prometheus(&m, &m.state);
    assert_eq!(
        metric(&s, "ftpsync_confirmed_files_total", &m.mnt),
        Some(1.0)
    );
    assert_eq!(
        metric(&s, "ftpsync_confirmed_bytes_total", &m.mnt),
        Some(size as f64)
    );
    assert_eq!(metric(&s, "ftpsync_pending_bytes", &m.mnt), Some(0.0));
    assert_eq!(metric(&s, "ftpsync_eta_seconds", &m.mnt), Some(0.0));
    assert!(metric(&s, "ftpsync_last_confirmed_timestamp_seconds", &m.mnt).is_some());
    m.unmount();
}

/// `ftpsync ARGS` running in the background, its stdout to a file (not a terminal); killed
/// when dropped, also when the test fails.
struct Background(Child);

impl Background {
    fn spawn(args: &[&std::ffi::OsStr], out: &Path) -> Background {
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(out).expect("stdout file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ftpsync");
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `what` until it returns Some, at most `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_textfile_is_replaced_atomically_and_watch_repeats_plain_blocks() {
    let mut m = Mount::new();
    fs::write(m.path("one"), b"1").expect("write");
    m.flush();

    let dir = m.root.join("textfile");
    fs::create_dir(&dir).expect("mkdir");
    let prom = dir.join("ftpsync.prom");
    let writer = Background::spawn(
        &[
            "status".as_ref(),
            m.state.as_os_str(),
            "--prometheus-file".as_ref(),
            prom.as_os_str(),
            "--interval".as_ref(),
            "0.2".as_ref(),
        ],
        &m.root.join("writer.out"),
    );
    let watcher_out = m.root.join("watch.out");
    let watcher = Background::spawn(
        &[
            "status".as_ref(),
            m.mnt.as_os_str(),
            "--watch".as_ref(),
            "0.2".as_ref(),
        ],
        &watcher_out,
    );
    // Every read sees a whole text: the file is only ever replaced by a rename.
    let confirmed = |want: f64| {
        let text = fs::read_to_string(&prom).ok()?;
        let s = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (metric(&s, "ftpsync_confirmed_files_total", &m.mnt)? == want).then_some(())
    };
    poll(
        Duration::from_secs(30),
        "the textfile showing one file",
        || confirmed(1.0),
    );
    fs::write(m.path("two"), b"2").expect("write");
    m.flush();
    poll(
        Duration::from_secs(30),
        "the textfile showing two files",
        || confirmed(2.0),
    );
    let blocks = poll(Duration::from_secs(30), "three watch blocks", || {
        let text = fs::read_to_string(&watcher_out).ok()?;
        (text.matches("ftpsync status at ").count() >= 3).then_some(text)
    });
    drop(writer);
    drop(watcher);
    assert!(
        !blocks.contains('\x1b'),
        "no terminal codes when stdout is a file:\n{blocks}"
    );
    let last = blocks.rsplit("ftpsync status at ").next().unwrap();
    for want in [
        "remote:   connected",
        "pending:  nothing to upload",
        "failures: none",
    ] {
        assert!(last.contains(want), "no {want:?} in:\n{last}");
    }
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".prom"))
        .collect();
    assert_eq!(names, ["ftpsync.prom"]);

    // A textfile that cannot be written is an error at once, not a silent loop.
    let out = ftpsync([
        "status".as_ref(),
        m.state.as_os_str(),
        "--prometheus-file".as_ref(),
        m.root.join("nowhere/x.prom").as_os_str(),
    ]);
    assert!(!out.ok() && out.stderr.contains("nowhere"), "{out:?}");

    // Without a daemon: only that it is down.
    m.unmount();
    let s = prometheus(&m, &m.state);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(metric(&s, "ftpsync_daemon_up", &m.mnt), Some(0.0));
}

/// Errors answered to the kernel are counted (a lookup of a missing name is one).
#[test]
fn status_counts_the_errors_answered_to_the_kernel() {
    let m = Mount::new();
    let before = m.status_json()["daemon"]["errors_answered"]
        .as_u64()
        .expect("errors_answered in status");
    for i in 0..3 {
        assert!(fs::metadata(m.path(format!("missing-{i}"))).is_err());
    }
    let after = m.status_json()["daemon"]["errors_answered"]
        .as_u64()
        .expect("errors_answered");
    assert!(after >= before + 3, "{before} -> {after}");
}
