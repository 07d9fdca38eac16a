//! The module structure of every crate of the workspace (issue 38: "no import
//! cycle among the modules of any crate"), and the one-way layering of
//! `premem-core`'s folders.
//!
//! For each crate (the root package and every `[workspace] members` entry,
//! each of `src/lib.rs`, `src/main.rs` and `src/bin/*.rs`), the test reads the
//! module tree from the files (`mod x;` → `x.rs` or `x/mod.rs`, `#[path]`
//! honoured) and parses every file with `syn`. Every path that can lead into
//! the crate is resolved: `use` trees, paths in types, expressions and
//! patterns, paths inside macro calls, and `"crate::..."` strings in
//! attributes. A path resolves to the deepest module it names; a name that a
//! module re-exports (`pub use job::JobSpec`, chains and globs too) is followed
//! to the module that defines it. Inline modules (`#[cfg(test)] mod tests`
//! among them) belong to the file that holds them.
//!
//! The rule: for every module, the graph of its children (A → B when anything
//! in A's subtree refers to anything in B's subtree) has no cycle. A cycle
//! means the two halves cannot be understood, tested or moved apart; the
//! failure names the crate, the parent module, the modules of the cycle and,
//! for each edge, one file:line that makes it, so the fix (move the shared
//! piece down, or invert the dependency) is plain.
//!
//! `premem-core` also documents, in its `lib.rs`, that its folders import one
//! way (`storage` ← `data` ← `science` ← ... ← `spec`: a module imports only
//! from its own folder or the ones before it), and that `retry` and
//! `error_text` are leaves that every folder may use and that import nothing
//! from the crate. The test reads that chain and those leaves from the doc
//! itself, so the doc and the check cannot drift apart; a top-level module the
//! doc does not place fails the test.
//!
//! The fixtures at the end write small crates with known cycles and layering
//! faults, so the checker cannot pass by seeing nothing; the real workspace
//! must also show a plausible number of modules and edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};

/// How many re-exports and imports one resolution may follow (guards loops of globs).
const MAX_DEPTH: usize = 12;

// ----------------------------------------------------------------------------
// The module tree of one crate, read from its files.
// ----------------------------------------------------------------------------

/// Where a reference is written: file (relative to the checked tree), line, path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Site {
    file: PathBuf,
    line: usize,
    text: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (`{}`)", self.file.display(), self.line, self.text)
    }
}

/// One module: a file module, or an inline `mod x { ... }` (then `owner` is
/// the file module that holds it).
#[derive(Default)]
struct Module {
    path: Vec<String>,
    parent: Option<usize>,
    owner: usize,
    file: PathBuf,
    /// The folder where its `mod x;` declarations find their files.
    child_dir: PathBuf,
    children: BTreeMap<String, usize>,
    /// Names of the items it defines (structs, functions, ...).
    items: BTreeSet<String>,
    /// Names its `use` declarations bring in, with the path as written.
    imports: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    /// Declared under `#[cfg(test)]`, or inside such a module.
    test_only: bool,
}

/// A path written in a module, to resolve once the whole tree is known.
struct Reference {
    module: usize,
    path: Vec<String>,
    site: Site,
}

/// A crate's modules and every path written in them.
struct Tree {
    modules: Vec<Module>,
    references: Vec<Reference>,
    /// Sites are reported relative to this folder.
    base: PathBuf,
}

impl Tree {
    /// Reads the crate whose root file is `root_file`, and every module file below it.
    fn load(root_file: &Path, base: &Path) -> Tree {
        let dir = root_file
            .parent()
            .expect("a crate root file lies in a folder");
        let root = Module {
            file: root_file.to_path_buf(),
            child_dir: dir.to_path_buf(),
            ..Module::default()
        };
        let mut tree = Tree {
            modules: vec![root],
            references: Vec::new(),
            base: base.to_path_buf(),
        };
        let mut queue = VecDeque::from([0]);
        while let Some(module) = queue.pop_front() {
            queue.extend(tree.read_file_module(module));
        }
        tree
    }

    /// Whether test code uses the crate's `testing` module (its shared test
    /// fixtures): a dev edge, left out of the check as Cargo leaves
    /// dev-dependencies out of its own cycle check.
    fn is_dev_edge(&self, from: usize, to: usize) -> bool {
        let top = self.modules[to].path.first().map(String::as_str);
        self.modules[from].test_only && top == Some("testing")
    }

    /// Parses one module's file; returns the file modules it declares.
    fn read_file_module(&mut self, module: usize) -> Vec<usize> {
        let file = self.modules[module].file.clone();
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read module file {}: {e}", file.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| {
            let line = e.span().start().line;
            panic!("cannot parse {}:{line}: {e}", file.display())
        });
        let relative = file.strip_prefix(&self.base).unwrap_or(&file).to_path_buf();
        let mut collector = Collector {
            tree: self,
            current: module,
            file: relative,
            declared: Vec::new(),
        };
        for item in &ast.items {
            collector.visit_item(item);
        }
        collector.declared
    }

    /// Adds the module that `item` declares inside `parent`.
    fn add_child(&mut self, parent: usize, item: &syn::ItemMod) -> usize {
        let name = item.ident.to_string();
        let index = self.modules.len();
        let outer = &self.modules[parent];
        let (owner, file, child_dir) = match item.content {
            Some(_) => (outer.owner, outer.file.clone(), outer.child_dir.join(&name)),
            None => {
                let file = self.module_file(parent, item);
                let child_dir = child_dir_of(&file);
                (index, file, child_dir)
            }
        };
        let test_only = outer.test_only || item.attrs.iter().any(is_cfg_test);
        let mut path = outer.path.clone();
        path.push(name.clone());
        let module = Module {
            path,
            parent: Some(parent),
            owner,
            file,
            child_dir,
            test_only,
            ..Module::default()
        };
        self.modules.push(module);
        self.modules[parent].children.insert(name, index);
        index
    }

    /// The file of `mod x;` declared in `parent`: `#[path]`, `x.rs` or `x/mod.rs`.
    fn module_file(&self, parent: usize, item: &syn::ItemMod) -> PathBuf {
        let outer = &self.modules[parent];
        if let Some(relative) = path_attribute(&item.attrs) {
            let in_file = outer.owner == parent;
            let dir = match in_file {
                true => outer.file.parent().expect("a module file lies in a folder"),
                false => &outer.child_dir,
            };
            return dir.join(relative);
        }
        let name = item.ident.to_string();
        let flat = outer.child_dir.join(format!("{name}.rs"));
        let nested = outer.child_dir.join(&name).join("mod.rs");
        match (flat.exists(), nested.exists()) {
            (true, _) => flat,
            (false, true) => nested,
            (false, false) => panic!(
                "`mod {name};` in {}: neither {} nor {} exists",
                outer.file.display(),
                flat.display(),
                nested.display()
            ),
        }
    }

    /// The module's path as Rust writes it: `crate::spec::plan`.
    fn display(&self, module: usize) -> String {
        let mut text = String::from("crate");
        for segment in &self.modules[module].path {
            text.push_str("::");
            text.push_str(segment);
        }
        text
    }
}

/// Where the `mod x;` files of a module file (not a crate root) lie: next to
/// a `mod.rs`, in a folder named after any other file (`a.rs` → `a/`); a
/// `#[path]` file follows the same rule.
fn child_dir_of(file: &Path) -> PathBuf {
    let dir = file.parent().expect("a module file lies in a folder");
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    match stem == "mod" {
        true => dir.to_path_buf(),
        false => dir.join(stem),
    }
}

/// Whether an attribute is `#[cfg(test)]`.
fn is_cfg_test(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("cfg")
        && attr
            .parse_args::<syn::Ident>()
            .is_ok_and(|arg| arg == "test")
}

/// The value of a `#[path = "..."]` attribute, if any.
fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

// ----------------------------------------------------------------------------
// Collecting the items, imports and paths of one file.
// ----------------------------------------------------------------------------

/// Walks one file's syntax tree, registering modules, items, imports and paths.
struct Collector<'t> {
    tree: &'t mut Tree,
    current: usize,
    file: PathBuf,
    declared: Vec<usize>,
}

impl Collector<'_> {
    fn module(&mut self) -> &mut Module {
        &mut self.tree.modules[self.current]
    }

    fn add_reference(&mut self, path: Vec<String>, line: usize) {
        let site = Site {
            file: self.file.clone(),
            line,
            text: path.join("::"),
        };
        let module = self.current;
        self.tree.references.push(Reference { module, path, site });
    }

    fn add_use(&mut self, leaf: UseLeaf) {
        let module = self.module();
        match (&leaf.name, leaf.glob) {
            (_, true) => module.globs.push(leaf.path.clone()),
            (Some(name), false) => {
                module.imports.insert(name.clone(), leaf.path.clone());
            }
            (None, false) => {}
        }
        self.add_reference(leaf.path, leaf.line);
    }

    /// Paths in a macro call: parsed as expressions where they are, else the
    /// `crate::`/`self::`/`super::` paths among its tokens.
    fn visit_macro_tokens(&mut self, tokens: &TokenStream) {
        let parser = Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        match parser.parse2(tokens.clone()) {
            Ok(exprs) => exprs.iter().for_each(|e| self.visit_expr(e)),
            Err(_) => {
                for (path, line) in anchored_paths(tokens) {
                    self.add_reference(path, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if let Some(name) = item_name(item) {
            self.module().items.insert(name);
        }
        visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let child = self.tree.add_child(self.current, item);
        let Some((_, items)) = &item.content else {
            self.declared.push(child);
            return;
        };
        let outer = std::mem::replace(&mut self.current, child);
        items.iter().for_each(|i| self.visit_item(i));
        self.current = outer;
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if item.leading_colon.is_none() {
            let mut leaves = Vec::new();
            use_leaves(&item.tree, &mut Vec::new(), &mut leaves);
            leaves.into_iter().for_each(|leaf| self.add_use(leaf));
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if let (None, Some(first)) = (path.leading_colon, path.segments.first()) {
            let line = first.ident.span().start().line;
            let segments = path.segments.iter().map(|s| s.ident.to_string());
            self.add_reference(segments.collect(), line);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.visit_macro_tokens(&mac.tokens);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        if let (false, syn::Meta::List(list)) = (attr.path().is_ident("doc"), &attr.meta) {
            for (path, line) in string_paths(&list.tokens) {
                self.add_reference(path, line);
            }
        }
        visit::visit_attribute(self, attr);
    }
}

/// The name an item defines in its module's namespace (modules aside).
fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::TraitAlias(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// One leaf of a `use` tree: the full path, the name it binds (none for
/// `as _` and globs) and its line.
struct UseLeaf {
    path: Vec<String>,
    name: Option<String>,
    glob: bool,
    line: usize,
}

/// Flattens a `use` tree (groups, renames, globs, `self`) into its leaves.
fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<UseLeaf>) {
    let leaf = |ident: &syn::Ident, name: Option<String>, glob: bool| {
        let mut path = prefix.clone();
        if ident != "self" || prefix.is_empty() {
            path.push(ident.to_string());
        }
        let line = ident.span().start().line;
        UseLeaf {
            path,
            name,
            glob,
            line,
        }
    };
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let bound = match n.ident == "self" {
                true => prefix.last().cloned(),
                false => Some(n.ident.to_string()),
            };
            out.push(leaf(&n.ident, bound, false));
        }
        syn::UseTree::Rename(r) => {
            let bound = Some(r.rename.to_string()).filter(|n| n != "_");
            out.push(leaf(&r.ident, bound, false));
        }
        syn::UseTree::Glob(g) => {
            let line = g.star_token.spans[0].start().line;
            let path = prefix.clone();
            out.push(UseLeaf {
                path,
                name: None,
                glob: true,
                line,
            });
        }
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_leaves(t, prefix, out)),
    }
}

/// The `crate::`, `$crate::`, `self::` and `super::` paths in a token stream
/// (a macro's arguments or a `macro_rules!` body), with their lines.
fn anchored_paths(tokens: &TokenStream) -> Vec<(Vec<String>, usize)> {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let mut out = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(g) => out.extend(anchored_paths(&g.stream())),
            TokenTree::Ident(id) if is_anchor(id) && !(i >= 2 && is_path_sep(&trees, i - 2)) => {
                let path = path_at(&trees, i);
                if path.len() > 1 {
                    out.push((path, id.span().start().line));
                }
            }
            _ => {}
        }
    }
    out
}

fn is_anchor(ident: &proc_macro2::Ident) -> bool {
    ident == "crate" || ident == "self" || ident == "super"
}

/// Whether `trees[i..]` starts with `::`.
fn is_path_sep(trees: &[TokenTree], i: usize) -> bool {
    let punct = |j: usize, spacing: Option<Spacing>| match trees.get(j) {
        Some(TokenTree::Punct(p)) => p.as_char() == ':' && spacing.is_none_or(|s| p.spacing() == s),
        _ => false,
    };
    punct(i, Some(Spacing::Joint)) && punct(i + 1, None)
}

/// The path `ident :: ident :: ...` that starts at `trees[start]`.
fn path_at(trees: &[TokenTree], start: usize) -> Vec<String> {
    let mut path = vec![trees[start].to_string()];
    let mut at = start;
    while is_path_sep(trees, at + 1) {
        let Some(TokenTree::Ident(next)) = trees.get(at + 3) else {
            break;
        };
        path.push(next.to_string());
        at += 3;
    }
    path
}

/// The `"crate::..."`-style paths in string literals of an attribute
/// (`#[serde(with = "crate::x")]`), with their lines.
fn string_paths(tokens: &TokenStream) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    for tree in tokens.clone() {
        match tree {
            TokenTree::Group(g) => out.extend(string_paths(&g.stream())),
            TokenTree::Literal(lit) => {
                let Ok(text) = syn::parse_str::<syn::LitStr>(&lit.to_string()) else {
                    continue;
                };
                let path: Vec<String> = text.value().split("::").map(str::to_string).collect();
                let anchored = ["crate", "self", "super"].contains(&path[0].as_str());
                let idents = path.iter().all(|s| syn::parse_str::<syn::Ident>(s).is_ok());
                if anchored && idents && path.len() > 1 {
                    out.push((path, lit.span().start().line));
                }
            }
            _ => {}
        }
    }
    out
}

// ----------------------------------------------------------------------------
// Resolving a path to the module it lands in.
// ----------------------------------------------------------------------------

/// What a name leads to inside a module: a module to go on into, or an item
/// (of the given module) where the path stops.
enum Step {
    Into(usize),
    Stop(usize),
}

impl Tree {
    /// The deepest module that `raw`, written in module `at`, names, and
    /// whether every segment was a module; `None` when it leaves the crate.
    fn resolve(&self, at: usize, raw: &[String], depth: usize) -> Option<(usize, bool)> {
        if depth > MAX_DEPTH || raw.is_empty() {
            return None;
        }
        let (start, used) = self.anchor(at, raw)?;
        if used > 0 {
            return Some(self.walk(start, &raw[used..], depth));
        }
        // A bare first name: something in scope in `at`, else an extern crate or a local.
        match self.lookup(at, &raw[0], depth)? {
            Step::Stop(module) => Some((module, false)),
            Step::Into(module) => Some(self.walk(module, &raw[1..], depth)),
        }
    }

    /// The module a path starts from (`crate`, `$crate`, `self`, `super`...)
    /// and how many segments that took.
    fn anchor(&self, at: usize, raw: &[String]) -> Option<(usize, usize)> {
        let (mut module, mut used) = (at, 0);
        for segment in raw {
            match segment.as_str() {
                "crate" | "$crate" if used == 0 => module = 0,
                "self" if used == 0 => {}
                "super" => module = self.modules[module].parent?,
                _ => break,
            }
            used += 1;
        }
        Some((module, used))
    }

    /// Follows `segments` down from `module` as far as they name modules.
    fn walk(&self, mut module: usize, segments: &[String], depth: usize) -> (usize, bool) {
        for segment in segments {
            match self.lookup(module, segment, depth) {
                Some(Step::Into(next)) => module = next,
                Some(Step::Stop(at)) => return (at, false),
                None => return (module, false),
            }
        }
        (module, true)
    }

    /// What `name` is in `module`: a child module, an item it defines, or
    /// what one of its imports (named, then globs) brings in.
    fn lookup(&self, module: usize, name: &str, depth: usize) -> Option<Step> {
        let m = &self.modules[module];
        if let Some(&child) = m.children.get(name) {
            return Some(Step::Into(child));
        }
        if m.items.contains(name) {
            return Some(Step::Stop(module));
        }
        if let Some(raw) = m.imports.get(name).filter(|raw| raw.len() > 1) {
            let (at, whole) = self.resolve(module, raw, depth + 1)?;
            return Some(if whole {
                Step::Into(at)
            } else {
                Step::Stop(at)
            });
        }
        m.globs.iter().find_map(|raw| {
            let (base, whole) = self.resolve(module, raw, depth + 1)?;
            let found = whole && base != module;
            found.then(|| self.lookup(base, name, depth + 1)).flatten()
        })
    }
}

// ----------------------------------------------------------------------------
// The dependency graph of one crate and its checks.
// ----------------------------------------------------------------------------

/// One crate's file modules and the dependencies between them.
struct CrateCheck {
    name: String,
    tree: Tree,
    /// File module → file module (different ones), with the first site that makes it.
    deps: BTreeMap<(usize, usize), Site>,
}

/// A cycle among the children of one module, with one site per edge.
#[derive(Debug)]
struct Cycle {
    krate: String,
    parent: String,
    /// The cycle's modules in order; the last one leads back to the first.
    modules: Vec<String>,
    /// `a -> b at file:line (`path`)`, one per edge of the cycle.
    edges: Vec<String>,
    /// Every module of the strongly connected component the cycle lies in.
    component: Vec<String>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.modules.join(" -> ");
        writeln!(
            f,
            "crate {}, in module `{}`: cycle {names}",
            self.krate, self.parent
        )?;
        for edge in &self.edges {
            writeln!(f, "    {edge}")?;
        }
        if self.component.len() > self.modules.len() {
            writeln!(f, "    (all tied together: {})", self.component.join(", "))?;
        }
        Ok(())
    }
}

impl CrateCheck {
    /// Reads and resolves the crate rooted at `root_file`.
    fn load(name: &str, root_file: &Path, base: &Path) -> CrateCheck {
        let tree = Tree::load(root_file, base);
        let mut deps = BTreeMap::new();
        for r in &tree.references {
            let Some((landing, _)) = tree.resolve(r.module, &r.path, 0) else {
                continue;
            };
            if tree.is_dev_edge(r.module, landing) {
                continue;
            }
            let (from, to) = (tree.modules[r.module].owner, tree.modules[landing].owner);
            if from != to {
                deps.entry((from, to)).or_insert_with(|| r.site.clone());
            }
        }
        let name = name.to_string();
        CrateCheck { name, tree, deps }
    }

    /// The file-module parent of a file module.
    fn file_parent(&self, module: usize) -> Option<usize> {
        let parent = self.tree.modules[module].parent?;
        Some(self.tree.modules[parent].owner)
    }

    /// The file modules from the root down to `module`.
    fn chain(&self, module: usize) -> Vec<usize> {
        let mut chain = vec![module];
        while let Some(parent) = self.file_parent(*chain.last().expect("chain is not empty")) {
            chain.push(parent);
        }
        chain.reverse();
        chain
    }

    /// The sibling edge a dependency makes: (common parent, child toward
    /// `from`, child toward `to`); none between a module and its ancestor.
    fn sibling_edge(&self, from: usize, to: usize) -> Option<(usize, usize, usize)> {
        let (up_from, up_to) = (self.chain(from), self.chain(to));
        if up_from.contains(&to) || up_to.contains(&from) {
            return None;
        }
        let common = up_from
            .iter()
            .zip(&up_to)
            .take_while(|(a, b)| a == b)
            .count();
        Some((up_from[common - 1], up_from[common], up_to[common]))
    }

    /// Every module's children graph: parent → (child, child) → first site.
    fn sibling_edges(&self) -> BTreeMap<usize, BTreeMap<(usize, usize), Site>> {
        let mut graphs: BTreeMap<usize, BTreeMap<(usize, usize), Site>> = BTreeMap::new();
        for (&(from, to), site) in &self.deps {
            if let Some((parent, a, b)) = self.sibling_edge(from, to) {
                let graph = graphs.entry(parent).or_default();
                graph.entry((a, b)).or_insert_with(|| site.clone());
            }
        }
        graphs
    }

    /// The number of file modules (inline ones belong to their file).
    fn file_modules(&self) -> usize {
        let modules = self.tree.modules.iter().enumerate();
        modules.filter(|(i, m)| m.owner == *i).count()
    }

    /// One cycle per strongly connected group of siblings, under every module.
    fn cycles(&self) -> Vec<Cycle> {
        let mut cycles = Vec::new();
        for (parent, edges) in self.sibling_edges() {
            let nodes: Vec<usize> = edges.keys().flat_map(|&(a, b)| [a, b]).collect();
            let nodes: Vec<usize> = nodes
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let index = |m: usize| nodes.binary_search(&m).expect("an edge's end is a node");
            let mut next = vec![Vec::new(); nodes.len()];
            edges
                .keys()
                .for_each(|&(a, b)| next[index(a)].push(index(b)));
            for component in strongly_connected(&next)
                .into_iter()
                .filter(|c| c.len() > 1)
            {
                let cycle = shortest_cycle(&next, &component);
                let modules: Vec<usize> = cycle.iter().map(|&i| nodes[i]).collect();
                let group: Vec<usize> = component.iter().map(|&i| nodes[i]).collect();
                cycles.push(self.describe_cycle(parent, &modules, &group, &edges));
            }
        }
        cycles
    }

    /// A cycle's report: names, and one site per edge.
    fn describe_cycle(
        &self,
        parent: usize,
        modules: &[usize],
        component: &[usize],
        edges: &BTreeMap<(usize, usize), Site>,
    ) -> Cycle {
        let names = |list: &[usize]| list.iter().map(|&m| self.tree.display(m)).collect();
        let edges = (0..modules.len())
            .map(|i| {
                let (a, b) = (modules[i], modules[(i + 1) % modules.len()]);
                let site = &edges[&(a, b)];
                format!(
                    "{} -> {} at {site}",
                    self.tree.display(a),
                    self.tree.display(b)
                )
            })
            .collect();
        Cycle {
            krate: self.name.clone(),
            parent: self.tree.display(parent),
            modules: names(modules),
            edges,
            component: names(component),
        }
    }
}

/// Strongly connected components of the graph `next` (Tarjan's algorithm).
fn strongly_connected(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = next.len();
    let mut tarjan = Tarjan {
        next,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if tarjan.index[v].is_none() {
            tarjan.connect(v);
        }
    }
    tarjan.found
}

struct Tarjan<'g> {
    next: &'g [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    on_stack: Vec<bool>,
    counter: usize,
    found: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn connect(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let next = self.next;
        for &w in &next[v] {
            match self.index[w] {
                None => {
                    self.connect(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if self.index[v] == Some(self.low[v]) {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            self.found.push(component);
        }
    }
}

/// The shortest cycle through the first node of a strongly connected
/// `component` (breadth-first, inside the component), as its nodes in order.
fn shortest_cycle(next: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let mut came_from = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in next[v].iter().filter(|w| component.contains(w)) {
            if w == start {
                let mut cycle = vec![v];
                while let Some(&before) = came_from.get(cycle.last().expect("not empty")) {
                    cycle.push(before);
                }
                cycle.reverse();
                return cycle;
            }
            if w != start && !came_from.contains_key(&w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    panic!("a strongly connected component of more than one node has a cycle")
}

// ----------------------------------------------------------------------------
// The layering of premem-core's folders.
// ----------------------------------------------------------------------------

/// Why a module of top-level folder `from` may not use one of folder `to`.
fn layer_rule(from: &str, to: &str, layers: &[&str], leaves: &[&str]) -> Option<String> {
    if from == to {
        return None;
    }
    if leaves.contains(&from) {
        return Some(format!(
            "`{from}` is a leaf: it imports nothing from the crate"
        ));
    }
    if leaves.contains(&to) {
        return None;
    }
    let rank = |folder: &str| layers.iter().position(|l| *l == folder);
    match (rank(from), rank(to)) {
        (Some(a), Some(b)) if b <= a => None,
        (Some(_), Some(_)) => Some(format!(
            "`{from}` may not import from `{to}`, a later folder"
        )),
        _ => Some(format!(
            "`{from}` -> `{to}`: a folder outside the layering {layers:?}"
        )),
    }
}

/// Every dependency that breaks the layering, and every top-level module the
/// layering does not name.
fn layering_violations(krate: &CrateCheck, layers: &[&str], leaves: &[&str]) -> Vec<String> {
    let top = |m: usize| krate.tree.modules[m].path.first().map(String::as_str);
    let mut found: Vec<String> = krate.tree.modules[0]
        .children
        .keys()
        .filter(|name| !layers.contains(&name.as_str()) && !leaves.contains(&name.as_str()))
        .map(|name| format!("top-level module `{name}` is not in the layering {layers:?}"))
        .collect();
    for (&(a, b), site) in &krate.deps {
        let (Some(from), Some(to)) = (top(a), top(b)) else {
            continue;
        };
        if let Some(why) = layer_rule(from, to, layers, leaves) {
            let (a, b) = (krate.tree.display(a), krate.tree.display(b));
            found.push(format!("{site}: {a} -> {b}: {why}"));
        }
    }
    found
}

/// The crate-level doc (`//!`) of a crate root, whitespace collapsed.
fn crate_doc(lib_rs: &Path) -> String {
    let text = fs::read_to_string(lib_rs)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lib_rs.display()));
    let file =
        syn::parse_file(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", lib_rs.display()));
    let lines: Vec<String> = file.attrs.iter().filter_map(doc_text).collect();
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn doc_text(attr: &syn::Attribute) -> Option<String> {
    match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    }
}

/// The names of the first chain "`a` ← `b` ← `c`" in `doc`.
fn arrow_chain(doc: &str) -> Option<Vec<String>> {
    let start = doc.find('←')?;
    let head = doc[..start].trim_end().strip_suffix('`')?;
    let mut chain = vec![head[head.rfind('`')? + 1..].to_string()];
    let mut rest = &doc[start..];
    while let Some(after) = rest.strip_prefix('←') {
        let after = after.trim_start().strip_prefix('`')?;
        let end = after.find('`')?;
        chain.push(after[..end].to_string());
        rest = after[end + 1..].trim_start();
    }
    Some(chain)
}

/// The backticked names of the sentence that says "... are leaves".
fn leaf_names(doc: &str) -> Option<Vec<String>> {
    let end = doc.find(" are leaves")?;
    let start = doc[..end].rfind(". ").map_or(0, |i| i + 2);
    let names: Vec<String> = doc[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The layering a crate's `lib.rs` documents: its folders in order, and its leaves.
fn documented_layering(lib_rs: &Path) -> (Vec<String>, Vec<String>) {
    let doc = crate_doc(lib_rs);
    let place = lib_rs.display();
    let layers = arrow_chain(&doc)
        .filter(|c| c.len() > 1)
        .unwrap_or_else(|| {
            panic!("{place}: the doc no longer states its layering as \"`a` ← `b` ← ...\"")
        });
    let leaves = leaf_names(&doc).unwrap_or_else(|| {
        panic!("{place}: the doc no longer names its leaves as \"[`x`] and [`y`] are leaves\"")
    });
    (layers, leaves)
}

// ----------------------------------------------------------------------------
// The workspace.
// ----------------------------------------------------------------------------

/// The workspace root (the root package's folder).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_manifest(dir: &Path) -> toml::Table {
    let file = dir.join("Cargo.toml");
    let text =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()))
}

/// The root package's folder and every `[workspace] members` folder.
fn member_dirs(root: &Path) -> Vec<PathBuf> {
    let manifest = read_manifest(root);
    let members = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .expect("the root Cargo.toml has a [workspace] members list");
    let mut dirs = vec![root.to_path_buf()];
    for member in members {
        let member = member.as_str().expect("a workspace member is a string");
        assert!(
            !member.contains('*'),
            "member globs are not supported: {member}"
        );
        dirs.push(root.join(member));
    }
    dirs
}

/// A package's crate roots: `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`,
/// each with the label the reports use.
fn crate_roots(dir: &Path) -> Vec<(String, PathBuf)> {
    let manifest = read_manifest(dir);
    let package = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_else(|| panic!("{}/Cargo.toml has no package name", dir.display()));
    let mut roots = Vec::new();
    for (kind, file) in [("lib", "src/lib.rs"), ("bin", "src/main.rs")] {
        if dir.join(file).exists() {
            roots.push((format!("{package} ({kind})"), dir.join(file)));
        }
    }
    let mut bins: Vec<PathBuf> = fs::read_dir(dir.join("src/bin"))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    bins.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    bins.sort();
    for bin in bins {
        let stem = bin.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        roots.push((format!("{package} (bin {stem})"), bin));
    }
    roots
}

/// Every crate of the workspace, read once for all the tests here.
static WORKSPACE: LazyLock<Vec<CrateCheck>> = LazyLock::new(|| {
    let root = workspace_root();
    let roots: Vec<(String, PathBuf)> = member_dirs(&root)
        .iter()
        .flat_map(|d| crate_roots(d))
        .collect();
    let loaded = roots
        .iter()
        .map(|(name, file)| CrateCheck::load(name, file, &root));
    loaded.collect()
});

fn workspace_crate(label: &str) -> &'static CrateCheck {
    let found = WORKSPACE.iter().find(|c| c.name == label);
    found.unwrap_or_else(|| panic!("no crate {label} in the workspace"))
}

#[test]
fn no_import_cycle_among_the_modules_of_any_crate() {
    let cycles: Vec<Cycle> = WORKSPACE.iter().flat_map(|c| c.cycles()).collect();
    let report: String = cycles.iter().map(|c| c.to_string()).collect();
    assert!(
        cycles.is_empty(),
        "import cycles among sibling modules (issue 38); cut each by moving the shared \
         piece into a module both may use, or by inverting one edge:\n{report}"
    );
}

#[test]
fn core_folders_import_one_way() {
    let core = workspace_crate("premem-core (lib)");
    let (layers, leaves) = documented_layering(&workspace_root().join("core/src/lib.rs"));
    assert!(
        layers.len() >= 4,
        "core/src/lib.rs documents only the layers {layers:?}"
    );
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    let leaves: Vec<&str> = leaves.iter().map(String::as_str).collect();
    let violations = layering_violations(core, &layers, &leaves);
    assert!(
        violations.is_empty(),
        "premem-core's folders import one way ({} ; leaves {leaves:?}), as \
         core/src/lib.rs documents:\n{}",
        layers.join(" <- "),
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_the_whole_workspace() {
    for krate in WORKSPACE.iter() {
        let siblings: usize = krate.sibling_edges().values().map(BTreeMap::len).sum();
        let (modules, inline) = (krate.file_modules(), krate.tree.modules.len());
        println!(
            "{}: {modules} file modules ({} inline), {} dependencies, {siblings} sibling edges",
            krate.name,
            inline - modules,
            krate.deps.len()
        );
    }
    assert!(
        WORKSPACE.len() >= 10,
        "only {} crates found",
        WORKSPACE.len()
    );
    let core = workspace_crate("premem-core (lib)");
    let siblings: usize = core.sibling_edges().values().map(BTreeMap::len).sum();
    assert!(
        core.file_modules() > 20,
        "premem-core: {} modules",
        core.file_modules()
    );
    assert!(
        core.deps.len() > 20,
        "premem-core: {} dependencies",
        core.deps.len()
    );
    assert!(siblings > 10, "premem-core: {siblings} sibling edges");
    let total: usize = WORKSPACE.iter().map(|c| c.deps.len()).sum();
    assert!(
        total > 100,
        "only {total} dependencies in the whole workspace"
    );
}

// ----------------------------------------------------------------------------
// Fixtures: small crates with known answers.
// ----------------------------------------------------------------------------

/// Writes `files` (paths under the crate folder) into a temporary folder and
/// checks the crate rooted at its `src/lib.rs`.
fn fixture(files: &[(&str, &str)]) -> (tempfile::TempDir, CrateCheck) {
    let dir = tempfile::tempdir().expect("create a temporary folder for a fixture crate");
    for (path, text) in files {
        let file = dir.path().join(path);
        let folder = file.parent().expect("a fixture file lies in a folder");
        fs::create_dir_all(folder).expect("create a fixture folder");
        fs::write(&file, text).expect("write a fixture file");
    }
    let check = CrateCheck::load("fixture", &dir.path().join("src/lib.rs"), dir.path());
    (dir, check)
}

/// The sibling edges of a fixture, as `parent: a -> b at site`.
fn edge_list(check: &CrateCheck) -> Vec<String> {
    let mut list = Vec::new();
    for (parent, edges) in check.sibling_edges() {
        for ((a, b), site) in edges {
            let [p, a, b] = [parent, a, b].map(|m| check.tree.display(m));
            list.push(format!("{p}: {a} -> {b} at {site}"));
        }
    }
    list
}

#[test]
fn a_two_way_cycle_is_reported() {
    let (_dir, check) = fixture(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::X;\npub struct Y;\n"),
        ("src/b.rs", "pub struct X;\n\nuse crate::a::Y;\n"),
    ]);
    let cycles = check.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:#?}");
    assert_eq!(cycles[0].krate, "fixture");
    assert_eq!(cycles[0].parent, "crate");
    assert_eq!(cycles[0].modules, ["crate::a", "crate::b"]);
    let edges = [
        "crate::a -> crate::b at src/a.rs:1 (`crate::b::X`)",
        "crate::b -> crate::a at src/b.rs:3 (`crate::a::Y`)",
    ];
    assert_eq!(cycles[0].edges, edges);
}

#[test]
fn a_cycle_through_a_reexport_and_super_is_reported() {
    let (_dir, check) = fixture(&[
        ("src/lib.rs", "pub mod outer;\n"),
        ("src/outer/mod.rs", "mod x;\nmod y;\npub use y::Y;\n"),
        (
            "src/outer/x.rs",
            "pub struct X;\n\npub fn make() -> super::Y {\n    todo!()\n}\n",
        ),
        (
            "src/outer/y.rs",
            "pub struct Y;\n\n#[cfg(test)]\nmod tests {\n    use super::super::x::X;\n}\n",
        ),
    ]);
    let cycles = check.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:#?}");
    assert_eq!(cycles[0].parent, "crate::outer");
    assert_eq!(cycles[0].modules, ["crate::outer::x", "crate::outer::y"]);
    let edges = [
        "crate::outer::x -> crate::outer::y at src/outer/x.rs:3 (`super::Y`)",
        "crate::outer::y -> crate::outer::x at src/outer/y.rs:5 (`super::super::x::X`)",
    ];
    assert_eq!(cycles[0].edges, edges);
}

#[test]
fn a_three_way_cycle_through_a_reexport_chain_and_a_macro_is_reported() {
    let (_dir, check) = fixture(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\npub use b::Thing;\n"),
        ("src/a.rs", "pub fn f() -> crate::Thing {\n    todo!()\n}\n"),
        ("src/b.rs", "mod inner;\npub use inner::*;\n"),
        (
            "src/b/inner.rs",
            "pub struct Thing;\n\npub fn g() {\n    println!(\"{:?}\", crate::c::C);\n}\n",
        ),
        (
            "src/c.rs",
            "#[derive(Debug)]\npub struct C;\n\nfn h() {\n    super::a::f();\n}\n",
        ),
    ]);
    let cycles = check.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:#?}");
    assert_eq!(cycles[0].modules, ["crate::a", "crate::b", "crate::c"]);
    let edges = [
        "crate::a -> crate::b at src/a.rs:1 (`crate::Thing`)",
        "crate::b -> crate::c at src/b/inner.rs:4 (`crate::c::C`)",
        "crate::c -> crate::a at src/c.rs:5 (`super::a::f`)",
    ];
    assert_eq!(cycles[0].edges, edges);
}

#[test]
fn test_code_may_use_the_testing_module_but_other_code_may_not() {
    let files = |a_rs: &'static str| {
        fixture(&[
            ("src/lib.rs", "mod a;\n#[cfg(test)]\nmod testing;\n"),
            ("src/a.rs", a_rs),
            (
                "src/testing.rs",
                "pub fn job() -> crate::a::A {\n    todo!()\n}\n",
            ),
        ])
    };
    let (_dir, check) =
        files("pub struct A;\n#[cfg(test)]\nmod tests {\n    use crate::testing::job;\n}\n");
    assert!(check.cycles().is_empty(), "{:#?}", check.cycles());
    let (_dir, check) = files("pub struct A;\npub fn f() {\n    crate::testing::job();\n}\n");
    assert_eq!(check.cycles().len(), 1, "{:#?}", check.cycles());
}

#[test]
fn a_tree_without_cycle_passes_and_its_edges_are_seen() {
    let (_dir, check) = fixture(&[
        (
            "src/lib.rs",
            "mod a;\nmod b;\n#[path = \"odd/c_file.rs\"]\nmod c;\n",
        ),
        ("src/a.rs", "use crate::{b::B, c::deep::D};\n"),
        ("src/b.rs", "pub struct B(crate::c::C);\n"),
        ("src/odd/c_file.rs", "pub mod deep;\npub struct C;\n"),
        (
            "src/odd/c_file/deep.rs",
            "pub struct D;\n\
             fn f() -> super::C {\n    todo!()\n}\n\
             #[cfg(test)]\n\
             mod tests {\n    use super::*;\n    use crate::c::deep::D;\n}\n",
        ),
    ]);
    assert!(check.cycles().is_empty(), "{:#?}", check.cycles());
    let edges = [
        "crate: crate::a -> crate::b at src/a.rs:1 (`crate::b::B`)",
        "crate: crate::a -> crate::c at src/a.rs:1 (`crate::c::deep::D`)",
        "crate: crate::b -> crate::c at src/b.rs:1 (`crate::c::C`)",
    ];
    assert_eq!(edge_list(&check), edges);
    assert_eq!(check.file_modules(), 5);
}

#[test]
fn layering_violations_are_reported() {
    let (_dir, check) = fixture(&[
        (
            "src/lib.rs",
            "pub mod storage;\npub mod data;\npub mod retry;\npub mod extra;\n",
        ),
        (
            "src/storage.rs",
            "pub struct S;\n\npub fn f(_: crate::data::D) {}\n",
        ),
        (
            "src/data.rs",
            "pub struct D(crate::storage::S);\nuse crate::retry::R;\n",
        ),
        ("src/retry.rs", "pub struct R;\nuse crate::storage::S;\n"),
        ("src/extra.rs", "\n"),
    ]);
    let found = layering_violations(&check, &["storage", "data"], &["retry"]);
    let expected = [
        "top-level module `extra` is not in the layering [\"storage\", \"data\"]",
        "src/storage.rs:3 (`crate::data::D`): crate::storage -> crate::data: \
         `storage` may not import from `data`, a later folder",
        "src/retry.rs:2 (`crate::storage::S`): crate::retry -> crate::storage: \
         `retry` is a leaf: it imports nothing from the crate",
    ];
    assert_eq!(found, expected);
}

#[test]
fn the_layering_is_read_from_the_crate_doc() {
    let lib_rs = "//! Folders (`storage` ← `data` ←\n\
                  //! `spec`; one way).\n\
                  //!\n\
                  //! - [`storage`]: files.\n\
                  //!\n\
                  //! [`retry`] and [`error_text`] are leaves every folder may use.\n\
                  \n\
                  pub mod x {}\n";
    let (dir, _) = fixture(&[("src/lib.rs", lib_rs)]);
    let (layers, leaves) = documented_layering(&dir.path().join("src/lib.rs"));
    assert_eq!(layers, ["storage", "data", "spec"]);
    assert_eq!(leaves, ["retry", "error_text"]);
}
