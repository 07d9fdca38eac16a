//! The catch-all for bugs: a panic (an assertion premem's code makes, or a
//! libtorch call that failed where the code expected it could not) ends the
//! process with one short "error:" line naming where, not a backtrace and
//! libtorch's C++ stack. `RUST_BACKTRACE=1` gives the full report.

use premem_core::error_text::concise;

/// Installs the panic hook; call first in `main`.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            return default(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: premem stopped on an internal error{at}: {}\n\
             (a bug or an unchecked limit: please report it with the command; RUST_BACKTRACE=1 shows the stack)",
            concise(&message)
        );
    }));
}
