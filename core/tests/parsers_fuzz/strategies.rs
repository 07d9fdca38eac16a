//! Strategies shared by the parser property tests (also those of
//! premem-curation, which include this file): tricky strings and numbers,
//! any JSON, and mutations of a valid tree or TOML file.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings that tend to break parsers: empty, paths that climb, huge,
/// unicode, control characters and markers of the formats themselves.
pub fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z0-9._/-]{0,12}",
        1 => prop::sample::select(vec![
            "", ".", "..", "../x", "/", "a/b", "a\\b", "MANIFEST.json", "s3://", "memory://",
            "file://", "file:///", "\u{0}", "\u{feff}", "é", "\u{2212}1", "#### 1", "\\boxed{1}",
            "nan", "inf", "-0", "1e400", "auto", "cpu", "cuda:99", "gsm8k", "math",
        ])
        .prop_map(str::to_string),
        1 => (1usize..3000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Numbers at and past the edges of every integer and float type.
pub fn tricky_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..8).prop_map(Value::from),
        prop::sample::select(vec![
            Value::from(0),
            Value::from(-1),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::from(u32::MAX as u64 + 1),
            Value::from(1e308),
            Value::from(-0.0),
            Value::from(f64::MIN_POSITIVE),
            Value::from(0.5),
        ]),
    ]
}

/// Any JSON value, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        tricky_number(),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a tree: at the node `at` (pre-order), replace its value,
/// remove it, or (objects) add a key.
#[derive(Clone, Debug)]
pub enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Insert(prop::sample::Index, String, Value),
}

pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<prop::sample::Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), tricky_string(), json_value())
            .prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
    ];
    prop::collection::vec(one, 1..5)
}

/// `base` with `mutations` applied.
pub fn mutate(mut base: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let paths = node_paths(&base);
        let (Mutation::Replace(at, _) | Mutation::Remove(at) | Mutation::Insert(at, ..)) = m;
        apply(&mut base, &paths[at.index(paths.len())], m);
    }
    base
}

/// A path to a node: object keys and array positions from the root.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

/// Every node's path in pre-order, the root (the empty path) first.
fn node_paths(root: &Value) -> Vec<Vec<Step>> {
    let mut out = vec![];
    let mut stack = vec![(root, vec![])];
    while let Some((node, path)) = stack.pop() {
        match node {
            Value::Object(map) => {
                for (k, v) in map {
                    let mut p = path.clone();
                    p.push(Step::Key(k.clone()));
                    stack.push((v, p));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(Step::At(i));
                    stack.push((v, p));
                }
            }
            _ => {}
        }
        out.push(path);
    }
    out
}

fn node_mut<'a>(root: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(root, |node, step| match step {
        Step::Key(k) => &mut node[k.as_str()],
        Step::At(i) => &mut node[*i],
    })
}

fn apply(root: &mut Value, path: &[Step], mutation: &Mutation) {
    match mutation {
        Mutation::Replace(_, value) => *node_mut(root, path) = value.clone(),
        Mutation::Remove(_) => {
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            match (node_mut(root, parent), last) {
                (Value::Object(map), Step::Key(k)) => {
                    map.remove(k);
                }
                (Value::Array(items), Step::At(i)) => {
                    items.remove(*i);
                }
                _ => {}
            }
        }
        Mutation::Insert(_, key, value) => {
            if let Value::Object(map) = node_mut(root, path) {
                map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A value as TOML text, when TOML can hold it (it has no `null`).
pub fn to_toml(value: &Value) -> Option<String> {
    toml::to_string(value).ok()
}

/// TOML value literals, valid and not: every type, edges, odd syntax.
pub fn toml_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "nan",
            "inf",
            "-inf",
            "+inf",
            "1e400",
            "-1e400",
            "0.0",
            "-0.0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "0x7fffffffffffffff",
            "0o777",
            "0b1",
            "1_000",
            "true",
            "false",
            "\"\"",
            "''",
            "'''x'''",
            "[]",
            "[[]]",
            "{}",
            "[1, \"a\"]",
            "{ a = 1 }",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "1979-05-27",
            "\"\\u0000\"",
            "\"../x\"",
            "{ type = \"cosine\", warmup_fraction = 2.0 }",
            "{ type = \"constant\" }",
            "{ loglog = nan }",
            "{ perplexity = -1 }",
            "[0.9, 1.0]",
            "[-1.0, 2.0]",
            "= = =",
            "\"unterminated",
            "[1, 2",
            "{ a = ",
            "\u{0}",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        tricky_string().prop_map(|s| format!("{s:?}")),
    ]
}

/// `text` (a TOML file) with the values of some `key = value` lines
/// replaced by `literals`, and some lines removed.
pub fn substitute_lines(text: &str, picks: &[(prop::sample::Index, String, bool)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains('=') && !lines[i].trim_start().starts_with('#'))
        .collect();
    if assignments.is_empty() {
        return text.to_string();
    }
    for (index, literal, remove) in picks {
        let line = assignments[index.index(assignments.len())];
        let key = lines[line].split('=').next().unwrap_or("").to_string();
        lines[line] = if *remove {
            String::new()
        } else {
            format!("{key}= {literal}")
        };
    }
    lines.join("\n")
}

pub fn line_picks() -> impl Strategy<Value = Vec<(prop::sample::Index, String, bool)>> {
    prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            toml_literal(),
            prop::bool::weighted(0.15),
        ),
        1..5,
    )
}

/// The text of a file of the repository (an example spec).
pub fn repo_file(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
