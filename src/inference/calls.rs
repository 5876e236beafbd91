//! The typed calls on [`QuillClient`]: each describes a [`Call`] of
//! `quill.inference.v1.InferenceService` and runs it like any other.

use bytes::Bytes;
use prost::Message;

use super::response::{Expect, GenerateTracker};
use super::stream::GenerateStream;
use super::{EmbedRequest, GenerateRequest, SERVICE};
use crate::client::{
    request_stream, Call, CallOptions, MessageStream, QuillClient, Reply, RequestSender,
    RequestStream,
};
use crate::error::{QuillError, Result};
use crate::proto::inference::v1 as pb;
use crate::tensor::{Tensor, TensorMeta};

/// The `Generate` call of `request`.
pub fn generate_call(request: &GenerateRequest) -> Call {
    Call::proto(SERVICE, "Generate", request.encode_to_vec())
}

/// The `Embed` call of `request`. Embedding has no side effects, so the call is
/// idempotent (retried when the client has `max_retries`).
pub fn embed_call(request: &EmbedRequest) -> Call {
    Call::proto(SERVICE, "Embed", request.encode_to_vec()).idempotent(true)
}

/// The `Chat` call reading its requests from `requests` (see [`chat_requests`]).
pub fn chat_call(requests: RequestStream) -> Call {
    Call::messages(SERVICE, "Chat", requests)
}

/// A tracker for a `Generate` (or, with `chat`, a `Chat`) stream, started now.
pub(crate) fn tracker_for(chat: bool) -> GenerateTracker {
    GenerateTracker::start(if chat {
        Expect::Generations
    } else {
        Expect::OneGeneration
    })
}

/// How many tensors the answer to `request` holds: one per layer asked for, or one
/// (the last layer's) when it names none.
pub fn expected_embeddings(request: &EmbedRequest) -> usize {
    request.layers.len().max(1)
}

/// The tensors of the `EmbedResponse` answering `request`, each checked: exactly
/// [`expected_embeddings`] of them (an empty body, as some servers answer every call,
/// holds none), and `metadata`, when sent, must describe them one for one. A reply that
/// breaks these rules is [`QuillError::Protocol`].
///
/// ```
/// use quill::inference::{embeddings_from_reply, EmbedRequest};
/// let request = EmbedRequest { input_ids: vec![7], layers: vec![-1, -2], ..Default::default() };
/// let err = embeddings_from_reply(&request, bytes::Bytes::new()).unwrap_err();
/// assert!(err.to_string().contains("2 embeddings expected"), "{err}");
/// ```
pub fn embeddings_from_reply(request: &EmbedRequest, body: Bytes) -> Result<Vec<Tensor>> {
    let resp = pb::EmbedResponse::decode(body)
        .map_err(|e| QuillError::protocol(format!("invalid EmbedResponse: {e}")))?;
    let expected = expected_embeddings(request);
    if resp.embeddings.len() != expected {
        let asked = if request.layers.is_empty() {
            "the last layer, no layers being named".to_owned()
        } else {
            format!("one per layer asked for, {:?}", request.layers)
        };
        return Err(QuillError::protocol(format!(
            "invalid EmbedResponse: {expected} embeddings expected ({asked}), {} received",
            resp.embeddings.len()
        )));
    }
    let tensors = resp
        .embeddings
        .into_iter()
        .map(Tensor::try_from)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| QuillError::protocol(format!("invalid EmbedResponse: {e}")))?;
    if !resp.metadata.is_empty() {
        let metas = resp
            .metadata
            .into_iter()
            .map(TensorMeta::try_from)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| QuillError::protocol(format!("invalid EmbedResponse: {e}")))?;
        let same = metas.len() == tensors.len()
            && metas
                .iter()
                .zip(&tensors)
                .all(|(m, t)| m.shape == t.meta().shape && m.dtype == t.meta().dtype);
        if !same {
            return Err(QuillError::protocol(
                "invalid EmbedResponse: metadata does not describe its embeddings",
            ));
        }
    }
    Ok(tensors)
}

/// The sending side of a [`QuillClient::chat`] call: one `GenerateRequest` per turn.
#[derive(Debug)]
pub struct ChatSender(RequestSender);

/// A chat request stream holding at most `capacity` requests not yet sent: the sender
/// and the stream to give [`QuillClient::chat`].
pub fn chat_requests(capacity: usize) -> (ChatSender, RequestStream) {
    let (tx, rx) = request_stream(capacity);
    (ChatSender(tx), rx)
}

impl ChatSender {
    /// Sends one request (a new generation), waiting while the stream is full.
    pub async fn send(&self, request: &GenerateRequest) -> Result<()> {
        self.0.send(request.encode_to_vec().into()).await
    }

    /// Ends the conversation: the server finishes the generations it has and ends.
    pub async fn finish(self) -> Result<()> {
        self.0.finish().await
    }

    /// Breaks the conversation off: the call fails with `Cancelled` giving `reason`.
    pub fn abort(self, reason: impl Into<String>) {
        self.0.abort(reason)
    }
}

impl QuillClient {
    /// `quill.inference.v1.InferenceService/Generate`: a stream of responses, timed
    /// from now.
    ///
    /// ```no_run
    /// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
    /// use quill::inference::GenerateRequest;
    /// let request = GenerateRequest { input_ids: vec![1, 2, 3], max_new_tokens: Some(32), ..Default::default() };
    /// let text = client.generate(&request, Default::default()).await?.text().await?;
    /// # Ok(()) }
    /// ```
    pub async fn generate(
        &self,
        request: &GenerateRequest,
        options: CallOptions,
    ) -> Result<GenerateStream> {
        self.typed_stream(generate_call(request).with_options(options), false)
            .await
    }

    /// `quill.inference.v1.InferenceService/Embed`: one tensor per layer asked for (one
    /// for the last layer when `layers` is empty); any other count is
    /// [`QuillError::Protocol`].
    ///
    /// ```no_run
    /// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
    /// use quill::inference::EmbedRequest;
    /// let request = EmbedRequest { input_ids: vec![1, 2, 3], pool: true, ..Default::default() };
    /// let tensors = client.embed(&request, Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn embed(&self, request: &EmbedRequest, options: CallOptions) -> Result<Vec<Tensor>> {
        let call = embed_call(request).with_options(CallOptions {
            idempotent: true,
            ..options
        });
        let reply: Reply = self.run(call).await?;
        embeddings_from_reply(request, reply.body)
    }

    /// `quill.inference.v1.InferenceService/Chat`: one generation per request sent on
    /// the [`ChatSender`] of `requests`, streamed back as they are produced. Send the
    /// first request before awaiting this (a server may answer only then), e.g. from
    /// another task.
    ///
    /// ```no_run
    /// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
    /// use quill::inference::{chat_requests, GenerateRequest};
    /// let (tx, requests) = chat_requests(4);
    /// tx.send(&GenerateRequest { input_ids: vec![7], ..Default::default() }).await?;
    /// let replies = client.chat(requests, Default::default()).await?;
    /// tx.finish().await?;
    /// while let Some(r) = replies.next_response().await? { /* ... */ }
    /// # Ok(()) }
    /// ```
    pub async fn chat(
        &self,
        requests: RequestStream,
        options: CallOptions,
    ) -> Result<GenerateStream> {
        self.typed_stream(chat_call(requests).with_options(options), true)
            .await
    }

    /// Runs a `Generate` or `Chat` call into a timed [`GenerateStream`].
    pub(crate) async fn typed_stream(&self, call: Call, chat: bool) -> Result<GenerateStream> {
        let path = call.path();
        let tracker = tracker_for(chat);
        let messages: MessageStream = self.run(call).await?;
        Ok(GenerateStream::from_parts(messages, tracker, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::proto::tensor::v1 as pbt;

    fn tensor(shape: Vec<u64>) -> Tensor {
        let meta = TensorMeta::new(shape, DType::Float32, None).unwrap();
        Tensor::zeros(meta).unwrap()
    }

    fn reply(tensors: &[Tensor], metas: &[TensorMeta]) -> Bytes {
        pb::EmbedResponse {
            embeddings: tensors.iter().map(pbt::Tensor::from).collect(),
            metadata: metas.iter().map(pbt::TensorMeta::from).collect(),
        }
        .encode_to_vec()
        .into()
    }

    fn asking(layers: Vec<i32>) -> EmbedRequest {
        EmbedRequest {
            input_ids: vec![7],
            layers,
            ..Default::default()
        }
    }

    #[test]
    fn embeddings_are_checked_against_their_metadata() {
        let t = tensor(vec![2, 4]);
        let one = std::slice::from_ref(&t);
        let last = asking(vec![]);
        let got = embeddings_from_reply(&last, reply(one, std::slice::from_ref(t.meta())));
        assert_eq!(got.unwrap(), one);
        // No metadata is fine.
        assert_eq!(embeddings_from_reply(&last, reply(one, &[])).unwrap(), one);
        // Metadata of another shape, or of another count, is a protocol error.
        let other = tensor(vec![4, 2]);
        for metas in [vec![other.meta().clone()], vec![t.meta().clone(); 2]] {
            let err = embeddings_from_reply(&last, reply(one, &metas)).unwrap_err();
            assert!(matches!(err, QuillError::Protocol { .. }), "{err}");
            assert!(err.to_string().contains("metadata"), "{err}");
        }
        // A body that is not an EmbedResponse.
        let body = Bytes::from_static(&[0x0a, 0x09, 0x01]);
        let err = embeddings_from_reply(&last, body).unwrap_err();
        assert!(matches!(err, QuillError::Protocol { .. }), "{err}");
    }

    #[test]
    fn one_embedding_per_layer_asked_for_or_an_error_naming_both_counts() {
        let t = tensor(vec![1, 4]);
        let two = asking(vec![-1, -2]);
        assert_eq!(expected_embeddings(&two), 2);
        assert_eq!(expected_embeddings(&asking(vec![])), 1);
        let ok = embeddings_from_reply(&two, reply(&[t.clone(), t.clone()], &[])).unwrap();
        assert_eq!(ok.len(), 2);
        // An empty body (what a server answering every call with 200 and nothing
        // sends), too few and too many tensors: never a silent short list.
        let cases = [
            (
                two.clone(),
                Bytes::new(),
                "2 embeddings expected",
                "0 received",
            ),
            (
                two.clone(),
                reply(std::slice::from_ref(&t), &[]),
                "2 embeddings expected",
                "1 received",
            ),
            (
                two,
                reply(&[t.clone(), t.clone(), t.clone()], &[]),
                "2",
                "3 received",
            ),
            (
                asking(vec![]),
                Bytes::new(),
                "1 embeddings expected",
                "0 received",
            ),
            (
                asking(vec![5]),
                reply(&[t.clone(), t], &[]),
                "1 embeddings",
                "2 received",
            ),
        ];
        for (request, body, expected, received) in cases {
            let err = embeddings_from_reply(&request, body).unwrap_err();
            assert!(matches!(err, QuillError::Protocol { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(expected) && text.contains(received), "{text}");
        }
    }
}
