//! What a call returns, chosen by type: [`Reply`] (one message), [`Tensor`] (one
//! tensor in tensor frames), [`MessageStream`] / [`TokenStream`] (a stream). Each
//! answer knows how to read its response; sending, retries, deadlines and the request
//! body are shared ([`exchange`]).

// `sealed::Read` takes the crate-private `CallContext`: it is the sealed half of the
// public `Answer` trait, nameable and implementable only inside the crate.
#![allow(private_interfaces)]

use super::transport::Response;
use std::future::Future;

use bytes::Bytes;

use super::body::{framed_requests, tensor_body, ErrorSlot};
use super::call::CallContext;
use super::compression::encode_request;
use super::errors::BodyKind;
use super::request::Body;
use super::retry;
use super::stream::{self, MessageStream, TokenStream};
use super::tensor::read_tensor;
use crate::error::Result;
use crate::tensor::Tensor;

/// The answer to a call read as one message: its (2xx) status and decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

mod sealed {
    use super::*;

    /// How an answer type reads its response. Sealed: the set of answers is the
    /// protocol's set of response shapes.
    pub trait Read: Sized + Send + 'static {
        /// Whether a blocking caller may drive the call on its own thread. A stream is
        /// read by a task after `run` returns, so it lives on the client's workers.
        const ON_CALLER: bool;

        fn read(
            ctx: CallContext,
            body: Body,
            retries: u32,
        ) -> impl Future<Output = Result<Self>> + Send + 'static;
    }
}

/// A type a call can return; see [`Call`](super::Call).
pub trait Answer: sealed::Read {}

impl Answer for Reply {}
impl Answer for Tensor {}
impl Answer for MessageStream {}
impl Answer for TokenStream {}

/// The request body of one attempt. Messages can be sent once; bytes and tensors as
/// often as a retry needs (bytes are compressed once, before the first attempt).
enum Outgoing {
    Bytes { data: Bytes, zstd: bool },
    Tensor(Tensor),
    Messages(Option<super::request::RequestStream>),
}

impl Outgoing {
    fn new(body: Body, compression: bool) -> Result<Outgoing> {
        Ok(match body {
            Body::Proto(data) | Body::Json(data) => {
                let (data, zstd) = encode_request(data, compression)?;
                Outgoing::Bytes { data, zstd }
            }
            Body::Tensor(t) => Outgoing::Tensor(t),
            Body::Messages(requests) => Outgoing::Messages(Some(requests)),
        })
    }

    fn replayable(&self) -> bool {
        !matches!(self, Outgoing::Messages(_))
    }

    /// The body for the next attempt, and whether it is zstd.
    fn attempt(&mut self, slot: &ErrorSlot) -> Result<(reqwest::Body, bool)> {
        Ok(match self {
            Outgoing::Bytes { data, zstd } => (data.clone().into(), *zstd),
            Outgoing::Tensor(t) => (tensor_body(t)?, false),
            Outgoing::Messages(requests) => {
                let requests = requests.take().expect("a message body is sent once");
                (framed_requests(requests, slot.clone()), false)
            }
        })
    }
}

/// Sends the call (retried per `retries` when its body can be sent again) and reads a
/// 2xx response with `read`, all under the call's deadline. A failure of the request
/// body itself (an aborted request stream) is reported rather than the broken
/// connection it caused.
async fn exchange<'c, T, F, Fut>(
    ctx: &'c CallContext,
    body: Body,
    retries: u32,
    read: F,
) -> Result<T>
where
    F: Fn(&'c CallContext, Response) -> Fut,
    Fut: Future<Output = Result<T>> + 'c,
{
    let mut outgoing = Outgoing::new(body, ctx.compress_requests())?;
    let retries = if outgoing.replayable() { retries } else { 0 };
    let slot = ErrorSlot::default();
    let attempts = retry::run(retries, ctx.deadline, &ctx.label.path, |_| {
        let next = outgoing.attempt(&slot);
        let read = &read;
        async move {
            let (body, zstd) = next?;
            let _slot = ctx.connection_slot().await;
            let resp = ctx.send(body, zstd).await?;
            read(ctx, resp).await
        }
    });
    ctx.within_deadline(attempts).await.map_err(|e| slot.or(e))
}

impl sealed::Read for Reply {
    const ON_CALLER: bool = true;

    async fn read(ctx: CallContext, body: Body, retries: u32) -> Result<Self> {
        exchange(&ctx, body, retries, |ctx, resp| async move {
            let status = resp.status().as_u16();
            let body = ctx.read_body(resp, BodyKind::Unary).await?;
            Ok(Reply { status, body })
        })
        .await
    }
}

impl sealed::Read for Tensor {
    const ON_CALLER: bool = true;

    async fn read(ctx: CallContext, body: Body, retries: u32) -> Result<Self> {
        exchange(&ctx, body, retries, read_tensor).await
    }
}

impl sealed::Read for MessageStream {
    const ON_CALLER: bool = false;

    async fn read(ctx: CallContext, body: Body, _retries: u32) -> Result<Self> {
        let runtime = ctx.runtime.clone();
        let mut outgoing = Outgoing::new(body, ctx.compress_requests())?;
        let slot = ErrorSlot::default();
        let (body, zstd) = outgoing.attempt(&slot)?;
        let opened = stream::open(ctx, body, zstd, Some(slot)).await?;
        Ok(MessageStream::new(opened, runtime))
    }
}

impl sealed::Read for TokenStream {
    const ON_CALLER: bool = false;

    async fn read(ctx: CallContext, body: Body, retries: u32) -> Result<Self> {
        <MessageStream as sealed::Read>::read(ctx, body, retries)
            .await
            .map(TokenStream::new)
    }
}
