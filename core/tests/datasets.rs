//! Dataset readers on real-looking files, and their errors.

use std::path::Path;
use std::sync::Arc;

use premem_core::data::dataset::{DatasetError, DatasetFormat, FieldMap};
use premem_core::{AnswerStyle, Dataset, DatasetSpec};

fn spec(path: &Path, format: DatasetFormat) -> DatasetSpec {
    DatasetSpec {
        path: path.to_str().unwrap().into(),
        format,
        fields: None,
        answer_style: None,
        drop_empty_answers: false,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GSM8K: &str = r#####"{"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"}
{"question": "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?", "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts of fabric\n#### 1,080"}

{"id": "given-7", "question": "q", "answer": "#### -5", "parent_id": 12}
"#####;

#[test]
fn gsm8k_lines_become_examples_with_stable_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "train.jsonl", GSM8K);
    let data = Dataset::load(&spec(&path, DatasetFormat::Gsm8k)).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.examples[0].answer, "72");
    assert_eq!(data.examples[1].answer, "1080");
    assert_eq!(data.examples[2].id, "given-7");
    assert_eq!(data.examples[2].answer, "-5");
    assert_eq!(data.examples[2].parent_id.as_deref(), Some("12"));
    // Content ids are stable: same content, same id, whatever the file.
    let again = Dataset::load(&spec(
        &write(tmp.path(), "copy.jsonl", GSM8K),
        DatasetFormat::Gsm8k,
    ))
    .unwrap();
    assert_eq!(data.examples[0].id, again.examples[0].id);
    assert_eq!(data.examples[0].id.len(), 16);
    assert_ne!(data.examples[0].id, data.examples[1].id);
}

#[test]
fn malformed_lines_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"question\": \"q\", \"answer\": \"#### 1\"}\n{\"question\": \"q2\", \"answer\": \n",
            2,
            "not valid JSON",
        ),
        (
            "{\"question\": \"q\", \"answer\": \"#### 1\"}\n\n[1, 2]\n",
            3,
            "expected a JSON object, found an array",
        ),
        ("{\"question\": \"q\"}\n", 1, "missing field `answer`"),
        (
            "{\"question\": 5, \"answer\": \"#### 1\"}\n",
            1,
            "field `question` must be a string, found a number",
        ),
        (
            "{\"question\": \"q\", \"answer\": \"no marker 5\"}\n",
            1,
            "has no '#### <answer>' line",
        ),
    ];
    for (text, line, what) in cases {
        let path = write(tmp.path(), "bad.jsonl", text);
        let err = Dataset::load(&spec(&path, DatasetFormat::Gsm8k)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:{line}: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
    }
}

#[test]
fn empty_duplicate_and_missing_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = write(tmp.path(), "empty.jsonl", "\n\n");
    assert!(matches!(
        Dataset::load(&spec(&empty, DatasetFormat::Gsm8k)),
        Err(DatasetError::Empty { .. })
    ));
    let dup = write(
        tmp.path(),
        "dup.jsonl",
        "{\"id\": 1, \"question\": \"a\", \"answer\": \"#### 1\"}\n{\"id\": 1, \"question\": \"b\", \"answer\": \"#### 2\"}\n",
    );
    let msg = Dataset::load(&spec(&dup, DatasetFormat::Gsm8k))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("dup.jsonl:2: id '1' is already used on line 1"),
        "{msg}"
    );
    let msg = Dataset::load(&spec(&tmp.path().join("none.jsonl"), DatasetFormat::Gsm8k))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("none.jsonl") && msg.contains("No such file"),
        "{msg}"
    );
}

#[test]
fn math_reads_the_last_boxed_answer_and_keeps_level_and_type() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "math.jsonl",
        r#"{"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "level": "Level 2", "type": "Algebra", "solution": "We get $\\boxed{\\frac{3}{4}}$."}
"#,
    );
    let data = Dataset::load(&spec(&path, DatasetFormat::Math)).unwrap();
    assert_eq!(data.style, AnswerStyle::Math);
    assert_eq!(data.examples[0].answer, "\\frac{3}{4}");
    assert_eq!(data.examples[0].meta["level"], "Level 2");
    assert_eq!(data.examples[0].meta["type"], "Algebra");
}

#[test]
fn generic_jsonl_maps_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "g.jsonl",
        "{\"uid\": \"a\", \"prompt\": \"p\", \"response\": \"r\", \"final\": \"9\"}\n",
    );
    let mut s = spec(&path, DatasetFormat::Jsonl);
    let msg = Dataset::load(&s).unwrap_err().to_string();
    assert!(msg.contains("needs `fields`"), "{msg}");
    s.fields = Some(FieldMap {
        query: "prompt".into(),
        target: "response".into(),
        id: Some("uid".into()),
        answer: Some("final".into()),
        parent_id: None,
    });
    let data = Dataset::load(&s).unwrap();
    assert_eq!(
        (
            data.examples[0].id.as_str(),
            data.examples[0].answer.as_str()
        ),
        ("a", "9")
    );
}

#[test]
fn parquet_maps_fields_and_names_bad_rows() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("d.parquet");
    let batch = RecordBatch::try_from_iter(vec![
        ("n", Arc::new(Int64Array::from(vec![10, 11])) as ArrayRef),
        (
            "q",
            Arc::new(StringArray::from(vec!["one", "two"])) as ArrayRef,
        ),
        (
            "t",
            Arc::new(StringArray::from(vec![Some("x\n#### 1"), None])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let mut s = spec(&path, DatasetFormat::Parquet);
    s.fields = Some(FieldMap {
        query: "q".into(),
        target: "t".into(),
        id: Some("n".into()),
        answer: None,
        parent_id: None,
    });
    let msg = Dataset::load(&s).unwrap_err().to_string();
    assert!(msg.contains("d.parquet:2: missing field `t`"), "{msg}");

    // Dictionary-encoded strings (pandas categoricals) read as strings; a
    // mapped column of another type is named.
    use arrow_array::{DictionaryArray, ListArray, types::Int32Type};
    let dict_path = tmp.path().join("dict.parquet");
    let questions: DictionaryArray<Int32Type> =
        vec!["same question", "same question"].into_iter().collect();
    let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
        Some(vec![Some(2)]),
    ]);
    let batch = RecordBatch::try_from_iter(vec![
        ("q", Arc::new(questions) as ArrayRef),
        (
            "t",
            Arc::new(StringArray::from(vec!["a\n#### 1", "b\n#### 2"])) as ArrayRef,
        ),
        ("l", Arc::new(lists) as ArrayRef),
    ])
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&dict_path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let mut d = s.clone();
    d.path = dict_path.to_str().unwrap().into();
    d.fields.as_mut().unwrap().id = None;
    let data = Dataset::load(&d).unwrap();
    assert_eq!(data.examples[1].query, "same question");
    assert_eq!(data.examples[1].answer, "2");
    d.fields.as_mut().unwrap().target = "l".into();
    let msg = Dataset::load(&d).unwrap_err().to_string();
    assert!(
        msg.contains("dict.parquet: column `l` has type List"),
        "{msg}"
    );

    let garbage = write(tmp.path(), "garbage.parquet", "not parquet");
    let mut g = s.clone();
    g.path = garbage.to_str().unwrap().into();
    let msg = Dataset::load(&g).unwrap_err().to_string();
    assert!(
        msg.contains("garbage.parquet: not a readable Parquet file"),
        "{msg}"
    );
}

/// Issue 18, finding 13: MATH examples with an empty `\boxed{}` are listed
/// (before: loaded without a word, never scorable) and can be dropped.
#[test]
fn empty_gold_answers_are_listed_and_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"problem": "1+1?", "solution": "It is $\\boxed{2}$."}"#,
        r#"{"problem": "Nothing?", "solution": "So $\\boxed{}$."}"#,
        r#"{"problem": "Blank?", "solution": "So $\\boxed{ }$."}"#,
    ];
    let path = write(dir.path(), "math.jsonl", &rows.join("\n"));
    let kept = Dataset::load(&spec(&path, DatasetFormat::Math)).unwrap();
    assert_eq!(kept.len(), 3);
    let empty = premem_core::data::dataset::empty_answer_ids(&kept.examples);
    assert_eq!(empty.len(), 2);
    assert!(!empty.contains(&kept.examples[0].id.as_str()));
    let dropped = Dataset::load(&DatasetSpec {
        drop_empty_answers: true,
        ..spec(&path, DatasetFormat::Math)
    })
    .unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped.examples[0].answer, "2");
    // Serialized specs stay as they were unless the option is set.
    let text = serde_json::to_string(&spec(&path, DatasetFormat::Math)).unwrap();
    assert!(!text.contains("drop_empty_answers"), "{text}");
}

/// Issue 18, finding 3: a line past the bound is an error naming the file
/// and line, not a read of the whole file into one string; a FIFO or a
/// device is refused before it is opened.
#[test]
fn endless_lines_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(premem_core::data::dataset::MAX_LINE_BYTES + 1);
    let path = write(
        dir.path(),
        "long.jsonl",
        &format!("{{\"question\": \"q\", \"answer\": \"#### 1\"}}\n{long}"),
    );
    let err = Dataset::load(&spec(&path, DatasetFormat::Gsm8k))
        .unwrap_err()
        .to_string();
    assert!(err.contains("long.jsonl:2: longer than 64 MiB"), "{err}");
    let err = Dataset::load(&spec(Path::new("/dev/zero"), DatasetFormat::Gsm8k))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/dev/zero: not a regular file"), "{err}");
}
