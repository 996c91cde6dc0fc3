//! The layering of `src/`, checked by reading the source so it cannot drift back (see
//! ARCHITECTURE.md):
//!
//! - the pure cores never reach the layers that talk to the cluster, the terminal or the
//!   command line;
//! - only the command line and the commands name `crate::cli`;
//! - no two source files depend on each other, directly or around a longer loop.
//! - only `cluster` calls the API's write verbs: every change goes through one write path.
//!
//! A dependency is any `crate::`, `super::` or `self::` path outside comments and string literals
//! (`use` trees with braces included), resolved to the deepest module file it names. A parent
//! naming its own submodules (declaring or re-exporting them) is structure, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path from the crate root: `["engine", "build"]` for `src/engine/build.rs`.
type Module = Vec<String>;

/// Modules that are pure: no I/O, no terminal, no command line. Each entry covers the module and
/// everything under it, except `journal`, whose `store` submodule is the I/O half.
const PURE: &[&str] = &[
    "calico", "engine", "stages", "facts", "live", "plan", "yaml", "exit", "error", "flowlogs",
];
const PURE_EXACT: &[&str] = &["journal"];
/// What a pure module must never depend on.
const IMPURE: &[&str] = &[
    "cluster",
    "commands",
    "ui",
    "cli",
    "interrupt",
    "logging",
    "journal::store",
];
/// The only modules that may name `crate::cli` (besides `main.rs`, the binary's own root).
const CLI_USERS: &[&str] = &["cli", "commands"];

struct SourceFile {
    path: PathBuf,
    module: Module,
    text: String,
}

fn module_of(relative: &Path) -> Module {
    let mut module: Module = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    module
}

fn collect(dir: &Path, root: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src/").to_path_buf();
            // The two crate roots only declare modules; main.rs's `crate::` is the binary.
            if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push(SourceFile {
                module: module_of(&relative),
                path: Path::new("src").join(relative),
                text,
            });
        }
    }
}

fn source_files() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &src, &mut files);
    files
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The code without comments and without the contents of string and character literals, so
/// only real paths are found. Lengths change; nothing here needs positions.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let c = chars[i];
        let prev_ident = i > 0 && is_ident(chars[i - 1]);
        if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if (c == 'r' || (c == 'b' && chars.get(i + 1) == Some(&'r'))) && !prev_ident && {
            let start = i + if c == 'b' { 2 } else { 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            chars.get(start + hashes) == Some(&'"')
        } {
            let start = i + if c == 'b' { 2 } else { 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i = start + hashes + 1;
            while i < chars.len() && !at(i, &closing) {
                i += 1;
            }
            i += closing.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // A lifetime's quote, or ordinary code.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// A tiny reader for paths and `use` trees.
struct Reader<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Reader<'_> {
    fn skip_space(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let matches = token
            .chars()
            .enumerate()
            .all(|(k, c)| self.chars.get(self.pos + k) == Some(&c));
        if matches {
            self.pos += token.chars().count();
        }
        matches
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.pos;
        while self.chars.get(self.pos).copied().is_some_and(is_ident) {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    /// `a::b::{c, d::{self, E}}` after `prefix`: every full path the tree names.
    fn tree(&mut self, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            if self.eat("{") {
                loop {
                    if self.eat("}") {
                        return;
                    }
                    self.tree(&path, out);
                    if !self.eat(",") {
                        self.eat("}");
                        return;
                    }
                }
            }
            if self.eat("*") {
                out.push(path);
                return;
            }
            match self.ident() {
                Some(segment) => path.push(segment),
                None => break,
            }
            // `::<T>` is a generic argument, not a path segment.
            let before = self.pos;
            if !self.eat("::") {
                break;
            }
            self.skip_space();
            if self.chars.get(self.pos) == Some(&'<') {
                self.pos = before;
                break;
            }
        }
        // `D as E` names D.
        let before = self.pos;
        if self.ident().as_deref() != Some("as") || self.ident().is_none() {
            self.pos = before;
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
}

/// Every `crate::`, `super::` and `self::` path in `code`, whole (keyword included).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_path = ["crate::", "super::", "self::"].iter().any(|k| {
            k.chars()
                .enumerate()
                .all(|(n, c)| chars.get(i + n) == Some(&c))
        });
        let free =
            i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':' || chars[i - 1] == '$');
        if starts_path && free {
            let mut reader = Reader {
                chars: &chars,
                pos: i,
            };
            reader.tree(&[], &mut out);
            i = reader.pos.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The deepest known module a path names, relative to the file's `module`; None for the crate
/// root or a path that leaves the crate. `super` is read as the file's parent (in `a/b.rs` it is
/// `a`, in `a/mod.rs` the crate root), also inside an inline `mod tests`, where it really is the
/// file itself: that can only add an edge towards a parent, never hide one.
fn resolve(module: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let own: Module = module.clone();
    let mut base: Module;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &path[1..];
        }
        Some("self") => {
            base = own;
            rest = &path[1..];
        }
        Some("super") => {
            base = own;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    for segment in rest {
        if segment == "self" {
            continue;
        }
        let mut next = base.clone();
        next.push(segment.clone());
        if known.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    (!base.is_empty()).then_some(base)
}

fn render(module: &[String]) -> String {
    module.join("::")
}

fn within(module: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    module.len() >= prefix.len() && module.iter().zip(&prefix).all(|(a, b)| a == b)
}

/// Each file's dependencies: the modules it names, with the path that named each first.
fn dependencies(files: &[SourceFile]) -> BTreeMap<Module, BTreeMap<Module, String>> {
    let known: BTreeSet<Module> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for file in files {
        let mut deps: BTreeMap<Module, String> = BTreeMap::new();
        for path in paths_in(&code_only(&file.text)) {
            let Some(target) = resolve(&file.module, &path, &known) else {
                continue;
            };
            // A module naming itself or its own submodules is structure, not a dependency.
            if target.starts_with(&file.module) {
                continue;
            }
            deps.entry(target).or_insert_with(|| path.join("::"));
        }
        graph.insert(file.module.clone(), deps);
    }
    graph
}

fn is_pure(module: &[String]) -> bool {
    PURE.iter().any(|p| within(module, p)) || PURE_EXACT.iter().any(|p| render(module) == *p)
}

/// Every rule broken, one line each.
fn violations(files: &[SourceFile]) -> Vec<String> {
    let graph = dependencies(files);
    let path_of: BTreeMap<&Module, &PathBuf> = files.iter().map(|f| (&f.module, &f.path)).collect();
    let mut found = Vec::new();
    for (module, deps) in &graph {
        let file = path_of[module].display();
        for (target, named) in deps {
            if is_pure(module) && IMPURE.iter().any(|i| within(target, i)) {
                found.push(format!(
                    "{file}: the pure module {} names {named}; move the plain data it needs into a pure module",
                    render(module)
                ));
            }
            if within(target, "cli") && !CLI_USERS.iter().any(|u| within(module, u)) {
                found.push(format!(
                    "{file}: names {named}; only cli.rs, main.rs and commands/ may use the command line's types"
                ));
            }
        }
    }
    for cycle in cycles(&graph) {
        let names: Vec<String> = cycle.iter().map(|m| render(m)).collect();
        found.push(format!(
            "import circle: {} -> {}",
            names.join(" -> "),
            names[0]
        ));
    }
    found
}

/// One loop for every group of modules that reach each other (Tarjan's strongly connected
/// components), as the path that closes it.
fn cycles(graph: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<Module, BTreeMap<Module, String>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        components: Vec<Vec<&'g Module>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph[v].keys().filter(|w| graph.contains_key(*w)) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.components.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    // Within a component, the shortest way from its first module back to itself: a concrete
    // loop to name in the message.
    tarjan
        .components
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().copied().collect();
            let start = *members.first().expect("non-empty");
            let mut came_from: BTreeMap<&Module, &Module> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            while let Some(at) = queue.pop_front() {
                for next in graph[at].keys().filter(|w| members.contains(w)) {
                    if next == start {
                        let mut path = vec![at.clone()];
                        let mut back = at;
                        while back != start {
                            back = came_from[back];
                            path.push(back.clone());
                        }
                        path.reverse();
                        return path;
                    }
                    if !came_from.contains_key(next) {
                        came_from.insert(next, at);
                        queue.push_back(next);
                    }
                }
            }
            unreachable!("a strongly connected component loops back to its start")
        })
        .collect()
}

/// The API's verbs that send objects to the server (`cluster::api::Api`). Only `cluster` calls
/// them, through its one write path (`cluster::write`) and its reviews (`cluster::access`).
const WRITE_VERBS: &[&str] = &["create", "replace", "merge_patch", "delete", "post"];

/// Calls of the API's write verbs outside `cluster`, and declarations in `cluster::api` that
/// would let anything outside `cluster` call them.
fn raw_writes(files: &[SourceFile]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        // Whitespace out, so a call split over lines (`.api\n.create(`) is one string.
        let code: String = code_only(&file.text)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let file_name = file.path.display();
        for verb in WRITE_VERBS {
            if render(&file.module) == "cluster::api" {
                for declaration in [format!("pubfn{verb}("), format!("pubasyncfn{verb}(")] {
                    if code.contains(&declaration) {
                        found.push(format!(
                            "{file_name}: Api::{verb} is pub; the API's verbs stay private to cluster (pub(super))"
                        ));
                    }
                }
            }
            if within(&file.module, "cluster") {
                continue;
            }
            let call = format!("api.{verb}(");
            let calls = code
                .match_indices(&call)
                .any(|(at, _)| code[..at].chars().next_back().is_none_or(|c| !is_ident(c)));
            if calls || code.contains(&format!("Api::{verb}(")) {
                found.push(format!(
                    "{file_name}: calls the API's {verb} directly; changes go through the Transaction and cluster::write"
                ));
            }
        }
    }
    found
}

#[test]
fn only_the_cluster_layer_sends_writes() {
    let found = raw_writes(&source_files());
    assert!(
        found.is_empty(),
        "a second write path:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_write_outside_the_cluster_layer_is_reported() {
    let files = synthetic(&[
        (
            "journal/store.rs",
            "fn f(c: &Cluster) { c.api\n    .merge_patch(p, b); // c.api.delete(x)\n let s = \"api.create(\"; }",
        ),
        (
            "commands/x.rs",
            "fn g(api: &Api) { api.replace(p); Api::delete(a); my_api.create(b); }",
        ),
        (
            "cluster/write.rs",
            "fn h(&self) { self.cluster.api.create(p, b) }",
        ),
        (
            "cluster/api.rs",
            "impl Api { pub async fn create(&self) {} pub(super) async fn delete(&self) {} }",
        ),
    ]);
    let found = raw_writes(&files);
    assert_eq!(found.len(), 4, "{found:#?}");
    for (file, verb) in [
        ("src/journal/store.rs", "merge_patch"),
        ("src/commands/x.rs", "replace"),
        ("src/commands/x.rs", "delete"),
        ("src/cluster/api.rs", "Api::create is pub"),
    ] {
        assert!(
            found
                .iter()
                .any(|f| f.starts_with(file) && f.contains(verb)),
            "{file} {verb}: {found:#?}"
        );
    }
}

#[test]
fn the_layers_point_one_way() {
    let files = source_files();
    assert!(
        files.len() > 30,
        "expected the whole of src/, found {} files",
        files.len()
    );
    let found = violations(&files);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_scan_sees_real_dependencies() {
    // Guards against a scanner that finds nothing and so passes everything.
    let graph = dependencies(&source_files());
    let deps = |m: &str| -> Vec<String> {
        let module: Module = m.split("::").map(str::to_string).collect();
        graph[&module].keys().map(|d| render(d)).collect()
    };
    assert!(deps("engine::report").contains(&"engine::scenario".to_string()));
    assert!(deps("engine::build").contains(&"live".to_string()));
    assert!(deps("cluster::write").contains(&"plan".to_string()));
    assert!(deps("journal::store").contains(&"cluster".to_string()));
    assert!(deps("commands").contains(&"cli".to_string()));
}

fn synthetic(files: &[(&str, &str)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(path, text)| SourceFile {
            module: module_of(Path::new(path)),
            path: Path::new("src").join(path),
            text: (*text).to_string(),
        })
        .collect()
}

#[test]
fn a_pure_module_reaching_the_cluster_is_reported() {
    let files = synthetic(&[
        ("engine/mod.rs", "pub mod build;"),
        (
            "engine/build.rs",
            "use crate::{facts::X, cluster::{self, inventory::LiveState}};",
        ),
        ("cluster/mod.rs", "pub mod inventory;"),
        ("cluster/inventory.rs", ""),
        ("facts.rs", ""),
    ]);
    let found = violations(&files);
    // crate::cluster and crate::cluster::inventory: two modules named.
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .all(|f| f.contains("src/engine/build.rs") && f.contains("crate::cluster")),
        "{found:?}"
    );
}

#[test]
fn the_command_line_types_outside_the_commands_are_reported() {
    let files = synthetic(&[
        ("cli.rs", ""),
        ("ui/printer.rs", "fn f(o: crate::cli::OutputFormat) {}"),
        ("commands/mod.rs", "use crate::cli::Cli;"),
    ]);
    let found = violations(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/ui/printer.rs"), "{found:?}");
}

#[test]
fn circles_are_reported_but_parents_naming_children_are_not() {
    let files = synthetic(&[
        ("error.rs", "fn f() { crate::cluster::errors::describe() }"),
        ("cluster/mod.rs", "pub mod errors; pub use errors::Target;"),
        ("cluster/errors.rs", "use crate::error::Error;"),
        ("engine/mod.rs", "pub use build::network;"),
        ("engine/build.rs", "use super::k8s_policy::compile;"),
        (
            "engine/k8s_policy.rs",
            "use super::{build::LABEL, model::Labels};",
        ),
        ("engine/model.rs", "use super::*;"),
    ]);
    let found: Vec<String> = violations(&files)
        .into_iter()
        .filter(|f| f.starts_with("import circle"))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.contains(&"import circle: cluster::errors -> error -> cluster::errors".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"import circle: engine::build -> engine::k8s_policy -> engine::build".to_string()
        ),
        "{found:?}"
    );
}

#[test]
fn comments_and_strings_are_not_code() {
    let code = code_only(
        "// use crate::cluster;\n/* crate::cli */ let s = \"crate::ui\"; let r = r#\"crate::x\"#; let c = '\"'; fn f<'a>(x: &'a str) { crate::plan::f(x) }",
    );
    let paths: Vec<String> = paths_in(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["crate::plan::f"]);
}

#[test]
fn use_trees_expand_to_every_path() {
    let paths: Vec<String> =
        paths_in("use crate::{a::b, c::{self, D as E}, f::*}; x::<crate::g::H>();")
            .iter()
            .map(|p| p.join("::"))
            .collect();
    assert_eq!(
        paths,
        [
            "crate::a::b",
            "crate::c::self",
            "crate::c::D",
            "crate::f",
            "crate::g::H"
        ]
    );
}
