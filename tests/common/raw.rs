//! The one scripted raw-HTTP/1.1 server of the Rust integration tests: a listener on
//! 127.0.0.1 whose connections run a script (a closure) written against the socket,
//! for the servers that misbehave on purpose (faults, redirects, idle closes, bombs).
//! Well-behaved calls go to the bundled `quill-server` instead (`super::Server`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a test server thread waits on a socket before giving up.
pub const SERVER_PATIENCE: Duration = Duration::from_secs(30);

/// Reads one request (head and Content-Length body) and returns its head; `None` at EOF.
pub fn read_request(r: &mut impl BufRead) -> Option<String> {
    read_request_with_body(r).map(|(head, _)| head)
}

/// [`read_request`], keeping the body too.
pub fn read_request_with_body(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

pub fn patient(sock: &TcpStream) {
    sock.set_read_timeout(Some(SERVER_PATIENCE)).unwrap();
    sock.set_write_timeout(Some(SERVER_PATIENCE)).unwrap();
}

/// A listener on 127.0.0.1:0 served by `serve` on its own thread.
pub fn server<T: Send + 'static>(
    serve: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    server_on("127.0.0.1:0".parse().unwrap(), serve)
}

/// [`server`] on a given address (a server restarted on the same port).
pub fn server_on<T: Send + 'static>(
    addr: SocketAddr,
    serve: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind(addr).expect("bind the test server");
    let addr = listener.local_addr().unwrap();
    (addr, thread::spawn(move || serve(listener)))
}

/// A listener on 127.0.0.1:0 running `handle` for every connection on a thread of its
/// own (patient sockets). Runs until the test process ends.
pub fn serve_each(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let handle = Arc::new(handle);
    let (addr, _) = server(move |listener| {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            patient(&sock);
            let handle = handle.clone();
            thread::spawn(move || handle(sock));
        }
    });
    addr
}

/// Accepts one connection, reads one request, then hands the socket to `answer`.
pub fn one_shot(answer: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    server(move |listener| {
        let (sock, _) = listener.accept().unwrap();
        patient(&sock);
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        read_request(&mut reader).expect("a request");
        answer(sock);
    })
}

/// Blocks until the peer closes the connection (or the patience runs out).
pub fn wait_for_close(mut sock: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
}

/// Writes `prefix`, then `byte` every 50 ms until the peer goes away.
pub fn drip(mut sock: TcpStream, prefix: &[u8], byte: &[u8]) {
    sock.set_nodelay(true).unwrap();
    if sock.write_all(prefix).is_err() {
        return;
    }
    let until = Instant::now() + SERVER_PATIENCE;
    while Instant::now() < until {
        if sock.write_all(byte).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every request in arrival order: (connection number, head).
pub type Log = Arc<Mutex<Vec<(usize, String)>>>;

/// A keep-alive server answering request number `n` (over all connections, from 0)
/// with `respond(n)`; an empty answer closes the connection instead (a server that
/// died after reading the request). Runs until the test process ends.
pub fn keep_alive_server(
    respond: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> (SocketAddr, Log) {
    let respond = Arc::new(respond);
    let log: Log = Arc::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let (addr, _) = server({
        let log = log.clone();
        move |listener| {
            for (conn, sock) in listener.incoming().enumerate() {
                let Ok(sock) = sock else { return };
                let (respond, log, requests) = (respond.clone(), log.clone(), requests.clone());
                thread::spawn(move || {
                    patient(&sock);
                    let mut reader = BufReader::new(sock.try_clone().unwrap());
                    let mut sock = sock;
                    while let Some(head) = read_request(&mut reader) {
                        log.lock().unwrap().push((conn, head));
                        let answer = respond(requests.fetch_add(1, Ordering::SeqCst));
                        if answer.is_empty() || sock.write_all(&answer).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, log)
}

pub fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub const STREAM_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nTransfer-Encoding: chunked\r\n\r\n";

/// One HTTP/1.1 chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A DATA frame (protocol.md §3) with a one-byte length.
pub fn data_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    let mut out = vec![payload.len() as u8, 0x01];
    out.extend_from_slice(payload);
    out
}

/// Answers one request with `head` and `body`, then holds the connection until the
/// client closes it.
pub fn reply_once(head: String, body: Vec<u8>) -> SocketAddr {
    let (addr, _) = one_shot(move |mut sock| {
        let _ = sock.write_all(head.as_bytes());
        let _ = sock.write_all(&body);
        wait_for_close(sock);
    });
    addr
}

/// An address nothing listens on: bound a moment ago, then closed.
pub fn refused_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The head of a 200 response with a zstd body of `len` bytes.
pub fn zstd_head(len: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: {len}\r\n\r\n")
}

/// A zstd body (concatenated frames, a few bytes per 128 KiB) decoding to `unit`
/// repeated to about `total` bytes.
pub fn zstd_repeat(unit: &[u8], total: usize) -> Vec<u8> {
    let block = unit.repeat(128 * 1024 / unit.len());
    zstd::bulk::compress(&block, 3)
        .unwrap()
        .repeat(total / block.len())
}
