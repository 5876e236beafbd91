//! The native side of the client benchmarks (scripts/bench): unary Echo calls from
//! Rust, with plain reqwest (the floor) and with quill's own client, and plain reqwest
//! tensor downloads over HTTP/1.1 and HTTP/2, against a running server. `benches/bench_client.py` drives it over stdin so that native and Python
//! windows interleave in one run and machine noise hits every contender alike.
//!
//! Usage: `bench_native URL`, then one command per line on stdin:
//! `reqwest|quill_blocking|quill_async|reqwest_download_http1|reqwest_download_http2
//! SIZE_BYTES SECONDS`; each prints the mean
//! seconds per call over a window of SECONDS (the client and its pooled connection
//! persist between windows; the first window of each kind is the caller's warm-up).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quill::client::{Call, Reply};

/// Mean seconds per call over `window`.
fn window(window: Duration, mut call: impl FnMut()) -> f64 {
    let (t0, mut n) = (Instant::now(), 0u64);
    while n == 0 || t0.elapsed() < window {
        call();
        n += 1;
    }
    t0.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    // The floor: what a Rust user writes by hand, one thread driving everything.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("reqwest client");
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("reqwest client");
    let endpoint = format!("{url}/echo.v1.EchoService/Echo");
    let client =
        quill::QuillClient::with_config(quill::ClientConfig::new(url.clone())).expect("client");

    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, size, secs] = parts[..] else {
            panic!("expected `KIND SIZE SECONDS`, got {line:?}");
        };
        let size: usize = size.parse().expect("size");
        let budget = Duration::from_secs_f64(secs.parse().expect("seconds"));
        let body = Bytes::from(vec![7u8; size]);
        let check = |b: &[u8]| assert_eq!(b.len(), size);
        let per_call = match what {
            "reqwest" => window(budget, || {
                rt.block_on(async {
                    let r = http
                        .post(&endpoint)
                        .header("content-type", "application/proto")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("send");
                    assert!(r.status().is_success());
                    check(&r.bytes().await.expect("body"));
                })
            }),
            "quill_blocking" => window(budget, || {
                check(
                    &client
                        .run_blocking::<Reply>(Call::proto(
                            "echo.v1.EchoService",
                            "Echo",
                            body.clone(),
                        ))
                        .map(Reply::into_body)
                        .expect("call"),
                )
            }),
            "quill_async" => window(budget, || {
                check(
                    &client
                        .block_on(async {
                            client
                                .run::<Reply>(Call::proto(
                                    "echo.v1.EchoService",
                                    "Echo",
                                    body.clone(),
                                ))
                                .await
                                .map(Reply::into_body)
                        })
                        .expect("call"),
                )
            }),
            // The floor of a tensor download: the body of `Download` into one fresh
            // buffer, as plain reqwest reads it (SIZE is the tensor's byte size).
            "reqwest_download_http1" | "reqwest_download_http2" => {
                let h2 = what.ends_with("http2");
                let http = if h2 { &http2 } else { &http };
                window(budget, || {
                    rt.block_on(async {
                        let mut r = http
                            .post(format!("{url}/tensor.v1.TensorService/Download"))
                            .header("content-type", "application/json")
                            .body(format!(r#"{{"shape": [{size}], "dtype": "uint8"}}"#))
                            .send()
                            .await
                            .expect("send");
                        assert!(r.status().is_success());
                        let mut buf = Vec::with_capacity(size + 4096);
                        while let Some(chunk) = r.chunk().await.expect("chunk") {
                            buf.extend_from_slice(&chunk);
                        }
                        assert!(buf.len() > size);
                    })
                })
            }
            // The timing hook of typed generate streams, per response of SIZE tokens.
            "stream_timer" => {
                let mut timer = quill::inference::StreamTimer::start();
                let per_call = window(budget, || timer.delivered(size));
                assert!(timer.timing().tokens > 0);
                per_call
            }
            other => panic!("unknown kind {other:?}"),
        };
        writeln!(out, "{per_call}").expect("stdout");
        out.flush().expect("stdout");
    }
}
