//! Logging through tracing: to stderr for the CLI, to the configured file
//! (and stderr when asked) in CNI mode. Never to stdout, which carries only
//! the CNI result or error.

use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

/// A level name: tracing's (`error`..`trace`) or Multus's (`panic`,
/// `error`, `verbose`, `debug`).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "panic" | "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "info" | "verbose" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

/// The tracing level of a Multus `logLevel`.
pub fn multus_level(level: crate::config::LogLevel) -> LevelFilter {
    use crate::config::LogLevel;
    match level {
        LogLevel::Panic | LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Verbose => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// Log to stderr at `level` (CLI use).
pub fn init_stderr(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

/// Log to `file` (appending) and/or stderr at `level` (CNI mode). A file
/// that cannot be opened falls back to stderr when allowed, else to nothing:
/// logging must never fail a CNI call.
pub fn init_cni(file: Option<&Path>, level: LevelFilter, to_stderr: bool) {
    let opened = file.and_then(|path| {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let _ = match (opened, to_stderr) {
        (Some(file), false) => builder.with_writer(Mutex::new(file)).try_init(),
        (Some(file), true) => builder
            .with_writer(tracing_subscriber::fmt::writer::MakeWriterExt::and(
                Mutex::new(file),
                std::io::stderr,
            ))
            .try_init(),
        (None, true) => builder.with_writer(std::io::stderr).try_init(),
        (None, false) => return,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_level_names_map_onto_tracing_levels() {
        assert_eq!(parse_level("panic"), Some(LevelFilter::ERROR));
        assert_eq!(parse_level("verbose"), Some(LevelFilter::INFO));
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("chatty"), None);
    }
}
