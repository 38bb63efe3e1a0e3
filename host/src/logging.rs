//! Logging through tracing: to stderr for the CLI, to the configured file
//! (and stderr when asked) in CNI mode. Never to stdout, which carries only
//! the CNI result or error.
//!
//! Every line is one event: control characters inside it (newlines a guest,
//! a NAD or a pod annotation put in a message or a field) are escaped by the
//! writer, so nobody can forge log lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogOptions, MultusConfig};

/// How control characters are escaped: Rust-style (`\u{7}`) in text lines,
/// JSON-style (`\u0007`) in JSON lines so that they stay valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Text,
    Json,
}

/// `text` with every control character (and the Unicode line and paragraph
/// separators) escaped, except one trailing newline.
pub fn escape_line(text: &str) -> std::borrow::Cow<'_, str> {
    escape_styled(text, Style::Text)
}

/// [`escape_line`] in `style`.
pub fn escape_styled(text: &str, style: Style) -> std::borrow::Cow<'_, str> {
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
            // Every control character is in the Basic Multilingual Plane.
            c if needs(c) && style == Style::Json => {
                escaped.push_str(&format!("\\u{:04x}", c as u32))
            }
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
pub struct EscapingWriter<W>(W, Style);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(escape_styled(&text, self.1).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// [`EscapingWriter`] around every writer `M` makes.
#[derive(Debug)]
pub struct Escaping<M>(pub M, pub Style);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer(), self.1)
    }
}

/// The log file, rotated as `logOptions` says (Multus's lumberjack fields):
/// past `maxSize` MiB it becomes `<file>.1` (older backups shift to `.2`,
/// ...), at most `maxBackups` backups are kept (0: all), gzipped when
/// `compress` (`<file>.N.gz`). `maxAge` is not applied. The rotation is
/// file-rotate's; every event opens the file anew under an exclusive flock
/// of its directory, so that the CNI processes of concurrent calls (each
/// with its own view of the files) never rotate over each other.
#[derive(Debug, Clone)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: usize,
    max_backups: usize,
    compress: bool,
}

impl RotatingFile {
    /// The log file `path` with `options`; `None` when its directory cannot
    /// be made.
    pub fn new(path: &Path, options: &LogOptions) -> Option<RotatingFile> {
        let path = std::path::absolute(path).ok()?;
        let parent = path.parent()?;
        std::fs::create_dir_all(parent).ok()?;
        // lumberjack's zeros: 100 MiB, every backup.
        let max_size = if options.max_size_mib == 0 {
            100
        } else {
            options.max_size_mib as usize
        };
        let max_backups = match options.max_backups {
            0 => usize::MAX,
            count => count as usize,
        };
        Some(RotatingFile {
            path,
            max_bytes: max_size.saturating_mul(1024 * 1024),
            max_backups,
            compress: options.compress,
        })
    }

    /// The same with the size limit in bytes (tests).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> RotatingFile {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Append one event, rotating first when the file has passed the size.
    pub fn append(&self, event: &[u8]) -> std::io::Result<()> {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        let dir = std::fs::File::open(parent)?;
        if !lock_within(&dir, LOCK_WAIT) {
            // Someone holds the directory too long: append without rotating
            // rather than hold up the call.
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            return file.write_all(event);
        }
        let compression = if self.compress {
            file_rotate::compression::Compression::OnRotate(0)
        } else {
            file_rotate::compression::Compression::None
        };
        let mut file = file_rotate::FileRotate::new(
            &self.path,
            file_rotate::suffix::AppendCount::new(self.max_backups),
            file_rotate::ContentLimit::BytesSurpassed(self.max_bytes),
            compression,
            None,
        );
        file.write_all(event)?;
        file.flush()
        // The flock goes with `dir`.
    }
}

/// The longest a line waits for the log directory's lock (another process
/// rotating, perhaps compressing, the file).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Take an exclusive flock of `dir`, trying for at most `wait`.
fn lock_within(dir: &std::fs::File, wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match rustix::fs::flock(dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return true,
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = &'a RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
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

/// Log to stderr at `level` in `format` (CLI and daemon use).
pub fn init_stderr(level: LevelFilter, format: LogFormat) {
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stderr, level, format));
}

/// A subscriber writing to `writer` at `level` in `format`, each line
/// escaped. In JSON, the spans a line is in (outermost first: the call's,
/// with the pod, container and interface) are its `spans` list.
pub fn subscriber<W>(
    writer: W,
    level: LevelFilter,
    format: LogFormat,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    match format {
        LogFormat::Text => Box::new(builder.with_writer(Escaping(writer, Style::Text)).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(Escaping(writer, Style::Json))
                .finish(),
        ),
    }
}

/// Log as the host config says (CNI mode): to `logFile` (appending,
/// rotated per `logOptions`) and/or stderr (`logToStderr`), at `logLevel`,
/// in `logFormat`. A file that cannot be written is skipped: logging must
/// never fail a CNI call.
pub fn init_cni(config: &MultusConfig) {
    let level = multus_level(config.log_level);
    let file = config
        .log_file
        .as_deref()
        .and_then(|path| RotatingFile::new(path, &config.log_options));
    let format = config.log_format;
    let subscriber = match (file, config.log_to_stderr) {
        (Some(file), false) => subscriber(file, level, format),
        (Some(file), true) => subscriber(
            tracing_subscriber::fmt::writer::MakeWriterExt::and(file, std::io::stderr),
            level,
            format,
        ),
        (None, true) => subscriber(std::io::stderr, level, format),
        (None, false) => return,
    };
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The span of one CNI call: every line logged during it carries the pod
/// (`namespace/name`, from `CNI_ARGS`), the container id and the interface.
pub fn call_span(env: &crate::cni::CniEnv) -> tracing::Span {
    let arg = |key: &str| env.arg(key).unwrap_or_default();
    let pod = match (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
        ("", "") => String::new(),
        (namespace, name) => format!("{namespace}/{name}"),
    };
    tracing::info_span!(
        "cni",
        command = %env.command,
        pod = pod.as_str(),
        container = env.container_id.as_deref().unwrap_or_default(),
        ifname = env.ifname.as_deref().unwrap_or_default(),
    )
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
        EscapingWriter(&mut out, Style::Text)
            .write_all(b"a\nb\n")
            .unwrap();
        assert_eq!(out, b"a\\nb\n");
    }

    #[test]
    fn multus_level_names_map_onto_tracing_levels() {
        assert_eq!(parse_level("panic"), Some(LevelFilter::ERROR));
        assert_eq!(parse_level("verbose"), Some(LevelFilter::INFO));
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("chatty"), None);
    }

    fn options(max_size_mib: u32, max_backups: u32, compress: bool) -> LogOptions {
        LogOptions {
            max_age_days: 5,
            max_size_mib,
            max_backups,
            compress,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_log_rotates_at_max_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/multus.log");
        let file = RotatingFile::new(&path, &options(1, 2, false)).expect("a log file");
        let line = format!("{}\n", "x".repeat(1023));
        let mib = 1024 * 1024;
        // A little over four files' worth: three rotations.
        for _ in 0..(4 * mib / line.len() + 10) {
            (&file).write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(
            names(&dir.path().join("logs")),
            vec!["multus.log", "multus.log.1", "multus.log.2"],
            "maxBackups 2: the oldest backup was removed"
        );
        for backup in ["multus.log.1", "multus.log.2"] {
            let size = std::fs::metadata(dir.path().join("logs").join(backup))
                .unwrap()
                .len() as usize;
            // Rotated at the first event past maxSize: whole lines only.
            assert!(size > mib && size <= mib + line.len(), "{backup}: {size}");
            assert_eq!(size % line.len(), 0, "{backup}: whole lines");
        }
        let current = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(current > 0 && current <= mib + line.len(), "{current}");
    }

    #[test]
    fn rotated_logs_are_gzipped_when_compress_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multus.log");
        let file = RotatingFile::new(&path, &options(1, 1, true))
            .expect("a log file")
            .with_max_bytes(100);
        for index in 0..30 {
            (&file)
                .write_all(format!("line {index:04} padding padding\n").as_bytes())
                .unwrap();
        }
        assert_eq!(names(dir.path()), vec!["multus.log", "multus.log.1.gz"]);
    }

    fn env() -> crate::cni::CniEnv {
        crate::cni::CniEnv::from_vars([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .expect("a CNI env")
    }

    /// The lines `format` writes for a call's events, one with a hostile field.
    fn call_lines(format: LogFormat) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multus.log");
        let file = RotatingFile::new(&path, &LogOptions::default()).expect("a log file");
        tracing::subscriber::with_default(subscriber(file, LevelFilter::DEBUG, format), || {
            let span = call_span(&env());
            let _entered = span.enter();
            tracing::info!("CNI call");
            tracing::warn!(plugin = "evil", "line\nforged\u{7f}\u{2028}");
            tracing::debug!(ops = 3, "delegate planned");
        });
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_line_of_a_call_names_the_pod_container_and_interface() {
        let lines = call_lines(LogFormat::Text);
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            assert!(
                line.contains(
                    r#"cni{command=ADD pod="default/web" container="c0ffee" ifname="eth0"}"#
                ),
                "{line}"
            );
        }
        assert!(lines[1].contains(r"line\nforged"), "{}", lines[1]);
        assert!(!lines.concat().contains(|c: char| c.is_control()));
    }

    #[test]
    fn json_lines_parse_and_carry_the_call() {
        let lines = call_lines(LogFormat::Json);
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"));
            let call = &value["spans"][0];
            assert_eq!(call["name"], "cni", "{line}");
            assert_eq!(call["pod"], "default/web", "{line}");
            assert_eq!(call["container"], "c0ffee", "{line}");
            assert_eq!(call["ifname"], "eth0", "{line}");
            assert_eq!(call["command"], "ADD", "{line}");
            assert!(value["timestamp"].is_string() && value["level"].is_string());
        }
        let warned: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(warned["level"], "WARN");
        assert_eq!(warned["fields"]["plugin"], "evil");
        assert_eq!(
            warned["fields"]["message"], "line\nforged\u{7f}\u{2028}",
            "escaped on the wire, intact once parsed"
        );
        assert!(!lines[1].contains('\u{7f}') && !lines[1].contains('\u{2028}'));
    }

    #[test]
    fn the_directory_lock_is_given_up_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multus.log");
        let held = std::fs::File::open(dir.path()).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        assert!(!lock_within(
            &std::fs::File::open(dir.path()).unwrap(),
            std::time::Duration::from_millis(20)
        ));
        drop(held);
        let file = RotatingFile::new(&path, &options(1, 1, false)).unwrap();
        (&file).write_all(b"line\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line\n");
    }
}
