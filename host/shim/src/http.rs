//! The shim's side of the daemon protocol: one HTTP/1.1 request over a unix
//! socket, one response read back, all within a total deadline.
//!
//! The response is framed by `Content-Length`, by `Transfer-Encoding:
//! chunked`, or by the server closing the connection, whichever the headers
//! say (RFC 9112 section 6.3); interim 1xx responses are skipped.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest whole response accepted.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A complete HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line as sent, without its line ending.
    pub status_line: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why no response was had.
#[derive(Debug)]
pub enum ExchangeError {
    /// Connecting to the socket failed (missing, refused, permission).
    Connect(io::Error),
    /// Sending the request or reading the answer failed.
    Io(io::Error),
    /// The daemon closed the connection before a complete response.
    Closed { received: usize },
    /// The deadline passed first.
    TimedOut,
    /// The bytes are not an HTTP/1.x response.
    Malformed(String),
}

/// The request head for a JSON body of `length` bytes.
pub fn request_head(length: usize) -> String {
    format!(
        "POST /cni HTTP/1.1\r\nHost: multus-wasm\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// Sends `body` as `POST /cni` to the unix socket at `socket` and reads the
/// response, all within `timeout`.
pub fn exchange(socket: &Path, body: &[u8], timeout: Duration) -> Result<Response, ExchangeError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(socket, deadline)?;
    let mut request = request_head(body.len()).into_bytes();
    request.extend_from_slice(body);
    let sent = send(&mut stream, &request, deadline);
    if let Err(ExchangeError::TimedOut) = sent {
        return Err(ExchangeError::TimedOut);
    }
    // A daemon may answer (and close) before reading the whole request: read
    // what it said before reporting a failed send.
    match (receive(&mut stream, deadline), sent) {
        (Ok(response), _) => Ok(response),
        (Err(ExchangeError::Closed { received: 0 }), Err(error)) => Err(error),
        (Err(error), _) => Err(error),
    }
}

/// Connects within the deadline. A unix `connect` blocks, with no timeout
/// std can set, while the listener's backlog is full (a wedged daemon), so
/// it runs on a small thread that is abandoned (and dies with the process)
/// when the deadline passes first.
fn connect(socket: &Path, deadline: Instant) -> Result<UnixStream, ExchangeError> {
    let (sender, receiver) = mpsc::channel();
    let path = socket.to_owned();
    let spawned = thread::Builder::new()
        .name(String::from("connect"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = sender.send(UnixStream::connect(path));
        });
    if spawned.is_err() {
        return UnixStream::connect(socket).map_err(ExchangeError::Connect);
    }
    match receiver.recv_timeout(remaining(deadline)?) {
        Ok(connected) => connected.map_err(ExchangeError::Connect),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ExchangeError::TimedOut),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ExchangeError::Connect(io::Error::other(
            "the connecting thread ended without a result",
        ))),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, ExchangeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ExchangeError::TimedOut)
    } else {
        Ok(left)
    }
}

fn io_error(error: io::Error) -> ExchangeError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExchangeError::TimedOut,
        _ => ExchangeError::Io(error),
    }
}

fn send(stream: &mut UnixStream, mut bytes: &[u8], deadline: Instant) -> Result<(), ExchangeError> {
    while !bytes.is_empty() {
        stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(ExchangeError::Io)?;
        match stream.write(bytes) {
            Ok(0) => return Err(ExchangeError::Io(io::ErrorKind::WriteZero.into())),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_error(error)),
        }
    }
    Ok(())
}

fn receive(stream: &mut UnixStream, deadline: Instant) -> Result<Response, ExchangeError> {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(ExchangeError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buffer, true)
                    .map_err(ExchangeError::Malformed)?
                    .ok_or(ExchangeError::Closed {
                        received: buffer.len(),
                    });
            }
            Ok(read) => {
                buffer.extend_from_slice(&chunk[..read]);
                if let Some(response) =
                    parse_response(&buffer, false).map_err(ExchangeError::Malformed)?
                {
                    return Ok(response);
                }
                if buffer.len() > MAX_RESPONSE {
                    return Err(ExchangeError::Malformed(format!(
                        "response larger than {MAX_RESPONSE} bytes"
                    )));
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ExchangeError::Closed {
                    received: buffer.len(),
                });
            }
            Err(error) => return Err(io_error(error)),
        }
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Parses a response from the bytes read so far. `eof`: the server closed
/// the connection after them. `Ok(None)`: not complete yet. An error
/// describes why the bytes are not an HTTP/1.x response.
pub fn parse_response(bytes: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut start = 0;
    loop {
        let Some((status, status_line, framing, body_start)) = parse_head(bytes, start)? else {
            return Ok(None);
        };
        if (100..200).contains(&status) {
            // An interim response (100 Continue, 102, 103): the real one follows.
            start = body_start;
            continue;
        }
        let rest = &bytes[body_start..];
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            framing
        };
        let body = match framing {
            Framing::Length(length) if rest.len() >= length => Some(rest[..length].to_vec()),
            Framing::Length(_) => None,
            Framing::Chunked => dechunk(rest)?,
            Framing::Close => eof.then(|| rest.to_vec()),
        };
        return Ok(body.map(|body| Response {
            status,
            status_line,
            body,
        }));
    }
}

/// The next line from `from`: its text (without `\r\n` or `\n`) and where
/// the following line starts; `None` when no line end has arrived yet.
fn line(bytes: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let offset = bytes.get(from..)?.iter().position(|&byte| byte == b'\n')?;
    let end = from + offset;
    let text = &bytes[from..end];
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    Some((text, end + 1))
}

type Head = (u16, String, Framing, usize);

fn parse_head(bytes: &[u8], start: usize) -> Result<Option<Head>, String> {
    let too_long = || format!("response head longer than {MAX_HEAD} bytes");
    let Some((status_text, mut next)) = line(bytes, start) else {
        return if bytes.len() - start > MAX_HEAD {
            Err(too_long())
        } else {
            Ok(None)
        };
    };
    let status_line = String::from_utf8_lossy(status_text).into_owned();
    let status = parse_status_line(&status_line)
        .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    loop {
        let Some((header, after)) = line(bytes, next) else {
            return if bytes.len() - start > MAX_HEAD {
                Err(too_long())
            } else {
                Ok(None)
            };
        };
        next = after;
        if header.is_empty() {
            break;
        }
        let header = String::from_utf8_lossy(header);
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("malformed header line: {header:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            for item in value.split(',') {
                let length: usize = item
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid Content-Length: {value:?}"))?;
                if content_length.is_some_and(|known| known != length) {
                    return Err(format!("conflicting Content-Length headers: {value:?}"));
                }
                content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding frames the message.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    if next - start > MAX_HEAD {
        return Err(too_long());
    }
    let framing = match (transfer_encoding, chunked, content_length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) => Framing::Close,
        (false, _, Some(length)) => Framing::Length(length),
        (false, _, None) => Framing::Close,
    };
    Ok(Some((status, status_line, framing, next)))
}

/// `HTTP/1.x NNN reason` → NNN.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let minor = parts.next()?;
    let code = parts.next()?;
    if minor.len() != 1 || !minor.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    if code.len() != 3 || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

/// Decodes a chunked body once it is complete (`Ok(None)` before that).
/// Chunk extensions and trailers are read and ignored.
fn dechunk(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    // First pass: find the chunks without copying, so that a body arriving
    // in many reads is not copied once per read.
    let mut chunks = Vec::new();
    let mut position = 0;
    loop {
        let Some((size_line, data_start)) = line(bytes, position) else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(size_line);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|size| *size <= MAX_RESPONSE)
            .ok_or_else(|| format!("invalid chunk size line: {size_text:?}"))?;
        if size == 0 {
            // Trailer fields, then an empty line.
            let mut next = data_start;
            loop {
                let Some((trailer, after)) = line(bytes, next) else {
                    return Ok(None);
                };
                if trailer.is_empty() {
                    break;
                }
                next = after;
            }
            break;
        }
        let data_end = data_start + size;
        match bytes.get(data_end) {
            None => return Ok(None),
            Some(b'\r' | b'\n') => {}
            Some(_) => return Err(String::from("chunk data longer than its size")),
        }
        let Some((rest, after)) = line(bytes, data_end) else {
            return Ok(None);
        };
        if !rest.is_empty() {
            return Err(String::from("chunk data longer than its size"));
        }
        chunks.push(data_start..data_end);
        position = after;
    }
    let mut body = Vec::with_capacity(chunks.iter().map(|chunk| chunk.len()).sum());
    for chunk in chunks {
        body.extend_from_slice(&bytes[chunk]);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> Response {
        parse_response(bytes, false)
            .expect("well-formed")
            .expect("complete")
    }

    #[test]
    fn content_length_frames_the_body_and_extra_bytes_are_ignored() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 5\r\n\r\nhello, more";
        let response = complete(text);
        assert_eq!(response.status, 200);
        assert_eq!(response.status_line, "HTTP/1.1 200 OK");
        assert_eq!(response.body, b"hello");
    }

    #[test]
    fn every_prefix_of_a_response_is_incomplete_not_an_error() {
        let texts: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"code\": 0}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"co\r\n7\r\nde\": 0}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ];
        for text in texts {
            for end in 0..text.len() {
                assert_eq!(
                    parse_response(&text[..end], false),
                    Ok(None),
                    "{:?}",
                    String::from_utf8_lossy(&text[..end])
                );
            }
            assert_eq!(complete(text).body, b"{\"code\": 0}");
        }
    }

    #[test]
    fn chunked_wins_over_content_length_and_bare_newlines_are_accepted() {
        let text =
            b"HTTP/1.1 200 OK\nContent-Length: 100\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n";
        assert_eq!(complete(text).body, b"abc");
    }

    #[test]
    fn without_length_or_chunking_the_body_ends_at_close() {
        let text = b"HTTP/1.0 503 Service Unavailable\r\n\r\ndaemon starting";
        assert_eq!(parse_response(text, false), Ok(None));
        let response = parse_response(text, true).unwrap().unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, b"daemon starting");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let text = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let response = complete(text);
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"ok"[..])
        );
    }

    #[test]
    fn truncated_answers_stay_incomplete_at_close() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert_eq!(parse_response(text, true), Ok(None));
        assert_eq!(parse_response(b"", true), Ok(None));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for text in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
        ] {
            assert!(
                parse_response(text, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert!(parse_response(&endless, false).is_err());
    }

    #[test]
    fn request_head_is_the_documented_one() {
        assert_eq!(
            request_head(42),
            "POST /cni HTTP/1.1\r\nHost: multus-wasm\r\nContent-Type: application/json\r\nContent-Length: 42\r\nConnection: close\r\n\r\n"
        );
    }
}
