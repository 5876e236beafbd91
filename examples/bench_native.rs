//! The native floor for the client benchmarks (scripts/bench): unary Echo calls from
//! Rust, with plain reqwest and with quill's own client, against a running server.
//!
//! Usage: `cargo run --release --example bench_native -- URL SIZE_BYTES SECONDS`
//! Prints one JSON line: `{"reqwest_us": .., "quill_us": ..}` (mean µs per call).

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let body = bytes::Bytes::from(vec![7u8; size]);
    let budget = Duration::from_secs_f64(secs);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("reqwest client");
    let endpoint = format!("{url}/echo.v1.EchoService/Echo");
    let reqwest_us = rt.block_on(async {
        let call = || async {
            let r = http
                .post(&endpoint)
                .header("content-type", "application/proto")
                .body(body.clone())
                .send()
                .await
                .expect("send");
            assert!(r.status().is_success());
            let b = r.bytes().await.expect("body");
            assert_eq!(b.len(), size);
        };
        for _ in 0..200 {
            call().await;
        }
        let (t0, mut n) = (Instant::now(), 0u64);
        while t0.elapsed() < budget {
            call().await;
            n += 1;
        }
        t0.elapsed().as_secs_f64() * 1e6 / n as f64
    });

    let client = quill::QuillClient::with_config(quill::ClientConfig::new(url)).expect("client");
    let call = || {
        let out = client
            .block_on(client.call_bytes("echo.v1.EchoService", "Echo", body.clone(), false))
            .expect("call");
        assert_eq!(out.len(), size);
    };
    for _ in 0..200 {
        call();
    }
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < budget {
        call();
        n += 1;
    }
    let quill_us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{{\"reqwest_us\": {reqwest_us:.2}, \"quill_us\": {quill_us:.2}}}");
}
