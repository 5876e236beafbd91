//! The typed `quill.inference.v1` API (`quill::inference`) against the bundled server.
#![cfg(feature = "server")]
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use quill::client::{Call, CallOptions, Reply};
use quill::inference::{chat_requests, EmbedRequest, GenerateRequest, GenerateResponse};
use quill::{DType, QuillClient, QuillError};
use serde_json::Value;

mod common;
use common::Server;

fn request(max_new: u32) -> GenerateRequest {
    GenerateRequest {
        input_ids: vec![3, 1, 4],
        max_new_tokens: Some(max_new),
        temperature: Some(0.0),
        ..Default::default()
    }
}

fn all(c: &QuillClient, req: &GenerateRequest) -> quill::Result<Vec<GenerateResponse>> {
    c.block_on(async {
        let s = c.generate(req, CallOptions::default()).await?;
        s.into_stream().try_collect().await
    })
}

fn stats(c: &QuillClient) -> Value {
    let r: Reply = c
        .run_blocking(Call::json("test.v1.FaultService", "Stats", "{}"))
        .unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn generate_streams_typed_responses_with_timing() {
    let srv = Server::start(&[]);
    let c = srv.client();
    let responses = all(&c, &request(20)).unwrap();
    let sizes: Vec<usize> = responses.iter().map(|r| r.tokens.tokens.len()).collect();
    assert_eq!(sizes, [8, 8, 4]);
    let last = responses.last().unwrap();
    assert!(last.is_complete && last.tokens.is_final);
    assert_eq!(last.total_generated, 20);
    assert_eq!(last.finish_reason.as_deref(), Some("length"));
    assert!(responses[..2].iter().all(|r| !r.is_complete));
    let positions: Vec<u32> = responses
        .iter()
        .flat_map(|r| r.tokens.tokens.iter().map(|t| t.position))
        .collect();
    assert_eq!(positions, (0..20).collect::<Vec<_>>());

    // Same request, same tokens (the demo generator is deterministic); text() joins them.
    let again = all(&c, &request(20)).unwrap();
    assert_eq!(again, responses);
    let text = c.block_on(async {
        c.generate(&request(20), CallOptions::default())
            .await?
            .text()
            .await
    });
    let joined: String = responses.iter().map(|r| r.tokens.text()).collect();
    assert_eq!(text.unwrap(), joined);

    // Timing, read after the end.
    let t = c.block_on(async {
        let s = c.generate(&request(20), CallOptions::default()).await?;
        assert_eq!(s.timing().tokens, 0);
        while s.next_batch().await?.is_some() {}
        Ok::<_, QuillError>(s.timing())
    });
    let t = t.unwrap();
    assert_eq!((t.tokens, t.responses), (20, 3));
    let ttft = t.time_to_first_token_ms.unwrap();
    let elapsed = t.elapsed_ms.unwrap();
    assert!(ttft > 0.0 && ttft <= elapsed, "{t:?}");
    assert!(t.inter_token_p50_ms.unwrap() <= t.inter_token_p99_ms.unwrap());
    assert!(t.tokens_per_second.unwrap() > 0.0);
}

#[test]
fn stop_tokens_embeddings_and_limits() {
    let srv = Server::start(&[]);
    let c = srv.client();
    let first = all(&c, &request(20)).unwrap();
    let fifth = first[0].tokens.tokens[4].id;
    let stop_at = first
        .iter()
        .flat_map(|r| &r.tokens.tokens)
        .position(|t| t.id == fifth)
        .unwrap();
    let stopped = all(
        &c,
        &GenerateRequest {
            stop_token_ids: vec![fifth],
            stream_embeddings: true,
            ..request(20)
        },
    )
    .unwrap();
    let last = stopped.last().unwrap();
    assert_eq!(last.finish_reason.as_deref(), Some("stop"));
    assert_eq!(last.total_generated as usize, stop_at + 1);
    let emb = last.embedding.as_ref().expect("stream_embeddings");
    assert_eq!(emb.meta().dtype, DType::Float32);
    assert_eq!(emb.meta().shape, [1, 8]);

    match all(&c, &request(100_000)) {
        Err(QuillError::Status { problem }) => {
            assert_eq!(problem.status, 400);
            assert!(problem.detail.unwrap().contains("max_new_tokens"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn embed_returns_checked_tensors() {
    let srv = Server::start(&[]);
    let c = srv.client();
    let req = EmbedRequest {
        input_ids: vec![5, 6, 7],
        layers: vec![-1, 2],
        ..Default::default()
    };
    let tensors = c.block_on(c.embed(&req, CallOptions::default())).unwrap();
    assert_eq!(tensors.len(), 2);
    assert!(tensors.iter().all(|t| t.meta().shape == [3, 64]));
    let pooled = c
        .block_on(c.embed(
            &EmbedRequest {
                pool: true,
                pool_strategy: Some("first".into()),
                ..req.clone()
            },
            CallOptions::default(),
        ))
        .unwrap();
    assert_eq!(pooled[0].meta().shape, [1, 64]);
    // "first" pooling is the first row of the unpooled tensor.
    assert_eq!(pooled[0].data()[..], tensors[0].data()[..64 * 4]);
    let bad = c.block_on(c.embed(
        &EmbedRequest {
            pool_strategy: Some("median".into()),
            pool: true,
            ..req
        },
        CallOptions::default(),
    ));
    assert!(matches!(bad, Err(QuillError::Status { .. })), "{bad:?}");
}

#[test]
fn chat_streams_one_generation_per_request() {
    let srv = Server::start(&[]);
    let c = srv.client();
    let got = c.block_on(async {
        let (tx, requests) = chat_requests(4);
        tx.send(&request(3)).await?;
        let stream = c.chat(requests, CallOptions::default()).await?;
        let first = stream.next_response().await?.unwrap();
        // The second turn is sent only after the first answer came back.
        tx.send(&request(10)).await?;
        tx.finish().await?;
        let mut rest: Vec<GenerateResponse> = Vec::new();
        while let Some(r) = stream.next_response().await? {
            rest.push(r);
        }
        Ok::<_, QuillError>((first, rest, stream.timing()))
    });
    let (first, rest, timing) = got.unwrap();
    assert_eq!(first.tokens.sequence_id, Some(1));
    assert!(first.is_complete);
    let seconds: Vec<_> = rest.iter().map(|r| r.tokens.sequence_id).collect();
    assert_eq!(seconds, [Some(2), Some(2)]);
    assert_eq!(timing.tokens, 13);
}

#[test]
fn dropping_a_generate_stream_stops_the_server() {
    let srv = Server::start(&[]);
    let c = srv.client();
    c.block_on(async {
        // About 15 MB of responses: more than the socket buffers and HTTP/2 windows
        // hold, so the server is still sending when the client goes.
        let mut options = CallOptions::default();
        options.headers = vec![("quill-pregenerate".into(), "64".into())];
        let s = c.generate(&request(1_000_000), options).await?;
        s.next_response().await?;
        s.cancel();
        assert!(matches!(
            s.next_response().await,
            Err(QuillError::Cancelled { .. })
        ));
        Ok::<_, QuillError>(())
    })
    .unwrap();
    let start = Instant::now();
    loop {
        let s = stats(&c);
        if s["open_streams"] == 0 && s["cancelled_streams"] == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{s}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stream_cut_before_is_complete_is_a_stream_error() {
    // A server whose stream ends (END_STREAM) after a response not marked complete.
    use prost::Message;
    use quill::codec::stream::{encode_data, END_STREAM_FRAME};
    use quill::proto::inference::v1 as pb;
    let partial = pb::GenerateResponse {
        tokens: Some(pb::TokenBatch {
            tokens: vec![pb::Token::default()],
            ..Default::default()
        }),
        total_generated: 1,
        ..Default::default()
    };
    let mut body = encode_data(&partial.encode_to_vec()).unwrap();
    body.extend_from_slice(&END_STREAM_FRAME);
    let addr = common::raw::serve_each(move |mut sock| {
        use std::io::{BufReader, Write};
        let mut r = BufReader::new(sock.try_clone().unwrap());
        while common::raw::read_request_with_body(&mut r).is_some() {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).unwrap();
            sock.write_all(&body).unwrap();
        }
    });
    let c = QuillClient::new(format!("http://{addr}"), 5000, false).unwrap();
    let err = all(&c, &request(16)).unwrap_err();
    assert!(matches!(err, QuillError::Stream { .. }), "{err}");
    assert!(err.to_string().contains("is_complete"), "{err}");
}

#[test]
fn pregenerated_mode_streams_big_batches() {
    let srv = Server::start(&[]);
    let c = srv.client();
    let got = c.block_on(async {
        let mut options = CallOptions::default();
        options.headers = vec![("quill-pregenerate".into(), "64".into())];
        let s = c.generate(&request(100_000), options).await?;
        let mut sizes = Vec::new();
        while let Some(b) = s.next_batch().await? {
            sizes.push(b.tokens.len());
        }
        Ok::<_, QuillError>(sizes)
    });
    let sizes = got.unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 100_000);
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 64));
    // A size out of 1..=65535 is refused before anything is generated.
    for bad in ["0", "65536", "many"] {
        let mut options = CallOptions::default();
        options.headers = vec![("quill-pregenerate".into(), bad.into())];
        match c.block_on(c.generate(&request(8), options)) {
            Err(QuillError::Status { problem }) => {
                assert_eq!(problem.status, 400);
                assert!(problem.detail.unwrap().contains("quill-pregenerate"));
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn embed_refuses_an_answer_without_one_tensor_per_layer() {
    let srv = Server::start(&[]);
    // Under this prefix the server answers every POST with 200 and an empty body, as
    // the original Quill server's HTTP/3 path does.
    let c = srv.client_with(|cfg| cfg.base_url = format!("{}/test.v1.EmptyAnswers", srv.url));
    for (layers, expected) in [(vec![-1, -2], 2), (vec![], 1)] {
        let req = EmbedRequest {
            input_ids: vec![5],
            layers,
            ..Default::default()
        };
        match c.block_on(c.embed(&req, CallOptions::default())) {
            Err(QuillError::Protocol { reason }) => {
                assert!(
                    reason.contains(&format!("{expected} embeddings expected"))
                        && reason.contains("0 received"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // The real route answers as many as asked for.
    let good = srv.client();
    let req = EmbedRequest {
        input_ids: vec![5],
        layers: vec![-1, -2, 0],
        ..Default::default()
    };
    let tensors = good.block_on(good.embed(&req, CallOptions::default()));
    assert_eq!(tensors.unwrap().len(), 3);
}
