//! Fault injection: the core client against misbehaving servers written here, as raw
//! HTTP/1.1 bytes on 127.0.0.1 (no bundled server needed). Each test says what the
//! server does wrong and what the client must report; docs/reliability.md lists the
//! observed outcomes.
// Helpers return `quill::Result`; its error carries a `Problem` inline (see lib.rs).
#![allow(clippy::result_large_err)]

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quill::client::{Call, Reply};
use quill::codec::tensor::{encode_frame, encode_meta};
use quill::protocol::tensor_frame;
use quill::{ClientConfig, DType, MessageStream, QuillClient, QuillError, Tensor, TensorMeta};

mod common;
use common::raw::*;

const SERVICE: &str = "fault.v1.FaultService";
/// Whole-call timeout of the timeout tests.
const TIMEOUT_MS: u64 = 1_500;
/// How late past its deadline a call may still end and count as "on time". The promise
/// is that the timeout fires, never early: a slow machine may run the timer late, so the
/// ceiling is generous, and still far below `SERVER_PATIENCE` (30 s), where the
/// misbehaving servers give up and would end the call themselves.
const LATE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Client side

fn client_with(base: &str, timeout_ms: u64, edit: impl FnOnce(&mut ClientConfig)) -> QuillClient {
    let mut cfg = ClientConfig::new(base);
    cfg.timeout_ms = timeout_ms;
    edit(&mut cfg);
    QuillClient::with_config(cfg).unwrap()
}

fn client(addr: SocketAddr, timeout_ms: u64) -> QuillClient {
    client_with(&format!("http://{addr}"), timeout_ms, |_| {})
}

fn call(c: &QuillClient, idempotent: bool) -> quill::Result<Bytes> {
    c.block_on(async {
        c.run::<Reply>(
            Call::proto(SERVICE, "Call", Bytes::from_static(b"request")).idempotent(idempotent),
        )
        .await
        .map(Reply::into_body)
    })
}

fn open(c: &QuillClient) -> quill::Result<MessageStream> {
    c.block_on(c.run::<MessageStream>(Call::proto(
        SERVICE,
        "Stream",
        Bytes::from_static(b"request"),
    )))
}

/// Reads messages until the stream ends or fails.
fn drain(c: &QuillClient, s: &MessageStream) -> (Vec<Bytes>, quill::Result<()>) {
    let mut got = Vec::new();
    loop {
        match c.block_on(s.next_message()) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// Prints an observed outcome (shown with `--nocapture`; docs/reliability.md quotes them).
fn observed(outcome: &dyn std::fmt::Display) {
    let test = thread::current().name().unwrap_or("?").to_owned();
    eprintln!("observed [{test}]: {outcome}");
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// A `Timeout` error that came on time (see [`assert_on_time`]).
fn assert_timely_timeout<T: std::fmt::Debug>(r: quill::Result<T>, elapsed: Duration) {
    let e = r.expect_err("expected a timeout");
    observed(&format!("{e} (after {elapsed:?})"));
    assert!(matches!(e, QuillError::Timeout { .. }), "{e:?}");
    assert_on_time(elapsed);
}

/// `elapsed`, measured from before the call started, is no shorter than the timeout (the
/// deadline is set inside the call, so a timer that never fires early cannot end it
/// sooner) and at most [`LATE`] past it.
fn assert_on_time(elapsed: Duration) {
    let limit = Duration::from_millis(TIMEOUT_MS);
    assert!(elapsed >= limit, "timed out early: {elapsed:?}");
    assert!(elapsed <= limit + LATE, "timed out late: {elapsed:?}");
}

// ---------------------------------------------------------------------------------
// Peak memory

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The memory tests run one at a time so each sees its own peak.
static MEMORY: Mutex<()> = Mutex::new(());

/// Runs `f` and returns its result and how far it raised the process's peak RSS.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, u64) {
    // Resetting the peak (writing 5 to clear_refs) makes the measurement exact where
    // allowed; otherwise the growth over the previous peak is still an upper bound.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_kib();
    let out = f();
    let growth = peak_rss_kib().saturating_sub(before);
    observed(&format!("peak RSS grew {growth} KiB"));
    (out, growth)
}

const MAX_GROWTH_KIB: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------
// Tests

#[test]
fn connection_refused_is_a_quick_connection_error() {
    let addr = refused_addr();
    let c = client(addr, 10_000);
    let (r, elapsed) = timed(|| call(&c, false));
    let e = r.unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
    // Quick: not the 10 s timeout (a refused connect takes microseconds; the slack is
    // for a loaded machine).
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // Streams fail the same way at open.
    assert!(matches!(open(&c), Err(QuillError::Connection { .. })));
}

#[test]
fn silent_server_times_out_on_time() {
    let (addr, server) = one_shot(wait_for_close);
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| call(&c, false));
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn silent_server_after_stream_headers_times_out_on_time() {
    let (addr, server) = one_shot(|mut sock| {
        sock.write_all(STREAM_HEAD).unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| {
        let s = open(&c)?;
        drain(&c, &s).1
    });
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn close_mid_body_is_an_error_not_a_short_reply() {
    // Content-Length promises 100 bytes; 10 arrive, then the connection closes.
    let (addr, server) = one_shot(|mut sock| {
        sock.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .unwrap();
    });
    let e = call(&client(addr, 10_000), false).unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
    assert!(e.to_string().contains("broke off"), "{e}");
    server.join().unwrap();

    // A chunked unary body cut off before its terminating chunk.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(chunk(b"partial"));
        sock.write_all(&bytes).unwrap();
    });
    let e = call(&client(addr, 10_000), false).unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
    server.join().unwrap();

    // The same for a tensor download: META promises 24 bytes, the body stops early.
    let (addr, server) = one_shot(|mut sock| {
        let meta = [
            0x02, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0,
            0,
        ];
        let mut frames = vec![0x10, 0, 0, 0, 0, 0, 0, 0, meta.len() as u8];
        frames.extend(meta);
        frames.extend([0x11, 0, 0, 0, 0, 0, 0, 0, 24]);
        frames.extend([0u8; 10]);
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: {}\r\n\r\n",
            frames.len() + 14 + 9
        )
        .into_bytes();
        bytes.extend(frames);
        sock.write_all(&bytes).unwrap();
    });
    let c = client(addr, 10_000);
    let e = c
        .block_on(c.run::<Tensor>(Call::proto(SERVICE, "Tensor", Bytes::new())))
        .unwrap_err();
    assert!(matches!(e, QuillError::Stream { .. }), "{e:?}");
    server.join().unwrap();
}

#[test]
fn close_delimited_unary_body_cannot_show_truncation() {
    // No Content-Length and no chunked encoding: HTTP/1.1 lets the close end the body,
    // so a server that dies mid-body looks like a complete short reply. protocol.md §2
    // requires Content-Length on unary replies; this documents the limit of the check.
    let (addr, server) = one_shot(|mut sock| {
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\n\r\nshort")
            .unwrap();
    });
    let reply = call(&client(addr, 10_000), false).unwrap();
    assert_eq!(&reply[..], b"short");
    server.join().unwrap();
}

#[test]
fn close_mid_stream_is_a_stream_error() {
    // Frames, then the connection closes without END_STREAM and without the
    // terminating chunk.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(chunk(&[data_frame(b"one"), data_frame(b"two")].concat()));
        sock.write_all(&bytes).unwrap();
    });
    let c = client(addr, 10_000);
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert_eq!(
        got,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
    let e = end.unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Stream { .. }), "{e:?}");
    server.join().unwrap();

    // A well-formed chunked body (terminating chunk sent) that lacks END_STREAM.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(chunk(&data_frame(b"one")));
        bytes.extend(b"0\r\n\r\n");
        sock.write_all(&bytes).unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, 10_000);
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert_eq!(got.len(), 1);
    let e = end.unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Stream { .. }), "{e:?}");
    assert!(e.to_string().contains("END_STREAM"), "{e}");
    // The body itself ended cleanly, so the connection went back to the pool: only
    // dropping the client (the stream holds its runtime) closes it.
    drop((s, c));
    server.join().unwrap();

    // Cut inside a frame: the header promises 100 payload bytes, 3 arrive.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(chunk(&[100, 0x01, b'a', b'b', b'c']));
        bytes.extend(b"0\r\n\r\n");
        sock.write_all(&bytes).unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, 10_000);
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert!(got.is_empty());
    let e = end.unwrap_err();
    observed(&e);
    assert!(
        matches!(&e, QuillError::Stream { reason } if reason.contains("inside a frame")),
        "{e:?}"
    );
    drop((s, c));
    server.join().unwrap();
}

#[test]
fn slowloris_head_drip_times_out_on_time() {
    // The response head never ends: one header byte every 50 ms.
    let (addr, server) = one_shot(|sock| drip(sock, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"));
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| call(&c, false));
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn slowloris_body_drip_times_out_on_time() {
    let (addr, server) = one_shot(|sock| {
        drip(
            sock,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 1000000\r\n\r\n",
            b"z",
        )
    });
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| call(&c, false));
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn slowloris_stream_drip_times_out_on_time() {
    // A frame whose 100-byte payload arrives one byte (one chunk) every 50 ms, with an
    // idle timeout far longer than the call timeout: the call deadline must hold.
    let (addr, server) = one_shot(|sock| {
        let mut prefix = STREAM_HEAD.to_vec();
        prefix.extend(chunk(&[100, 0x01]));
        drip(sock, &prefix, &chunk(b"x"));
    });
    let c = client_with(&format!("http://{addr}"), TIMEOUT_MS, |cfg| {
        cfg.idle_timeout_ms = Some(60_000);
    });
    let (r, elapsed) = timed(|| {
        let s = open(&c)?;
        drain(&c, &s).1
    });
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn slowloris_error_body_drip_times_out_on_time() {
    // A 503 whose Problem Details body drips forever: reading the error body is part of
    // the call and stays under its deadline. The status is known by then, so the call
    // ends at the deadline with `Status` 503 (body: whatever arrived), not `Timeout`.
    let (addr, server) = one_shot(|sock| {
        drip(
            sock,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nContent-Length: 100000\r\n\r\n{",
            b" ",
        )
    });
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| call(&c, false));
    let e = r.unwrap_err();
    observed(&format!("{e} (after {elapsed:?})"));
    assert!(
        matches!(&e, QuillError::Status { problem } if problem.status == 503),
        "{e:?}"
    );
    assert_on_time(elapsed);
    drop(c);
    server.join().unwrap();
}

#[test]
fn steady_stream_still_ends_at_the_call_deadline() {
    // Whole messages keep coming every 50 ms: the timeout covers the whole stream.
    let (addr, server) = one_shot(|sock| drip(sock, STREAM_HEAD, &chunk(&data_frame(b"tick"))));
    let c = client(addr, TIMEOUT_MS);
    let start = Instant::now();
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert!(got.len() > 5, "{} messages", got.len());
    assert_timely_timeout(end, start.elapsed());
    drop((s, c));
    server.join().unwrap();
}

#[test]
fn garbage_instead_of_http_is_a_connection_error() {
    let cases: [&[u8]; 4] = [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        &[0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a],
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ];
    for garbage in cases {
        // The server then keeps the connection open: the error must not wait for EOF.
        let (addr, server) = one_shot(move |mut sock| {
            sock.write_all(garbage).unwrap();
            wait_for_close(sock);
        });
        let c = client(addr, 10_000);
        let (r, elapsed) = timed(|| call(&c, false));
        let e = r.unwrap_err();
        observed(&e);
        assert!(
            matches!(e, QuillError::Connection { .. }),
            "{:?}: {e:?}",
            String::from_utf8_lossy(garbage)
        );
        // Not the 10 s timeout, nor the server's close (it waits for the client's).
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        drop(c);
        server.join().unwrap();
    }

    // A valid head, then a broken chunked body.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(b"zz\r\nnot a chunk\r\n");
        sock.write_all(&bytes).unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, 10_000);
    let e = call(&c, false).unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
    drop(c);
    server.join().unwrap();

    // The same broken chunking inside a stream is a Stream error.
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        bytes.extend(chunk(&data_frame(b"ok")));
        bytes.extend(b"zz\r\n");
        sock.write_all(&bytes).unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, 10_000);
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert_eq!(got.len(), 1);
    assert!(matches!(end, Err(QuillError::Stream { .. })), "{end:?}");
    drop((s, c));
    server.join().unwrap();
}

#[test]
fn content_length_shorter_than_the_body() {
    // Content-Length 2 but "hello" sent on a keep-alive connection. HTTP framing is
    // authoritative, so the reply is "he"; the surplus "llo" must never leak into the
    // next call on that connection.
    let (addr, log) = keep_alive_server(|n| {
        if n == 0 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello".to_vec()
        } else {
            ok_response("second")
        }
    });
    let c = client(addr, 10_000);
    assert_eq!(&call(&c, false).unwrap()[..], b"he");
    for _ in 0..3 {
        assert_eq!(&call(&c, false).unwrap()[..], b"second");
    }
    let conns: Vec<usize> = log.lock().unwrap().iter().map(|(conn, _)| *conn).collect();
    observed(&format!("connection per request: {conns:?}"));
    // The poisoned connection is not reused.
    assert_ne!(conns[0], conns[1], "{conns:?}");
}

#[test]
fn content_length_longer_than_the_body() {
    // The body stops short and the connection stays open: the client waits for the
    // promised bytes until the call deadline, and never returns the short body.
    let (addr, server) = one_shot(|mut sock| {
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello")
            .unwrap();
        wait_for_close(sock);
    });
    let c = client(addr, TIMEOUT_MS);
    let (r, elapsed) = timed(|| call(&c, false));
    assert_timely_timeout(r, elapsed);
    drop(c);
    server.join().unwrap();
}

/// Writes `head`, then zeros in 64 KiB writes until `total` bytes or the peer goes.
fn stream_zeros(mut sock: TcpStream, head: &[u8], total: u64, chunked: bool) {
    if sock.write_all(head).is_err() {
        return;
    }
    let zeros = vec![0u8; 64 * 1024];
    let piece = if chunked { chunk(&zeros) } else { zeros };
    let mut sent = 0u64;
    while sent < total {
        if sock.write_all(&piece).is_err() {
            return;
        }
        sent += 64 * 1024;
    }
}

#[test]
fn oversized_body_is_refused_with_bounded_memory() {
    let _serial = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    const GIB: u64 = 1 << 30;
    let limited = |addr: SocketAddr| {
        client_with(&format!("http://{addr}"), 30_000, |cfg| {
            cfg.max_decoded_size = 1 << 20;
        })
    };

    // Content-Length 1 GiB of zeros.
    let (addr, server) = one_shot(|sock| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {GIB}\r\n\r\n");
        stream_zeros(sock, head.as_bytes(), GIB, false);
    });
    let c = limited(addr);
    let ((r, elapsed), growth) = peak_growth(|| timed(|| call(&c, false)));
    let e = r.unwrap_err();
    observed(&e);
    assert!(
        matches!(&e, QuillError::Protocol { reason } if reason.contains("max_decoded_size")),
        "{e:?}"
    );
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew {growth} KiB");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    drop(c);
    server.join().unwrap();

    // The same without a Content-Length (chunked): refused once 1 MiB is passed.
    let (addr, server) = one_shot(|sock| {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream_zeros(sock, head, GIB, true);
    });
    let c = limited(addr);
    let (r, growth) = peak_growth(|| call(&c, false));
    let e = r.unwrap_err();
    observed(&e);
    assert!(
        matches!(&e, QuillError::Protocol { reason } if reason.contains("max_decoded_size")),
        "{e:?}"
    );
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew {growth} KiB");
    drop(c);
    server.join().unwrap();

    // A stream message larger than max_decoded_size (but under the 4 MiB frame cap).
    let (addr, server) = one_shot(|mut sock| {
        let mut bytes = STREAM_HEAD.to_vec();
        // varint 3 MiB = 0x300000 → 80 80 c0 01
        bytes.extend(chunk(&[0x80, 0x80, 0xc0, 0x01, 0x01]));
        sock.write_all(&bytes).unwrap();
        let zeros = chunk(&vec![0u8; 64 * 1024]);
        for _ in 0..48 {
            if sock.write_all(&zeros).is_err() {
                return;
            }
        }
        wait_for_close(sock);
    });
    let c = limited(addr);
    let s = open(&c).unwrap();
    let (got, end) = drain(&c, &s);
    assert!(got.is_empty());
    assert!(
        matches!(&end, Err(QuillError::Protocol { reason }) if reason.contains("max_decoded_size")),
        "{end:?}"
    );
    drop((s, c));
    server.join().unwrap();
}

/// How long past its 300 ms timeout a bomb test may end. Spinning through a bomb takes
/// tens of seconds (62 s for the stream bomb before its fix, docs/reliability.md), so a
/// few seconds of slack for a loaded machine still tells the two apart.
const BOMB_SLACK: Duration = Duration::from_secs(3);

/// A zstd frame that decodes to `decoded` zero bytes: RLE blocks of 128 KiB, 4 bytes
/// each (the format's floor, so 1 GiB takes 32 KiB), no content size in the header.
fn zstd_bomb(decoded: u64) -> Vec<u8> {
    const BLOCK: u32 = 128 * 1024;
    // Magic, frame header descriptor (no content size, not single-segment), window
    // descriptor 0x38 (2^17 = 128 KiB).
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    let blocks = decoded / u64::from(BLOCK);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        // Block header: last flag, type 1 (RLE), regenerated size; then the byte.
        let header = (BLOCK << 3) | (1 << 1) | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

#[test]
fn decompression_bomb_stops_at_the_limit_with_bounded_memory() {
    let _serial = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let bomb = zstd_bomb(1 << 30);
    assert!(bomb.len() <= 32 * 1024 + 6, "{}", bomb.len());
    let (addr, server) = one_shot(move |mut sock| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Encoding: zstd\r\nContent-Length: {}\r\n\r\n",
            bomb.len()
        );
        let _ = sock.write_all(head.as_bytes());
        let _ = sock.write_all(&bomb);
        wait_for_close(sock);
    });
    let c = client_with(&format!("http://{addr}"), 30_000, |cfg| {
        cfg.max_decoded_size = 1 << 20;
        cfg.enable_compression = true;
    });
    let ((r, elapsed), growth) = peak_growth(|| timed(|| call(&c, false)));
    let e = r.unwrap_err();
    observed(&e);
    assert!(
        matches!(&e, QuillError::Protocol { reason } if reason.contains("max_decoded_size")),
        "{e:?}"
    );
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew {growth} KiB");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    drop(c);
    server.join().unwrap();
}

#[test]
fn cross_origin_redirects_never_carry_credentials() {
    for (status, reason) in [
        (301, "Moved Permanently"),
        (302, "Found"),
        (303, "See Other"),
        (307, "Temporary Redirect"),
        (308, "Permanent Redirect"),
    ] {
        // The second server records every request it gets.
        let (other, log) = keep_alive_server(|_| ok_response("stolen"));
        for target in [
            // Same IP, other host name and port.
            format!("http://localhost:{}/steal", other.port()),
            // Same host name, other port.
            format!("http://127.0.0.1:{}/steal", other.port()),
        ] {
            let (addr, server) = one_shot(move |mut sock| {
                let answer = format!(
                    "HTTP/1.1 {status} {reason}\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
                );
                sock.write_all(answer.as_bytes()).unwrap();
                wait_for_close(sock);
            });
            let c = client(addr, 10_000);
            c.set_bearer_token("bearer-secret").unwrap();
            c.set_api_key("key-secret", None).unwrap();
            c.set_secret_header("X-Custom-Auth", "custom-secret")
                .unwrap();
            let e = call(&c, false).unwrap_err();
            observed(&e);
            assert!(
                matches!(&e, QuillError::Status { problem } if problem.status == status),
                "{status}: {e:?}"
            );
            assert!(!e.to_string().contains("secret"), "{e}");
            drop(c);
            server.join().unwrap();
        }
        // Give a (wrongly) followed redirect time to arrive before checking.
        thread::sleep(Duration::from_millis(100));
        let seen = log.lock().unwrap();
        for (_, head) in seen.iter() {
            let lower = head.to_ascii_lowercase();
            assert!(!lower.contains("authorization"), "{status}: {head}");
            assert!(!lower.contains("x-api-key"), "{status}: {head}");
            assert!(!lower.contains("secret"), "{status}: {head}");
        }
        assert!(seen.is_empty(), "{status}: the other origin was contacted");
    }
}

#[test]
fn same_origin_redirect_is_followed_with_headers() {
    let (addr, log) = keep_alive_server(|n| {
        match n {
        0 => b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /fault.v1.FaultService/Moved\r\nContent-Length: 0\r\n\r\n".to_vec(),
        _ => ok_response("moved"),
    }
    });
    let c = client(addr, 10_000);
    c.set_api_key("key-1", None).unwrap();
    assert_eq!(&call(&c, false).unwrap()[..], b"moved");
    let seen = log.lock().unwrap();
    assert!(
        seen[1].1.starts_with("POST /fault.v1.FaultService/Moved "),
        "{}",
        seen[1].1
    );
    assert!(seen[1].1.to_ascii_lowercase().contains("x-api-key: key-1"));
}

#[test]
fn restarted_server_is_reached_on_the_next_call() {
    for idempotent in [false, true] {
        // Server A answers one call and keeps the connection alive, then stops
        // (listener and connection closed) when told to.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (addr, a) = server(move |listener| {
            let (sock, _) = listener.accept().unwrap();
            patient(&sock);
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            read_request(&mut reader).unwrap();
            (&sock).write_all(&ok_response("from A")).unwrap();
            let _ = stop_rx.recv();
        });
        let c = client(addr, 10_000);
        assert_eq!(&call(&c, idempotent).unwrap()[..], b"from A");
        stop_tx.send(()).unwrap();
        a.join().unwrap();

        // Server B on the same port; the client still pools the dead connection.
        let (_, b) = server_on(addr, move |listener| {
            let (sock, _) = listener.accept().unwrap();
            patient(&sock);
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            read_request(&mut reader).unwrap();
            (&sock).write_all(&ok_response("from B")).unwrap();
            wait_for_close(sock);
        });
        thread::sleep(Duration::from_millis(50));
        assert_eq!(&call(&c, idempotent).unwrap()[..], b"from B");
        drop(c);
        b.join().unwrap();
    }
}

#[test]
fn connection_dying_after_the_request_is_retried_only_when_idempotent() {
    // The server answers the first request, then reads the second on the same
    // keep-alive connection and closes without answering: the request may have been
    // executed, so only a call marked idempotent (with max_retries > 0) is repeated.
    let respond = |n: usize| match n {
        0 | 2 => ok_response("first"),
        1 | 3 => Vec::new(), // close after reading
        _ => ok_response("retried"),
    };
    let (addr, log) = keep_alive_server(respond);
    let retrying = client_with(&format!("http://{addr}"), 10_000, |cfg| cfg.max_retries = 2);

    // Not idempotent: the error comes back, no retry.
    assert_eq!(&call(&retrying, false).unwrap()[..], b"first");
    let e = call(&retrying, false).unwrap_err();
    observed(&e);
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
    assert_eq!(log.lock().unwrap().len(), 2);

    // Idempotent: repeated on a fresh connection.
    assert_eq!(&call(&retrying, true).unwrap()[..], b"first");
    assert_eq!(&call(&retrying, true).unwrap()[..], b"retried");
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 5);
    assert_ne!(seen[3].0, seen[4].0, "the retry used a new connection");
}

#[test]
fn decompression_bomb_on_a_stream_keeps_the_deadline() {
    // 1 GiB of zeros decodes to endless `00 00` frames: empty frames with no known flag,
    // which §3 says to ignore. Nothing reaches the consumer, so only the deadline can
    // end the call, and it must, on time, with bounded memory.
    let _serial = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let bomb = zstd_bomb(1 << 30);
    let (addr, server) = one_shot(move |mut sock| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Encoding: zstd\r\nContent-Length: {}\r\n\r\n",
            bomb.len()
        );
        let _ = sock.write_all(head.as_bytes());
        let _ = sock.write_all(&bomb);
        wait_for_close(sock);
    });
    let c = client(addr, TIMEOUT_MS);
    let ((r, elapsed), growth) = peak_growth(|| {
        timed(|| {
            let s = open(&c)?;
            drain(&c, &s).1
        })
    });
    assert_timely_timeout(r, elapsed);
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew {growth} KiB");
    drop(c);
    server.join().unwrap();
}

#[test]
fn a_bomb_of_ignored_frames_cannot_outlast_the_timeouts() {
    // 1 GiB of `00 00` (empty frames without a known flag, ignored by §3) in ~200 KiB
    // of zstd: no message ever arrives, and before the fix the reader spun through
    // the whole of it, far past the deadline.
    for (timeout_ms, idle_ms) in [(300, None), (0, Some(300))] {
        let body = zstd_repeat(&[0x00, 0x00], 1 << 30);
        let addr = reply_once(zstd_head(body.len()), body);
        let mut cfg = ClientConfig::new(format!("http://{addr}"));
        cfg.timeout_ms = timeout_ms;
        cfg.idle_timeout_ms = idle_ms;
        let c = QuillClient::with_config(cfg).unwrap();
        let start = Instant::now();
        let r = c.block_on(async {
            let s = c
                .run::<MessageStream>(Call::proto("s.v1.S", "M", Bytes::new()))
                .await?;
            s.next_message().await
        });
        assert!(matches!(r, Err(QuillError::Timeout { .. })), "{r:?}");
        let elapsed = start.elapsed();
        let limit = Duration::from_millis(300);
        assert!(elapsed >= limit, "{elapsed:?}");
        assert!(elapsed < limit + BOMB_SLACK, "{elapsed:?}");
    }
}

#[test]
fn a_bomb_of_empty_payload_frames_cannot_outlast_the_deadline() {
    // TENSOR_META of a 1-byte tensor, then ~1 GiB of empty TENSOR_PAYLOAD frames
    // from a few hundred KiB of zstd.
    let meta = TensorMeta::new(vec![1], DType::Uint8, None).unwrap();
    let meta = encode_frame(tensor_frame::TENSOR_META, &encode_meta(&meta).unwrap()).unwrap();
    let mut body = zstd::bulk::compress(&meta, 1).unwrap();
    let empty_payload = encode_frame(tensor_frame::TENSOR_PAYLOAD, &[]).unwrap();
    body.extend(zstd_repeat(&empty_payload, 1 << 30));
    let addr = reply_once(zstd_head(body.len()), body);
    let mut cfg = ClientConfig::new(format!("http://{addr}"));
    cfg.timeout_ms = 300;
    let c = QuillClient::with_config(cfg).unwrap();
    let start = Instant::now();
    let r = c.block_on(c.run::<Tensor>(Call::proto("s.v1.S", "M", Bytes::new())));
    assert!(matches!(r, Err(QuillError::Timeout { .. })), "{r:?}");
    let elapsed = start.elapsed();
    let limit = Duration::from_millis(300);
    assert!(elapsed >= limit, "{elapsed:?}");
    assert!(elapsed < limit + BOMB_SLACK, "{elapsed:?}");
}
