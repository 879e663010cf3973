//! The architecture's rules, checked on the source tree (no root, no
//! daemon): small files, and no module that imports a module importing it
//! back. docs/architecture.md states the rules; these keep them true.

use berth_tests::{ok, peer, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates whose `src/` is ours (generated code lives under target/).
const CRATES: [&str; 8] = [
    "proto",
    "mount",
    "snapshotter",
    "daemon",
    "shim",
    "ctl",
    "stream",
    "tests",
];

/// Past this a file holds more than one concern; split it by concern.
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_over_600_lines() {
    let root = repo_root();
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c).join("src"), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f)
                .expect("read source")
                .lines()
                .count();
            (n > MAX_LINES).then(|| {
                format!(
                    "{} ({n} lines)",
                    f.strip_prefix(&root).unwrap_or(f).display()
                )
            })
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "split these by concern: {long:#?}");
}

#[test]
fn no_module_cycles_inside_a_crate() {
    let Some(python) = peer("python3") else {
        return;
    };
    let root = repo_root();
    let script = root.join("scripts/module-cycles.py");
    for c in CRATES {
        let out = Command::new(&python)
            .arg(&script)
            .arg(root.join(c).join("src/lib.rs"))
            .output()
            .expect("run module-cycles.py");
        let text = ok(&format!("module cycles of {c}"), out);
        assert!(text.contains("no cycles"), "{c}: {text}");
    }
}

/// The checker itself finds a cycle, through a `use` tree and through a
/// path call, so a green run above means something.
#[test]
fn the_cycle_checker_finds_a_planted_cycle() {
    let Some(python) = peer("python3") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::{b::B, c};\npub struct A;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "pub struct B;\npub fn f() { crate::c::g() }\n",
    )
    .expect("write");
    std::fs::write(src.join("c.rs"), "pub fn g() { let _ = crate::a::A; }\n").expect("write");
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/module-cycles.py"))
        .arg(src.join("lib.rs"))
        .output()
        .expect("run module-cycles.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("CYCLE (3 modules): crate::a, crate::b, crate::c"),
        "{text}"
    );
}
