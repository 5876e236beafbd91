//! [`GenerateStream`]: the responses of a `Generate` or `Chat` call, decoded, checked
//! and timed.

use std::sync::Mutex;

use futures_util::stream::{self, Stream};

use super::response::{GenerateResponse, GenerateTracker};
use super::timing::StreamTiming;
use crate::client::MessageStream;
use crate::error::Result;
use crate::token::TokenBatch;

/// The responses of a typed `generate` or `chat` call, in order, with their
/// [`timing`](Self::timing).
///
/// `next_response` returns `Ok(None)` after END_STREAM. Besides the errors of
/// [`MessageStream`], a message that is not a valid `GenerateResponse` is a
/// [`QuillError::Protocol`](crate::QuillError::Protocol) error (the stream goes on), and
/// a stream that ends before a response marked `is_complete` is a
/// [`QuillError::Stream`](crate::QuillError::Stream) error. Dropping the stream or
/// [`cancel`](Self::cancel) closes the call, so the server stops generating.
///
/// ```no_run
/// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
/// use quill::inference::GenerateRequest;
/// let request = GenerateRequest { input_ids: vec![1, 2, 3], max_new_tokens: Some(32), ..Default::default() };
/// let stream = client.generate(&request, Default::default()).await?;
/// while let Some(response) = stream.next_response().await? {
///     print!("{}", response.tokens.text());
/// }
/// println!("\n{:?}", stream.timing());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GenerateStream {
    messages: MessageStream,
    tracker: Mutex<GenerateTracker>,
    path: String,
}

impl GenerateStream {
    pub(crate) fn from_parts(
        messages: MessageStream,
        tracker: GenerateTracker,
        path: String,
    ) -> GenerateStream {
        GenerateStream {
            messages,
            tracker: Mutex::new(tracker),
            path,
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, GenerateTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next response, `None` after the stream ended complete.
    pub async fn next_response(&self) -> Result<Option<GenerateResponse>> {
        match self.messages.next_message().await? {
            Some(message) => self.tracker().message(message).map(Some),
            None => self.tracker().end(&self.path).map(|()| None),
        }
    }

    /// The tokens of the next response, `None` after the end.
    pub async fn next_batch(&self) -> Result<Option<TokenBatch>> {
        Ok(self.next_response().await?.map(|r| r.tokens))
    }

    /// The text of every remaining token, once the stream ended complete.
    pub async fn text(&self) -> Result<String> {
        let mut text = String::new();
        while let Some(r) = self.next_response().await? {
            text.push_str(&r.tokens.text());
        }
        Ok(text)
    }

    /// Timing so far; final once the stream ended.
    pub fn timing(&self) -> StreamTiming {
        self.tracker().timing()
    }

    /// Stops the call; see [`MessageStream::cancel`].
    pub fn cancel(&self) {
        self.messages.cancel();
    }

    /// Whether the stream is over: ended, failed or cancelled.
    pub fn is_finished(&self) -> bool {
        self.messages.is_finished()
    }

    /// The responses as a [`Stream`] (ends after the first error).
    ///
    /// ```no_run
    /// # async fn demo(stream: quill::inference::GenerateStream) -> quill::Result<()> {
    /// use futures_util::TryStreamExt;
    /// let responses: Vec<_> = stream.into_stream().try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<GenerateResponse>> + Send {
        stream::unfold(Some(self), |s| async move {
            let s = s?;
            match s.next_response().await {
                Ok(Some(r)) => Some((Ok(r), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
