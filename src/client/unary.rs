//! Calls whose response is one buffered message: unary calls (with retries) and client
//! streams.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::body::{framed_requests, ErrorSlot};
use super::call::CallContext;
use super::compression::encode_request;
use super::errors::BodyKind;
use super::retry;
use crate::error::Result;

/// The answer to a unary call: its (2xx) status and decoded body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    #[cfg_attr(not(feature = "python"), allow(dead_code))] // read by the Python face
    pub status: u16,
    pub body: Bytes,
}

/// A unary call: the raw message out, the raw message back. Retried per `max_retries`
/// (the caller passes 0 for calls not marked idempotent).
pub(crate) async fn call(ctx: CallContext, body: Bytes, max_retries: u32) -> Result<Reply> {
    let (body, zstd) = encode_request(body, ctx.compression)?;
    let ctx = &ctx;
    let attempts = retry::run(max_retries, ctx.deadline, |_| {
        let body = body.clone();
        async move {
            let resp = ctx.send(ctx.request(body.into(), zstd)).await?;
            let status = resp.status().as_u16();
            let body = ctx.read_body(resp, BodyKind::Unary).await?;
            Ok(Reply { status, body })
        }
    });
    ctx.within_deadline(attempts).await
}

/// A client-streaming call: the messages from `requests` framed as they come, then one
/// raw response message. Never retried: the request stream cannot be replayed.
pub(crate) async fn client_stream(
    ctx: CallContext,
    requests: mpsc::Receiver<Bytes>,
) -> Result<Bytes> {
    let slot = ErrorSlot::default();
    let body = framed_requests(requests, slot.clone());
    let result = ctx
        .within_deadline(async {
            let resp = ctx.send(ctx.request(body, false)).await?;
            ctx.read_body(resp, BodyKind::Unary).await
        })
        .await;
    result.map_err(|e| slot.or(e))
}
