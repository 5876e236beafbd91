//! QuillClient server and bidirectional streams against the bundled server.
#![cfg(feature = "server")]
// Test helpers return `quill::Result`; its error carries a `Problem` inline (see lib.rs).
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use quill::client::TokenStream;
use quill::client::{request_stream, Call, Reply};
use quill::{MessageStream, QuillClient, QuillError};
use serde_json::{json, Value};

mod common;
use common::Server;

const FAULT: &str = "test.v1.FaultService";

fn open(c: &QuillClient, method: &str, req: Value) -> quill::Result<MessageStream> {
    c.block_on(c.run::<MessageStream>(Call::json(FAULT, method, req.to_string())))
}

fn drain(c: &QuillClient, s: &MessageStream) -> (Vec<Bytes>, quill::Result<()>) {
    c.block_on(async {
        let mut got = Vec::new();
        loop {
            match s.next_message().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
    })
}

fn stats(c: &QuillClient) -> Value {
    let r = c
        .block_on(async {
            c.run::<Reply>(Call::json(FAULT, "Stats", "{}"))
                .await
                .map(Reply::into_body)
        })
        .unwrap();
    serde_json::from_slice(&r).unwrap()
}

/// Waits until the server reports no open stream and at least `cancelled` abandoned ones.
fn wait_for_server_to_see_the_client_go(c: &QuillClient, cancelled: u64) {
    let start = Instant::now();
    loop {
        let s = stats(c);
        if s["open_streams"] == 0 && s["cancelled_streams"].as_u64().unwrap() >= cancelled {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server still sees the stream: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token_batches(c: &QuillClient, stream: &TokenStream) -> Vec<quill::TokenBatch> {
    c.block_on(async {
        let mut out = Vec::new();
        while let Some(b) = stream.next_batch().await.unwrap() {
            out.push(b);
        }
        out
    })
}

#[test]
fn generate_stream_yields_token_batches() {
    let s = Server::start(&[]);
    for compression in [false, true] {
        let c = s.client_with(|cfg| cfg.enable_compression = compression);
        let req = json!({"prompt": "Alice", "max_tokens": 10, "batch_size": 4, "sequence_id": 7});
        let stream = c
            .block_on(c.run::<TokenStream>(Call::json(
                "inference.v1.LLMService",
                "GenerateStream",
                req.to_string(),
            )))
            .unwrap();
        let batches = token_batches(&c, &stream);
        assert_eq!(
            batches.iter().map(|b| b.tokens.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert!(batches.iter().all(|b| b.sequence_id == Some(7)));
        assert!(batches.last().unwrap().is_final);
        let positions: Vec<u32> = batches.iter().flat_map(|b| b.positions()).collect();
        assert_eq!(positions, (0..10).collect::<Vec<_>>());
        // Same tokens as the unary Generate.
        let unary = c
            .block_on(async {
                c.run::<Reply>(Call::json(
                    "inference.v1.LLMService",
                    "Generate",
                    req.to_string(),
                ))
                .await
                .map(Reply::into_body)
            })
            .unwrap();
        let unary: Value = serde_json::from_slice(&unary).unwrap();
        let text: String = batches.iter().map(|b| b.text()).collect();
        assert_eq!(unary["text"], text);
        // Finished streams stay finished.
        assert_eq!(c.block_on(stream.next_batch()).unwrap(), None);
    }
}

#[test]
fn truncated_stream_is_an_error_not_an_end() {
    let s = Server::start(&[]);
    for compression in [false, true] {
        let c = s.client_with(|cfg| cfg.enable_compression = compression);
        let stream = open(&c, "StreamCut", json!({"messages": 3})).unwrap();
        let (got, end) = drain(&c, &stream);
        assert_eq!(
            got,
            ["message 0", "message 1", "message 2"].map(Bytes::from)
        );
        let e = end.unwrap_err();
        assert!(matches!(e, QuillError::Stream { .. }), "{e}");
        // Sticky.
        assert_eq!(c.block_on(stream.next_message()).unwrap_err(), e);
    }
}

#[test]
fn oversized_frames_cancel_frames_and_combined_flags() {
    let s = Server::start(&[]);
    let c = s.client();
    let stream = open(&c, "StreamOversized", json!({})).unwrap();
    let (got, end) = drain(&c, &stream);
    assert!(got.is_empty());
    assert!(matches!(end, Err(QuillError::Protocol { .. })), "{end:?}");

    let stream = open(&c, "StreamCancel", json!({})).unwrap();
    let (got, end) = drain(&c, &stream);
    assert_eq!(got, [Bytes::from_static(b"before cancel")]);
    let e = end.unwrap_err();
    assert!(
        matches!(e, QuillError::Stream { .. }) && e.to_string().contains("CANCEL"),
        "{e}"
    );

    let stream = open(&c, "StreamCombined", json!({})).unwrap();
    let (got, end) = drain(&c, &stream);
    end.unwrap();
    assert_eq!(got, ["one", "two", "three"].map(Bytes::from));

    // A per-message cap below the frame limit.
    let c = s.client_with(|cfg| cfg.max_decoded_size = 4);
    let stream = open(&c, "StreamCombined", json!({})).unwrap();
    let (got, end) = drain(&c, &stream);
    assert_eq!(got.len(), 2);
    assert!(matches!(end, Err(QuillError::Protocol { .. })), "{end:?}");
}

#[test]
fn non_2xx_fails_the_open() {
    let s = Server::start(&[]);
    let c = s.client();
    let e = open(&c, "Error", json!({"status": 503, "title": "down"})).unwrap_err();
    match e {
        QuillError::Status { problem } => {
            assert_eq!(problem.status, 503);
            assert_eq!(problem.title.as_deref(), Some("down"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_timeouts() {
    let s = Server::start(&[]);
    // Idle timeout: the gap between messages (3 s) is longer than allowed (500 ms). It
    // fires no earlier than 500 ms after the response headers (after `start`), and
    // before the next message would come. (Over HTTP/3 the bundled server sees the
    // client's reset only at its next write: the 3 s gap keeps that wait short.)
    let c = s.client_with(|cfg| cfg.idle_timeout_ms = Some(500));
    let start = Instant::now();
    let stream = open(
        &c,
        "StreamSlow",
        json!({"messages": 2, "interval_ms": 3_000}),
    )
    .unwrap();
    let (got, end) = drain(&c, &stream);
    assert_eq!(got.len(), 1, "tick 0 comes at once");
    let e = end.unwrap_err();
    assert!(
        matches!(e, QuillError::Timeout { .. }) && e.to_string().contains("idle"),
        "{e}"
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // Within the idle timeout the stream completes.
    let stream = open(&c, "StreamSlow", json!({"messages": 4, "interval_ms": 20})).unwrap();
    let (got, end) = drain(&c, &stream);
    end.unwrap();
    assert_eq!(got.len(), 4);
    // The call timeout covers the whole stream: messages keep coming (so no gap is
    // long), yet the stream ends at the 300 ms deadline, long before its 50 s end.
    let c = s.client_with(|cfg| cfg.timeout_ms = 300);
    let start = Instant::now();
    let stream = open(
        &c,
        "StreamSlow",
        json!({"messages": 1000, "interval_ms": 50}),
    )
    .unwrap();
    let (got, end) = drain(&c, &stream);
    assert!(got.len() >= 2, "messages flowed: {}", got.len());
    let e = end.unwrap_err();
    assert_eq!(
        e.to_string(),
        "timed out: call to test.v1.FaultService/StreamSlow exceeded 300 ms"
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    wait_for_server_to_see_the_client_go(&c, 1);
}

#[test]
fn cancel_and_drop_close_the_connection() {
    let s = Server::start(&[]);
    let c = s.client();
    let stream = open(
        &c,
        "StreamSlow",
        json!({"messages": 1000, "interval_ms": 20}),
    )
    .unwrap();
    assert_eq!(
        c.block_on(stream.next_message()).unwrap().unwrap(),
        "tick 0"
    );
    assert_eq!(stats(&c)["open_streams"], 1);
    stream.cancel();
    let e = c.block_on(stream.next_message()).unwrap_err();
    assert!(matches!(e, QuillError::Cancelled { .. }), "{e}");
    assert!(stream.is_finished());
    wait_for_server_to_see_the_client_go(&c, 1);

    let stream = open(
        &c,
        "StreamSlow",
        json!({"messages": 1000, "interval_ms": 20}),
    )
    .unwrap();
    c.block_on(stream.next_message()).unwrap().unwrap();
    drop(stream);
    wait_for_server_to_see_the_client_go(&c, 2);

    // Cancelling a finished stream keeps its normal end.
    let stream = open(&c, "StreamCombined", json!({})).unwrap();
    let (_, end) = drain(&c, &stream);
    end.unwrap();
    stream.cancel();
    assert_eq!(c.block_on(stream.next_message()).unwrap(), None);
}

#[test]
fn cancel_wakes_a_pending_reader() {
    let s = Server::start(&[]);
    let c = s.client();
    let stream = std::sync::Arc::new(
        open(
            &c,
            "StreamSlow",
            json!({"messages": 3, "interval_ms": 5000}),
        )
        .unwrap(),
    );
    c.block_on(stream.next_message()).unwrap().unwrap();
    let reader = {
        let (c2, s2) = (c.runtime_handle(), stream.clone());
        std::thread::spawn(move || c2.block_on(s2.next_message()))
    };
    // Give the reader time to block in its wait (the next message is 5 s away, so it
    // cannot have finished); had it not started yet, the cancel would still end its read.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!reader.is_finished());
    let start = Instant::now();
    stream.cancel();
    let r = reader.join().unwrap();
    assert!(matches!(r, Err(QuillError::Cancelled { .. })), "{r:?}");
    // Woken by the cancel, not by the next message 5 s later.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bidi_is_full_duplex() {
    let s = Server::start(&[]);
    for compression in [false, true] {
        let c = s.client_with(|cfg| cfg.enable_compression = compression);
        let (tx, rx) = request_stream(4);
        let stream: MessageStream = c
            .block_on(c.run(Call::messages("echo.v1.EchoService", "BidiEcho", rx)))
            .unwrap();
        // Each echo arrives while the request stream is still open.
        for i in 0..5 {
            let msg = Bytes::from(format!("ping {i}"));
            c.block_on(tx.send(msg.clone())).unwrap();
            let echo = c.block_on(stream.next_message()).unwrap().unwrap();
            assert_eq!(echo, msg);
        }
        let big = Bytes::from(vec![9u8; 100_000]);
        c.block_on(tx.send(big.clone())).unwrap();
        assert_eq!(c.block_on(stream.next_message()).unwrap().unwrap(), big);
        c.block_on(tx.finish()).unwrap();
        assert_eq!(c.block_on(stream.next_message()).unwrap(), None);
    }
}

#[test]
fn a_request_stream_that_does_not_finish_is_broken_off_not_completed() {
    let s = Server::start(&[]);
    let c = s.client();
    for how in ["abort", "drop"] {
        let (tx, rx) = request_stream(4);
        let stream: MessageStream = c
            .block_on(c.run(Call::messages("echo.v1.EchoService", "BidiEcho", rx)))
            .unwrap();
        c.block_on(tx.send("ping".into())).unwrap();
        assert_eq!(c.block_on(stream.next_message()).unwrap().unwrap(), "ping");
        match how {
            "abort" => tx.abort("the producer failed"),
            _ => drop(tx),
        }
        // The server saw the request stream cut (no END_STREAM) and the client reports
        // why, instead of a clean end of the replies.
        let e = c.block_on(stream.next_message()).unwrap_err();
        let want = if how == "abort" {
            "the producer failed"
        } else {
            "without finish"
        };
        assert!(
            matches!(&e, QuillError::Cancelled { reason } if reason.contains(want)),
            "{how}: {e}"
        );
        // A client stream whose sender goes away never gets a reply for half a stream.
        let (tx, rx) = request_stream(4);
        c.block_on(tx.send("a".into())).unwrap();
        drop(tx);
        let r =
            c.block_on(c.run::<Reply>(Call::messages("echo.v1.EchoService", "ClientStream", rx)));
        assert!(matches!(&r, Err(QuillError::Cancelled { .. })), "{r:?}");
    }
}

#[test]
fn bidi_oversized_request_message_is_invalid_argument() {
    let s = Server::start(&[]);
    let c = s.client();
    let (tx, rx) = request_stream(4);
    let stream: MessageStream = c
        .block_on(c.run(Call::messages("echo.v1.EchoService", "BidiEcho", rx)))
        .unwrap();
    c.block_on(tx.send(Bytes::from_static(b"ok"))).unwrap();
    assert_eq!(c.block_on(stream.next_message()).unwrap().unwrap(), "ok");
    c.block_on(tx.send(Bytes::from(vec![
        0u8;
        quill::protocol::MAX_FRAME_PAYLOAD + 1
    ])))
    .unwrap();
    let e = c.block_on(stream.next_message()).unwrap_err();
    assert!(matches!(e, QuillError::InvalidArgument { .. }), "{e}");
}

#[test]
fn streams_from_a_foreign_executor() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.timeout_ms = 5_000);
    let foreign = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stream = foreign
        .block_on(c.run::<MessageStream>(Call::json(FAULT, "StreamCombined", "{}")))
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = foreign.block_on(stream.next_message()).unwrap() {
        got.push(String::from_utf8(m.to_vec()).unwrap());
    }
    assert_eq!(got, ["one", "two", "three"]);
    let tokens = foreign
        .block_on(c.run::<TokenStream>(Call::json(
            "inference.v1.LLMService",
            "GenerateStream",
            r#"{"max_tokens": 3, "batch_size": 2}"#,
        )))
        .unwrap();
    let first = foreign.block_on(tokens.next_batch()).unwrap().unwrap();
    assert_eq!(first.tokens.len(), 2);
    tokens.cancel();
    assert!(matches!(
        foreign.block_on(tokens.next_batch()),
        Err(QuillError::Cancelled { .. })
    ));
    // Payloads that are not token batches are protocol errors.
    let bad = foreign
        .block_on(c.run::<TokenStream>(Call::json(FAULT, "StreamCombined", "{}")))
        .unwrap();
    assert!(matches!(
        foreign.block_on(bad.next_batch()),
        Err(QuillError::Protocol { .. })
    ));
}

/// The end of a stream that breaks off, whether at its open (no response yet) or
/// while reading it.
fn broken_end(c: &QuillClient, method: &str, req: Value) -> QuillError {
    match open(c, method, req) {
        Err(e) => e,
        Ok(stream) => drain(c, &stream).1.unwrap_err(),
    }
}

#[test]
fn a_stream_that_breaks_off_is_a_stream_error_before_and_after_its_response() {
    let s = Server::start(&[]);
    let c = s.client();
    for _ in 0..10 {
        // Fails before its first byte: over HTTP/1.1 no response at all (the connection
        // closes), over HTTP/2 a reset stream, over HTTP/3 a reset stream.
        let e = broken_end(&c, "StreamBreak", json!({}));
        assert!(
            matches!(&e, QuillError::Stream { reason } if reason.contains("StreamBreak")),
            "{e:?}"
        );
        // Fails after its headers, with no message.
        let e = broken_end(&c, "StreamCut", json!({"messages": 0}));
        assert!(matches!(e, QuillError::Stream { .. }), "{e:?}");
    }
    // A unary call that gets no answer is a connection error, as before: it may be
    // retried, and there is no stream to break.
    let unary = c.run_blocking::<Reply>(Call::json(FAULT, "StreamBreak", "{}"));
    assert!(
        matches!(unary, Err(QuillError::Connection { .. })),
        "{unary:?}"
    );
    // A server that cannot be reached is a connection error for a stream too.
    let gone = Server::start(&[]);
    let url = gone.url.clone();
    drop(gone);
    let refused = s.client_with(|cfg| {
        cfg.base_url = url;
        // Over HTTP/3 nothing answers the UDP handshake: give up after 500 ms.
        cfg.http2.keep_alive_interval_ms = None;
        cfg.http2.keep_alive_timeout_ms = 500;
    });
    let e = broken_end(&refused, "StreamSlow", json!({}));
    assert!(matches!(e, QuillError::Connection { .. }), "{e:?}");
}
