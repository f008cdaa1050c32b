//! The import-circle check of `cargo xtask lint`: within each crate of the workspace, the
//! modules (one per file) must form layers — a module may use the modules below it, and no chain
//! of `use`s and paths leads from a module back to itself. A circle means no part of it can be
//! read, tested or changed without all the others; the README's architecture section names the
//! layers this check holds the daemons and xtask to.
//!
//! A module refers to another when one of its paths (in a `use` or in code) names an item of
//! that module: `crate::a::b::Item`, `super::Item`, `self::child::Item`, or a child module by its
//! bare name. `mod child;` itself is not a reference: a parent that only declares its children
//! sits below them, and so does one that uses its own children (a folder module's `run` that
//! hands each command to a child): a module and the files of its folder are one unit to the
//! rest of the crate. Paths are read with `syn`, so comments and strings never count.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use syn::visit::Visit;

/// A module's path inside its crate, `crate` for the root (`a::b` for `src/a/b.rs`).
type ModulePath = String;

/// The modules of one crate and which module refers to which.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Every module file, by module path.
    files: BTreeMap<ModulePath, PathBuf>,
    edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

impl ModuleGraph {
    /// Reads the crate whose root file is `root` (`src/main.rs` or `src/lib.rs`), following
    /// `mod name;` declarations to the files they name.
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let mut graph = ModuleGraph::default();
        let mut parsed = Vec::new();
        let mut pending = vec![("crate".to_owned(), root.to_path_buf())];
        while let Some((module, file)) = pending.pop() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let syntax = syn::parse_file(&text)
                .with_context(|| format!("parsing {} as Rust", file.display()))?;
            for child in declared_child_files(&syntax) {
                let child_path = child_module_file(&module, &file, &child)?;
                pending.push((join(&module, &child), child_path));
            }
            graph.files.insert(module.clone(), file);
            parsed.push((module, syntax));
        }
        for (module, syntax) in &parsed {
            let mut collector = PathCollector::default();
            collector.visit_file(syntax);
            let targets = collector
                .paths
                .iter()
                .filter_map(|path| graph.resolve(module, path))
                .filter(|target| target != module && !is_descendant(target, module))
                .collect();
            graph.edges.insert(module.clone(), targets);
        }
        Ok(graph)
    }

    /// The module a path refers to: the longest prefix of the path made absolute that is one of
    /// this crate's module files, else the root. Paths into other crates resolve to nothing.
    fn resolve(&self, from: &str, path: &[String]) -> Option<ModulePath> {
        let absolute = absolute_path(from, path, |child| {
            self.files.contains_key(&join(from, child))
        })?;
        // No module prefix: an item of the crate root itself (`crate::Context`).
        let deepest_module = (1..=absolute.len())
            .rev()
            .map(|len| absolute[..len].join("::"))
            .find(|candidate| self.files.contains_key(candidate));
        Some(deepest_module.unwrap_or_else(|| "crate".to_owned()))
    }

    /// The circles: every group of two or more modules that reach each other, each as one
    /// concrete chain of references that starts and ends at the same module.
    pub fn circles(&self) -> Vec<Vec<ModulePath>> {
        strongly_connected(&self.edges)
            .into_iter()
            .filter(|group| group.len() > 1)
            .map(|group| self.one_cycle(&group))
            .collect()
    }

    /// A shortest chain from the group's first module back to itself, through the group.
    fn one_cycle(&self, group: &BTreeSet<ModulePath>) -> Vec<ModulePath> {
        let start = group.iter().next().expect("a group is never empty").clone();
        let mut previous: BTreeMap<ModulePath, ModulePath> = BTreeMap::new();
        let mut frontier = vec![start.clone()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for module in frontier {
                for target in self.edges.get(&module).into_iter().flatten() {
                    if !group.contains(target) || previous.contains_key(target) {
                        continue;
                    }
                    previous.insert(target.clone(), module.clone());
                    if *target == start {
                        return walk_back(&previous, &start);
                    }
                    next.push(target.clone());
                }
            }
            frontier = next;
        }
        group.iter().cloned().collect()
    }
}

/// Whether `module` lies inside `ancestor`'s folder. A module that uses its own children is
/// composed of them, not tangled with them: that edge is left out, while a child's reference up
/// to its parent, and every reference between modules that do not contain each other, count.
fn is_descendant(module: &str, ancestor: &str) -> bool {
    ancestor == "crate"
        || module
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn walk_back(previous: &BTreeMap<ModulePath, ModulePath>, start: &str) -> Vec<ModulePath> {
    let mut chain = vec![start.to_owned()];
    let mut at = previous[start].clone();
    while at != start {
        chain.push(at.clone());
        at = previous[&at].clone();
    }
    chain.push(start.to_owned());
    chain.reverse();
    chain
}

fn join(parent: &str, child: &str) -> ModulePath {
    if parent == "crate" {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// `path` as seen from module `from`, made absolute (without the leading `crate`); `None` for
/// a path that leaves the crate. `is_child` says whether a bare first segment names a child
/// module of `from` (in the root, that is every top-level module).
fn absolute_path(
    from: &str,
    path: &[String],
    is_child: impl Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = if from == "crate" {
        Vec::new()
    } else {
        from.split("::").map(str::to_owned).collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => rest = &rest[1..],
        Some(first) if is_child(first) => {}
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The `mod name;` declarations of a file that live in files of their own (not inline
/// `mod name { ... }` blocks), with their `#[path]` ignored: the workspace uses none.
fn declared_child_files(file: &syn::File) -> Vec<String> {
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(declaration) if declaration.content.is_none() => {
                Some(declaration.ident.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Where `mod child;` in `parent_file` lives: `child.rs` or `child/mod.rs` beside a `main.rs`,
/// `lib.rs` or `mod.rs`, else in the folder named after the parent file.
fn child_module_file(parent: &str, parent_file: &Path, child: &str) -> anyhow::Result<PathBuf> {
    let directory = parent_file.parent().unwrap_or(Path::new("."));
    let owns_directory = parent == "crate"
        || parent_file
            .file_name()
            .is_some_and(|name| name == "mod.rs" || name == "main.rs" || name == "lib.rs");
    let base = if owns_directory {
        directory.to_path_buf()
    } else {
        let stem = parent_file
            .file_stem()
            .context("a module file has a name")?;
        directory.join(stem)
    };
    [
        base.join(format!("{child}.rs")),
        base.join(child).join("mod.rs"),
    ]
    .into_iter()
    .find(|candidate| candidate.is_file())
    .with_context(|| {
        format!(
            "`mod {child};` in {} names no file ({child}.rs or {child}/mod.rs in {})",
            parent_file.display(),
            base.display()
        )
    })
}

/// Every path of a file that may name a module of the crate: `use` trees expanded to one path
/// per leaf, and every path in code, types and macros' paths.
#[derive(Default)]
struct PathCollector {
    paths: Vec<Vec<String>>,
}

impl PathCollector {
    fn add_use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.add_use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut path = prefix.clone();
                if name.ident != "self" {
                    path.push(name.ident.to_string());
                }
                self.paths.push(path);
            }
            syn::UseTree::Rename(rename) => {
                let mut path = prefix.clone();
                path.push(rename.ident.to_string());
                self.paths.push(path);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.add_use_tree(prefix, item);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.add_use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths.push(
            path.segments
                .iter()
                .map(|segment| segment.ident.to_string())
                .collect(),
        );
        syn::visit::visit_path(self, path);
    }

    // A test module inside a file belongs to that file; its `use super::*` is no reference.
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let is_inline_test_module = item.content.is_some()
            && item.attrs.iter().any(|attribute| {
                attribute.path().is_ident("cfg")
                    && attribute
                        .parse_args::<syn::Ident>()
                        .is_ok_and(|ident| ident == "test")
            });
        if !is_inline_test_module {
            syn::visit::visit_item_mod(self, item);
        }
    }
}

/// Tarjan's strongly connected components, each as a set of modules.
fn strongly_connected(
    edges: &BTreeMap<ModulePath, BTreeSet<ModulePath>>,
) -> Vec<BTreeSet<ModulePath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<BTreeSet<ModulePath>>,
    }
    fn connect<'a>(state: &mut State<'a>, module: &'a str) {
        let next = state.index.len();
        state.index.insert(module, next);
        state.low.insert(module, next);
        state.stack.push(module);
        state.on_stack.insert(module);
        for target in state.edges.get(module).into_iter().flatten() {
            let target = target.as_str();
            if !state.index.contains_key(target) {
                connect(state, target);
                let low = state.low[module].min(state.low[target]);
                state.low.insert(module, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[module].min(state.index[target]);
                state.low.insert(module, low);
            }
        }
        if state.low[module] == state.index[module] {
            let mut group = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                group.insert(member.to_owned());
                if member == module {
                    break;
                }
            }
            state.groups.push(group);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for module in edges.keys() {
        if !state.index.contains_key(module.as_str()) {
            connect(&mut state, module);
        }
    }
    state.groups
}

/// Every circle of every crate root, as `crate: a → b → a` lines; empty when there is none.
pub fn find_circles(roots: &[(String, PathBuf)]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for (name, root) in roots {
        let graph = ModuleGraph::read(root)?;
        for circle in graph.circles() {
            found.push(format!("{name}: {}", circle.join(" → ")));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let root = dir.path().join("src/main.rs");
        (dir, root)
    }

    #[test]
    fn layers_have_no_circle() {
        let (_dir, root) = crate_with(&[
            ("src/main.rs", "mod a; mod b; fn main() { a::go(); }"),
            ("src/a.rs", "use crate::b::Thing; pub fn go() {}"),
            ("src/b.rs", "pub struct Thing;"),
        ]);
        assert_eq!(
            ModuleGraph::read(&root).unwrap().circles(),
            Vec::<Vec<String>>::new()
        );
    }

    #[test]
    fn a_use_group_that_closes_a_loop_is_a_circle() {
        let (_dir, root) = crate_with(&[
            ("src/main.rs", "mod a; mod b; mod c; fn main() {}"),
            ("src/a.rs", "use crate::{b::{self, B}};"),
            ("src/b.rs", "pub struct B; fn f() { crate::c::g(); }"),
            ("src/c.rs", "pub fn g() { let _ = super::a::A; }"),
        ]);
        let circles = ModuleGraph::read(&root).unwrap().circles();
        assert_eq!(circles, vec![vec!["a", "b", "c", "a"]]);
    }

    #[test]
    fn a_module_that_uses_its_own_children_is_not_in_a_circle_with_them() {
        // A folder module's `run` hands each command to a child; the children use its helpers.
        let (_dir, root) = crate_with(&[
            (
                "src/main.rs",
                "mod git; pub struct Context; fn main() { git::run(); }",
            ),
            (
                "src/git/mod.rs",
                "mod pull; pub fn run() { pull::run(); } pub fn repo() {}",
            ),
            (
                "src/git/pull.rs",
                "use crate::Context; pub fn run() { super::repo(); }",
            ),
        ]);
        assert!(ModuleGraph::read(&root).unwrap().circles().is_empty());
    }

    #[test]
    fn nested_files_resolve_to_the_deepest_module() {
        let (_dir, root) = crate_with(&[
            ("src/main.rs", "mod pool; fn main() {}"),
            (
                "src/pool/mod.rs",
                "mod spawn; mod worker; pub use spawn::Spec;",
            ),
            (
                "src/pool/spawn.rs",
                "pub struct Spec; fn f() { super::worker::start(); }",
            ),
            (
                "src/pool/worker.rs",
                "pub fn start() { let _ = super::spawn::Spec; }",
            ),
        ]);
        let circles = ModuleGraph::read(&root).unwrap().circles();
        assert_eq!(
            circles,
            vec![vec!["pool::spawn", "pool::worker", "pool::spawn"]]
        );
    }

    #[test]
    fn comments_strings_and_test_modules_do_not_count() {
        let (_dir, root) = crate_with(&[
            ("src/main.rs", "mod a; mod b; fn main() {}"),
            ("src/a.rs", "use crate::b::B; pub struct A;"),
            (
                "src/b.rs",
                "// crate::a::A\npub struct B; const S: &str = \"crate::a::A\";\n\
                 #[cfg(test)] mod tests { use crate::a::A; }",
            ),
        ]);
        assert!(ModuleGraph::read(&root).unwrap().circles().is_empty());
    }

    #[test]
    fn a_child_module_file_that_is_missing_is_an_error_naming_it() {
        let (_dir, root) = crate_with(&[("src/main.rs", "mod gone; fn main() {}")]);
        let error = ModuleGraph::read(&root).unwrap_err();
        assert!(format!("{error:#}").contains("`mod gone;`"), "{error:#}");
    }
}
