//! The shape of the code, read from its `use` lines and paths (doc/DESIGN.md, "Modules and
//! layers"): the core never imports a command, a command never imports another command, and
//! no two top-level modules import each other, directly or in a loop. A change that breaks the
//! shape fails here, naming the file and the import.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The top-level module a file belongs to ("sync" for src/sync/plan.rs, "cmd::verify" for
/// src/cmd/verify.rs or src/cmd/restore/plan.rs): commands count one by one.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [cmd, name, ..] if cmd == "cmd" => format!("cmd::{name}"),
        [first, ..] => first.clone(),
        [] => unreachable!("a file has a name"),
    }
}

/// Code without comments, and without `#[cfg(test)] mod tests { ... }` (tests may reach
/// anywhere).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules (and commands) a file's code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "cmd" {
            let sub: String = rest["cmd::".len().min(rest.len())..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(format!("cmd::{sub}"));
        } else if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(&src) {
        let m = module_of(&src, &f);
        if m == "main" || m == "lib" || m == "cmd::mod" || m == "testkit" {
            continue;
        }
        let text = fs::read_to_string(&f).expect("read");
        let deps = imports(&code_of(&text));
        let entry = g.entry(m.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != m));
    }
    g
}

#[test]
fn the_core_never_imports_a_command_and_commands_never_import_each_other() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        for d in deps.iter().filter(|d| d.starts_with("cmd::")) {
            wrong.push(format!("{m} imports {d}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        g.keys().any(|m| m.starts_with("cmd::")),
        "no command found: {g:?}"
    );
}

#[test]
fn no_two_modules_import_each_other_in_a_loop() {
    let g = graph();
    // Depth-first search for a back edge; the path to it names the loop.
    fn visit<'a>(
        g: &'a BTreeMap<String, BTreeSet<String>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            return Some(format!("{} -> {m}", path[i..].join(" -> ")));
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            if let Some(lp) = visit(g, d, path, done) {
                return Some(lp);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        let found = visit(&g, m, &mut Vec::new(), &mut done);
        assert!(
            found.is_none(),
            "a loop of imports: {}",
            found.unwrap_or_default()
        );
    }
}
