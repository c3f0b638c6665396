//! A Server-Sent Events client on a plain socket, so that a test can hold a stream open, read
//! events with a timeout, and close it at a moment of its choosing (dropping the stream shuts
//! the socket, which the server sees as the client going away).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::Reply;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` if there was none).
    pub event: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The `id:` as a seq. Panics if there is none or it is not a number.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the event has no numeric id: {self:?}"))
    }

    /// The data as JSON. Panics if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("the event's data is not JSON ({e}): {self:?}"))
    }
}

/// What the reading thread hands over.
enum Item {
    Event(SseEvent),
    Closed(String),
}

/// An open event stream.
pub struct EventStream {
    items: mpsc::Receiver<Item>,
    socket: TcpStream,
    headers: HeaderMap,
    closed: Option<String>,
    comments: Arc<AtomicUsize>,
}

impl EventStream {
    /// Opens `GET {base}{path}` with `Accept: text/event-stream`, the bearer token if any and
    /// `extra` headers. Returns the whole answer instead if the status is not 200 (boxed: it
    /// is much larger than the stream).
    pub fn open(
        base: &str,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<EventStream, Box<Reply>> {
        let authority = base
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("only http:// bases are supported, got {base}"));
        let socket = TcpStream::connect(authority)
            .unwrap_or_else(|e| panic!("connecting to {authority} for events: {e}"));
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in extra {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        (&socket)
            .write_all(request.as_bytes())
            .expect("sending the events request");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let (status, headers) = read_head(&mut reader);
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("chunked"));
        let length = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let mut body = Body {
            inner: reader,
            chunked,
            left: length,
            done: false,
        };
        if status != 200 {
            let mut bytes = Vec::new();
            let _ = body.read_to_end(&mut bytes);
            return Err(Box::new(Reply {
                status,
                headers,
                body: bytes,
            }));
        }
        socket.set_read_timeout(None).unwrap();
        let (tx, items) = mpsc::channel();
        let comments = Arc::new(AtomicUsize::new(0));
        let counted = comments.clone();
        std::thread::spawn(move || read_events(BufReader::new(body), tx, counted));
        Ok(EventStream {
            items,
            socket,
            headers,
            closed: None,
            comments,
        })
    }

    /// The answer's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next event, or `None` if none came within `timeout` or the stream has ended (see
    /// [`closed`](EventStream::closed)). Comments (heartbeats) are counted, not returned.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        if self.closed.is_some() {
            return None;
        }
        match self.items.recv_timeout(timeout) {
            Ok(Item::Event(event)) => Some(event),
            Ok(Item::Closed(why)) => {
                self.closed = Some(why);
                None
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.closed = Some("the reader stopped".into());
                None
            }
        }
    }

    /// The next event of kind `change`, `reset` or `error` (skipping others), within `timeout`.
    pub fn next_within(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let event = self.next(left)?;
            if matches!(event.event.as_str(), "change" | "reset" | "error") {
                return Some(event);
            }
        }
    }

    /// Why the stream ended, once it has (as seen by [`next`](EventStream::next)).
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// How many comment lines (heartbeats) have arrived so far.
    pub fn comments(&self) -> usize {
        self.comments.load(Ordering::Relaxed)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Reads the status line and headers.
fn read_head(reader: &mut impl BufRead) -> (u16, HeaderMap) {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("reading the status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let mut headers = HeaderMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("reading a header");
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return (status, headers);
        }
        let (name, value) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("not a header line: {text:?}"));
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.trim()).expect("a header value"),
        );
    }
}

/// The body of an answer: chunked, of a known length, or up to the end of the connection.
struct Body<R> {
    inner: R,
    chunked: bool,
    /// Bytes left in this chunk (chunked) or in the body (known length).
    left: Option<usize>,
    done: bool,
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.chunked && self.left.unwrap_or(0) == 0 {
            if self.left == Some(0) {
                // The CRLF after the previous chunk.
                let mut crlf = String::new();
                self.inner.read_line(&mut crlf)?;
            }
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let hex = size.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("chunk size {hex:?}"),
                )
            })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = Some(size);
        }
        let want = match self.left {
            Some(left) => buf.len().min(left),
            None => buf.len(),
        };
        if want == 0 {
            self.done = true;
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
        }
        if let Some(left) = &mut self.left {
            *left -= n;
        }
        Ok(n)
    }
}

/// Parses events (per the SSE spec: fields until a blank line) and sends them on.
fn read_events(mut reader: impl BufRead, tx: mpsc::Sender<Item>, comments: Arc<AtomicUsize>) {
    let mut event = String::new();
    let mut id = None;
    let mut data: Vec<String> = Vec::new();
    let mut line = String::new();
    let why = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break "the server ended the stream".to_string(),
            Ok(_) => {}
            Err(e) => break format!("reading the stream: {e}"),
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if !data.is_empty() || !event.is_empty() {
                let item = Item::Event(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut event)
                    },
                    id: id.take(),
                    data: data.join("\n"),
                });
                data.clear();
                if tx.send(item).is_err() {
                    return;
                }
            }
            continue;
        }
        if text.starts_with(':') {
            comments.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "id" => id = Some(value.to_string()),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    };
    let _ = tx.send(Item::Closed(why));
}
