//! Answer checking on tables of real-looking answers: MATH equivalence
//! (normalisation, exact numbers, tuples, intervals, sets), GSM8K samples,
//! `\boxed{}` extraction, and odd inputs that must not panic.

use premem_core::data::answer::{
    AnswerStyle, answers_equal, gold_answer, is_correct, last_boxed, parse_number, sample_answer,
};

/// (a, b, whether `answers_equal(a, b, Math)` must hold). Every pair is also
/// checked the other way round: equivalence is symmetric.
const MATH_CASES: &[(&str, &str, bool)] = &[
    // --- Equal: one number, written differently (exact rationals).
    ("\\frac{1}{2}", "0.5", true),
    ("\\frac{1}{2}", "1/2", true),
    ("\\frac{1}{2}", ".5", true),
    ("\\frac{1}{2}", "\\dfrac12", true),
    ("\\tfrac{1}{2}", "\\frac{1}{2}", true),
    ("\\frac 1 2", "\\frac{1}{2}", true),
    ("\\frac{1}2", "\\frac1{2}", true),
    ("-\\frac{3}{4}", "-0.75", true),
    ("\\frac{-3}{4}", "-\\frac34", true),
    ("\\frac{3}{-4}", "-0.75", true),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", true),
    ("-\\frac{-1}{2}", "0.5", true),
    ("10", "10.0", true),
    ("10", "10.", true),
    ("3.", "3", true),
    ("+7", "7", true),
    ("-0", "0", true),
    ("007", "7", true),
    ("1.0", "1", true),
    ("1.50", "\\frac{3}{2}", true),
    ("\\frac{6}{4}", "\\frac{3}{2}", true),
    ("\\frac{10}{4}", "2.5", true),
    ("\\dfrac{5}{2}", "2.5", true),
    ("\\frac{0}{5}", "0", true),
    ("0.25", "1/4", true),
    ("3/4", "0.75", true),
    ("-3/4", "\\frac{-3}{4}", true),
    ("0.5", " .5", true),
    ("-.5", "-\\frac12", true),
    ("{5}", "5", true),
    ("\\frac{1}{2}.", "0.5", true),
    ("\\frac{1}{2}\n", "\\frac12", true),
    ("\u{2212}5", "-5", true),
    ("\\\\frac{1}{2}", "\\frac{1}{2}", true),
    ("\\displaystyle\\frac{1}{2}", "\\frac12", true),
    // --- Equal: thousands separators, money, percent, degrees.
    ("1,000", "1000", true),
    ("1{,}000", "1000", true),
    ("1\\,000", "1000", true),
    ("1,000,000", "1000000", true),
    ("12,345.5", "12345.5", true),
    ("\\$1,000", "1000", true),
    ("\\$5.00", "5", true),
    ("$5$", "5", true),
    ("\\$\\frac{1}{2}", "0.5", true),
    ("50\\%", "50", true),
    ("50%", "50", true),
    ("30^\\circ", "30", true),
    ("30^{\\circ}", "30", true),
    ("90°", "90", true),
    // --- Equal: units after a number.
    ("5\\text{ cm}", "5", true),
    ("5 \\mbox{cm}", "5", true),
    ("5\\text{ft}", "5", true),
    ("12\\text{ m}^2", "12", true),
    ("5 \\text{ cm}^{2}", "5", true),
    ("20\\text{ dollars}", "20", true),
    ("8\\text{ feet}\\text{ tall}", "8", true),
    ("\\frac{1}{2}\\text{ inches}", "\\frac12", true),
    ("\\sqrt{2}\\text{ units}", "\\sqrt2", true),
    ("5\\ \\text{cm}", "5", true),
    // --- Equal: text wrappers.
    ("\\text{(A)}", "(A)", true),
    ("\\textbf{(C)}", "(C)", true),
    ("\\text{(B)}", "\\text{ (B) }", true),
    ("\\text{Monday}", "Monday", true),
    ("\\text{Evelyn}", "Evelyn", true),
    ("\\text{even}", "even", true),
    ("\\text{no solution}", "no solution", true),
    ("\\text{ 20 }", "20", true),
    ("\\mathrm{i}", "i", true),
    ("2\\mathrm{i}", "2i", true),
    ("\\mathrm{e}", "e", true),
    // --- Equal: short left-hand sides.
    ("x = 5", "5", true),
    ("k=-3", "-3", true),
    ("y = \\frac{1}{2}", "0.5", true),
    ("n = 4", "4", true),
    ("a_1=4", "4", false),
    // --- Equal: radicals, scripts, fractions of expressions.
    ("2\\sqrt{2}", "2 \\sqrt 2", true),
    ("2\\sqrt{2}", "2\\sqrt2", true),
    ("\\sqrt3", "\\sqrt{3}", true),
    ("\\sqrt\\pi", "\\sqrt{\\pi}", true),
    ("\\sqrt \\pi r", "\\sqrt{\\pi}r", true),
    ("3\\sqrt[3]{2}", "3\\sqrt[3]2", true),
    ("\\sqrt{.5}", "\\sqrt{0.5}", true),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}2", true),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}", true),
    ("\\frac1b", "\\frac{1}{b}", true),
    ("\\frac{x}{2}", "\\frac x2", true),
    ("\\frac{\\pi}{4}", "\\dfrac{\\pi}{4}", true),
    ("\\pi/2", "\\frac{\\pi}{2}", true),
    ("-\\pi/2", "-\\frac{\\pi}{2}", true),
    ("2\\sqrt{3}/3", "\\frac{2\\sqrt{3}}{3}", true),
    ("x^2", "x^{2}", true),
    ("x^2 + 1", "x^{2}+1", true),
    ("x^{2}+2x+1", "x^2 + 2x + 1", true),
    ("a_n", "a_{n}", true),
    ("e^{i\\pi}", "e^{i \\pi}", true),
    ("4\\pi", "4 \\pi", true),
    ("x \\le 5", "x\\leq5", true),
    ("\\emptyset", "\\varnothing", true),
    (
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        true,
    ),
    // --- Equal: tuples, intervals, vectors, sets, unions, lists.
    ("(1, \\frac{1}{2})", "(1,0.5)", true),
    ("\\left( 1, 2 \\right)", "(1,2)", true),
    ("(3, -2)", "(3,-2)", true),
    ("(\\frac{3}{2}, -\\frac{1}{2})", "(1.5, -0.5)", true),
    ("((1,2),(3,4))", "((1, 2), (3, 4))", true),
    ("((1,\\frac12),(3,4))", "((1, 0.5), (3, 4.0))", true),
    ("[0, 1)", "[0,1)", true),
    ("(1,2]", "\\left(1, 2\\right]", true),
    ("\\left[ 0, \\frac{1}{2} \\right)", "[0, 0.5)", true),
    ("(-\\infty, 0]", "(-\\infty,0]", true),
    ("(-\\infty, \\infty)", "(-\\infty,+\\infty)", true),
    ("(-∞, 3)", "(-\\infty, 3)", true),
    (
        "\\left(\\frac{1}{2}, \\infty\\right)",
        "(0.5, \\infty)",
        true,
    ),
    ("-\\infty", "-\\infty", true),
    ("\\langle 1, 2 \\rangle", "\\langle1,2\\rangle", true),
    (
        "\\langle \\frac12, 3 \\rangle",
        "\\langle 0.5, 3\\rangle",
        true,
    ),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", true),
    ("\\left\\{1,2\\right\\}", "\\{2,1\\}", true),
    ("\\lbrace \\frac12, 1 \\rbrace", "\\{1, 0.5\\}", true),
    ("(0,1) \\cup (2,3)", "(2,3)\\cup(0,1)", true),
    (
        "(-\\infty,0)\\cup(1,\\infty)",
        "(-\\infty, 0) \\cup (1, \\infty)",
        true,
    ),
    ("1, 2, 3", "1,2,3", true),
    ("\\frac12, 3", "0.5, 3", true),
    ("(1,000)", "(1, 0)", true),
    // --- Different: the examples that must never match.
    ("x^2", "x^3", false),
    ("\\frac{1}{2}", "\\frac{1}{3}", false),
    ("12", "1.2", false),
    ("(1,2)", "[1,2]", false),
    ("-2", "2", false),
    ("", "5", false),
    ("5", "", false),
    ("", "", false),
    ("   ", "   ", false),
    ("\\$", "\\%", false),
    ("\\text{}", "{}", false),
    // --- Different: numbers.
    ("\\frac{1}{2}", "0.51", false),
    ("0.333", "\\frac13", false),
    ("\\frac{1}{2}", "\\frac{2}{1}", false),
    ("\\frac{12}{3}", "\\frac{1}{23}", false),
    ("\\frac123", "\\frac{12}{3}", false),
    ("10", "100", false),
    ("0.1", "0.01", false),
    ("1/2", "2/1", false),
    ("-\\frac{3}{4}", "\\frac{3}{4}", false),
    ("\\frac{-3}{4}", "\\frac{3}{4}", false),
    ("-0.75", "0.75", false),
    ("7", "-7", false),
    ("0.5", "5", false),
    ("5", "5.5", false),
    ("1.2.3", "1.23", false),
    ("\\frac{1}{0}", "\\frac{2}{0}", false),
    (
        "123456789012345678901234567890",
        "123456789012345678901234567891",
        false,
    ),
    ("1,000", "1", false),
    ("1,000", "1,0", false),
    ("12,34", "1234", false),
    ("1,000.5", "1000.05", false),
    ("1,2", "12", false),
    // --- Different: expressions.
    ("\\sqrt{2}", "\\sqrt{3}", false),
    ("2\\sqrt{2}", "\\sqrt{2}", false),
    ("\\sqrt{2}", "2", false),
    ("\\sqrt23", "\\sqrt{23}", false),
    ("x^23", "x^{23}", false),
    ("2^{10}", "2^10", false),
    ("x^{2}", "x_{2}", false),
    ("x^{-1}", "x^{1}", false),
    ("10^{-3}", "10^{3}", false),
    ("\\sqrt{x}+1", "\\sqrt{x+1}", false),
    ("x+1", "x-1", false),
    ("-x", "x", false),
    ("2x", "3x", false),
    ("3\\pi", "3", false),
    ("\\pi", "3.14", false),
    ("\\pi/2", "\\pi/3", false),
    ("1/2x", "\\frac{1}{2}x", false),
    ("\\frac{x}{2}", "\\frac{2}{x}", false),
    ("\\frac{1}{2}", "\\frac{1}{2}\\pi", false),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{2}}{2}", false),
    ("\\pm 2", "2", false),
    ("3+2\\mathrm{i}", "3+2", false),
    (
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
        "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}",
        false,
    ),
    (
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
        "\\begin{pmatrix} 12 \\end{pmatrix}",
        false,
    ),
    // --- Different: equations, relations, units that carry the number.
    ("x = 5", "x = 6", false),
    ("xyz = 5", "5", false),
    ("x < 5", "5", false),
    ("x \\le 5", "x \\ge 5", false),
    ("5\\text{ cm}", "6", false),
    // --- Different: text answers.
    ("\\text{(A)}", "(B)", false),
    ("(A)", "A", false),
    ("\\text{Monday}", "Tuesday", false),
    ("\\text{even}", "\\text{odd}", false),
    ("A", "B", false),
    // --- Different: tuples, intervals, sets, unions.
    ("[0, 1)", "(0, 1)", false),
    ("[1,2]", "[1,2)", false),
    ("(1,2)", "(2,1)", false),
    ("(1,2)", "(1,2,3)", false),
    ("(1,2)", "(1,2,)", false),
    ("(1,2)", "1,2", false),
    ("(1, 2)", "(1, 2", false),
    ("(1,\\frac{1}{2})", "(1,\\frac{1}{3})", false),
    ("(-\\infty, 0)", "(-\\infty, 0]", false),
    ("(-\\infty,0)", "(0,\\infty)", false),
    ("\\infty", "-\\infty", false),
    ("+\\infty", "-\\infty", false),
    ("\\{1,2\\}", "\\{1,2,3\\}", false),
    ("\\{1,2\\}", "\\{1,3\\}", false),
    ("\\{1,1\\}", "\\{1,2\\}", false),
    ("\\{1,2\\}", "\\{1\\}", false),
    ("\\{1,2\\}", "(1,2)", false),
    ("\\langle 1,2\\rangle", "(1,2)", false),
    ("(0,1)\\cup(2,3)", "(0,1)\\cup(2,4)", false),
    ("(0,1)\\cup(2,3)", "(0,3)", false),
    ("(1,2)\\cup(3,4)", "(1,2)", false),
    ("\\frac{1}{2}", "\\frac{1}{2}, \\frac{1}{2}", false),
    // --- Different: near misses that survive every normalisation step.
    ("\\frac{1}{2}", "\\frac{1}{2}x", false),
    ("5\\text{ cm}", "50", false),
    ("30^\\circ", "60", false),
    ("50\\%", "5", false),
    ("1,000", "100", false),
    ("1000000", "100000", false),
    ("\\$5.00", "5.01", false),
    ("0.5", "0.50001", false),
    ("x = 5", "-5", false),
    ("\\text{(A)}", "\\text{(D)}", false),
    ("2\\sqrt{2}", "2\\sqrt{3}", false),
    ("\\sqrt[3]{2}", "\\sqrt{2}", false),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{4}", false),
    ("e^{i\\pi}", "e^{\\pi}", false),
    ("x^{2}+1", "x^{2}-1", false),
    ("(1, \\frac{1}{2})", "(1, 0.6)", false),
    ("\\langle 1,2\\rangle", "\\langle 2,1\\rangle", false),
    ("[0, \\infty)", "(0, \\infty)", false),
    ("\\emptyset", "\\{0\\}", false),
    // --- Different: broken LaTeX never matches a real answer.
    ("\\frac{", "\\frac{1}{2}", false),
    ("\\sqrt", "\\sqrt{}", false),
    ("\\boxed{", "5", false),
];

/// (sample text, gold answer, whether `is_correct(sample, gold, Gsm8k)`).
const GSM8K_CASES: &[(&str, &str, bool)] = &[
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", true),
    ("step 1: 2+2=4\nstep 2: 4*3=12\n#### 12", "12", true),
    ("#### 1,080", "1080", true),
    ("#### 1,000,000", "1000000", true),
    ("The total is $1,080.00.", "1080", true),
    ("So she has 5.00 dollars", "5", true),
    ("#### -7", "-7", true),
    ("The answer is -7.", "-7", true),
    ("she owes -3,000", "-3000", true),
    ("It is 3/4 of the cake", "0.75", true),
    ("#### 0.75", "3/4", true),
    ("answer 6/3", "2", true),
    ("#### 12\nThen 13 more", "12", true),
    ("He paid $18.", "18", true),
    ("He paid $18.50.", "18.5", true),
    ("It costs 4.50.", "4.5", true),
    ("The answer: 10", "10.0", true),
    ("#### $42", "42", true),
    ("#### 42.", "42", true),
    ("####42", "42", true),
    ("#### 3\n#### 4", "4", true),
    ("#### 0", "-0", true),
    ("The answer is 12%", "12", true),
    ("#### 12%", "12", true),
    ("So 7 - 3 = 4", "4", true),
    ("#### 7", "-7", false),
    ("#### 5", "6", false),
    ("first 12 then 13", "12", false),
    ("no digits here", "5", false),
    ("", "5", false),
    ("He paid $18.50.", "18", false),
    ("He has 100 apples and eats 1.", "100", false),
    ("#### 42 apples", "42", false),
    ("#### 3\n#### 4", "3", false),
    ("answer 1/3", "0.333", false),
    ("temperature fell to -5 degrees", "5", false),
    ("#### 1e3", "1000", false),
    ("So 7 - 3 = 4", "3", false),
    ("The answer is 12.5", "125", false),
    ("#### 1,080", "108", false),
];

#[test]
fn math_equivalence_table() {
    assert!(
        MATH_CASES.len() >= 150,
        "only {} MATH cases",
        MATH_CASES.len()
    );
    let equal = MATH_CASES.iter().filter(|case| case.2).count();
    let share = equal as f64 / MATH_CASES.len() as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "unbalanced table: {equal} equal of {}",
        MATH_CASES.len()
    );
    let mut failures = Vec::new();
    for (i, &(a, b, expected)) in MATH_CASES.iter().enumerate() {
        for (x, y) in [(a, b), (b, a)] {
            let got = answers_equal(x, y, AnswerStyle::Math);
            if got != expected {
                failures.push(format!(
                    "MATH case {i}: answers_equal({x:?}, {y:?}) = {got}, expected {expected}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn math_answers_equal_themselves() {
    // Reflexive for every non-empty answer in the table, however odd.
    let mut failures = Vec::new();
    for (i, &(a, b, _)) in MATH_CASES.iter().enumerate() {
        for x in [a, b] {
            let blank = x
                .chars()
                .all(|c| c.is_whitespace() || matches!(c, '$' | '%' | '\\' | '{' | '}'));
            if !blank && x != "\\text{}" && !answers_equal(x, x, AnswerStyle::Math) {
                failures.push(format!("MATH case {i}: {x:?} != itself"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn gsm8k_samples_table() {
    assert!(
        GSM8K_CASES.len() >= 30,
        "only {} GSM8K cases",
        GSM8K_CASES.len()
    );
    let mut failures = Vec::new();
    for (i, &(sample, gold, expected)) in GSM8K_CASES.iter().enumerate() {
        let got = is_correct(sample, gold, AnswerStyle::Gsm8k);
        if got != expected {
            failures.push(format!(
                "GSM8K case {i}: is_correct({sample:?}, {gold:?}) = {got}, expected {expected} \
                 (read {:?})",
                sample_answer(sample, AnswerStyle::Gsm8k)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn math_samples_go_through_the_last_box() {
    let gold = gold_answer(
        "So the answer is $\\boxed{\\dfrac{1}{2}}$.",
        AnswerStyle::Math,
    )
    .unwrap();
    assert_eq!(gold, "\\dfrac{1}{2}");
    for (sample, expected) in [
        ("Thus $x = \\boxed{0.5}$.", true),
        ("First \\boxed{1/3}, no wait: \\boxed{\\frac12}", true),
        ("First \\boxed{\\frac12}, no wait: \\boxed{1/3}", false),
        ("The answer is 1/2.", false),
        ("The answer is \\boxed{\\frac12", false),
        ("", false),
    ] {
        assert_eq!(
            is_correct(sample, &gold, AnswerStyle::Math),
            expected,
            "sample {sample:?}"
        );
    }
    // No box: no answer, even when the prose states the right one.
    assert_eq!(sample_answer("The answer is 1/2.", AnswerStyle::Math), None);
}

#[test]
fn last_boxed_reads_the_last_box() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            "\\boxed{\\frac{1}{\\sqrt{2}}}",
            Some("\\frac{1}{\\sqrt{2}}"),
        ),
        ("\\boxed{{a}{b}{{c}}}", Some("{a}{b}{{c}}")),
        ("\\fbox{7}", Some("7")),
        ("\\boxed{1} and then \\boxed{2}", Some("2")),
        ("\\boxed{1} then \\fbox{2}", Some("2")),
        ("\\fbox{1} then \\boxed{2}", Some("2")),
        ("so $\\boxed{5}$.", Some("5")),
        ("$x = \\boxed{\\{1, 2\\}}$", Some("\\{1, 2\\}")),
        (
            "$\\boxed{\\left\\{ x \\right.}$",
            Some("\\left\\{ x \\right."),
        ),
        ("$$\\boxed{(1, 2)}$$ done", Some("(1, 2)")),
        ("\\boxed {3}", Some("3")),
        ("\\boxed 5$", Some("5")),
        ("$\\boxed 12$.", Some("12")),
        ("\\boxed{}", Some("")),
        ("\\boxed{unclosed", None),
        ("\\boxed{1} \\boxed{unclosed", None),
        ("no box at all", None),
        ("", None),
    ];
    for (i, &(text, expected)) in cases.iter().enumerate() {
        assert_eq!(last_boxed(text).as_deref(), expected, "case {i}: {text:?}");
    }
}

#[test]
fn odd_inputs_never_panic() {
    let huge = "9".repeat(60);
    let deep_parens = format!("{}1,2{}", "(".repeat(3000), ")".repeat(3000));
    let deep_braces = format!("\\boxed{}x{}", "{".repeat(3000), "}".repeat(3000));
    let many_fracs = "\\frac".repeat(500);
    let big_set = format!("\\{{{}\\}}", vec!["1"; 300].join(","));
    let big_set_other = format!("\\{{{}2\\}}", "1,".repeat(299));
    let minus_run = format!("{}1", "-".repeat(3000));
    let odd = [
        "",
        " ",
        "\\",
        "\\\\",
        "\\\\\\",
        "{",
        "}",
        "}{",
        "{{}",
        "\\{",
        "\\}",
        "\\frac",
        "\\frac{",
        "\\frac{1",
        "\\frac{1}{",
        "\\frac}",
        "\\frac\\",
        "\\frac{1}{0}",
        "\\sqrt",
        "\\sqrt[",
        "\\sqrt[3",
        "\\sqrt]",
        "\\sqrt\\",
        "^",
        "_",
        "x^",
        "^^^",
        "\\text{",
        "\\text{ cm",
        "5\\text{ cm",
        "5\\text{ cm}^",
        "\\text{\\text{\\text{",
        "\\boxed",
        "\\boxed{",
        "\\boxed ",
        "\\fbox",
        "(",
        ")",
        "[)",
        "(,)",
        ",",
        ",,,",
        "\\langle",
        "\\rangle",
        "\\langle,\\rangle",
        "\\left",
        "\\right.",
        "=",
        "==",
        "x=",
        "=5",
        "/",
        "1/",
        "/1",
        "1/0",
        "0/0",
        "-",
        "--",
        "+-",
        ".",
        "..",
        "$",
        "%",
        "####",
        "#### ",
        "é",
        "\\é",
        "\\sqrt é",
        "\\frac é日",
        "x^é",
        "∞",
        "\u{2212}",
        "日本語",
        "1,000,",
        ",000",
        "\\cup",
        "\\cup\\cup",
        "(1,2)\\cup",
        "\\\\ \\, \\! \\; \\:",
        "0.000000000000000000001",
        "123456789012345678.123456789012345678/0.000000000000000001",
        "-170141183460469231731687303715884105728",
        &huge,
        &deep_parens,
        &deep_braces,
        &many_fracs,
        &big_set,
        &big_set_other,
        &minus_run,
    ];
    for a in odd {
        let _ = last_boxed(a);
        let _ = parse_number(a);
        for style in [AnswerStyle::Gsm8k, AnswerStyle::Math] {
            let _ = gold_answer(a, style);
            let _ = sample_answer(a, style);
            for b in odd {
                let _ = answers_equal(a, b, style);
                let _ = is_correct(a, b, style);
                let glued = format!("{a}{b}");
                let _ = answers_equal(&glued, a, style);
            }
        }
    }
}
