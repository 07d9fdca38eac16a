//! Final answers: extracting them from target traces and from samples, and
//! deciding whether a sample's answer equals the gold one.
//!
//! GSM8K: the gold answer is the text after the last `####` with commas
//! removed. A sample's answer is the text after its `####` when it has one,
//! else (documented fallback) the last number in the sample. Numbers compare
//! by value: `$1,080.00` = `1080`, `-3` = `-3.0`, `3/4` = `0.75` exactly.
//!
//! MATH: the gold answer and a sample's answer are the content of the last
//! `\boxed{...}` (or `\fbox{...}`, `\boxed {...}`, `\boxed N`), nested braces
//! balanced. A sample without one has no answer (`None`, scored wrong): no
//! guessing from the prose. Two answers are compared in two stages.
//!
//! 1. Both are normalised (the Hendrycks MATH `strip_string` steps, made
//!    aware of LaTeX command boundaries), in this order:
//!    - whitespace of any kind becomes a space; `\\frac` (doubly escaped)
//!      becomes `\frac`; thin spaces `\!` `\,` `\;` `\:` go, `\ ` is a space;
//!    - `\left`, `\right` (and `\left.`), `\big`-style sizes, `\displaystyle`,
//!      `^{\circ}`, `^\circ`, `°`, `\$`, `$`, `\%`, `%` go; `\dfrac`,
//!      `\tfrac`, `\cfrac` become `\frac`; `{,}` becomes `,`; `\leq`/`\geq`
//!      become `\le`/`\ge`; `\lbrace`/`\rbrace` become `\{`/`\}`; `∞` and
//!      `+\infty` become `\infty`; a Unicode minus becomes `-`;
//!    - units: a trailing `\text{...}`, `\textrm{...}` or `\mbox{...}` (with
//!      an optional `^2`/`^3` after it) goes when something precedes it and
//!      either its text starts with a space (`5\text{ cm}`, as Hendrycks) or
//!      what precedes ends in a digit (`5\mbox{cm}`);
//!    - remaining `\text{X}`, `\textrm`, `\textbf`, `\mbox`, `\mathrm` wrappers
//!      are unwrapped to `X` (`\text{(A)}` = `(A)`, `\text{Monday}` = `Monday`);
//!    - `x = 5` becomes `5` when the left side is a name of at most 2 chars;
//!    - a whole answer like `1,000` or `-12,345.5` loses its commas;
//!    - `.5` gets its zero (`0.5`) at the start and after ` {([,=+-`;
//!    - the single-token arguments of `\frac`, `\sqrt`, `^` and `_` get braces:
//!      `\frac12` = `\frac{1}{2}`, `\frac1b`, `\sqrt3`, `\sqrt\pi`, `x^2`;
//!    - all spaces go, trailing `.` go, braces around the whole answer go;
//!    - a whole `a/b` with a simple numerator and an integer, letter or
//!      command denominator becomes `\frac{a}{b}` (`-` kept in front).
//! 2. The normalised strings are compared: equal strings are equal; two
//!    simple numbers (integers, decimals, `a/b`, `\frac{a}{b}`, each with an
//!    optional sign) compare by exact rational value (`\frac{1}{2}` = `0.5`,
//!    `\frac{-3}{4}` = `-0.75`, `10` = `10.0`); two bracketed groups (tuples,
//!    intervals, vectors `\langle..\rangle`) compare item by item, brackets
//!    required to match, so `[0,1)` != `(0,1)` and `(1,2)` != `(2,1)`; sets
//!    `\{..\}` and unions `A\cup B` compare items in any order; bare comma
//!    lists compare item by item in order. Items use these same rules.
//!    An empty answer equals nothing, not even another empty one.
//!
//! Not attempted (false negatives, never false positives): algebra
//! (`\sqrt{8}` vs `2\sqrt{2}`, `\frac{1}{\sqrt2}` vs `\frac{\sqrt2}{2}`),
//! numbers inside expressions (`\sqrt{0.5}` vs `\sqrt{\frac12}`), mixed
//! numbers, units written without `\text`, reordering of bare comma lists,
//! scientific notation.

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
///
/// A MATH sample without a `\boxed{}` has no answer: guessing one from the
/// prose would reward samples that never committed to an answer.
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
        AnswerStyle::Math => math_equal(&normalize_math(a), &normalize_math(b), 0),
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

/// An exact rational: numerator / denominator with denominator > 0, always
/// in lowest terms, so equal values have equal fields and `==` can never
/// overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rational {
    num: i128,
    den: i128,
}

impl Rational {
    /// `num / den` in lowest terms; `None` for a zero denominator or when
    /// moving the sign overflows.
    fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let (num, den) = if den < 0 {
            (num.checked_neg()?, den.checked_neg()?)
        } else {
            (num, den)
        };
        // `den > 0`, so the gcd is at most `den` and fits an i128.
        let g = gcd(num.unsigned_abs(), den.unsigned_abs()) as i128;
        Some(Rational {
            num: num / g,
            den: den / g,
        })
    }

    /// `self / other`; `None` when dividing by zero or on overflow.
    fn checked_div(self, other: Rational) -> Option<Rational> {
        Rational::new(
            self.num.checked_mul(other.den)?,
            self.den.checked_mul(other.num)?,
        )
    }

    fn checked_neg(self) -> Option<Rational> {
        Rational::new(self.num.checked_neg()?, self.den)
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Parses `-1,080.50`, `$5.00`, `3/4`, `12.` into an exact rational.
pub fn parse_number(text: &str) -> Option<Rational> {
    let t = text.trim().trim_end_matches('.').trim();
    let t = t.strip_prefix('$').unwrap_or(t).replace(',', "");
    let t = t.trim_end_matches('%').trim();
    if let Some((n, d)) = t.split_once('/') {
        return parse_decimal(n.trim())?.checked_div(parse_decimal(d.trim())?);
    }
    parse_decimal(t)
}

/// A plain decimal with an optional sign: `-12`, `+0.5`, `.5`, `3.`. No
/// commas, no exponent; at most 18 digits either side of the point.
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
    // Below 10^36: cannot overflow.
    let num = int_value * den + frac_value;
    Rational::new(if negative { -num } else { num }, den)
}

fn normalize_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

/// The content of the last `\boxed{...}` or `\fbox{...}` (nested braces
/// balanced, escaped `\{` `\}` skipped), or of `\boxed N` without braces.
/// `None` when the last box is never closed (a truncated sample).
pub fn last_boxed(text: &str) -> Option<String> {
    let start = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|m| text.rfind(m).map(|i| (i, m.len())))
        .max()?;
    let rest = &text[start.0 + start.1..];
    let trimmed = rest.trim_start_matches(' ');
    if trimmed.starts_with('{') {
        let close = matching_close(trimmed, 0)?;
        return Some(trimmed[1..close].to_string());
    }
    // `\boxed 5$`: the token after the space, up to a space or `$`.
    if trimmed.len() < rest.len() {
        let answer: String = trimmed
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '$')
            .collect();
        return (!answer.is_empty()).then_some(answer);
    }
    None
}

// ---------------------------------------------------------------------------
// MATH normalisation (stage 1 in the module doc).
// ---------------------------------------------------------------------------

/// Wrappers whose argument is plain text: unwrapped to their content.
const TEXT_COMMANDS: [&str; 5] = ["\\text", "\\textrm", "\\textbf", "\\mbox", "\\mathrm"];

/// The wrappers that may carry units after a number. Not `\mathrm`: in
/// `2\mathrm{i}` it is the imaginary unit, not a unit to drop.
const UNIT_COMMANDS: [&str; 3] = ["\\text", "\\textrm", "\\mbox"];

/// Commands (or scripts) whose single-token arguments get braces, with how
/// many arguments each takes.
const BRACED_COMMANDS: [(&str, usize); 4] = [("\\frac", 2), ("\\sqrt", 1), ("^", 1), ("_", 1)];

/// Stage 1: the canonical string of a MATH answer.
fn normalize_math(text: &str) -> String {
    let s = strip_markup(text);
    let s = strip_units(&s);
    let s = unwrap_text(&s);
    let s = strip_short_lhs(&s);
    let s = drop_thousands_separators(&s);
    let s = add_leading_zeros(&s);
    let s = brace_arguments(&s);
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = strip_outer_braces(s.trim_end_matches('.'));
    slash_to_frac(s)
}

/// Presentation-only LaTeX that never changes the value.
fn strip_markup(text: &str) -> String {
    // One kind of space, so later steps need only look for ' '.
    let mut s: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    s = strip_spacing_escapes(&s);
    for (from, to) in [
        ("^{\\circ}", ""),
        ("°", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\%", ""),
        ("%", ""),
        ("{,}", ","),
        ("\u{2212}", "-"),
        ("∞", "\\infty"),
    ] {
        s = s.replace(from, to);
    }
    for (from, to) in [
        ("\\left.", ""),
        ("\\right.", ""),
        ("\\left", ""),
        ("\\right", ""),
        ("\\bigl", ""),
        ("\\bigr", ""),
        ("\\Bigl", ""),
        ("\\Bigr", ""),
        ("\\big", ""),
        ("\\Big", ""),
        ("\\displaystyle", ""),
        ("^\\circ", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cfrac", "\\frac"),
        ("\\leq", "\\le"),
        ("\\geq", "\\ge"),
        ("\\lbrace", "\\{"),
        ("\\rbrace", "\\}"),
        ("\\varnothing", "\\emptyset"),
        ("+\\infty", "\\infty"),
    ] {
        s = replace_command(&s, from, to);
    }
    trim_answer(&s).to_string()
}

/// One pass over backslash escapes, so an escaped backslash is never read
/// as the start of another escape (`1 \\ 2` keeps its row break):
/// - thin spaces `\!` `\,` `\;` `\:` go (`1\,000` = `1000`);
/// - `\ ` is a space;
/// - `\\frac` becomes `\frac` (an answer escaped once too often), while a
///   `\\` before anything but a letter is a LaTeX line break and stays.
fn strip_spacing_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('!' | ',' | ';' | ':') => {
                chars.next();
            }
            // Dropping the backslash leaves the space itself.
            Some(' ') => {}
            Some('\\') => {
                chars.next();
                let command_next = chars.peek().is_some_and(|n| n.is_ascii_alphabetic());
                out.push_str(if command_next { "\\" } else { "\\\\" });
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// Replaces the control sequence `from` by `to`, but not inside a longer
/// command name: `\left(` loses `\left`, `\leftarrow` keeps it.
fn replace_command(s: &str, from: &str, to: &str) -> String {
    let ends_in_letter = from.ends_with(|c: char| c.is_ascii_alphabetic());
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        out.push_str(if ends_in_letter && starts_with_letter(after) {
            from
        } else {
            to
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn starts_with_letter(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Spaces around the answer and a full stop after it are not part of it.
fn trim_answer(s: &str) -> &str {
    s.trim_end_matches(['.', ' ']).trim_start()
}

/// Drops trailing units: `5\text{ cm}`, `5\mbox{cm}`, `12\text{ m}^2`.
/// Repeats for `5\text{ feet}\text{ tall}`.
fn strip_units(s: &str) -> String {
    let mut current = trim_answer(s).to_string();
    while let Some(shorter) = strip_one_unit(&current) {
        current = shorter;
    }
    current
}

/// The answer without its last trailing units group, or `None` when it has
/// none to drop.
fn strip_one_unit(s: &str) -> Option<String> {
    // `\text{ cm}^2`: the exponent belongs to the unit.
    let body = ["^2", "^3", "^{2}", "^{3}"]
        .iter()
        .find_map(|e| s.strip_suffix(e))
        .unwrap_or(s);
    for command in UNIT_COMMANDS {
        for (at, _) in body.match_indices(command) {
            let open = at + command.len();
            if !body[open..].starts_with('{') || matching_close(body, open) != Some(body.len() - 1)
            {
                continue;
            }
            let prefix = body[..at].trim_end();
            let spaced = body[open + 1..].starts_with(' ');
            let after_digit = prefix.ends_with(|c: char| c.is_ascii_digit());
            if !prefix.is_empty() && (spaced || after_digit) {
                return Some(prefix.to_string());
            }
        }
    }
    None
}

/// `\text{X}` -> `X` for every text wrapper; content wrapped or not is the
/// same answer.
fn unwrap_text(s: &str) -> String {
    let mut current = s.to_string();
    // Each pass removes one wrapper, so this ends.
    while let Some(next) = unwrap_one_text(&current) {
        current = next;
    }
    current
}

fn unwrap_one_text(s: &str) -> Option<String> {
    for command in TEXT_COMMANDS {
        for (at, _) in s.match_indices(command) {
            let open = at + command.len();
            // `\text` inside `\textbf` is not a match.
            if !s[open..].starts_with('{') {
                continue;
            }
            if let Some(close) = matching_close(s, open) {
                return Some(format!(
                    "{}{}{}",
                    &s[..at],
                    &s[open + 1..close],
                    &s[close + 1..]
                ));
            }
        }
    }
    None
}

/// `x = 5` -> `5` when the left side is a short name (at most 2 chars, as
/// Hendrycks): the question asked for `x`, and `x=5` answers it.
fn strip_short_lhs(s: &str) -> String {
    if let Some((lhs, rhs)) = s.split_once('=') {
        let lhs = lhs.trim();
        let is_name = lhs
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '\'');
        let rhs = rhs.trim();
        if is_name && lhs.chars().count() <= 2 && !rhs.is_empty() && !rhs.contains('=') {
            return rhs.to_string();
        }
    }
    s.to_string()
}

/// `1,000` -> `1000`, only when the whole answer is one grouped number, so
/// lists like `1,2` keep their commas.
fn drop_thousands_separators(s: &str) -> String {
    let t = s.trim();
    if is_grouped_number(t) {
        t.replace(',', "")
    } else {
        s.to_string()
    }
}

/// `-12,345.67`: 1 to 3 digits, then at least one `,ddd` group.
fn is_grouped_number(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
    let all_digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    let mut groups = int.split(',');
    let first = groups.next().unwrap_or("");
    int.contains(',')
        && first.len() <= 3
        && all_digits(first)
        && groups.all(|g| g.len() == 3 && all_digits(g))
        && all_digits(frac)
}

/// `.5` -> `0.5` where the point starts a number (Hendrycks: ` .5`, `{.5`
/// and a leading `.5`; also after `(`, `[`, `,`, `=` and signs).
fn add_leading_zeros(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let digit_next = chars.peek().is_some_and(|n| n.is_ascii_digit());
        if c == '.' && digit_next && prev.is_none_or(|p| " {([,=+-".contains(p)) {
            out.push('0');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Braces the single-token arguments of `\frac`, `\sqrt`, `^` and `_`, as
/// LaTeX reads them: `\frac12` = `\frac{1}{2}`, `\sqrt 2` = `\sqrt{2}`,
/// `\sqrt\pi` = `\sqrt{\pi}`, `x^2` = `x^{2}`. Spaces before an argument
/// are skipped here, so this runs before spaces are removed (which would
/// glue `\pi r` into one command name).
fn brace_arguments(s: &str) -> String {
    let mut inserts: Vec<(usize, char)> = Vec::new();
    for (command, count) in BRACED_COMMANDS {
        for (at, _) in s.match_indices(command) {
            let mut pos = at + command.len();
            if command == "\\sqrt" {
                pos = skip_root_index(s, pos);
            }
            for _ in 0..count {
                pos = skip_spaces(s, pos);
                let Some((end, braced)) = argument_end(s, pos) else {
                    break;
                };
                if !braced {
                    inserts.push((pos, '{'));
                    inserts.push((end, '}'));
                }
                pos = end;
            }
        }
    }
    // At one position a closing brace ends an earlier argument, so it goes
    // before an opening one.
    inserts.sort_by_key(|&(pos, c)| (pos, c == '{'));
    let mut out = String::with_capacity(s.len() + inserts.len());
    let mut last = 0;
    for (pos, c) in inserts {
        out.push_str(&s[last..pos]);
        out.push(c);
        last = pos;
    }
    out.push_str(&s[last..]);
    out
}

/// Past the `[3]` of `\sqrt[3]{x}`, when there is one.
fn skip_root_index(s: &str, pos: usize) -> usize {
    let bytes = s.as_bytes();
    if bytes.get(pos) != Some(&b'[') {
        return pos;
    }
    match bytes[pos..].iter().position(|&b| b == b']') {
        Some(offset) => pos + offset + 1,
        None => pos,
    }
}

fn skip_spaces(s: &str, pos: usize) -> usize {
    pos + s.as_bytes()[pos..]
        .iter()
        .take_while(|&&b| b == b' ')
        .count()
}

/// Where the argument starting at `pos` ends, and whether it is already a
/// braced group. One token otherwise: a command name (`\pi`), an escaped
/// character (`\{`), or one character. `None` when there is no argument.
fn argument_end(s: &str, pos: usize) -> Option<(usize, bool)> {
    let rest = s.get(pos..)?;
    match rest.chars().next()? {
        '{' => matching_close(s, pos).map(|close| (close + 1, true)),
        '}' => None,
        '\\' => {
            let after = &rest[1..];
            let name = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let len = if name > 0 {
                name
            } else {
                after.chars().next()?.len_utf8()
            };
            Some((pos + 1 + len, false))
        }
        c => Some((pos + c.len_utf8(), false)),
    }
}

/// The index of the `}` closing the `{` at `open`, skipping escaped
/// characters (`\{`, `\}`, `\\`).
fn matching_close(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `{5}` -> `5`: a group around the whole answer changes nothing.
fn strip_outer_braces(mut s: &str) -> &str {
    while s.starts_with('{') && matching_close(s, 0) == Some(s.len() - 1) {
        s = &s[1..s.len() - 1];
    }
    s
}

/// A whole `a/b` -> `\frac{a}{b}` (Hendrycks does integers; also
/// `\pi/2`, `2\sqrt{3}/3`). Only when the reading is unambiguous: the
/// numerator has no sums, and the denominator is one integer, letter or
/// command (`1/2x` stays as it is).
fn slash_to_frac(s: &str) -> String {
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    if let Some((num, den)) = body.split_once('/')
        && is_simple_numerator(num)
        && is_simple_denominator(den)
    {
        return format!("{sign}\\frac{{{num}}}{{{den}}}");
    }
    s.to_string()
}

fn is_simple_numerator(num: &str) -> bool {
    !num.is_empty()
        && !num.contains(['+', '-', '/', '=', ',', '(', ')', '[', ']', '<', '>'])
        && braces_balanced(num)
}

fn is_simple_denominator(den: &str) -> bool {
    let digits = !den.is_empty() && den.bytes().all(|b| b.is_ascii_digit());
    let letter = den.len() == 1 && starts_with_letter(den);
    let command = den
        .strip_prefix('\\')
        .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphabetic()));
    digits || letter || command
}

fn braces_balanced(s: &str) -> bool {
    let mut depth = 0usize;
    for b in s.bytes() {
        match b {
            b'{' => depth += 1,
            b'}' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

// ---------------------------------------------------------------------------
// MATH comparison (stage 2 in the module doc), on normalised strings.
// ---------------------------------------------------------------------------

/// Deeper nesting than this (tuples of sets of ...) is compared as text
/// only, so odd inputs cannot recurse without bound.
const MAX_DEPTH: usize = 16;

fn math_equal(a: &str, b: &str, depth: usize) -> bool {
    // An empty answer is no answer: it matches nothing.
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    if depth > MAX_DEPTH {
        return false;
    }
    if let (Some(x), Some(y)) = (math_number(a), math_number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (split_group(a), split_group(b)) {
        // A set's order is not part of it; a tuple's or interval's is.
        let unordered = x.open == "\\{";
        return x.open == y.open
            && x.close == y.close
            && items_equal(&x.items, &y.items, unordered, depth);
    }
    // Unions of intervals in any order; bare lists in their order.
    for (separator, unordered) in [("\\cup", true), (",", false)] {
        if let (Some(x), Some(y)) = (split_top_level(a, separator), split_top_level(b, separator))
            && (x.len() > 1 || y.len() > 1)
        {
            return items_equal(&x, &y, unordered, depth);
        }
    }
    false
}

/// Same length and each item equal to its partner: in order, or (sets,
/// unions) to some distinct item of the other side.
fn items_equal(a: &[&str], b: &[&str], unordered: bool, depth: usize) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if !unordered {
        return a.iter().zip(b).all(|(x, y)| math_equal(x, y, depth + 1));
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let partner = (0..b.len()).find(|&j| !used[j] && math_equal(x, b[j], depth + 1));
        partner.map(|j| used[j] = true).is_some()
    })
}

/// A simple number in normalised form: an optional sign, then a decimal,
/// `a/b` or `\frac{a}{b}` of (signed) decimals.
fn math_number(s: &str) -> Option<Rational> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(args) = body.strip_prefix("\\frac") {
        let (num, rest) = braced_group(args)?;
        let (den, rest) = braced_group(rest)?;
        if !rest.is_empty() {
            return None;
        }
        parse_decimal(num)?.checked_div(parse_decimal(den)?)?
    } else if let Some((num, den)) = body.split_once('/') {
        parse_decimal(num)?.checked_div(parse_decimal(den)?)?
    } else {
        parse_decimal(body)?
    };
    if negative {
        value.checked_neg()
    } else {
        Some(value)
    }
}

/// `{a}rest` -> (`a`, `rest`).
fn braced_group(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('{') {
        return None;
    }
    let close = matching_close(s, 0)?;
    Some((&s[1..close], &s[close + 1..]))
}

/// A bracketed tuple, interval, set or vector: its brackets and items.
struct Group<'a> {
    open: &'static str,
    close: &'static str,
    items: Vec<&'a str>,
}

/// `(1,2]` -> `(`, [`1`, `2`], `]`, when the brackets enclose the whole
/// string (not `(1,2)\cup(3,4)`). Parentheses and square brackets mix
/// (half-open intervals); `\{..\}` and `\langle..\rangle` pair only with
/// themselves.
fn split_group(s: &str) -> Option<Group<'_>> {
    const OPENS: [(&str, &[&str]); 4] = [
        ("\\{", &["\\}"]),
        ("\\langle", &["\\rangle"]),
        ("(", &[")", "]"]),
        ("[", &[")", "]"]),
    ];
    let (open, closes, inner) = OPENS
        .iter()
        .find_map(|&(open, closes)| s.strip_prefix(open).map(|r| (open, closes, r)))?;
    let (close, inner) = closes
        .iter()
        .find_map(|&close| inner.strip_suffix(close).map(|r| (close, r)))?;
    let items = split_top_level(inner, ",")?;
    Some(Group { open, close, items })
}

/// Splits at each `separator` outside any brackets; `None` when brackets do
/// not balance (counting `(`, `[`, `{`, `\langle` as openers alike, so
/// half-open intervals nest).
fn split_top_level<'a>(s: &'a str, separator: &str) -> Option<Vec<&'a str>> {
    let bytes = s.as_bytes();
    let mut items = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0, 0);
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"\\langle") {
            depth += 1;
            i += "\\langle".len();
            continue;
        }
        if rest.starts_with(b"\\rangle") {
            depth = depth.checked_sub(1)?;
            i += "\\rangle".len();
            continue;
        }
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            _ if depth == 0 && rest.starts_with(separator.as_bytes()) => {
                // The separator is ASCII, so both cuts are char boundaries.
                items.push(&s[start..i]);
                i += separator.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (depth == 0).then(|| {
        items.push(&s[start..]);
        items
    })
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

    #[test]
    fn math_normal_forms() {
        for (raw, canonical) in [
            ("\\dfrac12", "\\frac{1}{2}"),
            ("2 \\sqrt 2", "2\\sqrt{2}"),
            ("\\sqrt \\pi r", "\\sqrt{\\pi}r"),
            ("\\sqrt[3]8", "\\sqrt[3]{8}"),
            ("x^2+y_1", "x^{2}+y_{1}"),
            ("\\left( .5, 1 \\right]", "(0.5,1]"),
            ("5\\text{ cm}^2", "5"),
            ("\\text{(A)}", "(A)"),
            ("x = 1,000", "1000"),
            ("3/4", "\\frac{3}{4}"),
            ("-\\pi/2", "-\\frac{\\pi}{2}"),
            ("1/2x", "1/2x"),
            ("{{7}}.", "7"),
            ("1 \\\\ 2", "1\\\\2"),
            ("\\\\frac{1}{2}", "\\frac{1}{2}"),
        ] {
            assert_eq!(normalize_math(raw), canonical, "{raw}");
        }
    }

    #[test]
    fn rationals_are_kept_in_lowest_terms() {
        assert_eq!(parse_number("6/4"), parse_number("1.5"));
        assert_eq!(parse_number("3/-4"), parse_number("-0.75"));
        assert_eq!(parse_number("1/0"), None);
        assert_eq!(math_number("-\\frac{-2}{4}"), parse_number("0.5"));
        assert_eq!(math_number("\\frac{1}{2}x"), None);
    }
}
