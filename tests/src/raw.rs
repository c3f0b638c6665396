//! Raw HTTP/1.1 over a TCP socket, for what no HTTP client sends: a `Content-Length` that
//! lies, headers sent one line at a time, paths with `..` left in, requests never finished.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What came back on a raw connection.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The status, if a status line arrived.
    pub status: Option<u16>,
    /// The status line and headers, as text.
    pub head: String,
    /// The body bytes received (all of `Content-Length`, unless the connection ended first).
    pub body: Vec<u8>,
    /// Whether the server closed (or reset) the connection while we read.
    pub closed: bool,
}

impl RawReply {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body as JSON. Panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `127.0.0.1:port` of a base URL such as `http://127.0.0.1:4000`.
pub fn authority(url: &str) -> &str {
    url.strip_prefix("http://").unwrap_or(url)
}

/// Connects to the server at `url` and writes `request` as it is.
pub fn send(url: &str, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(authority(url)).expect("connecting to the server");
    stream.write_all(request).expect("writing the request");
    stream
}

/// Reads one answer from `stream`: the head, then the body up to its `Content-Length` (or
/// until the server closes). Gives up after `timeout` and returns what it has.
pub fn read_reply(stream: &mut TcpStream, timeout: Duration) -> RawReply {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length = content_length(&head);
            if length.is_some_and(|n| bytes.len() - end - 4 >= n) {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("setting a timeout");
        match stream.read(&mut buffer) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let (head, body) = match find(&bytes, b"\r\n\r\n") {
        Some(end) => {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let mut body = bytes[end + 4..].to_vec();
            // Whatever followed (a next answer on the same connection) is not this body.
            if let Some(length) = content_length(&head) {
                body.truncate(length);
            }
            (head, body)
        }
        None => (String::from_utf8_lossy(&bytes).into_owned(), Vec::new()),
    };
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawReply {
        status,
        head,
        body,
        closed,
    }
}

/// [`send`] then [`read_reply`].
pub fn exchange(url: &str, request: &[u8], timeout: Duration) -> RawReply {
    let mut stream = send(url, request);
    read_reply(&mut stream, timeout)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
