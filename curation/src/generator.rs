//! New examples from a generator command.
//!
//! The protocol (see `examples/rephrase.py` for a generator):
//!
//! - premem runs `command` (no shell) in its own process group, and writes to
//!   its stdin one JSON object, then closes stdin:
//!   `{"iteration": i, "seed": s, "attempt": k, "count": n, "parents": [{"id", "question", "answer"}, ...]}`
//!   with exactly `n` parents: parent `j` is `parents[j % len]` of the
//!   parents premem chose (so a parent may appear more than once), `answer`
//!   being the parent's full solution trace. `attempt` counts from 1.
//! - The command writes to stdout JSON Lines, one object per new example:
//!   `question`, `answer` (a trace with a final-answer marker: `#### N`, or
//!   `\boxed{}` with `answer_style = "math"`), `parent_id` (one of the ids
//!   sent), and optionally `id` (else the content hash). No other keys;
//!   blank lines are skipped. Exactly `n` examples.
//! - It exits 0 within `timeout_s` seconds. Diagnostics go to stderr.
//!
//! A try that breaks any rule is recorded and retried, up to `attempts`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::spec::GeneratorSpec;
use super::{CurationError, excerpt};
use premem_core::data::answer::{AnswerStyle, gold_answer};
use premem_core::data::dataset::Example;

/// New examples and the tries that failed before (one reason each, like
/// "attempt 1 of 3: exited with exit status: 1; stderr: ...").
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub examples: Vec<Example>,
    pub failures: Vec<String>,
}

/// Runs the generator for `n` new examples derived from `parents` (round
/// robin: parent `j` is `parents[j % parents.len()]`; pass them through
/// [`super::generator_parents`] for a seeded order). Retries a failed try
/// up to `gen.attempts` times; after the last, an error with every reason.
/// `n = 0` runs nothing.
pub fn generate(
    gen_spec: &GeneratorSpec,
    parents: &[Example],
    n: usize,
    seed: u64,
    iteration: u32,
) -> Result<Generated, CurationError> {
    let command = gen_spec.display();
    if n == 0 {
        return Ok(Generated {
            examples: vec![],
            failures: vec![],
        });
    }
    if parents.is_empty() || gen_spec.command.is_empty() {
        return Err(CurationError::Generator {
            command,
            failures: vec![if parents.is_empty() {
                format!("no parents to derive the {n} new examples from")
            } else {
                "no command".to_string()
            }],
        });
    }
    let sent: Vec<&Example> = (0..n).map(|j| &parents[j % parents.len()]).collect();
    let parent_ids: BTreeSet<&str> = sent.iter().map(|p| p.id.as_str()).collect();
    let all_parent_ids: BTreeSet<&str> = parents.iter().map(|p| p.id.as_str()).collect();
    let parents_json: Vec<Value> = sent
        .iter()
        .map(|p| json!({"id": p.id, "question": p.query, "answer": p.target}))
        .collect();
    let attempts = gen_spec.attempts.max(1);
    let mut failures = vec![];
    for attempt in 1..=attempts {
        let request = json!({
            "iteration": iteration,
            "seed": seed,
            "attempt": attempt,
            "count": n,
            "parents": parents_json,
        });
        let mut bytes = serde_json::to_vec(&request).expect("a JSON value serializes");
        bytes.push(b'\n');
        match run_once(gen_spec, bytes).and_then(|stdout| {
            parse_output(
                &stdout,
                n,
                &parent_ids,
                &all_parent_ids,
                gen_spec.answer_style(),
            )
        }) {
            Ok(examples) => return Ok(Generated { examples, failures }),
            Err(reason) => failures.push(format!("attempt {attempt} of {attempts}: {reason}")),
        }
    }
    Err(CurationError::Generator { command, failures })
}

/// Runs the command once: its stdout, or why the try failed.
fn run_once(gen_spec: &GeneratorSpec, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut child = spawn(gen_spec)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        // A command that exits without reading all of its input is judged by
        // its exit status and output, not by the broken pipe.
        let _ = stdin.write_all(&request);
    });
    let outputs = read_outputs(&mut child);
    let deadline = Instant::now() + Duration::from_secs(gen_spec.timeout_s);
    let status = wait_until(&mut child, deadline)?;
    // The pipes close once every process holding them is gone; a background
    // process the command left behind may keep them open.
    let grace = Instant::now() + Duration::from_secs(if status.is_some() { 10 } else { 2 });
    let (stdout, stderr, closed) = collect_outputs(&outputs, grace);
    let _ = writer.join();
    let Some(status) = status else {
        return Err(format!(
            "timed out after {} s and was killed{}",
            gen_spec.timeout_s,
            stderr_tail(&stderr)
        ));
    };
    if !status.success() {
        return Err(format!("exited with {status}{}", stderr_tail(&stderr)));
    }
    if !closed {
        kill_group(&mut child);
        return Err(
            "exited, but its output stayed open for 10 s (a background process holds it?)".into(),
        );
    }
    Ok(stdout)
}

/// Starts the command with piped stdio, in its own process group (Unix) so
/// that a timeout kills it and its children.
fn spawn(gen_spec: &GeneratorSpec) -> Result<Child, String> {
    let mut cmd = Command::new(&gen_spec.command[0]);
    cmd.args(&gen_spec.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn().map_err(|e| format!("cannot start: {e}"))
}

/// One thread per output stream, each sending `(is_stdout, bytes)` once its
/// stream closes.
fn read_outputs(child: &mut Child) -> mpsc::Receiver<(bool, Vec<u8>)> {
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_stdout, stream) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        let mut stream = stream.expect("piped output");
        std::thread::spawn(move || {
            let mut buf = vec![];
            let _ = stream.read_to_end(&mut buf);
            let _ = tx.send((is_stdout, buf));
        });
    }
    rx
}

/// The exit status, or `None` when the command ran past `deadline` (its
/// process group is then killed).
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child);
                return Ok(None);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_group(child);
                return Err(format!("cannot wait for the command: {e}"));
            }
        }
    }
}

/// Stdout and stderr as far as they came before `grace`, and whether both
/// closed.
fn collect_outputs(
    outputs: &mpsc::Receiver<(bool, Vec<u8>)>,
    grace: Instant,
) -> (Vec<u8>, Vec<u8>, bool) {
    let (mut stdout, mut stderr, mut closed) = (vec![], vec![], 0);
    while closed < 2 {
        let left = grace.saturating_duration_since(Instant::now());
        match outputs.recv_timeout(left) {
            Ok((true, buf)) => (stdout, closed) = (buf, closed + 1),
            Ok((false, buf)) => (stderr, closed) = (buf, closed + 1),
            Err(_) => break,
        }
    }
    (stdout, stderr, closed == 2)
}

/// Kills the command's process group (Unix), then the command itself.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// "; stderr: <last lines>" or "" when stderr is empty.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(10)..].join("\n    ");
    format!("; stderr (last lines):\n    {}", excerpt(&tail, 2000))
}

/// The generated examples, checked against the protocol: `parent_ids` are
/// the parents sent, `taken_ids` every parent given (no new id may equal one).
fn parse_output(
    stdout: &[u8],
    n: usize,
    parent_ids: &BTreeSet<&str>,
    taken_ids: &BTreeSet<&str>,
    style: AnswerStyle,
) -> Result<Vec<Example>, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    let mut examples: Vec<Example> = vec![];
    let mut ids = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |message: String| format!("stdout line {}: {message}: {}", i + 1, excerpt(line, 200));
        let example = parse_line(line, parent_ids, style).map_err(bad)?;
        let id = &example.id;
        if taken_ids.contains(id.as_str()) {
            return Err(bad(format!("id '{id}' is a parent's id")));
        }
        if !ids.insert(id.clone()) {
            return Err(bad(format!("id '{id}' appears twice")));
        }
        examples.push(example);
    }
    if examples.len() != n {
        return Err(format!("wrote {} examples, expected {n}", examples.len()));
    }
    Ok(examples)
}

/// One line of the generator's output as an example, or what is wrong with it.
fn parse_line(
    line: &str,
    parent_ids: &BTreeSet<&str>,
    style: AnswerStyle,
) -> Result<Example, String> {
    let row: Map<String, Value> = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("expected a JSON object".into()),
        Err(e) => return Err(format!("not valid JSON ({e})")),
    };
    if let Some(key) = row
        .keys()
        .find(|k| !matches!(k.as_str(), "question" | "answer" | "parent_id" | "id"))
    {
        return Err(format!(
            "unknown key `{key}` (expected question, answer, parent_id, optional id)"
        ));
    }
    let text_field = |key: &str| match row.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing `{key}`")),
    };
    let id_field = |key: &str| match row.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("`{key}` must be a non-empty string or a number")),
    };
    let query = text_field("question")?;
    let target = text_field("answer")?;
    let parent = id_field("parent_id")?.ok_or_else(|| "missing `parent_id`".to_string())?;
    if !parent_ids.contains(parent.as_str()) {
        return Err(format!(
            "parent_id '{parent}' is not one of the parents sent"
        ));
    }
    let answer = gold_answer(&target, style).ok_or_else(|| match style {
        AnswerStyle::Gsm8k => "`answer` has no '#### <answer>' line".to_string(),
        AnswerStyle::Math => "`answer` has no \\boxed{...} answer".to_string(),
    })?;
    let id = id_field("id")?.unwrap_or_else(|| Example::content_id(&query, &target));
    Ok(Example {
        id,
        query,
        target,
        answer,
        parent_id: Some(parent),
        meta: Default::default(),
    })
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parent(id: &str) -> Example {
        Example {
            id: id.into(),
            query: format!("question of {id}"),
            target: "1+1=2\n#### 2".into(),
            answer: "2".into(),
            parent_id: None,
            meta: Default::default(),
        }
    }

    /// A generator running `sh <dir>/gen.sh` with this script.
    fn script(dir: &Path, body: &str, attempts: u32) -> GeneratorSpec {
        let path = dir.join("gen.sh");
        std::fs::write(&path, body).unwrap();
        GeneratorSpec {
            command: vec!["sh".into(), path.to_str().unwrap().into()],
            attempts,
            timeout_s: 20,
            answer_style: None,
        }
    }

    const GOOD: &str = r#"
cat > "$(dirname "$0")/request.json"
printf '%s\n' '{"question": "new 1", "answer": "3+1=4\n#### 4", "parent_id": "a"}'
echo
printf '%s\n' '{"question": "new 2", "answer": "so\n#### 1,080", "parent_id": "c", "id": "mine"}'
printf '%s\n' '{"question": "new 3", "answer": "x\n#### -3", "parent_id": 7}'
"#;

    #[test]
    fn success_sends_the_round_robin_parents_and_reads_the_examples() {
        let dir = tempfile::tempdir().unwrap();
        let g = script(dir.path(), GOOD, 1);
        let parents = [parent("a"), parent("c"), parent("7")];
        let out = generate(&g, &parents[..2], 3, 11, 2);
        // parent "7" was not sent (only a, c): the third line is refused.
        let e = out.unwrap_err().to_string();
        assert!(
            e.contains("stdout line 4: parent_id '7' is not one of the parents sent"),
            "{e}"
        );

        let out = generate(&g, &parents, 3, 11, 2).unwrap();
        assert!(out.failures.is_empty());
        let request: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("request.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(request["iteration"], 2);
        assert_eq!(request["seed"], 11);
        assert_eq!(request["count"], 3);
        assert_eq!(request["attempt"], 1);
        assert_eq!(
            request["parents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["a", "c", "7"]
        );
        assert_eq!(request["parents"][0]["question"], "question of a");
        assert_eq!(request["parents"][0]["answer"], "1+1=2\n#### 2");

        let e = &out.examples;
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].id, Example::content_id("new 1", "3+1=4\n#### 4"));
        assert_eq!(e[0].answer, "4");
        assert_eq!(e[0].parent_id.as_deref(), Some("a"));
        assert_eq!((e[1].id.as_str(), e[1].answer.as_str()), ("mine", "1080"));
        assert_eq!(
            (e[2].parent_id.as_deref(), e[2].answer.as_str()),
            (Some("7"), "-3")
        );

        // Round robin with more examples than parents: a, c, a, c, a.
        let many = script(
            dir.path(),
            "cat > \"$(dirname \"$0\")/request.json\"\nexit 9\n",
            1,
        );
        assert!(generate(&many, &parents[..2], 5, 0, 1).is_err());
        let request: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("request.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = request["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "c", "a", "c", "a"]);
    }

    #[test]
    fn malformed_output_is_retried_then_every_attempt_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let g = script(dir.path(), "cat >/dev/null\necho 'not json at all'\n", 2);
        let err = generate(&g, &[parent("a")], 1, 0, 1).unwrap_err();
        let CurationError::Generator { command, failures } = &err else {
            panic!("{err}")
        };
        assert_eq!(command, &g.display());
        assert_eq!(failures.len(), 2);
        assert!(
            failures[0].starts_with("attempt 1 of 2: stdout line 1: not valid JSON"),
            "{failures:?}"
        );
        assert!(
            failures[1].starts_with("attempt 2 of 2: ")
                && failures[1].ends_with(": not json at all")
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "generator `sh {}`: all 2 attempts failed:",
                dir.path().join("gen.sh").display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_failure_then_a_success_records_one_failure() {
        let dir = tempfile::tempdir().unwrap();
        let body = r#"
cat >/dev/null
d="$(dirname "$0")"
if [ ! -f "$d/ran" ]; then
  touch "$d/ran"
  echo "warming up" >&2
  echo "flaky backend" >&2
  exit 3
fi
printf '%s\n' '{"question": "q", "answer": "x\n#### 5", "parent_id": "a"}'
"#;
        let g = script(dir.path(), body, 3);
        let out = generate(&g, &[parent("a")], 1, 0, 1).unwrap();
        assert_eq!(out.examples.len(), 1);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(
            out.failures[0],
            "attempt 1 of 3: exited with exit status: 3; stderr (last lines):\n    warming up\n    flaky backend"
        );
    }

    #[test]
    fn bad_exit_parent_count_answer_and_timeouts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let fails = |body: &str, n: usize| {
            let g = script(dir.path(), body, 1);
            match generate(&g, &[parent("a"), parent("b")], n, 0, 1).unwrap_err() {
                CurationError::Generator { failures, .. } => failures[0].clone(),
                other => panic!("{other}"),
            }
        };
        let e = fails(
            "cat >/dev/null\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i >&2; done\nexit 2\n",
            1,
        );
        assert!(e.contains("exited with exit status: 2"), "{e}");
        assert!(
            e.contains("line 3\n") && e.ends_with("line 12") && !e.contains("line 2\n"),
            "{e}"
        );

        let e = fails(
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"#### 1\", \"parent_id\": \"zzz\"}'\n",
            1,
        );
        assert!(
            e.contains("stdout line 1: parent_id 'zzz' is not one of the parents sent"),
            "{e}"
        );

        let e = fails(
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"#### 1\", \"parent_id\": \"a\"}'\n",
            2,
        );
        assert!(e.ends_with("wrote 1 examples, expected 2"), "{e}");

        let e = fails(
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"no marker\", \"parent_id\": \"a\"}'\n",
            1,
        );
        assert!(e.contains("`answer` has no '#### <answer>' line"), "{e}");

        let e = fails(
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"#### 1\", \"parent_id\": \"a\", \"level\": 3}'\n",
            1,
        );
        assert!(e.contains("unknown key `level`"), "{e}");

        let e = fails(
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"#### 1\", \"parent_id\": \"a\", \"id\": \"b\"}'\n",
            1,
        );
        assert!(e.contains("id 'b' is a parent's id"), "{e}");

        let e = fails("cat >/dev/null\nprintf '%s\n' '[1]'\n", 1);
        assert!(
            e.contains("stdout line 1: expected a JSON object: [1]"),
            "{e}"
        );

        // A timeout kills the whole process group (the sleep too): this
        // returns in about a second, not thirty.
        let mut g = script(dir.path(), "sleep 30\n", 1);
        g.timeout_s = 1;
        let start = Instant::now();
        let e = generate(&g, &[parent("a")], 1, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out after 1 s and was killed"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        let g = GeneratorSpec {
            command: vec!["/nonexistent/premem-generator".into()],
            attempts: 1,
            timeout_s: 5,
            answer_style: None,
        };
        let e = generate(&g, &[parent("a")], 1, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot start"), "{e}");

        assert!(
            generate(&g, &[], 1, 0, 1)
                .unwrap_err()
                .to_string()
                .contains("no parents")
        );
        assert_eq!(generate(&g, &[], 0, 0, 1).unwrap().examples, vec![]);
    }

    #[test]
    fn math_style_generators_need_a_boxed_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = script(
            dir.path(),
            "cat >/dev/null\nprintf '%s\n' '{\"question\": \"q\", \"answer\": \"so $\\\\boxed{\\\\frac{1}{2}}$\", \"parent_id\": \"a\"}'\n",
            1,
        );
        g.answer_style = Some(AnswerStyle::Math);
        let out = generate(&g, &[parent("a")], 1, 0, 1).unwrap();
        assert_eq!(out.examples[0].answer, "\\frac{1}{2}");
    }

    #[test]
    fn rephrase_py_round_trips() {
        if Command::new("python3").arg("--version").output().is_err() {
            println!("note: python3 is missing; examples/rephrase.py is not tested");
            return;
        }
        let data = premem_core::data::synth::generate(&premem_core::data::synth::SynthConfig {
            train: 4,
            test: 0,
            pool_per_example: 0,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        let g = GeneratorSpec {
            command: vec![
                "python3".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rephrase.py").into(),
            ],
            attempts: 1,
            timeout_s: 60,
            answer_style: None,
        };
        let out = generate(&g, &data.train, 7, 5, 2).unwrap();
        assert!(out.failures.is_empty());
        assert_eq!(out.examples.len(), 7);
        for (j, e) in out.examples.iter().enumerate() {
            let p = &data.train[j % 4];
            assert_eq!(e.parent_id.as_deref(), Some(p.id.as_str()));
            assert_ne!(e.query, p.query);
            // Same shape: as many groups as the parent.
            assert_eq!(
                e.query.matches(" each").count(),
                p.query.matches(" each").count()
            );
            assert_eq!(e.answer, synth_answer(&e.query).to_string(), "{}", e.query);
            assert!(e.target.ends_with(&format!("#### {}", e.answer)));
        }
        let again = generate(&g, &data.train, 7, 5, 2).unwrap();
        assert_eq!(again, out);
        let other = generate(&g, &data.train, 7, 6, 2).unwrap();
        assert_ne!(other.examples, out.examples);
    }

    /// The answer of a synthetic-task question, from its text:
    /// "<g> <containers> with <n> <items> each" groups, then "buys K more"
    /// or "gives away K".
    fn synth_answer(query: &str) -> i64 {
        let words: Vec<&str> = query.split_whitespace().collect();
        let num = |w: &str| {
            w.trim_matches(|c: char| !c.is_ascii_digit())
                .parse::<i64>()
                .unwrap()
        };
        let mut total = 0;
        for (i, w) in words.iter().enumerate() {
            match *w {
                "with" => total += num(words[i - 2]) * num(words[i + 1]),
                "buys" => total += num(words[i + 1]),
                "away" => total -= num(words[i + 1]),
                _ => {}
            }
        }
        total
    }
}
