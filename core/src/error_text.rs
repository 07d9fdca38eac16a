//! Error text as a user reads it: an error with its causes on one line
//! ([`chain`]), and libtorch's errors without the C++ stack of where they
//! were raised ([`concise`]: "Exception raised from ... (most recent call
//! first):" and one "frame #N: ..." line per frame, often 4 KB, which says
//! nothing to a user and buries the one line that does).

/// `error` and its sources, joined by ": ". Many libraries keep the reason
/// in a source (reqwest's own message is often just "error sending
/// request"; libloading keeps the loader's message, which library is
/// missing, there).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `message` without libtorch's C++ stack: the "Exception raised from"
/// lines and the "frame #N:" lines after them. Everything else is kept, in
/// order.
pub fn concise(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("Exception raised from") || line.starts_with("frame #"))
        })
        .collect();
    kept.join("\n").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpp_stack_goes_and_the_message_stays() {
        // The shape of a c10::Error's what(), as libtorch 2.x writes it.
        let raw = "Torch(\"mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)\n\
                   Exception raised from meta at /pytorch/aten/src/ATen/native/LinearAlgebra.cpp:192 (most recent call first):\n\
                   frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9c (0x7f in libc10.so)\n\
                   frame #1: <unknown function> + 0x1c (0x7f in libtorch_cpu.so)\n\")";
        let short = concise(raw);
        assert_eq!(
            short,
            "Torch(\"mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)\n\")"
        );
        assert_eq!(concise("plain\nerror"), "plain\nerror");
    }
}
