//! resolv.conf files, read for IPAM plugins (`resolvConf` in host-local).
//!
//! The host parses the file and hands the guest only the DNS fields, so a
//! plugin cannot use `resolvConf` to read arbitrary node files.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::cni::Dns;

/// Files larger than this are refused: a resolv.conf is a few lines.
const MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    /// The path is relative; it would depend on the host's working directory.
    #[error("resolvConf path {0:?} is not absolute")]
    Relative(String),
    /// The file could not be opened or read.
    #[error("open {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file is far too large to be a resolv.conf.
    #[error("{0}: larger than {MAX_BYTES} bytes, not a resolv.conf")]
    TooLarge(String),
    /// Not a regular file (a device, FIFO, socket or directory): reading it
    /// could block or never end.
    #[error("{0}: not a regular file, not a resolv.conf")]
    NotRegular(String),
}

/// Read and parse the resolv.conf at `path`.
pub fn read(path: &Path) -> Result<Dns, ResolvError> {
    let display = path.display().to_string();
    if !path.is_absolute() {
        return Err(ResolvError::Relative(display));
    }
    // Non-blocking: opening a FIFO must not wait for a writer. The path comes
    // from a NAD, so only a regular file (symlinks followed, as
    // /etc/resolv.conf often is one) is read, and only up to the cap.
    let io = |source| ResolvError::Io {
        path: display.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ResolvError::NotRegular(display));
    }
    let mut text = String::new();
    file.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| ResolvError::Io {
            path: display.clone(),
            source,
        })?;
    if text.len() as u64 > MAX_BYTES {
        return Err(ResolvError::TooLarge(display));
    }
    Ok(parse(&text))
}

/// Parse resolv.conf text: `nameserver` (first field), `domain`, `search`,
/// `options`; `#` and `;` start comments.
pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => dns.nameservers.extend(fields.next().map(str::to_owned)),
            Some("domain") => dns.domain = fields.next().map(str::to_owned),
            Some("search") => dns.search = fields.map(str::to_owned).collect(),
            Some("options") => dns.options = fields.map(str::to_owned).collect(),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_and_skips_comments() {
        let dns = parse(
            "# generated\nnameserver 192.0.2.3\nnameserver 192.0.2.4 extra\n; note\ndomain example.com\nsearch a.example b.example\noptions ndots:2 edns0\n",
        );
        assert_eq!(dns.nameservers, vec!["192.0.2.3", "192.0.2.4"]);
        assert_eq!(dns.domain.as_deref(), Some("example.com"));
        assert_eq!(dns.search, vec!["a.example", "b.example"]);
        assert_eq!(dns.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        for path in ["/dev/zero", "/dev/null", "/proc/self"] {
            let err = read(Path::new(path)).unwrap_err();
            assert!(matches!(err, ResolvError::NotRegular(_)), "{path}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(read(&fifo), Err(ResolvError::NotRegular(_))));
        let large = dir.path().join("large");
        std::fs::File::create(&large)
            .unwrap()
            .set_len(MAX_BYTES + 10)
            .unwrap();
        assert!(matches!(read(&large), Err(ResolvError::TooLarge(_))));
    }

    #[test]
    fn relative_and_missing_paths_are_errors() {
        assert!(matches!(
            read(Path::new("resolv.conf")),
            Err(ResolvError::Relative(_))
        ));
        let err = read(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            err.to_string().starts_with("open /nonexistent/resolv.conf"),
            "{err}"
        );
    }
}
