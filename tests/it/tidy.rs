//! Architecture invariants that a test can hold (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Architecture Invariant: `store/` is the only module with SQL.
#[test]
fn only_the_store_module_contains_sql() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let store = root.join("src/store");
    let needles = [
        "sqlx::query",
        "INSERT INTO",
        "SELECT ",
        "UPDATE ",
        "DELETE FROM",
    ];
    let mut offenders = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&store)) {
        let text = std::fs::read_to_string(f).unwrap();
        for n in needles {
            if text.contains(n) {
                offenders.push(format!("{}: {n}", f.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside src/store:\n{}",
        offenders.join("\n")
    );
}

/// The fixtures kept in the repository are the shared ones, byte for byte.
/// CI has the shared folder beside the clone, so there its absence is a
/// failure; a user's clone has none, and the test says that it skipped
/// (on the terminal itself: the harness hides a passing test's output).
#[test]
fn the_fixture_copy_matches_the_shared_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/fixtures");
    if !shared.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true but {} is missing: CI must check the fixture copy",
            shared.display()
        );
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tidy::the_fixture_copy_matches_the_shared_fixtures: no {} beside this clone",
            shared.display()
        );
        return;
    }
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&shared, &mut files);
    for f in files {
        let rel = f.strip_prefix(&shared).unwrap();
        let ours = root.join("tests/fixtures").join(rel);
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(&ours).unwrap_or_default(),
            "{} differs",
            rel.display()
        );
    }
}

/// One module reference found in `src/`: where, and the path as written.
#[derive(Debug, Clone)]
struct Reference {
    file: String,
    line: usize,
    path: String,
}

/// `src/` as modules: the module path of every file, the modules declared
/// inline (`mod tests { ... }`), and every `crate::`, `super::` and `self::`
/// path each module writes (in `use` trees, expressions, types and macro
/// arguments alike: the file is read as tokens, so comments and strings do
/// not count).
struct ModuleMap {
    modules: std::collections::BTreeSet<Vec<String>>,
    /// (from, to, evidence): `to` resolved to the longest known module.
    references: Vec<(Vec<String>, Vec<String>, Reference)>,
}

fn module_of_file(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_punct(t: Option<&proc_macro2::TokenTree>, c: char) -> bool {
    matches!(t, Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == c)
}

fn ident(t: Option<&proc_macro2::TokenTree>) -> Option<String> {
    match t {
        Some(proc_macro2::TokenTree::Ident(i)) => Some(i.to_string()),
        _ => None,
    }
}

/// Whether `tokens[i..]` starts with `::`.
fn path_sep(tokens: &[proc_macro2::TokenTree], i: usize) -> bool {
    is_punct(tokens.get(i), ':') && is_punct(tokens.get(i + 1), ':')
}

/// The paths a `use` tree names (`a::{b, c::d}` is `a::b` and `a::c::d`).
fn use_paths(tokens: &[proc_macro2::TokenTree], prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            proc_macro2::TokenTree::Ident(id) if id == "as" => break,
            // `{self, ...}`: the prefix itself.
            proc_macro2::TokenTree::Ident(id) if id == "self" && !path.is_empty() => {}
            proc_macro2::TokenTree::Ident(id) => path.push(id.to_string()),
            proc_macro2::TokenTree::Group(g) if g.delimiter() == proc_macro2::Delimiter::Brace => {
                let inner: Vec<_> = g.stream().into_iter().collect();
                for part in inner.split(|t| is_punct(Some(t), ',')) {
                    use_paths(part, &path, out);
                }
                return;
            }
            proc_macro2::TokenTree::Punct(p) if p.as_char() == ',' => {
                out.push(std::mem::replace(&mut path, prefix.to_vec()));
            }
            _ => {}
        }
        i += 1;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

impl ModuleMap {
    fn read(root: &Path) -> ModuleMap {
        let src = root.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        let mut map = ModuleMap {
            modules: files
                .iter()
                .filter(|f| !f.ends_with("main.rs"))
                .map(|f| module_of_file(&src, f))
                .collect(),
            references: Vec::new(),
        };
        // The binary (`src/main.rs`) is another crate: its `crate::` is not
        // the library's.
        let mut raw = Vec::new();
        for f in files.iter().filter(|f| !f.ends_with("src/main.rs")) {
            let text = std::fs::read_to_string(f).unwrap();
            let stream: proc_macro2::TokenStream = text
                .parse()
                .unwrap_or_else(|e| panic!("{} does not tokenize: {e:?}", f.display()));
            let file = f.strip_prefix(root).unwrap().display().to_string();
            let mut modules = Vec::new();
            walk(
                stream,
                &module_of_file(&src, f),
                &file,
                &mut modules,
                &mut raw,
            );
            map.modules.extend(modules);
        }
        for (from, path, evidence) in raw {
            if let Some(to) = map.resolve(&from, &path) {
                map.references.push((from, to, evidence));
            }
        }
        map
    }

    /// The module `path` (written in module `from`) names, when it starts
    /// with `crate`, `super` or `self`.
    fn resolve(&self, from: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut base: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self") => from.to_vec(),
            Some("super") => from.to_vec(),
            _ => return None,
        };
        let mut rest = &path[1..];
        if path[0] == "super" {
            base.pop();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        for seg in rest {
            let mut next = base.clone();
            next.push(seg.clone());
            if !self.modules.contains(&next) {
                break;
            }
            base = next;
        }
        Some(base)
    }
}

/// Collects inline modules and raw `crate`/`super`/`self` paths.
fn walk(
    stream: proc_macro2::TokenStream,
    module: &[String],
    file: &str,
    modules: &mut Vec<Vec<String>>,
    out: &mut Vec<(Vec<String>, Vec<String>, Reference)>,
) {
    let tokens: Vec<proc_macro2::TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let name = ident(Some(t));
        match (name.as_deref(), &tokens.get(i + 2)) {
            (Some("mod"), Some(proc_macro2::TokenTree::Group(g)))
                if g.delimiter() == proc_macro2::Delimiter::Brace =>
            {
                if let Some(inner) = ident(tokens.get(i + 1)) {
                    let mut m = module.to_vec();
                    m.push(inner);
                    modules.push(m.clone());
                    walk(g.stream(), &m, file, modules, out);
                    i += 3;
                    continue;
                }
            }
            _ => {}
        }
        match name.as_deref() {
            Some("use") => {
                let end = (i..tokens.len())
                    .find(|&j| is_punct(tokens.get(j), ';'))
                    .unwrap_or(tokens.len());
                let mut paths = Vec::new();
                use_paths(&tokens[i + 1..end], &[], &mut paths);
                for p in paths {
                    let reference = Reference {
                        file: file.to_owned(),
                        line: t.span().start().line,
                        path: p.join("::"),
                    };
                    out.push((module.to_vec(), p, reference));
                }
                i = end + 1;
                continue;
            }
            Some("crate" | "super" | "self")
                if path_sep(&tokens, i + 1) && !path_sep_before(&tokens, i) =>
            {
                let mut path = vec![name.clone().unwrap()];
                let mut j = i + 1;
                while path_sep(&tokens, j) {
                    match ident(tokens.get(j + 2)) {
                        Some(seg) => path.push(seg),
                        None => break,
                    }
                    j += 3;
                }
                let reference = Reference {
                    file: file.to_owned(),
                    line: t.span().start().line,
                    path: path.join("::"),
                };
                out.push((module.to_vec(), path, reference));
                i = j;
                continue;
            }
            _ => {}
        }
        if let proc_macro2::TokenTree::Group(g) = t {
            walk(g.stream(), module, file, modules, out);
        }
        i += 1;
    }
}

/// Whether `tokens[i]` follows a `::` (then it is not the start of a path).
fn path_sep_before(tokens: &[proc_macro2::TokenTree], i: usize) -> bool {
    i >= 2 && path_sep(tokens, i - 2)
}

/// A cycle of sibling modules (under `parent`), each with the first
/// reference that makes the next depend on it.
struct Cycle {
    parent: Vec<String>,
    members: Vec<String>,
    edges: Vec<(String, String, Reference)>,
}

impl Cycle {
    /// `crate::{a -> b -> a}` or `crate::deliver::{request -> targets -> request}`.
    fn name(&self) -> String {
        let mut prefix = vec!["crate".to_owned()];
        prefix.extend(self.parent.iter().cloned());
        let mut ring = self.members.clone();
        ring.push(self.members[0].clone());
        format!("{}::{{{}}}", prefix.join("::"), ring.join(" -> "))
    }
}

/// The shortest way from `from` to `to` in `edges` (both ends included).
fn shortest_path<'a>(
    edges: &'a std::collections::BTreeMap<String, std::collections::BTreeMap<String, Reference>>,
    from: &'a String,
    to: &String,
) -> Option<Vec<&'a String>> {
    let mut came_from: std::collections::BTreeMap<&String, &String> = Default::default();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![n];
            let mut at = n;
            while at != from {
                at = came_from[at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for next in edges.get(n).into_iter().flat_map(|m| m.keys()) {
            if next != from && !came_from.contains_key(next) {
                came_from.insert(next, n);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every import circle between sibling modules: among the top-level modules
/// of `src/`, and among the submodules of each folder. A child naming its
/// parent (or a parent its child) is no circle. For every dependency that
/// lies on a circle, the shortest circle through it (each circle once,
/// starting at its smallest module), so breaking every circle reported
/// leaves none.
fn import_cycles(map: &ModuleMap) -> Vec<Cycle> {
    use std::collections::{BTreeMap, BTreeSet};
    // parent -> from -> to -> first evidence
    type Edges = BTreeMap<String, BTreeMap<String, Reference>>;
    let mut graphs: BTreeMap<Vec<String>, Edges> = BTreeMap::new();
    for (from, to, evidence) in &map.references {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue;
        }
        graphs
            .entry(from[..common].to_vec())
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .entry(to[common].clone())
            .or_insert_with(|| evidence.clone());
    }
    let mut cycles = Vec::new();
    for (parent, edges) in &graphs {
        let mut seen = BTreeSet::new();
        for (a, outs) in edges {
            for b in outs.keys() {
                let Some(back) = shortest_path(edges, b, a) else {
                    continue;
                };
                // a -> b -> ... -> a, as the ring [a, b, ...].
                let mut members: Vec<String> = std::iter::once(a)
                    .chain(back[..back.len() - 1].iter().copied())
                    .cloned()
                    .collect();
                let smallest = (0..members.len()).min_by_key(|&i| &members[i]).unwrap_or(0);
                members.rotate_left(smallest);
                if !seen.insert(members.clone()) {
                    continue;
                }
                let edges_of = members
                    .iter()
                    .zip(members.iter().cycle().skip(1))
                    .map(|(x, y)| (x.clone(), y.clone(), edges[x][y].clone()))
                    .collect();
                cycles.push(Cycle {
                    parent: parent.clone(),
                    members,
                    edges: edges_of,
                });
            }
        }
    }
    cycles
}

/// Circles known and not yet broken, each with who breaks it. A circle not
/// listed here fails the test, and so does a listed one that is gone: the
/// list can only shrink, and it must be empty.
const NOT_YET_BROKEN: &[(&str, &str)] = &[];

/// Architecture Invariant: no import circles between src/ modules.
///
/// Two sibling modules (top-level modules of `src/`, or submodules of one
/// folder) must not depend on each other, directly or through others: a
/// circle means neither can be understood, tested or moved alone. Every
/// circle found is printed with the line that makes each step.
#[test]
fn no_import_circles_between_src_modules() {
    let map = ModuleMap::read(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        map.references.len() > 100,
        "the scanner found only {} module references in src/; it no longer reads the code",
        map.references.len()
    );
    let cycles = import_cycles(&map);
    let report: Vec<String> = cycles
        .iter()
        .filter(|c| !NOT_YET_BROKEN.iter().any(|(name, _)| *name == c.name()))
        .map(|c| {
            let steps: Vec<String> = c
                .edges
                .iter()
                .map(|(a, b, r)| format!("    {a} -> {b}: {}:{} {}", r.file, r.line, r.path))
                .collect();
            format!("{}\n{}", c.name(), steps.join("\n"))
        })
        .collect();
    assert!(
        report.is_empty(),
        "import circles between src/ modules (break each by moving the shared item to a module both can depend on):\n{}",
        report.join("\n")
    );
    let gone: Vec<&str> = NOT_YET_BROKEN
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !cycles.iter().any(|c| c.name() == *name))
        .collect();
    assert!(
        gone.is_empty(),
        "these circles are broken now; remove them from NOT_YET_BROKEN in tests/it/tidy.rs: {gone:?}"
    );
}

/// The scanner sees a circle through `super::` paths, grouped `use` trees
/// and paths inside macro arguments, and ignores comments, strings and a
/// child naming its parent.
#[test]
fn the_circle_scanner_reads_use_trees_super_paths_and_macros() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let files = [
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        (
            "a/mod.rs",
            "pub mod x;\npub mod y;\nuse crate::{c::{self, Thing}};\n// crate::b::nothing\nconst S: &str = \"crate::b::no\";\n",
        ),
        (
            "a/x.rs",
            "use super::y::Y;\nuse super::Parent;\npub struct X;\n",
        ),
        (
            "a/y.rs",
            "pub fn f() { tracing::info!(x = ?super::x::X); }\n",
        ),
        ("b.rs", "pub fn g() {}\n"),
        ("c.rs", "pub fn h() { crate::a::x::X; }\n"),
    ];
    for (path, text) in files {
        std::fs::write(src.join(path), text).unwrap();
    }
    let names: Vec<String> = import_cycles(&ModuleMap::read(dir.path()))
        .iter()
        .map(Cycle::name)
        .collect();
    assert_eq!(
        names,
        ["crate::{a -> c -> a}", "crate::a::{x -> y -> x}"],
        "b is named only in a comment and a string"
    );
}
