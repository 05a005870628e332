//! `ftpsync audit`: the log for people. Names in it come from the mirrored tree, so whatever
//! they hold is quoted, never printed raw: a file name must not forge a line of output or move
//! the cursor.

use crate::audit::{for_each_line, log_files, parse_record, RESERVED};
use crate::statedir::{self, Access};
use anyhow::Context;
use serde_json::{Map, Value};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

/// Prints lines readably (or as the raw JSON with `json`), only those at or after `since`.
/// Lines that are not records are always shown (flagged), since their time is unknown.
pub fn print(
    state_dir: &Path,
    since: Option<SystemTime>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let files = log_files(state_dir).with_context(|| format!("reading {}", state_dir.display()))?;
    for (name, path) in &files {
        let file = statedir::open(path, Access::Read)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut n = 0;
        let mut result = Ok(());
        for_each_line(file, |line, _| {
            n += 1;
            if result.is_ok() {
                result = print_line(name, n, line, since, json, out);
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
        result?;
    }
    Ok(())
}

fn print_line(
    file: &str,
    n: u64,
    line: &[u8],
    since: Option<SystemTime>,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Some(record) = parse_record(line) else {
        let text = String::from_utf8_lossy(line);
        return if json {
            let v = serde_json::json!({ "unreadable": text, "file": file, "line": n });
            writeln!(out, "{v}")
        } else {
            writeln!(
                out,
                "?  {file} line {n}: not an audit record: {}",
                quote(&text)
            )
        };
    };
    let time = record
        .get("time")
        .and_then(Value::as_str)
        .and_then(crate::utc::parse_rfc3339);
    if since.is_some_and(|s| time.is_some_and(|t| t < s)) {
        return Ok(());
    }
    if !json {
        return writeln!(out, "{}", readable(&record, time));
    }
    // serde_json never writes raw control bytes; re-encode a line that has some so they
    // cannot reach a terminal.
    if line.iter().any(|b| b.is_ascii_control()) {
        writeln!(out, "{}", Value::Object(record))
    } else {
        out.write_all(line)?;
        out.write_all(b"\n")
    }
}

/// `2026-11-25 23:03:47Z  confirmed      path=a/b.txt size=12 ...`
fn readable(record: &Map<String, Value>, time: Option<SystemTime>) -> String {
    let time = match time {
        Some(t) => crate::utc::readable(t),
        None => token(&record.get("time").map(text).unwrap_or_default()),
    };
    let event = token(&record.get("event").map(text).unwrap_or_default());
    let mut s = format!("{time}  {event:<14}");
    for (k, v) in record {
        if !RESERVED.contains(&k.as_str()) && !says_nothing_more(record, k) {
            s.push(' ');
            s.push_str(&token(k));
            s.push('=');
            s.push_str(&token(&text(v)));
        }
    }
    s
}

/// Whether `key` is a path's `KEY_hex` (the one JSON form of a path, `report::with_paths`)
/// whose bytes are exactly the text beside it: people are shown the hex only when the text
/// could not carry the name (invalid UTF-8).
fn says_nothing_more(record: &Map<String, Value>, key: &str) -> bool {
    let Some(text) = key
        .strip_suffix("_hex")
        .and_then(|k| record.get(k))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let bytes = record.get(key).and_then(Value::as_str).map(hex::decode);
    matches!(bytes, Some(Ok(b)) if b == text.as_bytes())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as one whitespace-free token: quoted, with escapes, when it is empty, has
/// whitespace or characters that could move the cursor or reorder text (so a file name
/// holding a newline cannot forge a line of output), or starts with a quote.
fn token(s: &str) -> String {
    let plain =
        !s.is_empty() && !s.starts_with('"') && !s.chars().any(|c| c == ' ' || unsafe_char(c));
    if plain {
        s.to_string()
    } else {
        quote(s)
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if unsafe_char(c) => q.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Control characters, whitespace other than a plain space, and the invisible format
/// characters (bidi overrides, zero widths) that make text display as something else.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::{lines, log_of, rewrite};
    use crate::audit::Audit;
    use crate::report::with_paths;
    use crate::statedir::AUDIT_LOG;
    use serde_json::json;
    use std::fs;
    use std::time::{Duration, UNIX_EPOCH};

    fn printed(dir: &Path, since: Option<SystemTime>, json: bool) -> String {
        let mut out = Vec::new();
        print(dir, since, json, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn print_filters_by_since() {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::open_with(d.path(), 600, 10).unwrap();
        let day = |n: u64| UNIX_EPOCH + Duration::from_secs(1_795_564_800 + n * 86_400);
        for n in 0..10 {
            a.record_at(day(n), "confirmed", json!({ "n": n }));
        }
        let out = printed(d.path(), Some(day(7)), false);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.starts_with("2026-12-02 00:00:00Z  confirmed      n=7\n"),
            "{out}"
        );
        assert_eq!(printed(d.path(), None, false).lines().count(), 10);
        let raw = printed(d.path(), Some(day(9)), true);
        let all = fs::read_to_string(d.path().join(AUDIT_LOG)).unwrap();
        assert!(all.ends_with(&raw), "{raw}");
    }

    #[test]
    fn print_is_one_line_per_event_whatever_the_names() {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::open(d.path()).unwrap();
        let name = b"evil\n2026-11-25 23:03:47Z  confirmed      path=x\xff";
        a.record(
            "confirmed",
            with_paths(
                &[("path", b"a\nb.txt")],
                json!({ "size": 12, "to": "my file", "bidi": "a\u{202e}b" }),
            ),
        );
        a.record("confirmed", with_paths(&[("path", name)], json!({})));
        a.record(
            "trusted",
            json!({ "path": "plain/a.txt", "verified_by": "exec" }),
        );
        let out = printed(d.path(), None, false);
        let l: Vec<_> = out.lines().collect();
        assert_eq!(l.len(), 3, "{out}");
        assert!(l[0].contains(r#"path="a\nb.txt""#), "{}", l[0]);
        assert!(
            l[0].contains(r#"to="my file""#) && l[0].contains("size=12"),
            "{}",
            l[0]
        );
        assert!(l[0].contains(r#"bidi="a\u{202e}b""#), "{}", l[0]);
        assert!(!l[0].contains("path_hex"), "{}", l[0]);
        assert!(
            l[1].contains(r#"path="evil\n2026"#)
                && l[1].ends_with(&format!("path_hex={}", hex::encode(name))),
            "{}",
            l[1]
        );
        assert!(
            l[2].ends_with("trusted        path=plain/a.txt verified_by=exec"),
            "{}",
            l[2]
        );
        assert_eq!(printed(d.path(), None, true).lines().count(), 3);
    }

    #[test]
    fn print_flags_lines_that_are_not_records() {
        let (d, log) = log_of(2);
        let mut l = lines(&log);
        l.insert(1, "junk \u{1b}[2J".to_string());
        rewrite(&log, &l);
        let out = printed(
            d.path(),
            Some(SystemTime::now() + Duration::from_secs(3600)),
            false,
        );
        assert_eq!(
            out,
            "?  audit.log line 2: not an audit record: \"junk \\u{001b}[2J\"\n"
        );
        let out = printed(d.path(), None, true);
        let v: Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
        assert_eq!((&v["file"], &v["line"]), (&json!("audit.log"), &json!(2)));
        assert!(!out.contains('\u{1b}'));
    }
}
