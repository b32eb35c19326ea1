//! The layer rules of docs/architecture.md, checked on the source itself
//! so they cannot rot:
//!
//! 1. Arrows point down. Each module may name (`crate::X`, outside
//!    comments and test modules) only the modules its row below allows;
//!    a lower layer reaching up fails, naming the file, the line and the
//!    rule.
//! 2. The platform is chosen in two places. `cfg(...)` on an OS (anything
//!    but `cfg(test)`) appears only in `src/sys/` (the platform switch
//!    and the per-OS files under it) and in `src/backend/mod.rs` with the
//!    backends' own per-OS files.

use std::path::{Path, PathBuf};

/// Who may use whom: (path prefix under src/, modules it may name). The
/// longest matching prefix decides. Modules not listed here fail the
/// test until they get a row: a new module states its place.
const RULES: &[(&str, &[&str])] = &[
    ("error.rs", &[]),
    ("backend/", &["error"]),
    // The platform: OS primitives, below everything but the error type.
    ("sys/", &["error", "sys"]),
    // The platform's filesystem pieces sit above the neutral `Vfs` types
    // (the core and the kernel adapter) and above the mount (the session).
    ("sys/unix/passthrough/", &["error", "sys", "fs"]),
    ("sys/unix/fuse.rs", &["error", "sys", "fs"]),
    (
        "sys/unix/session.rs",
        &["error", "sys", "fs", "config", "mount"],
    ),
    ("sys/windows/passthrough/", &["error", "sys", "fs"]),
    ("sys/windows/winfsp.rs", &["error", "sys", "fs"]),
    ("sys/windows/session.rs", &["error", "sys", "fs", "mount"]),
    ("state_dir.rs", &["error", "sys"]),
    ("journal/", &["error", "sys", "state_dir"]),
    (
        "replica/",
        &["error", "sys", "backend", "journal", "replica"],
    ),
    ("verify.rs", &["error", "sys", "replica"]),
    (
        "sync/",
        &[
            "error",
            "sys",
            "state_dir",
            "backend",
            "journal",
            "replica",
            "sync",
        ],
    ),
    ("watch.rs", &["error", "sys", "sync"]),
    ("fs/", &["error", "sys", "journal", "sync", "fs"]),
    ("control.rs", &["error", "sys", "state_dir"]),
    ("cli.rs", &["backend", "sync"]),
    (
        "config.rs",
        &[
            "error",
            "sys",
            "mountinfo",
            "backend",
            "sync",
            "replica",
            "cli",
        ],
    ),
    (
        "mount.rs",
        &[
            "error",
            "sys",
            "mountinfo",
            "backend",
            "state_dir",
            "journal",
            "replica",
            "sync",
            "fs",
            "watch",
            "control",
            "config",
        ],
    ),
    (
        "fixture.rs",
        &[
            "error", "sys", "backend", "replica", "verify", "sync", "fs", "mount", "config",
        ],
    ),
    // The crate root and the binary may name anything.
    ("lib.rs", &["*"]),
    ("main.rs", &["*"]),
];

/// Files allowed to branch on the OS.
fn may_branch_on_os(rel: &str) -> bool {
    rel.starts_with("sys/")
        || rel == "backend/mod.rs"
        || [
            "backend/uring.rs",
            "backend/copy_range.rs",
            "backend/iocp.rs",
            "backend/macos.rs",
            "backend/conformance_linux.rs",
        ]
        .contains(&rel)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code lines of a file (number, text): comments dropped, and
/// everything from the test module on (`#[cfg(test)]` followed by
/// `mod`), which may reach anywhere to set a case up.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL, say) is not a comment; the
            // rules only look at `crate::` paths, so cutting there at
            // worst hides text after a URL on the same line.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// The modules a line names as `crate::NAME` (and `use crate::{A, B}`).
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        // `replicafs::crate::` cannot occur; `$crate::` in macros is fine.
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

fn rule_for(rel: &str) -> Option<&'static [&'static str]> {
    RULES
        .iter()
        .filter(|(prefix, _)| rel == *prefix || (prefix.ends_with('/') && rel.starts_with(prefix)))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, allowed)| *allowed)
}

fn src_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The violations of rule 1 in one file, as messages.
fn upward_uses(rel: &str, text: &str) -> Vec<String> {
    let Some(allowed) = rule_for(rel) else {
        return vec![format!(
            "src/{rel}: no layer rule covers this file; add its row to RULES in tests/layers.rs \
             (and to docs/architecture.md)"
        )];
    };
    if allowed == ["*"] {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (n, line) in code_lines(text) {
        for m in named_modules(&line) {
            if !allowed.contains(&m.as_str()) {
                out.push(format!(
                    "src/{rel}:{n}: uses crate::{m}, which this layer may not (allowed: {}): {}",
                    allowed.join(", "),
                    line.trim()
                ));
            }
        }
    }
    out
}

/// The violations of rule 2 in one file.
fn os_branches(rel: &str, text: &str) -> Vec<String> {
    if may_branch_on_os(rel) {
        return Vec::new();
    }
    code_lines(text)
        .into_iter()
        .filter(|(_, line)| {
            let l = line.replace(' ', "");
            (l.contains("cfg(") || l.contains("cfg!(")) && !l.contains("cfg(test)")
        })
        .map(|(n, line)| {
            format!(
                "src/{rel}:{n}: a platform branch outside src/sys/ and backend/mod.rs: {}",
                line.trim()
            )
        })
        .collect()
}

#[test]
fn lower_layers_never_use_higher_ones() {
    let bad: Vec<String> = src_files()
        .iter()
        .flat_map(|(rel, text)| upward_uses(rel, text))
        .collect();
    assert!(bad.is_empty(), "layer rules broken:\n{}", bad.join("\n"));
}

#[test]
fn the_platform_is_chosen_only_in_sys_and_the_backend_selection() {
    let bad: Vec<String> = src_files()
        .iter()
        .flat_map(|(rel, text)| os_branches(rel, text))
        .collect();
    assert!(bad.is_empty(), "platform branches:\n{}", bad.join("\n"));
}

/// The checker itself: an upward `use` and a stray `cfg` are caught, a
/// comment or a test module is not held against the file.
#[test]
fn the_checks_catch_what_they_are_for() {
    let engine = "use crate::journal::Journal;\nuse crate::fs::Identity;\n";
    let bad = upward_uses("sync/mod.rs", engine);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("src/sync/mod.rs:2: uses crate::fs"),
        "{bad:?}"
    );
    let grouped = "use crate::{backend, cli};\n";
    assert_eq!(upward_uses("backend/mod.rs", grouped).len(), 2);
    let commented = "// crate::mount is above us\n/// see [`crate::fs`]\n";
    assert!(upward_uses("replica/dir.rs", commented).is_empty());
    let tests = "use crate::error;\n#[cfg(test)]\nmod tests {\n    use crate::mount;\n}\n";
    assert!(upward_uses("journal/mod.rs", tests).is_empty());
    assert_eq!(upward_uses("newthing.rs", "").len(), 1);

    let gated = "#[cfg(target_os = \"linux\")]\nfn f() {}\n#[cfg(test)]\nmod tests {}\n";
    assert_eq!(os_branches("sync/worker.rs", gated).len(), 1);
    assert!(os_branches("sys/unix/mod.rs", gated).is_empty());
    assert_eq!(
        os_branches("mount.rs", "let n = if cfg!(windows) { 1 } else { 2 };").len(),
        1
    );
}
