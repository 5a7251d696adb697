//! The shape of the code, checked: within each crate, no two modules use each other, directly or
//! round a circle (ARCHITECTURE.md: "No import circles"). Cargo already keeps the crates
//! themselves in one direction (server → actors → storage → protocol).
//!
//! A module is a source file (`a/b.rs` and `a/b/mod.rs` are `a::b`). An edge goes from a file
//! to the module a `crate::…` path in it names, the longest prefix of the path that is a
//! module. Uses between a module and its own ancestors or descendants do not count: a parent
//! declares its children, and a child may use what its parent shares. Comments and test
//! modules are not read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Every crate's source root, relative to the workspace.
const CRATES: &[&str] = &[
    "src",
    "protocol/src",
    "storage/src",
    "actors/src",
    "client/src",
    "load/src",
];

#[test]
fn no_module_uses_a_module_that_uses_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut circles = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate));
        assert!(graph.len() > 3, "no modules found under {krate}");
        circles.extend(
            find_circles(&graph)
                .into_iter()
                .map(|c| format!("{krate}: {}", c.join(" → "))),
        );
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_owned(), uses.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_circles(&graph), vec![vec!["a", "b", "c", "a"]]);
}

/// Module → the modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|file| Some((module_of(src, file)?, file.clone())))
        .collect();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            let uses = crate_paths(&code_of(&text))
                .into_iter()
                .filter_map(|path| longest_module(&names, &path))
                .filter(|used| !related(module, used))
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `a::b` for `a/b.rs` or `a/b/mod.rs`; `None` for the crate root, binaries and test files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    let skipped = ["lib", "main", "bin", "tests"];
    if parts.is_empty() || parts.iter().any(|p| skipped.contains(&p.as_str())) {
        return None;
    }
    Some(parts.join("::"))
}

/// The text without comments and without a trailing `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path, with `use crate::{a::b, c}` groups spelled out (one level).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = closing_brace(group);
            for item in split_top_level(&group[..end]) {
                paths.push(path_segments(item));
            }
        } else {
            paths.push(path_segments(rest));
        }
    }
    paths
}

fn closing_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect()
}

/// The lower-case segments a path starts with: `a::b::Thing` → `[a, b]`.
fn path_segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect()
}

fn longest_module(names: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| names.contains(candidate))
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// Each elementary circle once, starting at its smallest module.
fn find_circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        let here = path.last().expect("a non-empty path").clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_owned());
                found.push(circle);
            } else if next.as_str() > start && !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, path, found);
                path.pop();
            }
        }
    }
    let mut found = Vec::new();
    for start in graph.keys() {
        walk(graph, start, &mut vec![start.clone()], &mut found);
    }
    found
}
