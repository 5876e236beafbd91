//! Closing a client while calls run, per-call options and request ids, against the
//! bundled server.
// The core's error carries Problem Details inline (see src/lib.rs).
#![allow(clippy::result_large_err)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use quill::client::{Call, MessageStream, Reply};
use quill::QuillError;

const FAULT: &str = "test.v1.FaultService";

fn slow(ms: u64) -> Call {
    Call::json(FAULT, "Slow", format!(r#"{{"ms": {ms}}}"#))
}

/// One counter of the server's `Stats`.
fn stat(c: &quill::QuillClient, key: &str) -> u64 {
    let reply = c
        .run_blocking::<Reply>(Call::json(FAULT, "Stats", "{}"))
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap()[key]
        .as_u64()
        .unwrap()
}

fn is_closed_error(e: &QuillError) -> bool {
    matches!(e, QuillError::Cancelled { reason } if reason.contains("client is closed"))
}

#[test]
fn close_ends_calls_in_flight_on_every_path() {
    let server = Server::start(&[]);
    let client = Arc::new(server.client());
    // Blocking calls: more threads than lanes, so some run on the workers.
    let blocking: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            std::thread::spawn(move || c.run_blocking::<Reply>(slow(30_000)))
        })
        .collect();
    // An async call awaited from another runtime, and an open stream.
    let c = client.clone();
    let asynchronous = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(c.run::<Reply>(slow(30_000)))
    });
    let stream: MessageStream = client
        .run_blocking(Call::json(
            FAULT,
            "StreamSlow",
            r#"{"messages": 100, "interval_ms": 1000}"#,
        ))
        .unwrap();
    // Close once the server holds all seven slow calls (the stream is open already).
    let watcher = server.client();
    let waiting = Instant::now();
    while stat(&watcher, "in_flight") < 7 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the slow calls did not all reach the server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stat(&watcher, "open_streams"), 1);
    let start = Instant::now();
    client.close();
    for t in blocking {
        let e = t.join().unwrap().unwrap_err();
        assert!(is_closed_error(&e), "{e}");
    }
    let e = asynchronous.join().unwrap().unwrap_err();
    assert!(is_closed_error(&e), "{e}");
    let next = client.block_on(async {
        loop {
            match stream.next_message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    });
    assert!(is_closed_error(&next.unwrap_err()));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "calls ended at once, not at their 30 s end: {:?}",
        start.elapsed()
    );
    // Later calls fail the same way, and closing again is harmless.
    let e = client
        .run_blocking::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "x"))
        .unwrap_err();
    assert!(is_closed_error(&e), "{e}");
    assert!(e.to_string().contains("echo.v1.EchoService/Echo"), "{e}");
    client.close();
    assert!(client.is_closed());
}

#[test]
fn per_call_timeout_and_headers() {
    let server = Server::start(&[]);
    let client = server.client();
    let e = client
        .run_blocking::<Reply>(slow(2_000).timeout_ms(100))
        .unwrap_err();
    assert!(matches!(e, QuillError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("100 ms"), "{e}");
    // The call's header wins over the client's, and the server echoes the request id.
    client.set_header("X-Request-ID", "from-client").unwrap();
    let fail = || Call::json(FAULT, "Error", r#"{"status": 503}"#);
    let problem = |e: QuillError| match e {
        QuillError::Status { problem } => problem,
        other => panic!("expected a status error, got {other}"),
    };
    let p = problem(client.run_blocking::<Reply>(fail()).unwrap_err());
    assert_eq!(p.request_id.as_deref(), Some("from-client"));
    let p = problem(
        client
            .run_blocking::<Reply>(fail().header("x-request-id", "per-call"))
            .unwrap_err(),
    );
    assert_eq!(p.request_id.as_deref(), Some("per-call"));
    // Without one, the server's own id is reported.
    client.remove_header("X-Request-ID");
    let p = problem(client.run_blocking::<Reply>(fail()).unwrap_err());
    assert!(
        p.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("quill-")),
        "{:?}",
        p.request_id
    );
    // Per-call headers are validated like the client's, before anything is sent.
    for (name, value) in [
        ("X-Bad", "a\r\nb"),
        ("Bad Name", "v"),
        ("Content-Type", "x"),
    ] {
        let e = client
            .run_blocking::<Reply>(
                Call::proto("echo.v1.EchoService", "Echo", "").header(name, value),
            )
            .unwrap_err();
        assert!(matches!(e, QuillError::InvalidArgument { .. }), "{e}");
        assert!(!e.to_string().contains("a\r\nb"));
    }
}
