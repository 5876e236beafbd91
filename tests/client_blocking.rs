//! The blocking calls (`*_blocking`), which the calling thread drives itself on the
//! client's lane, or on the shared workers when another thread holds the lane. The same
//! path serves the Python face's `call`, `call_json`, `send_tensor` and `call_tensor`.
#![allow(clippy::result_large_err)]

mod common;

use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw, Server};
use quill::client::{Call, Reply};
use quill::{DType, QuillClient, QuillError, Tensor};
use serde_json::{json, Value};

const ECHO: (&str, &str) = ("echo.v1.EchoService", "Echo");

#[test]
fn blocking_calls_give_what_the_async_calls_give() {
    let s = Server::start(&[]);
    for compression in [false, true] {
        let c = s.client_with(|cfg| cfg.enable_compression = compression);
        let body = Bytes::from(vec![42u8; 300_000]);
        let blocking = c
            .run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, body.clone()))
            .map(Reply::into_body)
            .unwrap();
        let awaited = c
            .block_on(async {
                c.run::<Reply>(Call::proto(ECHO.0, ECHO.1, body.clone()))
                    .await
                    .map(Reply::into_body)
            })
            .unwrap();
        assert_eq!(blocking, body);
        assert_eq!(awaited, body);

        let req = Bytes::from(json!({"max_tokens": 3, "seed": 7}).to_string());
        let generate = |out: Bytes| serde_json::from_slice::<Value>(&out).unwrap();
        let a = generate(
            c.run_blocking::<Reply>(
                Call::json("inference.v1.LLMService", "Generate", req.clone()).idempotent(true),
            )
            .map(Reply::into_body)
            .unwrap(),
        );
        let b = generate(
            c.block_on(async {
                c.run::<Reply>(
                    Call::json("inference.v1.LLMService", "Generate", req).idempotent(true),
                )
                .await
                .map(Reply::into_body)
            })
            .unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a["tokens"].as_array().unwrap().len(), 3);

        let t =
            Tensor::from_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], vec![2], DType::Float32, None).unwrap();
        let up: Value = serde_json::from_slice(
            &c.run_blocking::<Reply>(Call::tensor(
                "tensor.v1.TensorService",
                "Upload",
                Tensor::clone(&t),
            ))
            .map(Reply::into_body)
            .unwrap(),
        )
        .unwrap();
        assert_eq!(up["shape"], json!([2]));
        let down = c
            .run_blocking::<Tensor>(Call::json(
                "tensor.v1.TensorService",
                "Download",
                json!({"shape": [4, 5], "dtype": "uint8"}).to_string(),
            ))
            .unwrap();
        assert_eq!(down.shape(), vec![4, 5]);
    }
}

#[test]
fn blocking_errors_are_the_same_typed_errors() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.timeout_ms = 300);
    let start = Instant::now();
    let e = c
        .run_blocking::<Reply>(Call::json(
            "test.v1.FaultService",
            "Slow",
            r#"{"ms": 5000}"#,
        ))
        .map(Reply::into_body)
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(e, QuillError::Timeout { .. }), "{e}");
    // On time: never before the 300 ms deadline (set inside the call, after `start`),
    // and long before the 5 s reply; the slack above is for a loaded machine.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(3_000), "{elapsed:?}");
    // The lane is free again and its pool still works after the abandoned call.
    assert_eq!(
        c.run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, "after"))
            .map(Reply::into_body)
            .unwrap(),
        "after"
    );

    let e = c
        .run_blocking::<Reply>(Call::json(
            "test.v1.FaultService",
            "Error",
            r#"{"status": 429, "title": "Slow down"}"#,
        ))
        .map(Reply::into_body)
        .unwrap_err();
    let QuillError::Status { problem } = e else {
        panic!("expected a status error, got {e:?}");
    };
    assert_eq!(
        (problem.status, problem.title.as_deref()),
        (429, Some("Slow down"))
    );

    let e = c
        .run_blocking::<Reply>(Call::proto("bad service", "Echo", Bytes::new()))
        .map(Reply::into_body)
        .unwrap_err();
    assert!(matches!(e, QuillError::InvalidArgument { .. }), "{e}");

    let refused = raw::refused_addr();
    let c = QuillClient::new(format!("http://{refused}"), 2_000, false).unwrap();
    let e = c
        .run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, Bytes::new()))
        .map(Reply::into_body)
        .unwrap_err();
    assert!(matches!(e, QuillError::Connection { .. }), "{e}");
}

#[test]
fn threads_share_one_client_through_the_lane_and_the_workers() {
    let s = Server::start(&[]);
    let c = Arc::new(s.client());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..100 {
                    let body = Bytes::from(format!("{i}-{j}"));
                    let out = c
                        .run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, body.clone()))
                        .map(Reply::into_body)
                        .unwrap();
                    assert_eq!(out, body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn inside_an_async_runtime_it_is_an_error_not_a_panic() {
    let s = Server::start(&[]);
    let c = s.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(async {
            c.run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, Bytes::new()))
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(
        matches!(&e, QuillError::InvalidArgument { reason } if reason.contains("async")),
        "{e}"
    );
    // Outside the runtime the same client works.
    assert_eq!(
        c.run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, "ok"))
            .map(Reply::into_body)
            .unwrap(),
        "ok"
    );
}

/// Nothing polls the lane between calls, so a keep-alive connection the server closes
/// while idle (servers do after a few seconds to a minute) is only noticed by the next
/// call. That call must still succeed, even when not idempotent.
#[test]
fn a_connection_the_server_closed_while_idle_is_replaced() {
    /// Idle time between the server's close and the next call: how long the connection
    /// sat closed in the pool (the client catches up on its sockets after 1 ms idle; a
    /// close racing a call is a risk for every HTTP client, see `LaneGuard::catch_up`).
    const IDLE: Duration = Duration::from_millis(200);
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    // The test tells the server when to close (once the reply is in and the connection
    // pooled), and the server says when it has: no race between the two sleeps.
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let (addr, _) = raw::server(move |listener| {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            count.fetch_add(1, Ordering::SeqCst);
            // One request per connection, answered with keep-alive, then closed while
            // the client believes the connection is reusable.
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let Some((_, body)) = raw::read_request_with_body(&mut reader) else {
                continue;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let mut sock = sock;
            sock.write_all(head.as_bytes()).unwrap();
            sock.write_all(&body).unwrap();
            if close_rx.recv().is_err() {
                return;
            }
            drop((reader, sock));
            let _ = closed_tx.send(());
        }
    });
    let close_while_idle = || {
        close_tx.send(()).unwrap();
        closed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server closes the connection");
        std::thread::sleep(IDLE);
    };
    let c = QuillClient::new(format!("http://{addr}"), 5_000, false).unwrap();
    for i in 0..3 {
        let body = Bytes::from(format!("call {i}"));
        let out = c
            .run_blocking::<Reply>(Call::proto(ECHO.0, ECHO.1, body.clone()))
            .map(Reply::into_body)
            .unwrap_or_else(|e| panic!("call {i} after an idle close: {e}"));
        assert_eq!(out, body);
        close_while_idle();
    }
    // The async path, whose workers notice the close as it happens.
    for i in 3..5 {
        let body = Bytes::from(format!("call {i}"));
        let out = c
            .block_on(async {
                c.run::<Reply>(Call::proto(ECHO.0, ECHO.1, body.clone()))
                    .await
                    .map(Reply::into_body)
            })
            .unwrap_or_else(|e| panic!("async call {i} after an idle close: {e}"));
        assert_eq!(out, body);
        close_while_idle();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}
