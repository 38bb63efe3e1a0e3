//! Logging through tracing: to stderr for the CLI, to the configured file
//! (and stderr when asked) in CNI mode. Never to stdout, which carries only
//! the CNI result or error.
//!
//! Every line is one event: control characters inside it (newlines a guest,
//! a NAD or a pod annotation put in a message or a field) are escaped by the
//! writer, so nobody can forge log lines.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `text` with every control character (and the Unicode line and paragraph
/// separators) escaped, except one trailing newline.
pub fn escape_line(text: &str) -> std::borrow::Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !body.contains(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in body.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs(c) => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    if body.len() < text.len() {
        escaped.push('\n');
    }
    std::borrow::Cow::Owned(escaped)
}

/// A writer that escapes each event (one `write` of a whole formatted line,
/// as tracing's formatter does) before passing it on.
#[derive(Debug)]
pub struct EscapingWriter<W>(W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(escape_line(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// [`EscapingWriter`] around every writer `M` makes.
#[derive(Debug)]
pub struct Escaping<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }
}

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
        .with_writer(Escaping(std::io::stderr))
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
        (Some(file), false) => builder.with_writer(Escaping(Mutex::new(file))).try_init(),
        (Some(file), true) => builder
            .with_writer(Escaping(
                tracing_subscriber::fmt::writer::MakeWriterExt::and(
                    Mutex::new(file),
                    std::io::stderr,
                ),
            ))
            .try_init(),
        (None, true) => builder.with_writer(Escaping(std::io::stderr)).try_init(),
        (None, false) => return,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(escape_line("plain line\n"), "plain line\n");
        assert_eq!(
            escape_line("msg=a\n2026-12-04T00:00:00Z ERROR forged\n"),
            "msg=a\\n2026-12-04T00:00:00Z ERROR forged\n"
        );
        assert_eq!(
            escape_line("bell\u{7}\u{1b}[31m\r"),
            "bell\\u{7}\\u{1b}[31m\\r"
        );
        assert_eq!(escape_line("sep\u{2028}x"), "sep\\u{2028}x");
        let mut out = Vec::new();
        EscapingWriter(&mut out).write_all(b"a\nb\n").unwrap();
        assert_eq!(out, b"a\\nb\n");
    }

    #[test]
    fn multus_level_names_map_onto_tracing_levels() {
        assert_eq!(parse_level("panic"), Some(LevelFilter::ERROR));
        assert_eq!(parse_level("verbose"), Some(LevelFilter::INFO));
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("chatty"), None);
    }
}
