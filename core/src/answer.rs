//! Final answers: extracting them from target traces and from samples, and
//! deciding whether a sample's answer equals the gold one.
//!
//! GSM8K: the gold answer is the text after the last `####` with commas
//! removed. A sample's answer is the text after its `####` when it has one,
//! else (documented fallback) the last number in the sample. Numbers compare
//! by value: `$1,080.00` = `1080`, `-3` = `-3.0`, `3/4` = `0.75` exactly.
//!
//! MATH: the content of the last `\boxed{...}` (or `\fbox{...}`), with nested
//! braces.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// How a dataset marks the final answer inside a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    /// `#### N` at the end (GSM8K and the synthetic task).
    Gsm8k,
    /// The last `\boxed{...}` (MATH).
    Math,
}

/// The gold answer of a target trace, or `None` when the trace has no marker.
pub fn gold_answer(target: &str, style: AnswerStyle) -> Option<String> {
    match style {
        AnswerStyle::Gsm8k => gsm8k_marked(target),
        AnswerStyle::Math => last_boxed(target),
    }
}

/// The answer a sample gives, or `None` when there is none to read.
pub fn sample_answer(sample: &str, style: AnswerStyle) -> Option<String> {
    match style {
        AnswerStyle::Gsm8k => gsm8k_marked(sample).or_else(|| last_number(sample)),
        AnswerStyle::Math => last_boxed(sample),
    }
}

/// Whether a sample's answer equals the gold answer.
pub fn is_correct(sample: &str, gold: &str, style: AnswerStyle) -> bool {
    match sample_answer(sample, style) {
        Some(answer) => answers_equal(&answer, gold, style),
        None => false,
    }
}

/// Equality of two extracted answers.
pub fn answers_equal(a: &str, b: &str, style: AnswerStyle) -> bool {
    match style {
        AnswerStyle::Gsm8k => match (parse_number(a), parse_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => normalize_text(a) == normalize_text(b),
        },
        AnswerStyle::Math => normalize_text(a) == normalize_text(b),
    }
}

/// Text after the last `####`, up to the end of its line, commas removed.
fn gsm8k_marked(text: &str) -> Option<String> {
    let (_, after) = text.rsplit_once("####")?;
    let line = after.lines().next().unwrap_or("").trim();
    let answer = line.replace(',', "");
    (!answer.is_empty()).then_some(answer)
}

/// The last number in the text (digits with optional sign, commas, decimal
/// point or a `/` fraction).
fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 {
        if bytes[end - 1].is_ascii_digit() {
            let mut start = end;
            while start > 0 && matches!(bytes[start - 1], b'0'..=b'9' | b',' | b'.' | b'/') {
                start -= 1;
            }
            if start > 0 && bytes[start - 1] == b'-' {
                start -= 1;
            }
            let candidate = text[start..end].trim_start_matches([',', '.', '/']);
            return Some(candidate.replace(',', ""));
        }
        end -= 1;
    }
    None
}

/// An exact rational: numerator / denominator with denominator > 0.
#[derive(Clone, Copy, Debug)]
pub struct Rational {
    num: i128,
    den: i128,
}

impl PartialEq for Rational {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_value(other) == Some(Ordering::Equal)
    }
}

impl Rational {
    /// `None` when the cross products overflow (absurdly long numbers).
    fn cmp_value(&self, other: &Self) -> Option<Ordering> {
        Some(
            self.num
                .checked_mul(other.den)?
                .cmp(&other.num.checked_mul(self.den)?),
        )
    }
}

/// Parses `-1,080.50`, `$5.00`, `3/4`, `12.` into an exact rational.
pub fn parse_number(text: &str) -> Option<Rational> {
    let t = text.trim().trim_end_matches('.').trim();
    let t = t.strip_prefix('$').unwrap_or(t).replace(',', "");
    let t = t.trim_end_matches('%').trim();
    if let Some((n, d)) = t.split_once('/') {
        let (n, d) = (parse_decimal(n.trim())?, parse_decimal(d.trim())?);
        if d.num == 0 {
            return None;
        }
        let (num, den) = (n.num.checked_mul(d.den)?, n.den.checked_mul(d.num)?);
        return Some(if den < 0 {
            Rational {
                num: -num,
                den: -den,
            }
        } else {
            Rational { num, den }
        });
    }
    parse_decimal(t)
}

fn parse_decimal(t: &str) -> Option<Rational> {
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || frac.len() > 18
        || int.len() > 18
    {
        return None;
    }
    let den = 10i128.pow(frac.len() as u32);
    let int_value: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let num = int_value * den + frac_value;
    Some(Rational {
        num: if negative { -num } else { num },
        den,
    })
}

fn normalize_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

/// The content of the last `\boxed{...}` or `\fbox{...}` (nested braces
/// balanced), or of `\boxed N` without braces.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|m| text.rfind(m).map(|i| (i, m.len())))
        .max()?;
    let rest = &text[start.0 + start.1..];
    if let Some(inner) = rest.strip_prefix(' ') {
        let answer: String = inner
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '$')
            .collect();
        return (!answer.is_empty()).then_some(answer);
    }
    let inner = rest.strip_prefix('{')?;
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(inner[..i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerStyle::{Gsm8k, Math};

    #[test]
    fn gsm8k_gold_is_after_the_last_marker_without_commas() {
        let target = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 1,080";
        assert_eq!(gold_answer(target, Gsm8k).as_deref(), Some("1080"));
        assert_eq!(gold_answer("no marker here 42", Gsm8k), None);
        assert_eq!(gold_answer("#### -7\n", Gsm8k).as_deref(), Some("-7"));
    }

    #[test]
    fn gsm8k_samples_fall_back_to_the_last_number() {
        assert_eq!(
            sample_answer("so 3 + 4 = 7 apples.", Gsm8k).as_deref(),
            Some("7")
        );
        assert_eq!(
            sample_answer("#### 12\nDone.", Gsm8k).as_deref(),
            Some("12")
        );
        assert_eq!(
            sample_answer("she has -3,000 left", Gsm8k).as_deref(),
            Some("-3000")
        );
        assert_eq!(sample_answer("no digits", Gsm8k), None);
        assert_eq!(
            sample_answer("it costs 4.50.", Gsm8k).as_deref(),
            Some("4.50")
        );
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        for (a, b) in [
            ("5.00", "5"),
            ("$1,080", "1080"),
            ("3/4", "0.75"),
            ("-2", "-2.0"),
            ("12.", "12"),
            ("6/3", "2"),
        ] {
            assert!(answers_equal(a, b, Gsm8k), "{a} == {b}");
        }
        let huge = "123456789012345678.123456789012345678/1.000000000000000001";
        for (a, b) in [
            ("5", "6"),
            ("3/4", "0.7"),
            ("-2", "2"),
            ("1/3", "0.333"),
            (huge, "7"),
        ] {
            assert!(!answers_equal(a, b, Gsm8k), "{a} != {b}");
        }
        assert!(is_correct("We know that 10 - 3 = 7.\n#### 7", "7", Gsm8k));
        assert!(!is_correct("#### 8", "7", Gsm8k));
        assert!(!is_correct("", "7", Gsm8k));
    }

    #[test]
    fn boxed_answers_with_nested_braces() {
        assert_eq!(
            last_boxed("so \\boxed{\\frac{1}{2}} and").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            last_boxed("\\boxed{1} then \\fbox{2}").as_deref(),
            Some("2")
        );
        assert_eq!(last_boxed("\\boxed 5$").as_deref(), Some("5"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert!(is_correct("The answer is $\\boxed{ 12 }$.", "12", Math));
    }
}
