//! Standard output of the command-line tools, which all read or write traces.

use std::io::{self, Write};

/// Writes `text` to standard output. A reader that went away (`replay check T | head`) ends
/// the output quietly: the report was for it, and the command's own result (its exit status)
/// does not change. Rust's `print!` panics there instead.
pub fn print_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}
