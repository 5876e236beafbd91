//! `GenerateResponse` as the core sees it, and the tracker that decodes a stream of
//! them: checked conversion, timing, and the rule that a stream must end with a
//! response marked `is_complete`.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::timing::{StreamTimer, StreamTiming};
use crate::error::{QuillError, Result};
use crate::proto::inference::v1 as pb;
use crate::proto::token_batch_from_proto;
use crate::tensor::Tensor;
use crate::token::TokenBatch;

/// One message of a generate or chat stream: a batch of new tokens, the optional
/// embedding, how many tokens the generation has produced so far, and whether (and
/// why) it is complete.
///
/// ```
/// let r = quill::inference::GenerateResponse::default();
/// assert!(r.tokens.tokens.is_empty() && !r.is_complete);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateResponse {
    /// The new tokens (`sequence_id` tells chat generations apart).
    pub tokens: TokenBatch,
    /// One flag per token, or empty when the server sent none.
    pub attention_mask: Vec<bool>,
    /// The embedding the server streamed with these tokens (`stream_embeddings`).
    pub embedding: Option<Arc<Tensor>>,
    /// Tokens generated so far in this generation, these included.
    pub total_generated: u32,
    /// The last response of its generation.
    pub is_complete: bool,
    /// Why the generation ended (`"length"`, `"stop"`, …), on the complete response.
    pub finish_reason: Option<String>,
}

impl TryFrom<pb::GenerateResponse> for GenerateResponse {
    type Error = QuillError;

    fn try_from(r: pb::GenerateResponse) -> Result<GenerateResponse> {
        let (tokens, attention_mask) = match r.tokens {
            Some(b) => token_batch_from_proto(b)?,
            None => (TokenBatch::default(), Vec::new()),
        };
        Ok(GenerateResponse {
            tokens,
            attention_mask,
            embedding: r.embedding.map(Tensor::try_from).transpose()?.map(Arc::new),
            total_generated: r.total_generated,
            is_complete: r.is_complete,
            finish_reason: r.finish_reason,
        })
    }
}

/// What the end of a stream must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `Generate`: at least one response, the last one complete.
    OneGeneration,
    /// `Chat`: any number of generations, each finished by a complete response.
    Generations,
}

/// Decodes the messages of one generate or chat stream and times their delivery.
#[derive(Debug, Clone)]
pub(crate) struct GenerateTracker {
    expect: Expect,
    timing: StreamTimer,
    responses: u64,
    /// The last response received was complete (or none has arrived yet).
    between_generations: bool,
}

impl GenerateTracker {
    /// A tracker whose clock starts now: create it just before the call is sent.
    pub(crate) fn start(expect: Expect) -> GenerateTracker {
        GenerateTracker {
            expect,
            timing: StreamTimer::start(),
            responses: 0,
            between_generations: true,
        }
    }

    /// Restarts the clock: for a stream object made before its call is sent (Python's
    /// `generate_async` opens on the first iteration).
    #[cfg(feature = "python")]
    pub(crate) fn restart(&mut self) {
        if self.responses == 0 {
            self.timing = StreamTimer::start();
        }
    }

    /// One stream message as a response. A message that is not a valid
    /// `GenerateResponse` is a [`QuillError::Protocol`] error (the server broke the
    /// protocol), and counts for nothing.
    pub(crate) fn message(&mut self, message: Bytes) -> Result<GenerateResponse> {
        let response = pb::GenerateResponse::decode(message)
            .map_err(QuillError::from)
            .and_then(GenerateResponse::try_from)
            .map_err(|e| QuillError::protocol(format!("invalid GenerateResponse: {e}")))?;
        self.responses += 1;
        self.between_generations = response.is_complete;
        self.timing.delivered(response.tokens.tokens.len());
        Ok(response)
    }

    /// The stream ended with END_STREAM: fine only after a complete generation.
    pub(crate) fn end(&self, path: &str) -> Result<()> {
        if self.expect == Expect::OneGeneration && self.responses == 0 {
            return Err(QuillError::stream(format!(
                "stream {path} ended without a GenerateResponse"
            )));
        }
        if !self.between_generations {
            return Err(QuillError::stream(format!(
                "stream {path} ended before a GenerateResponse with is_complete"
            )));
        }
        Ok(())
    }

    pub(crate) fn timing(&self) -> StreamTiming {
        self.timing.timing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensor::v1 as pbt;

    fn encoded(tokens: u32, complete: bool) -> Bytes {
        let resp = pb::GenerateResponse {
            tokens: Some(pb::TokenBatch {
                tokens: (0..tokens)
                    .map(|i| pb::Token {
                        id: i,
                        position: i,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            total_generated: tokens,
            is_complete: complete,
            finish_reason: complete.then(|| "length".to_owned()),
            ..Default::default()
        };
        resp.encode_to_vec().into()
    }

    #[test]
    fn a_generation_must_end_complete() {
        let mut t = GenerateTracker::start(Expect::OneGeneration);
        let err = t.end("p").unwrap_err();
        assert!(matches!(err, QuillError::Stream { .. }), "{err}");
        let r = t.message(encoded(3, false)).unwrap();
        assert_eq!(r.tokens.token_ids(), [0, 1, 2]);
        let err = t.end("p").unwrap_err();
        assert!(err.to_string().contains("is_complete"), "{err}");
        let r = t.message(encoded(2, true)).unwrap();
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        t.end("p").unwrap();
        assert_eq!(t.timing().tokens, 5);
        assert_eq!(t.timing().responses, 2);
    }

    #[test]
    fn the_golden_response_of_protocol_md_decodes_typed() {
        // docs/protocol.md §9: the GenerateResponse example, byte for byte.
        let golden: &[u8] = &[
            0x0a, 0x0a, 0x0a, 0x06, 0x08, 0x05, 0x12, 0x02, 0x68, 0x69, 0x18, 0x01, 0x18, 0x01,
            0x20, 0x01, 0x2a, 0x04, 0x73, 0x74, 0x6f, 0x70,
        ];
        let mut t = GenerateTracker::start(Expect::OneGeneration);
        let r = t.message(Bytes::from_static(golden)).unwrap();
        assert_eq!(
            r.tokens.tokens,
            [crate::token::Token::with_text(5, "hi", 0, None)]
        );
        assert!(r.tokens.is_final && r.is_complete && r.attention_mask.is_empty());
        assert_eq!(
            (r.total_generated, r.finish_reason.as_deref()),
            (1, Some("stop"))
        );
        assert!(r.embedding.is_none());
        t.end("p").unwrap();
    }

    #[test]
    fn an_empty_chat_is_fine_and_a_cut_one_is_not() {
        let mut t = GenerateTracker::start(Expect::Generations);
        t.end("p").unwrap();
        t.message(encoded(1, true)).unwrap();
        t.message(encoded(1, false)).unwrap();
        assert!(matches!(t.end("p"), Err(QuillError::Stream { .. })));
    }

    #[test]
    fn bad_messages_are_protocol_errors() {
        let mut t = GenerateTracker::start(Expect::OneGeneration);
        // Field 1 (tokens) declared as a 5-byte message with 1 byte present.
        let err = t
            .message(Bytes::from_static(&[0x0a, 0x05, 0x01]))
            .unwrap_err();
        assert!(matches!(err, QuillError::Protocol { .. }), "{err}");
        // Field 1 (tokens, a message) sent as a varint: the wrong wire type.
        let err = t.message(Bytes::from_static(&[0x08, 0x01])).unwrap_err();
        assert!(matches!(err, QuillError::Protocol { .. }), "{err}");
        // An embedding of dtype number 42.
        let bad = pb::GenerateResponse {
            embedding: Some(pbt::Tensor {
                meta: Some(pbt::TensorMeta {
                    shape: vec![1],
                    dtype: 42,
                    byte_size: 4,
                    ..Default::default()
                }),
                data: Bytes::from_static(&[0; 4]),
            }),
            ..Default::default()
        };
        let err = t.message(bad.encode_to_vec().into()).unwrap_err();
        assert!(err.to_string().contains("42"), "{err}");
        // An embedding whose byte_size disagrees with its shape.
        let bad = pb::GenerateResponse {
            embedding: Some(pbt::Tensor {
                meta: Some(pbt::TensorMeta {
                    shape: vec![2],
                    dtype: 1,
                    byte_size: 4,
                    ..Default::default()
                }),
                data: Bytes::from_static(&[0; 4]),
            }),
            ..Default::default()
        };
        let err = t.message(bad.encode_to_vec().into()).unwrap_err();
        assert!(err.to_string().contains("byte_size"), "{err}");
        // A mask of the wrong length.
        let bad = pb::GenerateResponse {
            tokens: Some(pb::TokenBatch {
                tokens: vec![pb::Token::default()],
                attention_mask: vec![true, false],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            t.message(bad.encode_to_vec().into()),
            Err(QuillError::Protocol { .. })
        ));
        assert_eq!(t.timing().responses, 0);
    }
}
