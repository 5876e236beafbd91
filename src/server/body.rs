//! Reading request bodies (size limit, `Content-Encoding: zstd`) and building the
//! common response shapes (JSON, framed streams).

use std::convert::Infallible;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::problem::{bad_request, problem};
use super::MAX_REQUEST_BODY;
use crate::codec::stream::{Event, MessageReader};
use crate::codec::zstd::{content_coding, BodyDecoder, Coding};

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit, on the wire or decoded (413).
    TooLarge(String),
    /// Not valid zstd (400).
    Malformed(String),
    /// The connection failed while reading (400; the client is usually gone).
    Read(String),
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        match self {
            BodyError::TooLarge(m) => problem(StatusCode::PAYLOAD_TOO_LARGE, m),
            BodyError::Malformed(m) | BodyError::Read(m) => bad_request(m),
        }
    }
}

/// A request body read chunk by chunk, zstd-decoded when the request says so, with the
/// 256 MiB limit enforced both on the wire and after decoding.
pub struct RequestBody {
    inner: BodyDataStream,
    decoder: Option<BodyDecoder>,
    raw_len: u64,
    decoded_len: u64,
    limit: u64,
    done: bool,
}

impl RequestBody {
    /// Refuses (as a response) unknown `Content-Encoding`s and a `Content-Length` over
    /// the limit before reading anything.
    #[allow(clippy::result_large_err)]
    pub fn new(headers: &HeaderMap, body: Body) -> Result<RequestBody, Response> {
        Self::with_limit(headers, body, MAX_REQUEST_BODY)
    }

    #[allow(clippy::result_large_err)]
    pub fn with_limit(
        headers: &HeaderMap,
        body: Body,
        limit: u64,
    ) -> Result<RequestBody, Response> {
        let values = headers.get_all(header::CONTENT_ENCODING);
        let coding = content_coding(values.iter().map(|v| v.as_bytes())).map_err(|e| {
            problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{e}; this server accepts zstd"),
            )
        })?;
        // The decoded size is checked below against the same limit, as a 413.
        let decoder = match coding {
            Coding::Identity => None,
            Coding::Zstd => Some(
                BodyDecoder::new(coding, None)
                    .map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            ),
        };
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body of {len} bytes is over the {limit}-byte limit"),
                ));
            }
        }
        Ok(RequestBody {
            inner: body.into_data_stream(),
            decoder,
            raw_len: 0,
            decoded_len: 0,
            limit,
            done: false,
        })
    }

    async fn next_raw(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(BodyError::Read(format!(
                "reading the request body failed: {e}"
            ))),
            Some(Ok(chunk)) => {
                self.raw_len += chunk.len() as u64;
                if self.raw_len > self.limit {
                    return Err(BodyError::TooLarge(format!(
                        "request body is over the {}-byte limit",
                        self.limit
                    )));
                }
                Ok(Some(chunk))
            }
        }
    }

    /// The next decoded chunk, `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        if self.done {
            return Ok(None);
        }
        let out = if self.decoder.is_none() {
            loop {
                match self.next_raw().await? {
                    Some(c) if c.is_empty() => continue,
                    other => break other,
                }
            }
        } else {
            loop {
                let dec = self.decoder.as_mut().expect("decoder present");
                if let Some(out) = dec.next_output().map_err(zstd_error)? {
                    break Some(out);
                }
                let raw = self.next_raw().await?;
                let dec = self.decoder.as_mut().expect("decoder present");
                match raw {
                    Some(raw) => dec.push(raw),
                    None => {
                        dec.finish().map_err(zstd_error)?;
                        break None;
                    }
                }
            }
        };
        match out {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(c) => {
                self.decoded_len += c.len() as u64;
                if self.decoded_len > self.limit {
                    return Err(BodyError::TooLarge(format!(
                        "decoded request body is over the {}-byte limit",
                        self.limit
                    )));
                }
                Ok(Some(c))
            }
        }
    }

    /// The whole decoded body.
    pub async fn collect(mut self) -> Result<Bytes, BodyError> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = Vec::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(c) = self.chunk().await? {
            all.extend_from_slice(&c);
        }
        Ok(all.into())
    }
}

fn zstd_error(e: crate::QuillError) -> BodyError {
    BodyError::Malformed(format!("request body is not valid zstd: {e}"))
}

/// Reads the whole body of a JSON call and parses it; an empty body is `{}`.
#[allow(clippy::result_large_err)]
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    let bytes = RequestBody::new(headers, body)?
        .collect()
        .await
        .map_err(IntoResponse::into_response)?;
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text).map_err(|e| bad_request(format!("invalid JSON request: {e}")))
}

/// A 200 JSON response.
pub fn json_response(value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::protocol::CONTENT_TYPE_JSON),
        )],
        body,
    )
        .into_response()
}

/// Content type of streamed responses made of varint frames.
pub const CONTENT_TYPE_STREAM: &str = crate::protocol::CONTENT_TYPE_PROTO;
/// Content type of tensor-frame bodies.
pub const CONTENT_TYPE_TENSOR: &str = "application/x-quill-tensor";

/// Error that aborts a streamed body: hyper then cuts the chunked response without
/// its terminating chunk, which the client sees as a broken body.
#[derive(Debug)]
pub struct Abort(pub &'static str);

/// The messages of a framed request body (protocol §3), read as they arrive: what the
/// bidirectional routes (`BidiEcho`, `Chat`) answer message by message.
pub struct RequestMessages {
    body: RequestBody,
    reader: MessageReader,
}

impl RequestMessages {
    pub fn new(body: RequestBody) -> RequestMessages {
        RequestMessages {
            body,
            reader: MessageReader::new(),
        }
    }

    /// The next message, `None` at the request's END_STREAM (credit frames are
    /// skipped). A body that ends before END_STREAM, fails, or holds malformed frames
    /// is an [`Abort`]: the response must not end as if the request were whole.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Abort> {
        loop {
            match self.reader.next_event() {
                Ok(Some(Event::Message(m))) => return Ok(Some(m)),
                Ok(Some(Event::Credit(_))) => {}
                Ok(Some(Event::End)) => return Ok(None),
                Ok(None) => match self.body.chunk().await {
                    Ok(Some(chunk)) => self.reader.push(&chunk),
                    Ok(None) | Err(_) => {
                        return Err(Abort("request stream ended before END_STREAM"))
                    }
                },
                Err(_) => return Err(Abort("malformed request stream")),
            }
        }
    }

    /// Reads what is left of the body (normally its terminating chunk) for up to
    /// `wait`, so the connection stays reusable.
    pub async fn drain(&mut self, wait: std::time::Duration) {
        let _ = tokio::time::timeout(wait, async {
            while let Ok(Some(_)) = self.body.chunk().await {}
        })
        .await;
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Abort {}

/// A 200 streamed (chunked) response; each item is written as it is produced.
pub fn stream_response<S>(content_type: &'static str, stream: S) -> Response
where
    S: Stream<Item = Result<Bytes, Abort>> + Send + 'static,
{
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A 200 streamed response that never fails.
pub fn infallible_stream_response<S>(content_type: &'static str, stream: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from_stream(stream.map(Ok::<_, Infallible>)),
    )
        .into_response()
}
