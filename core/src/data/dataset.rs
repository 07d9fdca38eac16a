//! Training and test data: GSM8K and MATH JSONL, and generic JSONL or
//! Parquet with a field mapping. Every example gets a stable id (its own, or a
//! hash of its content) and a gold final answer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::data::answer::{AnswerStyle, gold_answer};

/// The meta key of an example's family (GSM8K-format JSONL field
/// `family`): a kind of problem, such as the synthetic task's `1-step`,
/// `2-step`, …; reports give P-M accuracy per family.
pub const FAMILY: &str = "family";

/// Which split of a job's data: the train examples the run trains on (for
/// P-M accuracy) or the test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The name in files, task ids and result rows.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The split named `name` ([`Split::name`]).
    pub fn from_name(name: &str) -> Option<Split> {
        match name {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    pub query: String,
    /// The target solution trace, what training teaches.
    pub target: String,
    /// The gold final answer (from the trace's marker, or a mapped field).
    pub answer: String,
    /// For curation candidates: the training example this one derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Extra fields kept for reports (MATH `level` and `type`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Example {
    /// A content hash for examples without an id: stable across runs,
    /// machines and file order.
    pub fn content_id(query: &str, target: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(query.as_bytes());
        hasher.update([0x1f]);
        hasher.update(target.as_bytes());
        hex::encode(&hasher.finalize()[..8])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// JSONL with `question` and `answer` (ending in `#### N`); optional `id`
    /// and `parent_id`.
    Gsm8k,
    /// JSONL with `problem`, `solution` (answer in the last `\boxed{}`),
    /// `level`, `type`; optional `id` or `unique_id`.
    Math,
    /// JSONL with the columns named in `fields`.
    Jsonl,
    /// Parquet with the columns named in `fields`.
    Parquet,
}

/// Which columns hold what, for `jsonl` and `parquet` datasets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    pub query: String,
    pub target: String,
    #[serde(default)]
    pub id: Option<String>,
    /// A column with the final answer; without it the answer is read from the
    /// target with `answer_style`.
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A local file.
    pub path: String,
    pub format: DatasetFormat,
    #[serde(default)]
    pub fields: Option<FieldMap>,
    /// How final answers are marked (default: gsm8k, or math for `math`).
    #[serde(default)]
    pub answer_style: Option<AnswerStyle>,
    /// Leave out the examples whose gold answer is empty (MATH has two with
    /// an empty `\boxed{}`): no sample can be scored correct on them.
    /// Without it they are kept and listed in a warning at load. Absent
    /// from the serialized spec when false, so ids and hashes of existing
    /// specs do not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_empty_answers: bool,
}

impl DatasetSpec {
    pub fn answer_style(&self) -> AnswerStyle {
        self.answer_style.unwrap_or(match self.format {
            DatasetFormat::Math => AnswerStyle::Math,
            _ => AnswerStyle::Gsm8k,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line (JSONL) or row (Parquet) premem cannot use.
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: the dataset has no examples")]
    Empty { path: PathBuf },
    #[error("{path}:{line}: id '{id}' is already used on line {first}")]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        line: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    pub style: AnswerStyle,
    pub examples: Vec<Example>,
}

/// Column names per format, resolved once.
struct Columns {
    query: String,
    target: String,
    ids: Vec<String>,
    answer: Option<String>,
    parent_id: Option<String>,
    meta: Vec<String>,
}

impl Columns {
    /// Every column name the mapping uses.
    fn named(&self) -> impl Iterator<Item = &String> {
        [&self.query, &self.target]
            .into_iter()
            .chain(&self.ids)
            .chain(&self.answer)
            .chain(&self.parent_id)
            .chain(&self.meta)
    }

    fn for_spec(spec: &DatasetSpec, path: &Path) -> Result<Columns, DatasetError> {
        let fixed = |query: &str, target: &str, ids: &[&str], meta: &[&str]| Columns {
            query: query.into(),
            target: target.into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            answer: None,
            parent_id: Some("parent_id".into()),
            meta: meta.iter().map(|s| s.to_string()).collect(),
        };
        match (spec.format, &spec.fields) {
            (DatasetFormat::Gsm8k, None) => Ok(fixed("question", "answer", &["id"], &[FAMILY])),
            (DatasetFormat::Math, None) => Ok(fixed("problem", "solution", &["id", "unique_id"], &["level", "type"])),
            (DatasetFormat::Jsonl | DatasetFormat::Parquet, Some(f)) => Ok(Columns {
                query: f.query.clone(),
                target: f.target.clone(),
                ids: f.id.iter().cloned().collect(),
                answer: f.answer.clone(),
                parent_id: f.parent_id.clone(),
                meta: vec![],
            }),
            (DatasetFormat::Jsonl | DatasetFormat::Parquet, None) => Err(DatasetError::Invalid {
                path: path.into(),
                message: "format jsonl/parquet needs `fields` (query, target, optional id, answer, parent_id)".into(),
            }),
            (_, Some(_)) => Err(DatasetError::Invalid {
                path: path.into(),
                message: "`fields` applies to formats jsonl and parquet only; gsm8k and math have fixed fields".into(),
            }),
        }
    }
}

/// The longest JSONL line premem reads: a line is one example, and without
/// a bound a file with no newline (`/dev/zero`) would be read into memory
/// whole.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The size of the regular file at `path`. Anything else (a FIFO, whose
/// open blocks until a writer comes; a device; a directory) is refused
/// before it is opened.
pub fn regular_file_size(path: &Path) -> Result<u64, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DatasetError::Invalid {
            path: path.to_path_buf(),
            message:
                "not a regular file (a directory, FIFO or device): datasets are read from files"
                    .into(),
        });
    }
    Ok(meta.len())
}

impl Dataset {
    pub fn load(spec: &DatasetSpec) -> Result<Dataset, DatasetError> {
        let path = PathBuf::from(&spec.path);
        regular_file_size(&path)?;
        let columns = Columns::for_spec(spec, &path)?;
        let style = spec.answer_style();
        let mut unsupported = HashMap::new();
        let rows = match spec.format {
            DatasetFormat::Parquet => crate::data::parquet_guard::guard_parquet(
                || read_parquet(&path, &mut unsupported),
                |message| DatasetError::Invalid {
                    path: path.clone(),
                    message,
                },
            )?,
            _ => read_jsonl(&path)?,
        };
        for column in columns.named() {
            if let Some(data_type) = unsupported.get(column) {
                return Err(DatasetError::Invalid {
                    path,
                    message: format!(
                        "column `{column}` has type {data_type}; premem reads string and numeric columns"
                    ),
                });
            }
        }
        let mut examples = Vec::with_capacity(rows.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (line, row) in rows {
            let malformed = |message: String| DatasetError::Malformed {
                path: path.clone(),
                line,
                message,
            };
            let example = example_from_row(&row, &columns, style).map_err(malformed)?;
            if let Some(first) = seen.insert(example.id.clone(), line) {
                return Err(DatasetError::DuplicateId {
                    path,
                    id: example.id,
                    first,
                    line,
                });
            }
            examples.push(example);
        }
        let examples = empty_answers_out(examples, spec, &path);
        if examples.is_empty() {
            return Err(DatasetError::Empty { path });
        }
        Ok(Dataset {
            path,
            style,
            examples,
        })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Writes examples as GSM8K-style JSONL (`id`, `question`, `answer`,
    /// optional `parent_id` and `family`), the format `premem data synth`
    /// produces.
    pub fn write_gsm8k_jsonl(examples: &[Example], path: &Path) -> Result<(), DatasetError> {
        let io = |source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = std::io::BufWriter::new(File::create(path).map_err(io)?);
        for e in examples {
            let mut row = Map::new();
            row.insert("id".into(), Value::String(e.id.clone()));
            row.insert("question".into(), Value::String(e.query.clone()));
            row.insert("answer".into(), Value::String(e.target.clone()));
            if let Some(parent) = &e.parent_id {
                row.insert("parent_id".into(), Value::String(parent.clone()));
            }
            if let Some(family) = e.meta.get(FAMILY) {
                row.insert(FAMILY.into(), Value::String(family.clone()));
            }
            writeln!(out, "{}", Value::Object(row)).map_err(io)?;
        }
        out.flush().map_err(io)
    }
}

fn example_from_row(
    row: &Map<String, Value>,
    columns: &Columns,
    style: AnswerStyle,
) -> Result<Example, String> {
    let query = required_text(row, &columns.query)?;
    let target = required_text(row, &columns.target)?;
    let id = match columns
        .ids
        .iter()
        .find_map(|c| row.get(c).filter(|v| !v.is_null()).map(|v| (c, v)))
    {
        Some((column, value)) => scalar_text(value)
            .ok_or_else(|| format!("field `{column}` must be a string or number"))?,
        None => Example::content_id(&query, &target),
    };
    let answer = match &columns.answer {
        Some(column) => required_text(row, column)?,
        None => gold_answer(&target, style).ok_or_else(|| match style {
            AnswerStyle::Gsm8k => format!("field `{}` has no '#### <answer>' line", columns.target),
            AnswerStyle::Math => format!("field `{}` has no \\boxed{{...}} answer", columns.target),
        })?,
    };
    let parent_id = match &columns.parent_id {
        Some(column) => match row.get(column) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                scalar_text(v)
                    .ok_or_else(|| format!("field `{column}` must be a string or number"))?,
            ),
        },
        None => None,
    };
    let meta = columns
        .meta
        .iter()
        .filter_map(|c| row.get(c).and_then(scalar_text).map(|v| (c.clone(), v)))
        .collect();
    Ok(Example {
        id,
        query,
        target,
        answer,
        parent_id,
        meta,
    })
}

/// The ids of examples whose gold answer is empty (blank).
pub fn empty_answer_ids(examples: &[Example]) -> Vec<&str> {
    examples
        .iter()
        .filter(|e| e.answer.trim().is_empty())
        .map(|e| e.id.as_str())
        .collect()
}

/// `examples` without those of empty gold answer when the spec drops them;
/// either way a warning lists them (the first ten ids).
fn empty_answers_out(examples: Vec<Example>, spec: &DatasetSpec, path: &Path) -> Vec<Example> {
    let empty = empty_answer_ids(&examples);
    if empty.is_empty() {
        return examples;
    }
    let shown = empty
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let count = empty.len();
    let file = path.display();
    if spec.drop_empty_answers {
        tracing::warn!(
            count,
            ids = shown,
            "{file}: examples with an empty gold answer dropped"
        );
        return examples
            .into_iter()
            .filter(|e| !e.answer.trim().is_empty())
            .collect();
    }
    tracing::warn!(
        count,
        ids = shown,
        "{file}: examples with an empty gold answer can never be scored correct \
         (drop_empty_answers = true in the dataset's spec leaves them out)"
    );
    examples
}

fn required_text(row: &Map<String, Value>, column: &str) -> Result<String, String> {
    match row.get(column) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "field `{column}` must be a string, found {}",
            kind_of(other)
        )),
        None => Err(format!("missing field `{column}`")),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A record and its 1-based line (JSONL) or row (Parquet) number.
type Row = (usize, Map<String, Value>);

/// Every non-blank line.
fn read_jsonl(path: &Path) -> Result<Vec<Row>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let mut rows = vec![];
    let mut line_no = 0;
    while let Some(line) = next_line(&mut reader, path, line_no + 1)? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(map)) => rows.push((line_no, map)),
            Ok(other) => {
                return Err(DatasetError::Malformed {
                    path: path.into(),
                    line: line_no,
                    message: format!("expected a JSON object, found {}", kind_of(&other)),
                });
            }
            Err(e) => {
                return Err(DatasetError::Malformed {
                    path: path.into(),
                    line: line_no,
                    message: format!("not valid JSON: {e}"),
                });
            }
        }
    }
    Ok(rows)
}

/// Line `line_no` of `reader` without its newline (`None` at the end), at
/// most [`MAX_LINE_BYTES`] long and UTF-8.
fn next_line(
    reader: &mut impl BufRead,
    path: &Path,
    line_no: usize,
) -> Result<Option<String>, DatasetError> {
    use std::io::Read;
    let mut bytes = vec![];
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = reader
        .take(limit)
        .read_until(b'\n', &mut bytes)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if read == 0 {
        return Ok(None);
    }
    let malformed = |message: String| DatasetError::Malformed {
        path: path.to_path_buf(),
        line: line_no,
        message,
    };
    if bytes.len() > MAX_LINE_BYTES {
        return Err(malformed(format!(
            "longer than {} MiB",
            MAX_LINE_BYTES >> 20
        )));
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| malformed("not valid UTF-8".into()))
}

/// Every row, as a JSON object of its string and numeric columns. A column
/// of another type (lists, structs, binary...) is left out; `unsupported`
/// records its type so a mapping that names it gets a clear error.
fn read_parquet(
    path: &Path,
    unsupported: &mut HashMap<String, String>,
) -> Result<Vec<Row>, DatasetError> {
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let invalid = |message: String| DatasetError::Invalid {
        path: path.into(),
        message,
    };
    let file = File::open(path).map_err(|source| DatasetError::Io {
        path: path.into(),
        source,
    })?;
    let size = file
        .metadata()
        .map(|m| m.len())
        .map_err(|source| DatasetError::Io {
            path: path.into(),
            source,
        })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    crate::data::parquet_guard::check_chunks(builder.metadata(), size)
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    let reader = builder
        .build()
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    let mut rows = vec![];
    for batch in reader {
        let batch = batch.map_err(|e| invalid(format!("cannot read a row group: {e}")))?;
        let first = rows.len();
        rows.extend((0..batch.num_rows()).map(|i| (first + i + 1, Map::new())));
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            for i in 0..batch.num_rows() {
                if column.is_null(i) {
                    continue;
                }
                match parquet_cell(column.as_ref(), i) {
                    Some(value) => {
                        rows[first + i].1.insert(field.name().clone(), value);
                    }
                    None => {
                        unsupported.insert(field.name().clone(), column.data_type().to_string());
                        break;
                    }
                }
            }
        }
    }
    Ok(rows)
}

/// The value at row `i` of a string, dictionary-of-string or numeric column;
/// `None` for other types.
fn parquet_cell(column: &dyn arrow_array::Array, i: usize) -> Option<Value> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType;

    macro_rules! number {
        ($t:ty) => {
            Value::from(column.as_primitive::<$t>().value(i))
        };
    }
    Some(match column.data_type() {
        DataType::Utf8 => Value::String(column.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(column.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(column.as_string_view().value(i).to_string()),
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_any_dictionary_opt()?;
            let key = dictionary.normalized_keys()[i];
            return parquet_cell(dictionary.values().as_ref(), key);
        }
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float32 => number!(Float32Type),
        DataType::Float64 => number!(Float64Type),
        _ => return None,
    })
}
