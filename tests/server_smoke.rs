//! Smoke tests of the bundled `quill-server` binary over raw HTTP/1.1 (std TcpStream,
//! no HTTP client dependency). Run with `cargo test --features server --test server_smoke`.
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use quill::codec::stream::{decode_messages, encode_messages, MessageReader};
use quill::codec::tensor::decode_tensor;
use quill::{DType, QuillError, Tensor, TokenBatch};
use serde_json::Value;

mod common;
use common::Server;

impl Server {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// One request with `Connection: close`, read to EOF.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        // A cut connection may end with a reset: keep what arrived.
        let _ = s.read_to_end(&mut raw);
        Resp::parse(&raw)
    }

    fn post(&self, path: &str, body: &[u8]) -> Resp {
        self.call("POST", path, &[], body)
    }

    fn json(&self, path: &str, body: &str) -> Value {
        let r = self.call(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).expect("JSON body")
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunked bodies: whether the terminating zero-size chunk arrived.
    complete: bool,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head");
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let rest = &raw[end + 4..];
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let (body, complete) = if chunked {
            dechunk(rest)
        } else {
            (rest.to_vec(), true)
        };
        Resp {
            status,
            headers,
            body,
            complete,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn problem(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v: Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(v["status"], self.status);
        assert_eq!(v["type"], format!("urn:quill:error:{}", self.status));
        assert!(v["title"].is_string());
        v
    }
}

/// Decodes a chunked body; `complete` is false when it stops before the last chunk.
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return (out, b.starts_with(b"\r\n"));
        }
        if b.len() < size + 2 {
            out.extend_from_slice(&b[..b.len().min(size)]);
            return (out, false);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[test]
fn echo_404_405() {
    let srv = Server::start(&[]);
    let r = srv.call(
        "POST",
        "/echo.v1.EchoService/Echo",
        &[("Content-Type", "application/proto")],
        b"\x00hello\xff",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"\x00hello\xff");
    assert_eq!(r.header("content-type"), Some("application/proto"));
    // Empty body is a valid message.
    assert_eq!(srv.post("/echo.v1.EchoService/Echo", b"").body, b"");

    let r = srv.post("/nope.v1.Missing/Call", b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.problem()["title"], "Not Found");

    let r = srv.call("GET", "/echo.v1.EchoService/Echo", &[], b"");
    assert_eq!(r.status, 405);
    r.problem();
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn headers_route_reports_what_arrived() {
    let srv = Server::start(&[]);
    let r = srv.call(
        "POST",
        "/echo.v1.EchoService/Headers",
        &[
            ("X-API-Key", "k1"),
            ("Prefer", "prism=classic"),
            ("User-Agent", "smoke/1"),
        ],
        b"",
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["x-api-key"], "k1");
    assert_eq!(v["prefer"], "prism=classic");
    assert_eq!(v["user-agent"], "smoke/1");
}

#[test]
fn generate_json_shape_and_determinism() {
    let srv = Server::start(&[]);
    let req = r#"{"prompt": "Alice was", "max_tokens": 12, "temperature": 0.8}"#;
    let v = srv.json("/inference.v1.LLMService/Generate", req);
    assert_eq!(v["finish_reason"], "length");
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 12);
    let mut text = String::new();
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["position"], i);
        assert!(t["id"].is_u64());
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(t["is_special"], false);
        let s = t["text"].as_str().unwrap();
        assert_eq!(s.starts_with(' '), i > 0);
        text.push_str(s);
    }
    assert_eq!(v["text"], text);
    assert_eq!(srv.json("/inference.v1.LLMService/Generate", req), v);
    let r = srv.post("/inference.v1.LLMService/Generate", b"{not json");
    assert_eq!(r.status, 400);
    r.problem();
}

#[test]
fn generate_stream_decodes_into_token_batches() {
    let srv = Server::start(&[]);
    let r = srv.post(
        "/inference.v1.LLMService/GenerateStream",
        br#"{"prompt": "down", "max_tokens": 10, "batch_size": 4, "seed": 3}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let batches: Vec<TokenBatch> = decode_messages(&r.body)
        .unwrap()
        .iter()
        .map(|m| TokenBatch::decode(m).unwrap())
        .collect();
    assert_eq!(
        batches.iter().map(|b| b.tokens.len()).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    assert!(batches.last().unwrap().is_final);
    assert!(batches[..2]
        .iter()
        .all(|b| !b.is_final && b.sequence_id == Some(1)));
    let positions: Vec<u32> = batches.iter().flat_map(|b| b.positions()).collect();
    assert_eq!(positions, (0..10).collect::<Vec<u32>>());
    // The same request as JSON Generate gives the same tokens.
    let v = srv.json(
        "/inference.v1.LLMService/Generate",
        r#"{"prompt": "down", "max_tokens": 10, "seed": 3}"#,
    );
    let text: String = batches.iter().map(TokenBatch::text).collect();
    assert_eq!(v["text"], text);
}

#[test]
fn generate_stream_is_incremental() {
    let srv = Server::start(&[]);
    let mut s = srv.connect();
    let body = br#"{"max_tokens": 20, "batch_size": 1, "delay_ms": 300}"#;
    // Before the request is written: the server's delays cannot start earlier.
    let start = Instant::now();
    write!(
        s,
        "POST /inference.v1.LLMService/GenerateStream HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    // The first batch (one token, ~300 ms) arrives long before the last (~6 s), which a
    // response buffered whole would wait for.
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() > p + 4 {
                break;
            }
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn zstd_both_ways() {
    let srv = Server::start(&[]);
    let payload: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i % 97).to_le_bytes())
        .collect();
    let compressed = zstd::bulk::compress(&payload, 3).unwrap();
    let r = srv.call(
        "POST",
        "/echo.v1.EchoService/Echo",
        &[("Content-Encoding", "zstd"), ("Accept-Encoding", "zstd")],
        &compressed,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(zstd::stream::decode_all(&r.body[..]).unwrap(), payload);
    // Small bodies are not compressed.
    let r = srv.call(
        "POST",
        "/echo.v1.EchoService/Echo",
        &[("Accept-Encoding", "zstd")],
        b"tiny",
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, b"tiny");
    // Streams are compressed too and still decode into frames.
    let r = srv.call(
        "POST",
        "/inference.v1.LLMService/GenerateStream",
        &[("Accept-Encoding", "zstd")],
        br#"{"max_tokens": 50}"#,
    );
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    let plain = zstd::stream::decode_all(&r.body[..]).unwrap();
    assert_eq!(decode_messages(&plain).unwrap().len(), 13);
    // A truncated zstd body is a 400.
    let r = srv.call(
        "POST",
        "/echo.v1.EchoService/Echo",
        &[("Content-Encoding", "zstd")],
        &compressed[..compressed.len() / 2],
    );
    assert_eq!(r.status, 400);
    r.problem();
}

#[test]
fn download_ramp_is_right_across_the_frame_ring() {
    // Past the 251 distinct 64 KiB frames of the ramp (the server's frame ring wraps),
    // with a short last frame, and exactly whole frames.
    let srv = Server::start(&[]);
    for size in [253 * 65536 + 7, 8 * 65536, 65536 - 1] {
        let r = srv.post(
            "/tensor.v1.TensorService/Download",
            format!(r#"{{"shape": [{size}], "dtype": "uint8"}}"#).as_bytes(),
        );
        assert_eq!(r.status, 200);
        let t = decode_tensor(&r.body).unwrap();
        assert_eq!(t.data().len(), size);
        let wrong = t
            .data()
            .iter()
            .enumerate()
            .position(|(i, b)| *b != (i % 251) as u8);
        assert_eq!(wrong, None, "size {size}");
    }
}

#[test]
fn tensors_round_trip() {
    let srv = Server::start(&[]);
    let r = srv.post(
        "/tensor.v1.TensorService/Download",
        br#"{"shape": [3, 50000], "dtype": "float32", "name": "ramp"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-quill-tensor"));
    let t = decode_tensor(&r.body).unwrap();
    assert_eq!(t.shape(), vec![3, 50000]);
    assert_eq!(t.dtype(), DType::Float32);
    assert!(t
        .data()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % 251) as u8));

    let up = srv.json_bytes("/tensor.v1.TensorService/Upload", &r.body);
    assert_eq!(up["shape"], serde_json::json!([3, 50000]));
    assert_eq!(up["dtype"], "float32");
    assert_eq!(up["name"], "ramp");
    assert_eq!(up["size_bytes"], 600_000);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in t.data().iter() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    assert_eq!(up["fnv1a64"], format!("{h:016x}"));

    // Sink reads any body to its end and only counts it, zstd-decoded when it says so.
    let sunk = srv.json_bytes("/tensor.v1.TensorService/Sink", &r.body);
    assert_eq!(sunk["received_bytes"], r.body.len());
    let packed = zstd::bulk::compress(&r.body, 3).unwrap();
    let sunk = srv.call(
        "POST",
        "/tensor.v1.TensorService/Sink",
        &[("Content-Encoding", "zstd")],
        &packed,
    );
    let sunk: Value = serde_json::from_slice(&sunk.body).unwrap();
    assert_eq!(sunk["received_bytes"], r.body.len());

    let small = Tensor::from_bytes(&[1, 2, 3, 4], vec![4], DType::Uint8, None).unwrap();
    let body = small.encode();
    let r = srv.post("/tensor.v1.TensorService/Upload", &body[..body.len() - 3]);
    assert_eq!(r.status, 400);
    assert!(r.problem()["detail"]
        .as_str()
        .unwrap()
        .contains("malformed tensor frames"));

    let r = srv.post(
        "/inference.v1.LLMService/Embed",
        br#"{"text": "hi", "dim": 16}"#,
    );
    let e = decode_tensor(&r.body).unwrap();
    assert_eq!(e.shape(), vec![1, 16]);
    assert_eq!(e.name(), Some("embedding"));
}

impl Server {
    fn json_bytes(&self, path: &str, body: &[u8]) -> Value {
        let r = self.post(path, body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice(&r.body).unwrap()
    }
}

#[test]
fn bidi_echo_is_full_duplex() {
    let srv = Server::start(&[]);
    let mut s = srv.connect();
    s.write_all(
        b"POST /echo.v1.EchoService/BidiEcho HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = |b: &[u8]| {
        [
            format!("{:x}\r\n", b.len()).into_bytes(),
            b.to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat()
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for i in 0..3 {
        let msg = format!("ping {i}");
        let frame = quill::codec::stream::encode_data(msg.as_bytes()).unwrap();
        s.write_all(&chunk(&frame)).unwrap();
        // The echo arrives while the request body is still open.
        while !got.windows(msg.len()).any(|w| w == msg.as_bytes()) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
    s.write_all(&chunk(&[0x00, 0x02])).unwrap();
    s.write_all(b"0\r\n\r\n").unwrap();
    while !got.ends_with(b"0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let r = Resp::parse(&got);
    assert!(r.complete);
    let msgs = decode_messages(&r.body).unwrap();
    assert_eq!(msgs, vec!["ping 0", "ping 1", "ping 2"]);
}

#[test]
fn client_stream_counts() {
    let srv = Server::start(&[]);
    let body = encode_messages([&b"ab"[..], b"", b"cde"]).unwrap();
    let v = srv.json_bytes("/echo.v1.EchoService/ClientStream", &body);
    assert_eq!(v, serde_json::json!({"count": 3, "bytes": 5}));
    let r = srv.post("/echo.v1.EchoService/ClientStream", &body[..body.len() - 2]);
    assert_eq!(r.status, 400);
    r.problem();
}

#[test]
fn fault_routes() {
    let srv = Server::start(&["--token", "s3cret"]);
    let r = srv.post(
        "/test.v1.FaultService/Error",
        br#"{"status": 429, "title": "Quota exceeded", "detail": "d", "retry_after": 2, "proto_type": "pkg.QuotaError", "proto_detail_base64": "CgRwZWVy", "instance": "/i"}"#,
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    let p = r.problem();
    assert_eq!(p["quill_proto_type"], "pkg.QuotaError");
    assert_eq!(p["quill_proto_detail_base64"], "CgRwZWVy");
    assert_eq!(p["extra"], "kept");

    let r = srv.post("/test.v1.FaultService/PlainText", b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (502, &b"bad gateway from proxy"[..])
    );

    let r = srv.call(
        "POST",
        "/test.v1.FaultService/Auth",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.problem()["title"], "Unauthenticated");
    assert!(!String::from_utf8_lossy(&r.body).contains("nope"));
    let r = srv.call(
        "POST",
        "/test.v1.FaultService/Auth",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(r.status, 200);

    // StreamCut: two messages, then no END_STREAM.
    let r = srv.post("/test.v1.FaultService/StreamCut", br#"{"messages": 2}"#);
    assert_eq!(r.status, 200);
    assert!(!r.complete, "the chunked body is cut, not terminated");
    let mut reader = MessageReader::new();
    reader.push(&r.body);
    let mut n = 0;
    while let Some(quill::codec::stream::Event::Message(_)) = reader.next_event().unwrap() {
        n += 1;
    }
    assert_eq!(n, 2);
    let e = reader.finish().unwrap_err();
    assert!(
        matches!(&e, QuillError::Stream { reason } if reason.contains("END_STREAM")),
        "{e:?}"
    );

    let r = srv.post("/test.v1.FaultService/StreamCombined", b"");
    assert_eq!(
        decode_messages(&r.body).unwrap(),
        vec!["one", "two", "three"]
    );
    let r = srv.post("/test.v1.FaultService/StreamCancel", b"");
    let e = decode_messages(&r.body).unwrap_err();
    assert!(
        matches!(&e, QuillError::Stream { reason } if reason.contains("CANCEL")),
        "{e:?}"
    );
    let r = srv.post("/test.v1.FaultService/StreamOversized", b"");
    assert!(decode_messages(&r.body)
        .unwrap_err()
        .to_string()
        .contains("limit"));

    let r = srv.post(
        "/test.v1.FaultService/Batches",
        br#"{"batches": 50, "batch_size": 8}"#,
    );
    let msgs = decode_messages(&r.body).unwrap();
    assert_eq!(msgs.len(), 50);
    assert!(TokenBatch::decode(&msgs[49]).unwrap().is_final);

    let r = srv.post("/test.v1.FaultService/Bomb", br#"{"bytes": 10000000}"#);
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert!(r.body.len() < 100_000);
}

#[test]
fn abandoned_stream_is_closed_server_side() {
    let srv = Server::start(&[]);
    let mut s = srv.connect();
    let body = br#"{"messages": 200, "interval_ms": 50}"#;
    write!(
        s,
        "POST /test.v1.FaultService/StreamSlow HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(6).any(|w| w == b"tick 1") {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        srv.json("/test.v1.FaultService/Stats", "")["open_streams"],
        1
    );
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = srv.json("/test.v1.FaultService/Stats", "");
        if st["open_streams"] == 0 {
            assert_eq!(st["cancelled_streams"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "stream still open: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

mod inference_v1 {
    //! `quill.inference.v1.InferenceService` over protobuf.
    use prost::Message;
    use quill::proto::inference::v1 as pb;
    use quill::proto::token_batch_from_proto;
    use quill::Tensor;

    use super::*;

    const SERVICE: &str = "/quill.inference.v1.InferenceService";

    fn generate(srv: &Server, req: &pb::GenerateRequest) -> Vec<pb::GenerateResponse> {
        let r = srv.post(&format!("{SERVICE}/Generate"), &req.encode_to_vec());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        decode_messages(&r.body)
            .unwrap()
            .into_iter()
            .map(|m| pb::GenerateResponse::decode(m).unwrap())
            .collect()
    }

    #[test]
    fn generate_streams_batches_to_a_complete_response() {
        let srv = Server::start(&[]);
        let req = pb::GenerateRequest {
            input_ids: vec![3, 1, 4],
            max_new_tokens: Some(20),
            temperature: Some(0.0),
            stream_embeddings: true,
            ..Default::default()
        };
        let responses = generate(&srv, &req);
        // 20 tokens in responses of 8: 8, 8, 4.
        let sizes: Vec<usize> = responses
            .iter()
            .map(|r| r.tokens.as_ref().unwrap().tokens.len())
            .collect();
        assert_eq!(sizes, [8, 8, 4]);
        let last = responses.last().unwrap();
        assert!(last.is_complete && last.total_generated == 20);
        assert_eq!(last.finish_reason.as_deref(), Some("length"));
        assert!(responses[..2]
            .iter()
            .all(|r| !r.is_complete && r.finish_reason.is_none()));
        let mut position = 0;
        for r in &responses {
            let (batch, _) = token_batch_from_proto(r.tokens.clone().unwrap()).unwrap();
            for t in &batch.tokens {
                assert_eq!(t.position, position);
                position += 1;
            }
            let e = Tensor::try_from(r.embedding.clone().unwrap()).unwrap();
            assert_eq!(e.shape(), [1, 8]);
        }
        // Deterministic for the same ids; greedy at temperature 0.
        assert_eq!(generate(&srv, &req), responses);
        // A stop token ends the generation early, included.
        let first_id = responses[0].tokens.as_ref().unwrap().tokens[2].id;
        let stopped = generate(
            &srv,
            &pb::GenerateRequest {
                stop_token_ids: vec![first_id],
                stream_embeddings: false,
                ..req.clone()
            },
        );
        let last = stopped.last().unwrap();
        assert_eq!(last.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            last.tokens.as_ref().unwrap().tokens.last().unwrap().id,
            first_id
        );
        assert!(last.total_generated <= 3);
    }

    #[test]
    fn embed_pools_and_keeps_per_token_rows() {
        let srv = Server::start(&[]);
        let call = |req: pb::EmbedRequest| {
            let r = srv.post(&format!("{SERVICE}/Embed"), &req.encode_to_vec());
            (r.status, r.body)
        };
        let (status, body) = call(pb::EmbedRequest {
            input_ids: vec![5, 6, 7],
            layers: vec![-1, -2],
            ..Default::default()
        });
        assert_eq!(status, 200);
        let resp = pb::EmbedResponse::decode(&body[..]).unwrap();
        assert_eq!(resp.embeddings.len(), 2);
        assert_eq!(resp.metadata.len(), 2);
        let t = Tensor::try_from(resp.embeddings[0].clone()).unwrap();
        assert_eq!((t.shape(), t.dtype()), (&[3u64, 64][..], DType::Float32));
        let (_, pooled) = call(pb::EmbedRequest {
            input_ids: vec![5, 6, 7],
            pool: true,
            ..Default::default()
        });
        let pooled =
            Tensor::try_from(pb::EmbedResponse::decode(&pooled[..]).unwrap().embeddings[0].clone())
                .unwrap();
        assert_eq!(pooled.shape(), [1, 64]);
        // Mean pooling: each value is the mean of the rows.
        let rows: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mean0 = (rows[0] + rows[64] + rows[128]) / 3.0;
        let got0 = f32::from_le_bytes(pooled.data()[..4].try_into().unwrap());
        assert!((mean0 - got0).abs() < 1e-6);
        // Bad requests are 400 Problem Details.
        assert_eq!(call(pb::EmbedRequest::default()).0, 400);
        assert_eq!(
            call(pb::EmbedRequest {
                input_ids: vec![1],
                pool_strategy: Some("median".into()),
                ..Default::default()
            })
            .0,
            400
        );
        let r = srv.post(&format!("{SERVICE}/Embed"), &[0x0a, 0x05, 0x01]);
        assert_eq!(r.status, 400);
        assert!(r.problem()["detail"]
            .as_str()
            .unwrap()
            .contains("malformed protobuf"));
    }

    #[test]
    fn chat_answers_each_request_of_the_stream() {
        let srv = Server::start(&[]);
        let turn = |ids: Vec<u32>, n: u32| pb::GenerateRequest {
            input_ids: ids,
            max_new_tokens: Some(n),
            temperature: Some(0.0),
            ..Default::default()
        };
        let (a, b) = (
            turn(vec![1], 3).encode_to_vec(),
            turn(vec![2, 3], 10).encode_to_vec(),
        );
        let body = encode_messages([&a[..], &b[..]]).unwrap();
        let r = srv.post(&format!("{SERVICE}/Chat"), &body);
        assert_eq!(r.status, 200);
        let responses: Vec<pb::GenerateResponse> = decode_messages(&r.body)
            .unwrap()
            .into_iter()
            .map(|m| pb::GenerateResponse::decode(m).unwrap())
            .collect();
        // Turn 1: 3 tokens in one response; turn 2: 10 tokens in 8 + 2.
        let seq: Vec<(Option<u32>, usize, bool)> = responses
            .iter()
            .map(|r| {
                let b = r.tokens.as_ref().unwrap();
                (b.sequence_id, b.tokens.len(), r.is_complete)
            })
            .collect();
        assert_eq!(
            seq,
            [(Some(1), 3, true), (Some(2), 8, false), (Some(2), 2, true)]
        );
        // Each turn is the generation Generate gives for the same request.
        let alone = generate(&srv, &turn(vec![2, 3], 10));
        let ids = |rs: &[pb::GenerateResponse]| -> Vec<u32> {
            rs.iter()
                .flat_map(|r| r.tokens.as_ref().unwrap().tokens.iter().map(|t| t.id))
                .collect()
        };
        assert_eq!(ids(&responses[1..]), ids(&alone));
    }
}
