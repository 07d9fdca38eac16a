//! GSM8K `####` and MATH `\boxed{}` extraction, the normaliser and the
//! equality of answers.

use premem_core::data::answer::{
    AnswerStyle, answers_equal, gold_answer, is_correct, last_boxed, parse_number, sample_answer,
};
use proptest::prelude::*;

use crate::CASES;

/// Every public entry point, both styles, both ways round.
fn check_all(a: &str, b: &str) {
    for style in [AnswerStyle::Gsm8k, AnswerStyle::Math] {
        let _ = gold_answer(a, style);
        let _ = sample_answer(a, style);
        let _ = is_correct(a, b, style);
        let _ = is_correct(b, a, style);
        let _ = answers_equal(a, b, style);
        let _ = answers_equal(b, a, style);
        let _ = answers_equal(a, a, style);
    }
    let _ = parse_number(a);
    let _ = last_boxed(a);
}

/// Pieces of LaTeX and of answers the normaliser treats specially.
const TOKENS: &[&str] = &[
    "\\boxed{",
    "\\boxed ",
    "\\boxed",
    "\\fbox{",
    "{",
    "}",
    "{,}",
    "\\",
    "\\\\",
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "\\sqrt[",
    "[",
    "]",
    "(",
    ")",
    "^",
    "_",
    "^\\circ",
    "####",
    "#### ",
    "\n",
    "\t",
    " ",
    "0",
    "1",
    "9",
    "123456789012345678901234567890",
    ".",
    ".5",
    "-",
    "+",
    "/",
    ",",
    "=",
    "x",
    "\\pi",
    "\\text{",
    "\\text{ ",
    "\\mbox{",
    "\\mathrm{",
    "\\left(",
    "\\right]",
    "\\left.",
    "\\{",
    "\\}",
    "\\langle",
    "\\rangle",
    "\\cup",
    "\\infty",
    "\\le",
    "\\!",
    "\\,",
    "$",
    "\\$",
    "%",
    "\\%",
    "é",
    "\u{2212}",
    "°",
    "∞",
    "🙂",
    "\u{0}",
    "\u{300}",
];

fn latex() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|t| t.concat())
}

/// `depth` opening tokens, some text, and up to `depth` closing ones.
fn nested() -> impl Strategy<Value = String> {
    let opener = prop::sample::select(vec![
        "\\boxed{", "{", "(", "\\{", "\\langle", "\\frac{", "[",
    ]);
    let closer = prop::sample::select(vec!["}", ")", "\\}", "\\rangle", "]", "}{"]);
    (opener, closer, 0usize..3000, 0usize..3000, latex()).prop_map(|(o, c, depth, closes, mid)| {
        format!("{}{mid}{}", o.repeat(depth), c.repeat(closes.min(depth)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_strings(a in any::<String>(), b in any::<String>()) {
        check_all(&a, &b);
    }

    #[test]
    fn latex_fragments(a in latex(), b in latex()) {
        check_all(&a, &b);
    }

    #[test]
    fn deep_nesting(a in nested(), b in latex()) {
        check_all(&a, &b);
        check_all(&format!("\\boxed{{{a}}}"), &format!("#### {b}"));
    }

    #[test]
    fn numbers_of_any_size(digits in "[0-9]{0,60}", point in 0usize..62, sign in "[-+]?",
                           den in "[0-9.,]{0,40}") {
        let number = format!("{sign}{}.{}", &digits[..point.min(digits.len())],
                             &digits[point.min(digits.len())..]);
        check_all(&number, &format!("{number}/{den}"));
        check_all(&format!("\\frac{{{number}}}{{{den}}}"), &format!("#### ${number},%"));
    }
}
