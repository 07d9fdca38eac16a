//! TensorBoard event files, written here rather than with a crate: the
//! crates.io writers are stale or do not fit. `tensorboard-rs` (0.5.9, March
//! 2022, with `tensorboard-proto` 0.5.7 of the same month) is built on
//! `protobuf` 2 and `image` 0.23 and writes only into a directory it owns;
//! `syntaxdot-summary` (last releases 0.5.0 betas) is a file writer of the
//! syntaxdot project with no reader. The format is small: a TFRecord file
//! (per record: the data's length as u64 LE, the masked CRC-32C of those 8
//! bytes, the data, the masked CRC-32C of the data) whose records are `Event`
//! protobufs (tensorflow/core/util/event.proto and summary.proto), here as
//! hand-written `prost` messages holding only the fields scalars need.
//!
//! A file is made whole in memory ([`event_file`]) so that it can be put
//! on an object store in one write; [`read_scalars`] reads one back and
//! checks every checksum.

use prost::Message;

use crate::TrackingError;

/// One scalar point: `value` of `tag` at `step`, logged at `wall_time`
/// (seconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    /// Stored as a 32-bit float (`simple_value`), as TensorBoard keeps it.
    pub value: f64,
    pub wall_time: f64,
}

/// What the first event of a file says: the event format's version.
const FILE_VERSION: &str = "brain.Event:2";

/// The bytes of one complete event file: the file_version event, then one
/// event per scalar, in order.
pub fn event_file(scalars: &[Scalar], created: f64) -> Vec<u8> {
    let mut file = Vec::new();
    let version = Event {
        wall_time: created,
        step: 0,
        what: Some(What::FileVersion(FILE_VERSION.to_string())),
    };
    push_record(&mut file, &version.encode_to_vec());
    for scalar in scalars {
        push_record(&mut file, &scalar_event(scalar).encode_to_vec());
    }
    file
}

/// A name TensorBoard reads:
/// `events.out.tfevents.{created as integer seconds, 10 digits}.premem.{suffix}`.
pub fn file_name(created: f64, suffix: &str) -> String {
    // `as` saturates: a time before the epoch (or NaN) names second 0.
    let seconds = created.max(0.0) as u64;
    format!("events.out.tfevents.{seconds:010}.premem.{suffix}")
}

/// The scalars of an event file, in file order, after checking both
/// checksums of every record. Events that are not scalar summaries (the
/// file_version event, images, tensors) are passed over.
pub fn read_scalars(bytes: &[u8]) -> Result<Vec<Scalar>, TrackingError> {
    let mut scalars = Vec::new();
    let mut offset = 0;
    let mut record = 0;
    while offset < bytes.len() {
        let fail = |problem: String| TrackingError::EventFile {
            record,
            offset,
            problem,
        };
        let (data, next) = record_at(bytes, offset).map_err(&fail)?;
        let event = Event::decode(data).map_err(|e| fail(format!("not an Event protobuf: {e}")))?;
        scalars.extend(event_scalars(event));
        offset = next;
        record += 1;
    }
    Ok(scalars)
}

/// The event of one scalar.
fn scalar_event(scalar: &Scalar) -> Event {
    let value = Value {
        tag: scalar.tag.clone(),
        simple_value: Some(scalar.value as f32),
    };
    Event {
        wall_time: scalar.wall_time,
        step: scalar.step,
        what: Some(What::Summary(Summary { value: vec![value] })),
    }
}

/// The scalars a decoded event carries.
fn event_scalars(event: Event) -> Vec<Scalar> {
    let Some(What::Summary(summary)) = event.what else {
        return vec![];
    };
    summary
        .value
        .into_iter()
        .filter_map(|value| {
            Some(Scalar {
                step: event.step,
                wall_time: event.wall_time,
                value: f64::from(value.simple_value?),
                tag: value.tag,
            })
        })
        .collect()
}

/// Bytes of a record's frame around its data: the length and its checksum.
const HEADER: usize = 12;
/// Bytes after the data: the data's checksum.
const FOOTER: usize = 4;

/// Appends one TFRecord framing `data`.
fn push_record(file: &mut Vec<u8>, data: &[u8]) {
    let length = (data.len() as u64).to_le_bytes();
    file.extend_from_slice(&length);
    file.extend_from_slice(&masked_crc(&length).to_le_bytes());
    file.extend_from_slice(data);
    file.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// The data of the record at `offset` and the offset of the next one, or
/// what is wrong with the record.
fn record_at(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), String> {
    let rest = &bytes[offset..];
    if rest.len() < HEADER {
        return Err(format!(
            "truncated header: {} bytes left, a record needs {HEADER}",
            rest.len()
        ));
    }
    let (length, rest) = rest.split_at(8);
    check_crc("length", length, &rest[..4])?;
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let rest = &rest[4..];
    let needed = usize::try_from(length)
        .ok()
        .and_then(|n| n.checked_add(FOOTER))
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| {
            format!(
                "truncated: the length says {length} data bytes, {} bytes are left",
                rest.len()
            )
        })?;
    let (data, crc) = rest[..needed].split_at(needed - FOOTER);
    check_crc("data", data, crc)?;
    Ok((data, offset + HEADER + needed))
}

/// Whether `stored` is the masked checksum of `bytes`.
fn check_crc(what: &str, bytes: &[u8], stored: &[u8]) -> Result<(), String> {
    let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
    let computed = masked_crc(bytes);
    if stored == computed {
        return Ok(());
    }
    Err(format!(
        "{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    ))
}

/// TFRecord's masked CRC-32C: a CRC of data that holds CRCs is itself
/// weak, so the stored value is rotated and offset.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    // ((crc >> 15) | (crc << 17)) in TensorFlow's crc32c.h.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// tensorflow.Event, the fields scalars use.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

/// tensorflow.Event's `what`, the two kinds written here.
#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// tensorflow.Summary.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

/// tensorflow.Summary.Value. `simple_value` is a member of the `value`
/// oneof, so it is written even when 0.0 (as a plain proto3 float it would
/// be left out, and TensorBoard would see a value of no kind).
#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalars() -> Vec<Scalar> {
        (0..5)
            .map(|i| Scalar {
                tag: if i % 2 == 0 {
                    "train/loss"
                } else {
                    "eval/pm_accuracy"
                }
                .to_string(),
                step: i * 10,
                value: 0.25 * i as f64,
                wall_time: 1_700_000_000.5 + i as f64,
            })
            .collect()
    }

    #[test]
    fn a_written_file_reads_back() {
        let written = scalars();
        let read = read_scalars(&event_file(&written, 1_700_000_000.0)).unwrap();
        assert_eq!(
            read, written,
            "values that f32 holds exactly come back equal"
        );
    }

    #[test]
    fn values_are_rounded_to_f32() {
        let mut written = scalars();
        written[1].value = 0.1;
        let read = read_scalars(&event_file(&written, 0.0)).unwrap();
        assert_eq!(read[1].value, f64::from(0.1f32));
    }

    #[test]
    fn the_first_record_is_the_file_version() {
        let file = event_file(&[], 1_700_000_000.0);
        let (data, next) = record_at(&file, 0).unwrap();
        assert_eq!(next, file.len());
        let event = Event::decode(data).unwrap();
        assert_eq!(event.what, Some(What::FileVersion(FILE_VERSION.into())));
        assert_eq!(event.wall_time, 1_700_000_000.0);
    }

    #[test]
    fn a_corrupted_byte_names_its_record() {
        let file = event_file(&scalars(), 0.0);
        let (_, second) = record_at(&file, 0).unwrap();
        let (_, third) = record_at(&file, second).unwrap();
        for (at, problem) in [
            (third + 3, "length checksum"),
            (third + HEADER + 2, "data checksum"),
        ] {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            let message = read_scalars(&bad).unwrap_err().to_string();
            assert!(
                message.starts_with("event file record 2 (byte "),
                "{message}"
            );
            assert!(message.contains(problem), "{message}");
        }
    }

    #[test]
    fn a_record_that_is_no_event_is_an_error() {
        let mut file = event_file(&scalars(), 0.0);
        push_record(&mut file, &[0xff, 0xff]);
        let message = read_scalars(&file).unwrap_err().to_string();
        assert!(message.starts_with("event file record 6 "), "{message}");
        assert!(message.contains("not an Event protobuf"), "{message}");
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        let file = event_file(&scalars(), 0.0);
        for cut in [file.len() - 1, file.len() - 30, 5] {
            let message = read_scalars(&file[..cut]).unwrap_err().to_string();
            assert!(message.contains("truncated"), "{message}");
        }
    }

    #[test]
    fn names_have_ten_digit_seconds() {
        assert_eq!(
            file_name(1_700_000_000.9, "ckpt-3.eval"),
            "events.out.tfevents.1700000000.premem.ckpt-3.eval"
        );
        assert_eq!(
            file_name(42.0, "x"),
            "events.out.tfevents.0000000042.premem.x"
        );
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // crc32c("123456789") = 0xe3069283, the CRC-32C check value;
        // rotated right by 15 bits plus 0xa282ead8.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }
}
