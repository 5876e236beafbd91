//! Streamed request bodies: a message stream framed on the fly (client streaming and
//! bidi calls) and a tensor as tensor frames.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::request::{Outgoing, RequestStream};

use crate::codec::stream::{frame_header, END_STREAM_FRAME};
use crate::codec::tensor::encode_tensor_parts;
use crate::error::{QuillError, Result};
use crate::protocol::{flags, TENSOR_UPLOAD_CHUNK};
use crate::tensor::Tensor;

/// Messages up to this size are copied behind their frame header into one chunk; larger
/// ones go out as a chunk of their own, uncopied.
const COALESCE_LIMIT: usize = 8 * 1024;

/// Where a request-body failure is kept: hyper only learns that the body failed and
/// reports a broken connection, while the caller deserves the real reason.
#[derive(Clone, Default)]
pub(crate) struct ErrorSlot(Arc<Mutex<Option<QuillError>>>);

impl ErrorSlot {
    fn set(&self, err: QuillError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(err);
    }

    /// The recorded error, if the request body failed.
    pub fn take(&self) -> Option<QuillError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `err`, unless the request body failed first: then that failure.
    pub fn or(&self, err: QuillError) -> QuillError {
        self.take().unwrap_or(err)
    }
}

enum FrameState {
    Next(mpsc::Receiver<Outgoing>),
    Payload(mpsc::Receiver<Outgoing>, Bytes),
    Done,
}

/// A chunked body of DATA frames, one per message of `requests`, then END_STREAM once
/// the sender finishes. A message over the frame limit, an abort, or a sender gone
/// without finishing fails the body (recorded in `slot`), so the server sees the
/// request stream broken off rather than complete.
pub(crate) fn framed_requests(requests: RequestStream, slot: ErrorSlot) -> reqwest::Body {
    reqwest::Body::wrap_stream(frame_stream(requests, slot))
}

fn frame_stream(
    requests: RequestStream,
    slot: ErrorSlot,
) -> impl futures_util::Stream<Item = Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(FrameState::Next(requests.rx), move |state| {
        let slot = slot.clone();
        async move {
            let fail = |e: QuillError| {
                slot.set(e.clone());
                Some((Err(e), FrameState::Done))
            };
            match state {
                FrameState::Done => None,
                FrameState::Payload(rx, payload) => Some((Ok(payload), FrameState::Next(rx))),
                FrameState::Next(mut rx) => match rx.recv().await {
                    Some(Outgoing::Finish) => {
                        Some((Ok(Bytes::from_static(&END_STREAM_FRAME)), FrameState::Done))
                    }
                    Some(Outgoing::Abort(reason)) => fail(QuillError::Cancelled {
                        reason: format!("the request stream was aborted: {reason}"),
                    }),
                    None => fail(QuillError::Cancelled {
                        reason: "the request stream ended without finish()".into(),
                    }),
                    Some(Outgoing::Message(msg)) => match frame_header(flags::DATA, msg.len()) {
                        Err(e) => fail(e),
                        Ok(mut header) if msg.len() <= COALESCE_LIMIT => {
                            header.extend_from_slice(&msg);
                            Some((Ok(Bytes::from(header)), FrameState::Next(rx)))
                        }
                        Ok(header) => Some((Ok(Bytes::from(header)), FrameState::Payload(rx, msg))),
                    },
                },
            }
        }
    })
}

/// The tensor's frames as a streamed body: headers plus slices of the tensor's own
/// buffer, so the element bytes are never copied on the way to the socket.
pub(crate) fn tensor_body(tensor: &Tensor) -> Result<reqwest::Body> {
    let parts = encode_tensor_parts(tensor, TENSOR_UPLOAD_CHUNK)?;
    Ok(reqwest::Body::wrap_stream(futures_util::stream::iter(
        parts.into_iter().map(Ok::<Bytes, Infallible>),
    )))
}

#[cfg(test)]
mod tests {
    use super::super::request::request_stream;
    use super::*;
    use crate::codec::stream::decode_messages;

    async fn collect(rx: RequestStream, slot: ErrorSlot) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let mut s = std::pin::pin!(frame_stream(rx, slot));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tensor_uploads_in_256_kib_payload_frames() {
        use crate::codec::tensor::{decode_tensor, TensorFrame, TensorFrameDecoder};
        use crate::dtype::DType;
        use crate::tensor::{Tensor, TensorMeta};
        use http_body_util::BodyExt;
        let len = 2 * TENSOR_UPLOAD_CHUNK + 4099;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let meta = TensorMeta::new(vec![len as u64], DType::Uint8, None).unwrap();
        let tensor = Tensor::new(meta, Bytes::from(data.clone())).unwrap();
        let body = tensor_body(&tensor)
            .unwrap()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let mut frames = TensorFrameDecoder::new();
        frames.push(&body);
        let mut payloads = Vec::new();
        while let Some(frame) = frames.next_frame().unwrap() {
            if let TensorFrame::Payload(p) = frame {
                payloads.push(p.len());
            }
        }
        assert_eq!(payloads, [TENSOR_UPLOAD_CHUNK, TENSOR_UPLOAD_CHUNK, 4099]);
        assert_eq!(decode_tensor(&body).unwrap().data().as_ref(), &data[..]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_messages_then_end() {
        let (tx, rx) = request_stream(8);
        tx.send(Bytes::from_static(b"hi")).await.unwrap();
        tx.send(Bytes::new()).await.unwrap();
        tx.send(Bytes::from(vec![7u8; COALESCE_LIMIT + 1]))
            .await
            .unwrap();
        tx.finish().await.unwrap();
        let slot = ErrorSlot::default();
        let body = collect(rx, slot.clone()).await.unwrap();
        let msgs = decode_messages(&body).unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(&msgs[0][..], b"hi");
        assert!(msgs[1].is_empty());
        assert_eq!(msgs[2].len(), COALESCE_LIMIT + 1);
        assert!(body.ends_with(&END_STREAM_FRAME));
        assert!(slot.take().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_that_does_not_finish_never_sends_end_stream() {
        for how in ["abort", "drop"] {
            let (tx, rx) = request_stream(8);
            tx.send(Bytes::from_static(b"partial")).await.unwrap();
            match how {
                "abort" => tx.abort("the generator raised"),
                _ => drop(tx),
            }
            let slot = ErrorSlot::default();
            let e = collect(rx, slot.clone()).await.unwrap_err();
            assert!(matches!(e, QuillError::Cancelled { .. }), "{e}");
            let recorded = slot.take().unwrap().to_string();
            let want = if how == "abort" {
                "generator raised"
            } else {
                "without finish"
            };
            assert!(recorded.contains(want), "{how}: {recorded}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn oversized_message_fails_the_body() {
        let (tx, rx) = request_stream(1);
        tx.send(Bytes::from(vec![
            0u8;
            crate::protocol::MAX_FRAME_PAYLOAD + 1
        ]))
        .await
        .unwrap();
        let slot = ErrorSlot::default();
        assert!(matches!(
            collect(rx, slot.clone()).await,
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(matches!(
            slot.take(),
            Some(QuillError::InvalidArgument { .. })
        ));
    }
}
