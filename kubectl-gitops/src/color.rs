//! Colour is decided once: only on a terminal, and never when `NO_COLOR` is set.

use std::io::IsTerminal as _;

/// Whether stdout gets ANSI colours.
pub fn stdout_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

pub fn paint(enabled: bool, code: &str, text: &str) -> String {
    if enabled {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}
