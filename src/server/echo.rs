//! `echo.v1.EchoService`: Echo (unary), Headers (what arrived), BidiEcho (full-duplex
//! bidirectional streaming) and ClientStream (client streaming).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::{json, Map, Value};

use super::body::{
    json_response, stream_response, Abort, RequestBody, RequestMessages, CONTENT_TYPE_STREAM,
};
use super::problem::{bad_request, problem};
use crate::codec::stream::{encode_data, Event, MessageReader, CANCEL_FRAME, END_STREAM_FRAME};
use crate::QuillError;

/// How long BidiEcho waits, after the request's END_STREAM, for the request body to end
/// (so the connection can be kept alive) before closing the response anyway.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// `POST /echo.v1.EchoService/Echo`: the body back, with the request's content type.
pub async fn echo(headers: HeaderMap, body: Body) -> Response {
    let body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match body.collect().await {
        Ok(bytes) => {
            let ct =
                headers
                    .get(header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(
                        crate::protocol::CONTENT_TYPE_PROTO,
                    ));
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /echo.v1.EchoService/Headers`: a JSON object of the request headers
/// (lower-case names; repeated headers joined with `, `). The body is ignored.
pub async fn headers(headers: HeaderMap, body: axum::body::Body) -> Response {
    // The body is ignored but read first: a response sent over an unread request body
    // makes the server close the connection, and a client that has already reused it
    // for its next call sees that call fail.
    let _ = axum::body::to_bytes(body, crate::protocol::MAX_REQUEST_BODY as usize).await;
    let mut map = Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    json_response(&Value::Object(map))
}

/// A `BidiEcho` request message that makes the server abort its response with CANCEL.
const SERVER_CANCEL: &[u8] = b"quill:server-cancel";

struct BidiState {
    requests: RequestMessages,
    ended: bool,
}

/// `POST /echo.v1.EchoService/BidiEcho`: answers 200 at once and echoes every DATA
/// payload as a DATA frame as soon as it has arrived, END_STREAM after the request's
/// END_STREAM. Malformed, cancelled or truncated request streams abort the response
/// without END_STREAM; the message `quill:server-cancel` makes the server end its
/// response with a CANCEL frame (a server failure mid-stream).
pub async fn bidi_echo(headers: HeaderMap, body: Body) -> Response {
    let body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let state = BidiState {
        requests: RequestMessages::new(body),
        ended: false,
    };
    let frames = stream::unfold(state, |mut st| async move {
        if st.ended {
            st.requests.drain(DRAIN_WAIT).await;
            return None;
        }
        let item = match st.requests.next().await {
            // The client asks for a server failure mid-stream: CANCEL, then the stream
            // is over (tests of how faces report it).
            Ok(Some(m)) if m.as_ref() == SERVER_CANCEL => {
                st.ended = true;
                Ok(Bytes::from_static(&CANCEL_FRAME))
            }
            Ok(Some(m)) => encode_data(&m)
                .map(Bytes::from)
                .map_err(|_| Abort("echo frame too large")),
            Ok(None) => {
                st.ended = true;
                Ok(Bytes::from_static(&END_STREAM_FRAME))
            }
            Err(abort) => {
                st.ended = true;
                Err(abort)
            }
        };
        Some((item, st))
    });
    stream_response(CONTENT_TYPE_STREAM, frames)
}

fn stream_error(e: QuillError) -> Response {
    match e {
        QuillError::Stream { reason } if reason.contains("CANCEL") => problem(
            StatusCode::from_u16(499).expect("499 is a valid status"),
            format!("the client cancelled the stream: {reason}"),
        ),
        other => bad_request(format!("malformed request stream: {other}")),
    }
}

/// `POST /echo.v1.EchoService/ClientStream`: counts the request's DATA messages and
/// their bytes; answers `{"count": N, "bytes": M}` after END_STREAM.
pub async fn client_stream(headers: HeaderMap, body: Body) -> Response {
    let mut body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut reader = MessageReader::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        match reader.next_event() {
            Ok(Some(Event::Message(m))) => {
                count += 1;
                bytes += m.len() as u64;
            }
            Ok(Some(Event::Credit(_) | Event::End)) => {}
            Ok(None) => match body.chunk().await {
                Ok(Some(chunk)) => reader.push(&chunk),
                Ok(None) => break,
                Err(e) => return e.into_response(),
            },
            Err(e) => return stream_error(e),
        }
    }
    if let Err(e) = reader.finish() {
        return stream_error(e);
    }
    json_response(&json!({"count": count, "bytes": bytes}))
}
