//! A small Server-Sent Events client for the tests, over a raw `TcpStream`.
//!
//! Raw TCP rather than an HTTP library because some tests need what a library hides: a
//! subscriber that stops reading after the headers (back-pressure), and a disconnect that
//! happens *now* (`shutdown`), not when a reader thread next wakes up.
//!
//! [`EventStream::open`] sends the request and reads the status and headers. A non-200 answer
//! is returned whole as a [`Refused`]. On 200, a reader thread decodes the chunked body, parses
//! it into [`Item`]s (events, comments, the end of the stream) and hands them over a channel,
//! so that every wait has a timeout. [`EventStream::open_paused`] starts no reader: nothing is
//! read past the headers until [`EventStream::resume`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Pins the socket's receive buffer to a small size. Linux grows a receive buffer by itself up
/// to `net.ipv4.tcp_rmem`'s maximum (32 MiB on some machines), so a paused subscriber could
/// otherwise soak up a whole flood in the kernel and never push back on the server; an
/// explicit `SO_RCVBUF` turns that growth off.
fn limit_receive_buffer(socket: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket descriptor, and a pointer to an int of the length given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        result,
        0,
        "setsockopt(SO_RCVBUF): {}",
        io::Error::last_os_error()
    );
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` if absent, as in browsers).
    pub event: String,
    /// The `id:` field, if the event has one.
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl Event {
    /// The id as a seq. Panics if there is none.
    #[track_caller]
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the event has no numeric id: {self:?}"))
    }

    /// The data as JSON. Panics if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

/// What the reader thread sees on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete event.
    Event(Event),
    /// A comment line (`:` …): the server's heartbeat.
    Comment,
    /// The server closed the stream (or the connection broke).
    Closed,
}

/// A non-200 answer to a stream request.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Refused {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON. Panics if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }
}

/// An open event stream.
pub struct EventStream {
    socket: TcpStream,
    /// Set until [`EventStream::resume`] hands it to the reader thread.
    paused: Option<BufReader<TcpStream>>,
    chunked: bool,
    items: Option<Receiver<Item>>,
    reader: Option<JoinHandle<()>>,
    /// The headers of the 200 answer (names lower case).
    pub headers: Vec<(String, String)>,
}

/// How long to wait for the status and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// How to open a stream.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// Sent as `Authorization: Bearer …` if given.
    pub bearer: Option<&'a str>,
    /// Sent as `Last-Event-ID` if given.
    pub last_event_id: Option<&'a str>,
}

impl EventStream {
    /// `GET base+path` as an event stream, reading in a background thread.
    pub fn open(base: &str, path: &str, request: Request<'_>) -> Result<EventStream, Refused> {
        let mut stream = EventStream::open_paused(base, path, request)?;
        stream.resume();
        Ok(stream)
    }

    /// Like [`EventStream::open`] with a bearer token, panicking unless the answer is 200.
    #[track_caller]
    pub fn subscribe(base: &str, path: &str, token: &str) -> EventStream {
        let request = Request {
            bearer: Some(token),
            ..Request::default()
        };
        EventStream::open(base, path, request)
            .unwrap_or_else(|r| panic!("opening {path}: {} {}", r.status, r.body))
    }

    /// Sends the request and reads the answer's head; reads nothing of the body (the server's
    /// writes pile up in the socket buffers) until [`EventStream::resume`].
    pub fn open_paused(
        base: &str,
        path: &str,
        request: Request<'_>,
    ) -> Result<EventStream, Refused> {
        let host = base
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not an http:// URL: {base}"));
        let mut socket = TcpStream::connect(host).expect("connecting to the server");
        socket.set_nodelay(true).expect("TCP_NODELAY");
        limit_receive_buffer(&socket);
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        if let Some(token) = request.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(id) = request.last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        socket
            .write_all(head.as_bytes())
            .expect("sending the request");

        socket
            .set_read_timeout(Some(HEADER_TIMEOUT))
            .expect("setting a read timeout");
        let mut reader = BufReader::new(socket.try_clone().expect("cloning the socket"));
        let status_line = read_line(&mut reader).expect("reading the status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut reader).expect("reading a header");
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header: {line:?}"));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        if status != 200 {
            let mut body = Vec::new();
            if chunked {
                Chunked::new(reader).read_to_end(&mut body)
            } else {
                let length: u64 = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                reader.take(length).read_to_end(&mut body)
            }
            .expect("reading the error body");
            return Err(Refused {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        // From here on a read waits for as long as the stream lives; the tests' own timeouts
        // are on the channel.
        socket.set_read_timeout(None).expect("clearing the timeout");
        Ok(EventStream {
            socket,
            paused: Some(reader),
            chunked,
            items: None,
            reader: None,
            headers,
        })
    }

    /// A header of the 200 answer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Starts reading (once).
    pub fn resume(&mut self) {
        let Some(reader) = self.paused.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let chunked = self.chunked;
        self.items = Some(rx);
        self.reader = Some(std::thread::spawn(move || {
            let body: Box<dyn Read + Send> = if chunked {
                Box::new(Chunked::new(reader))
            } else {
                Box::new(reader)
            };
            parse_events(BufReader::new(body), |item| tx.send(item).is_ok());
        }));
    }

    /// The next item within `timeout`, or `None` if nothing came.
    pub fn next_item(&self, timeout: Duration) -> Option<Item> {
        let items = self.items.as_ref().expect("the stream is being read");
        match items.recv_timeout(timeout) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            // The reader sends `Closed` before it ends, and that was taken already.
            Err(RecvTimeoutError::Disconnected) => Some(Item::Closed),
        }
    }

    /// The next event (skipping comments), or `None` if the stream closed. Panics after
    /// `timeout` without one.
    #[track_caller]
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left) {
                Some(Item::Event(event)) => return Some(event),
                Some(Item::Comment) => continue,
                Some(Item::Closed) => return None,
                None => panic!("no event within {timeout:?}"),
            }
        }
    }

    /// The next event, which must be a `change`; returns its seq and object.
    #[track_caller]
    pub fn next_change(&self, timeout: Duration) -> (u64, Value) {
        match self.next_event(timeout) {
            Some(event) if event.event == "change" => (event.seq(), event.json()),
            other => panic!("expected a change event, got {other:?}"),
        }
    }

    /// Waits for the server to close the stream, returning the events that came first.
    /// Panics if it stays open for `timeout`.
    #[track_caller]
    pub fn until_closed(&self, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left) {
                Some(Item::Event(event)) => events.push(event),
                Some(Item::Comment) => {}
                Some(Item::Closed) => return events,
                None => panic!("the stream stayed open for {timeout:?}; got {events:?}"),
            }
        }
    }

    /// Asserts that nothing but comments arrive for `quiet`.
    #[track_caller]
    pub fn expect_quiet(&self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_item(left) {
                None | Some(Item::Comment) => {}
                Some(other) => panic!("expected nothing more, got {other:?}"),
            }
        }
    }

    /// Disconnects at once (the server sees the connection close).
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Parses an event stream (the WHATWG rules, as far as the server uses them), calling `emit`
/// for every item until the stream ends or `emit` returns false.
fn parse_events(mut body: impl BufRead, mut emit: impl FnMut(Item) -> bool) {
    let mut event = String::new();
    let mut id = None;
    let mut data: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match body.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !data.is_empty() || !event.is_empty() || id.is_some() {
                let item = Item::Event(Event {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut event)
                    },
                    id: id.take(),
                    data: std::mem::take(&mut data).join("\n"),
                });
                if !emit(item) {
                    return;
                }
            }
            continue;
        }
        if line.starts_with(':') {
            if !emit(Item::Comment) {
                return;
            }
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_string(),
            "id" => id = Some(value.to_string()),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    emit(Item::Closed);
}

/// HTTP/1.1 chunked transfer decoding.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let size_line = read_line(&mut self.inner)?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {size_line:?}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside a chunk",
                ));
            }
            let n = available.len().min(self.left).min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.inner.consume(n);
        self.left -= n;
        if self.left == 0 {
            // The CRLF after the chunk's data.
            read_line(&mut self.inner)?;
        }
        Ok(n)
    }
}
