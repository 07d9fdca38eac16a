//! `premem eval` on a checkpoint a real (tiny) training run published.

mod common;

use common::{job_spec, run, synth_task, text};

#[test]
fn eval_reads_the_newest_checkpoint_of_a_run_and_writes_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_task(tmp.path());
    let output = tmp.path().join("run");
    let spec = job_spec(tmp.path(), &output, "epochs = 2", "");
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let results = tmp.path().join("r.parquet");
    let train = data.join("train.jsonl");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "eval",
            "--checkpoint",
            output.to_str().unwrap(),
            "--data",
            train.to_str().unwrap(),
            "--limit",
            "6",
            "--max-new-tokens",
            "16",
            "--out",
            results.to_str().unwrap(),
            "--cache-dir",
            tmp.path().join("cache").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run_args = |extra: &[&str]| {
        let a = args(extra);
        run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run_args(&["--samples", "3", "--preamble", "First"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 64 examples / batch 8 = 8 steps per epoch, 2 epochs: the newest checkpoint is step 16.
    assert!(
        stdout.contains("6 train examples") && stdout.contains("at step 16, K=3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("with preamble \"First\"") && stdout.contains("wrote 12 rows"),
        "{stdout}"
    );
    let rows = premem_evaluator::results::read_parquet(&results).unwrap();
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter()
            .all(|r| r.checkpoint_step == 16 && r.samples == 3 && r.target_perplexity > 1.0)
    );

    let out = run_args(&["--samples", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--samples must be 1 to 1024, got 0"));
    // Issue 18, finding 12: a libtorch allocation panic before.
    let out = run_args(&["--samples", "100000000"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--samples must be 1 to 1024, got 100000000")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = run_args(&["--samples", "3", "--ids", "train-00001,nope"]);
    assert!(
        text(&out.stderr).contains("train.jsonl: no example with id 'nope'"),
        "{}",
        text(&out.stderr)
    );
    let mut missing = args(&[]);
    missing[2] = tmp.path().join("nowhere").display().to_string();
    let out = run(&missing.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text(&out.stderr).contains("nowhere': no such directory"),
        "{}",
        text(&out.stderr)
    );

    // `premem bench evaluate` does the same work with either sampler (two
    // prompts in flight, so the continuous one refills its slots), and
    // writes it out for the transformers run.
    let work = tmp.path().join("work.json");
    let bench = |sampler: &str| {
        let mut a = vec!["bench".to_string()];
        a.extend(args(&[
            "--samples",
            "3",
            "--batch-size",
            "2",
            "--warmup",
            "0",
        ]));
        a[1] = "evaluate".into();
        a.extend(["--sampler", sampler, "--work-out", work.to_str().unwrap()].map(String::from));
        let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        assert_eq!(
            (line["sampler"].as_str(), line["examples"].as_u64()),
            (Some(sampler), Some(6))
        );
        assert!(line["examples_per_s"].as_f64().unwrap() > 0.0, "{line}");
        premem_evaluator::results::read_parquet(&results).unwrap()
    };
    let (continuous, static_batch) = (bench("continuous"), bench("static"));
    let key = |rows: &[premem_evaluator::ExampleResult]| -> Vec<(String, u32, Vec<String>)> {
        rows.iter()
            .map(|r| (r.id.clone(), r.n_correct, r.sample_texts.clone()))
            .collect()
    };
    assert_eq!(key(&continuous), key(&static_batch));
    // The continuous sampler scores the targets in its prefills, the static
    // one in batched forwards: the same NLL up to floating-point noise.
    for (c, s) in continuous.iter().zip(&static_batch) {
        let tolerance = 1e-4 * s.target_nll.abs().max(1.0);
        assert!(
            (c.target_nll - s.target_nll).abs() < tolerance,
            "{}: {} vs {}",
            c.id,
            c.target_nll,
            s.target_nll
        );
    }
    let work: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&work).unwrap()).unwrap();
    let prompts = work["examples"].as_array().unwrap();
    assert_eq!((prompts.len(), work["samples"].as_u64()), (6, Some(3)));
    assert!(
        prompts[0]["prompt"]
            .as_str()
            .unwrap()
            .ends_with("\nAnswer:"),
        "{work}"
    );
}

/// Issue 18, finding 13: a checkpoint trained with a custom template is
/// evaluated with it (the run's own, read from its run.json), and the
/// template flags set another one.
#[test]
fn eval_uses_the_runs_prompt_template_and_the_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_task(tmp.path());
    let output = tmp.path().join("templated");
    let spec = job_spec(tmp.path(), &output, "", "");
    let custom = "[prompt]\nprompt = \"Q: {query}\\nA:\"\ncompletion = \" {target}\\nDone.\"\n";
    let text_of = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, format!("{text_of}\n{custom}")).unwrap();
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let checkpoint = output.join("checkpoints/step-00000008");
    let eval = |extra: &[&str]| {
        let results = tmp.path().join("t.parquet");
        let mut args = vec![
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--data",
        ];
        let train = data.join("train.jsonl");
        let train = train.to_str().unwrap().to_string();
        args.push(&train);
        args.extend(["--limit", "3", "--samples", "1", "--max-new-tokens", "4"]);
        let results_arg = results.to_str().unwrap().to_string();
        args.extend(["--out", &results_arg]);
        let cache = tmp.path().join("cache").to_str().unwrap().to_string();
        args.extend(["--cache-dir", &cache]);
        args.extend(extra);
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let rows = premem_evaluator::results::read_parquet(&results).unwrap();
        (
            stderr,
            rows.iter().map(|r| r.target_perplexity).collect::<Vec<_>>(),
        )
    };
    let (stderr, runs) = eval(&[]);
    assert!(stderr.contains("prompt template: the run's"), "{stderr}");
    let (_, explicit) = eval(&["--prompt-template", "Q: {query}\nA:"]);
    assert_eq!(
        runs, explicit,
        "the run's template is the flags' same template"
    );
    let (_, default) = eval(&["--prompt-template", "{query}\nAnswer:"]);
    assert_ne!(
        runs, default,
        "another prompt scores the targets differently"
    );
    let bad = run(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        data.join("train.jsonl").to_str().unwrap(),
        "--prompt-template",
        "no placeholder",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("--prompt-template"),
        "{}",
        text(&bad.stderr)
    );
}
