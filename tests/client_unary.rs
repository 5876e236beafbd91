//! QuillClient unary, client-streaming and tensor calls against the bundled server.
#![cfg(feature = "server")]
// Test helpers return `quill::Result`; its error carries a `Problem` inline (see lib.rs).
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quill::client::{request_stream, Call, Reply};
use quill::{DType, MessageStream, QuillClient, QuillError, Tensor};
use serde_json::{json, Value};

mod common;
use common::{raw, Server};

fn json_call(c: &QuillClient, service: &str, method: &str, body: Value) -> quill::Result<Value> {
    let reply = c.block_on(async {
        c.run::<Reply>(Call::json(service, method, body.to_string()))
            .await
            .map(Reply::into_body)
    })?;
    Ok(serde_json::from_slice(&reply).expect("JSON reply"))
}

fn fault(c: &QuillClient, method: &str, body: Value) -> quill::Result<Value> {
    json_call(c, "test.v1.FaultService", method, body)
}

fn problem(e: QuillError) -> quill::Problem {
    match e {
        QuillError::Status { problem } => problem,
        other => panic!("expected a Status error, got {other:?}"),
    }
}

fn requests(c: &QuillClient) -> u64 {
    fault(c, "Stats", json!({})).unwrap()["requests"]
        .as_u64()
        .unwrap()
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[test]
fn echo_round_trips_bytes() {
    let s = Server::start(&[]);
    let c = s.client();
    assert_eq!(c.base_url(), s.url);
    for body in [
        Vec::new(),
        b"hello".to_vec(),
        (0..300_000u32).map(|i| i as u8).collect(),
    ] {
        let reply = c
            .block_on(async {
                c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", body.clone()))
                    .await
                    .map(Reply::into_body)
            })
            .unwrap();
        assert_eq!(reply, body);
    }
}

#[test]
fn compressed_calls_round_trip() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.enable_compression = true);
    let body: Vec<u8> = b"quill ".iter().cycle().take(200_000).copied().collect();
    let reply = c
        .block_on(async {
            c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", body.clone()))
                .await
                .map(Reply::into_body)
        })
        .unwrap();
    assert_eq!(reply, body);
    // What the server saw: zstd only for bodies of 1024 bytes or more, and only after
    // a response said the server decodes it (the first call above was plain).
    let big = json_call(
        &c,
        "echo.v1.EchoService",
        "Headers",
        json!({ "pad": "x".repeat(2000) }),
    )
    .unwrap();
    assert_eq!(big["content-encoding"], "zstd");
    assert_eq!(big["accept-encoding"], "zstd");
    let small = json_call(&c, "echo.v1.EchoService", "Headers", json!({})).unwrap();
    assert!(small.get("content-encoding").is_none(), "{small}");
    // A fresh client has not heard from the server yet: its first body goes plain.
    let fresh = s.client_with(|cfg| cfg.enable_compression = true);
    let pad = json!({ "pad": "x".repeat(2000) });
    let first = json_call(&fresh, "echo.v1.EchoService", "Headers", pad.clone()).unwrap();
    assert!(first.get("content-encoding").is_none(), "{first}");
    assert_eq!(first["accept-encoding"], "zstd");
    let second = json_call(&fresh, "echo.v1.EchoService", "Headers", pad).unwrap();
    assert_eq!(second["content-encoding"], "zstd");
}

/// A server in the manner of existing Quill servers: a zstd request body gets a 500.
/// With `advertise` it answers `Accept-Encoding: zstd` (and then decodes it).
fn zstd_refusing_server(
    advertise: bool,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<bool>>>) {
    let seen: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let log = seen.clone();
    let addr = raw::serve_each(move |sock| {
        let mut reader = std::io::BufReader::new(sock.try_clone().unwrap());
        let mut sock = sock;
        while let Some((head, body)) = raw::read_request_with_body(&mut reader) {
            let zstd = head.to_ascii_lowercase().contains("content-encoding: zstd");
            log.lock().unwrap().push(zstd);
            let (status, reply) = if zstd && !advertise {
                ("500 Internal Server Error", b"invalid wire data".to_vec())
            } else if zstd {
                ("200 OK", zstd::bulk::decompress(&body, 1 << 20).unwrap())
            } else {
                ("200 OK", body)
            };
            let extra = if advertise {
                "Accept-Encoding: zstd\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/proto\r\n{extra}Content-Length: {}\r\n\r\n",
                reply.len()
            );
            if std::io::Write::write_all(&mut sock, &[head.as_bytes(), &reply].concat()).is_err() {
                return;
            }
        }
    });
    (addr, seen)
}

#[test]
fn compression_never_reaches_a_server_that_has_not_asked_for_it() {
    let body: Vec<u8> = b"tensor ".iter().cycle().take(8192).copied().collect();
    for advertise in [false, true] {
        let (addr, seen) = zstd_refusing_server(advertise);
        let c = QuillClient::with_config(quill::ClientConfig {
            enable_compression: true,
            ..quill::ClientConfig::new(format!("http://{addr}"))
        })
        .unwrap();
        for _ in 0..3 {
            let reply = c
                .run_blocking::<Reply>(Call::proto("echo.v1.EchoService", "Echo", body.clone()))
                .unwrap();
            assert_eq!(reply.body, body, "advertise={advertise}");
        }
        // Without the header every body went plain; with it, all but the first.
        let expected = if advertise {
            vec![false, true, true]
        } else {
            vec![false; 3]
        };
        assert_eq!(*seen.lock().unwrap(), expected);
    }
}

#[test]
fn request_headers_follow_the_protocol() {
    let s = Server::start(&[]);
    let c = s.client();
    c.set_header("X-Trace", "t-1").unwrap();
    c.set_api_key("key-1", None).unwrap();
    c.set_bearer_token("tok-1").unwrap();
    let h = json_call(&c, "echo.v1.EchoService", "Headers", json!({})).unwrap();
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["prefer"], common::expected_prefer());
    assert_eq!(
        h["user-agent"],
        format!("quill/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(h["x-trace"], "t-1");
    assert_eq!(h["x-api-key"], "key-1");
    assert_eq!(h["authorization"], "Bearer tok-1");
    assert!(h.get("accept-encoding").is_none(), "{h}");
    let reply = c
        .block_on(async {
            c.run::<Reply>(Call::proto("echo.v1.EchoService", "Headers", Bytes::new()))
                .await
                .map(Reply::into_body)
        })
        .unwrap();
    let h: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(h["content-type"], "application/proto");
    assert_eq!(h["accept"], "application/proto");
    // Removal and the user-agent override.
    assert!(c.remove_header("x-trace"));
    let c2 = s.client_with(|cfg| cfg.user_agent = Some("my-app/2".into()));
    let h = json_call(&c2, "echo.v1.EchoService", "Headers", json!({})).unwrap();
    assert_eq!(h["user-agent"], "my-app/2");
    let h = json_call(&c, "echo.v1.EchoService", "Headers", json!({})).unwrap();
    assert!(h.get("x-trace").is_none());
}

#[test]
fn generate_json() {
    let s = Server::start(&[]);
    let c = s.client();
    let r = json_call(
        &c,
        "inference.v1.LLMService",
        "Generate",
        json!({"prompt": "Alice", "max_tokens": 5}),
    )
    .unwrap();
    assert_eq!(r["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(r["finish_reason"], "length");
}

#[test]
fn problem_details_are_parsed() {
    let s = Server::start(&[]);
    let c = s.client();
    let p = problem(
        fault(
            &c,
            "Error",
            json!({"status": 429, "title": "Quota exceeded", "detail": "slow down", "retry_after": 2,
                   "proto_type": "pkg.QuotaError", "proto_detail_base64": "CgRwZWVy", "instance": "/x"}),
        )
        .unwrap_err(),
    );
    assert_eq!(p.status, 429);
    assert_eq!(p.title.as_deref(), Some("Quota exceeded"));
    assert_eq!(p.detail.as_deref(), Some("slow down"));
    assert_eq!(p.instance.as_deref(), Some("/x"));
    assert_eq!(p.problem_type.as_deref(), Some("urn:quill:error:429"));
    assert_eq!(p.proto_type.as_deref(), Some("pkg.QuotaError"));
    assert_eq!(p.proto_detail.as_deref(), Some(&b"\n\x04peer"[..]));
    assert_eq!(p.retry_after_ms, Some(2000));
    assert!(p.body.contains("kept"));

    let p = problem(fault(&c, "PlainText", json!({})).unwrap_err());
    assert_eq!(p.status, 502);
    assert!(p.body.contains("bad gateway from proxy"));
    let p = problem(fault(&c, "Html", json!({})).unwrap_err());
    assert_eq!(p.status, 503);
    let p = problem(fault(&c, "NoSuchMethod", json!({})).unwrap_err());
    assert_eq!(p.status, 404);
}

#[test]
fn timeout_covers_the_call() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.timeout_ms = 300);
    let start = Instant::now();
    let e = fault(&c, "Slow", json!({"ms": 5000})).unwrap_err();
    // Never before the deadline (set inside the call), long before the 5 s reply.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(
        e.to_string(),
        "timed out: call to test.v1.FaultService/Slow exceeded 300 ms"
    );
    // Fast calls still succeed on the same client.
    assert_eq!(fault(&c, "Slow", json!({"ms": 1})).unwrap()["slept_ms"], 1);
    // The timeout also covers a slow body, not just the headers.
    let c = s.client_with(|cfg| cfg.timeout_ms = 200);
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::json(
                "test.v1.FaultService",
                "StreamSlow",
                r#"{"messages":50,"interval_ms":50}"#,
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Timeout { .. }), "{e}");
}

/// `timeout_ms(0)` on a call means no deadline at all: shown on a client whose own
/// 300 ms timeout cuts the same 1 s call, on the blocking and async paths and for a
/// stream; a client-wide `timeout_ms` of 0 means the same.
#[test]
fn timeout_ms_0_waits_past_what_the_clients_timeout_cuts() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.timeout_ms = 300);
    let slow = || Call::json("test.v1.FaultService", "Slow", r#"{"ms": 1000}"#);
    let slept =
        |reply: Reply| serde_json::from_slice::<Value>(&reply.body).unwrap()["slept_ms"].clone();
    let e = c.run_blocking::<Reply>(slow()).unwrap_err();
    assert!(matches!(e, QuillError::Timeout { .. }), "{e}");

    let start = Instant::now();
    let reply = c.run_blocking::<Reply>(slow().timeout_ms(0)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1000));
    assert_eq!(slept(reply), 1000);
    let reply = c.block_on(c.run::<Reply>(slow().timeout_ms(0))).unwrap();
    assert_eq!(slept(reply), 1000);

    // Four messages 200 ms apart: 600 ms in all, past the client's 300 ms.
    let ticks = r#"{"messages": 4, "interval_ms": 200}"#;
    let start = Instant::now();
    let stream = c
        .run_blocking::<MessageStream>(
            Call::json("test.v1.FaultService", "StreamSlow", ticks).timeout_ms(0),
        )
        .unwrap();
    let mut got = 0;
    while c.block_on(stream.next_message()).unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, 4);
    assert!(start.elapsed() >= Duration::from_millis(600));

    let unbounded = s.client_with(|cfg| cfg.timeout_ms = 0);
    assert_eq!(unbounded.timeout_ms(), 0);
    assert_eq!(
        slept(unbounded.run_blocking::<Reply>(slow()).unwrap()),
        1000
    );
}

#[test]
fn auth_and_secrets() {
    let s = Server::start(&["--token", "s3cr3t-token"]);
    let c = s.client();
    let p = problem(fault(&c, "Auth", json!({})).unwrap_err());
    assert_eq!(p.status, 401);
    c.set_bearer_token("wrong-token").unwrap();
    let e = fault(&c, "Auth", json!({})).unwrap_err();
    assert!(!e.to_string().contains("wrong-token"));
    assert_eq!(problem(e).status, 401);
    c.set_bearer_token("s3cr3t-token").unwrap();
    assert_eq!(fault(&c, "Auth", json!({})).unwrap()["ok"], true);
    assert!(!format!("{c:?}").contains("s3cr3t"));
    assert!(c.headers().iter().all(|(_, v)| !v.contains("s3cr3t")));
    // An API key under Authorization replaces the bearer token.
    c.set_api_key("Bearer s3cr3t-token", Some("Authorization"))
        .unwrap();
    assert_eq!(fault(&c, "Auth", json!({})).unwrap()["ok"], true);
    let e = c.set_header("X-Api-Token", "bad\r\nvalue").unwrap_err();
    assert!(matches!(e, QuillError::InvalidArgument { .. }));
    assert!(!e.to_string().contains("bad"), "{e}");
}

#[test]
fn unreachable_server_is_a_connection_error() {
    let addr = raw::refused_addr();
    let c = QuillClient::new(format!("http://{addr}"), 5_000, false).unwrap();
    let start = Instant::now();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", Bytes::new()))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Connection { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let c = QuillClient::new("http://no-such-host.invalid", 5_000, false).unwrap();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", Bytes::new()))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Connection { .. }), "{e}");
}

#[test]
fn retries_only_idempotent_calls_on_retryable_statuses() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.max_retries = 2);
    let body: Bytes = json!({"status": 503}).to_string().into();
    let call = |idempotent| {
        c.block_on(async {
            c.run::<Reply>(
                Call::json("test.v1.FaultService", "Error", body.clone()).idempotent(idempotent),
            )
            .await
            .map(Reply::into_body)
        })
    };

    let before = requests(&c);
    assert_eq!(problem(call(true).unwrap_err()).status, 503);
    // Three attempts, plus this Stats call.
    assert_eq!(requests(&c) - before, 4);

    let before = requests(&c);
    assert_eq!(problem(call(false).unwrap_err()).status, 503);
    assert_eq!(requests(&c) - before, 2);

    let before = requests(&c);
    let bad: Bytes = json!({"status": 400}).to_string().into();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::json("test.v1.FaultService", "Error", bad).idempotent(true))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert_eq!(problem(e).status, 400);
    assert_eq!(requests(&c) - before, 2);

    // A Retry-After (5 s) past the deadline (4 s) is not waited for: the 429 comes back
    // at once, not when the deadline would have cut the wait.
    let c = s.client_with(|cfg| {
        cfg.max_retries = 3;
        cfg.timeout_ms = 4_000;
    });
    let start = Instant::now();
    let slow: Bytes = json!({"status": 429, "retry_after": 5}).to_string().into();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::json("test.v1.FaultService", "Error", slow).idempotent(true))
                .await
                .map(Reply::into_body)
        })
        .unwrap_err();
    assert_eq!(problem(e).status, 429);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn body_size_limits() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.max_decoded_size = 1 << 20);
    let ok = c
        .block_on(async {
            c.run::<Reply>(Call::json(
                "test.v1.FaultService",
                "Big",
                r#"{"bytes":1048576}"#,
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap();
    assert_eq!(ok.len(), 1 << 20);
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::json(
                "test.v1.FaultService",
                "Big",
                r#"{"bytes":1048577}"#,
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
    // A zstd bomb (1 GiB of zeros) stops at the limit instead of filling memory.
    let start = Instant::now();
    let e = c
        .block_on(async {
            c.run::<Reply>(Call::json(
                "test.v1.FaultService",
                "Bomb",
                r#"{"bytes":1073741824}"#,
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap_err();
    assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("max_decoded_size"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Within the limit the bomb route is just a zstd body.
    let small = c
        .block_on(async {
            c.run::<Reply>(Call::json(
                "test.v1.FaultService",
                "Bomb",
                r#"{"bytes":100000}"#,
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap();
    assert_eq!(small, vec![0u8; 100_000]);
}

#[test]
fn client_stream_counts_messages() {
    let s = Server::start(&[]);
    let c = s.client();
    let (tx, rx) = request_stream(4);
    let reply = c.block_on(async {
        let sender = async move {
            for m in [&b"a"[..], b"bb", b"", b"dddd"] {
                tx.send(Bytes::copy_from_slice(m)).await.unwrap();
            }
            tx.finish().await.unwrap();
        };
        let call = Call::messages("echo.v1.EchoService", "ClientStream", rx);
        let (reply, ()) = tokio::join!(c.run::<Reply>(call), sender);
        reply
    });
    let v: Value = serde_json::from_slice(&reply.unwrap().body).unwrap();
    assert_eq!(v, json!({"count": 4, "bytes": 7}));
    // A message over the frame limit is the caller's error, reported as such.
    let (tx, rx) = request_stream(1);
    c.block_on(tx.send(Bytes::from(vec![
        0u8;
        quill::protocol::MAX_FRAME_PAYLOAD + 1
    ])))
    .unwrap();
    let call = Call::messages("echo.v1.EchoService", "ClientStream", rx);
    let e = c.block_on(c.run::<Reply>(call)).unwrap_err();
    drop(tx);
    assert!(matches!(e, QuillError::InvalidArgument { .. }), "{e}");
}

#[test]
fn tensors_up_and_down() {
    let s = Server::start(&[]);
    for compression in [false, true] {
        let c = s.client_with(|cfg| cfg.enable_compression = compression);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let t =
            Tensor::from_bytes(&data, vec![250, 1000], DType::Float32, Some("x".into())).unwrap();
        let reply = c
            .block_on(async {
                c.run::<Reply>(Call::tensor(
                    "tensor.v1.TensorService",
                    "Upload",
                    Tensor::clone(&t),
                ))
                .await
                .map(Reply::into_body)
            })
            .unwrap();
        let v: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["shape"], json!([250, 1000]));
        assert_eq!(v["dtype"], "float32");
        assert_eq!(v["name"], "x");
        assert_eq!(v["fnv1a64"], fnv1a64(&data));

        let req = json!({"shape": [3, 100_000], "dtype": "uint8"}).to_string();
        let t = c
            .block_on(c.run::<Tensor>(Call::json("tensor.v1.TensorService", "Download", req)))
            .unwrap();
        assert_eq!(t.shape(), vec![3, 100_000]);
        assert_eq!(t.dtype(), DType::Uint8);
        assert!(t
            .data()
            .iter()
            .enumerate()
            .all(|(i, &b)| b as usize == i % 251));
    }
    let c = s.client_with(|cfg| cfg.max_decoded_size = 1000);
    let req = json!({"shape": [1001], "dtype": "uint8"}).to_string();
    let e = c
        .block_on(c.run::<Tensor>(Call::json("tensor.v1.TensorService", "Download", req)))
        .unwrap_err();
    assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
    // Tensor frames expected, but a plain body came back.
    let e = c
        .block_on(c.run::<Tensor>(Call::proto(
            "echo.v1.EchoService",
            "Echo",
            Bytes::from_static(b"not frames"),
        )))
        .unwrap_err();
    assert!(
        matches!(e, QuillError::Protocol { .. } | QuillError::Stream { .. }),
        "{e}"
    );
}

#[test]
fn one_client_many_threads_and_the_ffi_face() {
    let s = Server::start(&[]);
    let c = Arc::new(s.client());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..20 {
                    let body = format!("{i}-{j}").into_bytes();
                    let reply = c
                        .block_on(async {
                            c.run::<Reply>(
                                Call::proto("echo.v1.EchoService", "Echo", body.clone())
                                    .idempotent(true),
                            )
                            .await
                            .map(Reply::into_body)
                        })
                        .unwrap();
                    assert_eq!(reply, body);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The async methods (what the Kotlin/Swift faces await) driven by an executor
    // without tokio drivers.
    let foreign = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let c = s.client_with(|cfg| {
        cfg.timeout_ms = 5_000;
        cfg.enable_compression = true;
    });
    let out = foreign
        .block_on(async {
            c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "ffi"))
                .await
                .map(Reply::into_body)
        })
        .unwrap();
    assert_eq!(&out[..], b"ffi");
    let out = foreign
        .block_on(async {
            c.run::<Reply>(
                Call::json("inference.v1.LLMService", "Generate", r#"{"max_tokens":2}"#)
                    .idempotent(true),
            )
            .await
            .map(Reply::into_body)
        })
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("tokens"));
    let t = foreign
        .block_on(c.run::<Tensor>(Call::json(
            "tensor.v1.TensorService",
            "Download",
            r#"{"shape":[4],"dtype":"uint8"}"#,
        )))
        .unwrap();
    assert_eq!(t.data().as_ref(), &[0, 1, 2, 3]);
    let up = foreign
        .block_on(async {
            c.run::<Reply>(Call::tensor(
                "tensor.v1.TensorService",
                "Upload",
                Tensor::clone(&t),
            ))
            .await
            .map(Reply::into_body)
        })
        .unwrap();
    assert!(String::from_utf8(up.to_vec())
        .unwrap()
        .contains(&fnv1a64(&[0, 1, 2, 3])));
}
