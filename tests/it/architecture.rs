//! The module graph of `src/` has no import circles: reads every source file, turns each
//! `use` and each `crate::`/`super::`/`self::` path into an edge between modules, and fails
//! on any strongly connected component of more than one module.
//!
//! A module and its ancestors are not edges (a parent re-exports and a child uses its
//! parent's types: that is one unit); every other reference is, including siblings. Test
//! modules (`#[cfg(test)] mod tests`, `tests.rs`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`, `src/lib.rs` -> the crate root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code without comments and without its trailing test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) if i == 0 || line[..i].ends_with(char::is_whitespace) => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b, c::{d as e, self}}`) into its paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut p = prefix.to_vec();
            p.extend(
                head.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            for part in split_top(inner) {
                go(&p, part, out);
            }
        } else {
            let path = tree.split(" as ").next().unwrap_or(tree).trim();
            let mut p = prefix.to_vec();
            for seg in path.split("::").filter(|s| !s.is_empty()) {
                if seg != "self" || p.is_empty() {
                    p.push(seg.to_owned());
                }
            }
            out.push(p);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// Every path in the code that starts with `crate`, `super` or `self`.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // use statements (with their brace trees)
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        // only a statement: `use` first on its line, after an optional visibility
        let line_start = rest[..i].rfind('\n').map_or(0, |n| n + 1);
        let before_ok = matches!(
            rest[line_start..i].trim(),
            "" | "pub" | "pub(crate)" | "pub(super)"
        );
        let after = &rest[i + 4..];
        if before_ok && let Some(end) = after.find(';') {
            out.extend(expand_use(&after[..end]));
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    // inline paths
    let bytes = code.as_bytes();
    for start_word in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start_word) {
            let at = from + i;
            from = at + start_word.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':')
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(
                code[at..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

/// The module a path names (its longest known module prefix), seen from module `here`.
fn resolve(here: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut abs: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") | Some("self") => here.clone(),
        _ => return None,
    };
    let mut segs = path.iter().skip(usize::from(path[0] == "crate")).peekable();
    while let Some(seg) = segs.peek() {
        match seg.as_str() {
            "super" => {
                abs.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.next();
    }
    for seg in segs {
        let mut next = abs.clone();
        next.push(seg.clone());
        if !modules.contains(&next) {
            break;
        }
        abs = next;
    }
    Some(abs)
}

fn is_prefix(a: &Module, b: &Module) -> bool {
    a.len() <= b.len() && b[..a.len()] == a[..]
}

/// module -> modules it refers to (not its ancestors or descendants).
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    source_files(src, &mut files);
    files.retain(|f| {
        let n = f.file_name().unwrap_or_default();
        n != "main.rs" && n != "tests.rs"
    });
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let here = module_of(src, file);
        let text = std::fs::read_to_string(file).expect("read source");
        let targets = edges.entry(here.clone()).or_default();
        for path in paths_in(&code_of(&text)) {
            if let Some(to) = resolve(&here, &path, &modules)
                && !is_prefix(&to, &here)
                && !is_prefix(&here, &to)
            {
                targets.insert(to);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_module_graph_has_no_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    if std::env::var_os("VANTAGE_PRINT_MODULES").is_some() {
        for (m, to) in &edges {
            let to: Vec<String> = to.iter().map(name).collect();
            eprintln!("{} -> {}", name(m), to.join(", "));
        }
    }
    assert!(
        edges.len() > 50,
        "the source walk found {} modules",
        edges.len()
    );
    let found = circles(&edges);
    let text: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&Module> = c.iter().collect();
            let detail: Vec<String> = c
                .iter()
                .map(|m| {
                    let to: Vec<String> = edges[m]
                        .iter()
                        .filter(|t| members.contains(t))
                        .map(name)
                        .collect();
                    format!("  {} -> {}", name(m), to.join(", "))
                })
                .collect();
            detail.join("\n")
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", text.join("\n\n"));
}

#[test]
fn the_circle_finder_finds_a_circle() {
    // The checker itself must be able to fail: a small tree with a -> b -> a.
    let dir = std::env::temp_dir().join(format!("vantage-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("x")).expect("mkdir");
    let write = |p: &str, t: &str| std::fs::write(dir.join(p), t).expect("write");
    write("lib.rs", "pub mod a;\npub mod b;\npub mod x;\n");
    write("a.rs", "use crate::b::{self, Thing};\n");
    write("b.rs", "pub fn f() { crate::a::g(); }\n");
    write("x/mod.rs", "pub mod y;\nuse self::y::Z; // crate::a::h\n");
    write(
        "x/y.rs",
        "use super::super::a;\n#[cfg(test)]\nmod tests { use crate::b; }\n",
    );
    let edges = graph(&dir);
    let found = circles(&edges);
    let _ = std::fs::remove_dir_all(&dir);
    let as_names: Vec<Vec<String>> = found.iter().map(|c| c.iter().map(name).collect()).collect();
    assert_eq!(as_names, vec![vec!["a".to_owned(), "b".to_owned()]]);
    // x -> x::y is parent-child (no edge); x::y -> a is an edge; the test module's use is not.
    assert_eq!(
        edges[&vec!["x".to_owned(), "y".to_owned()]],
        BTreeSet::from([vec!["a".to_owned()]])
    );
}
