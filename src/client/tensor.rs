//! Tensor answers: a response body of tensor frames decoded as it arrives. (Tensor
//! uploads are a request [`Body`](super::Body), framed in `body.rs`.)

use super::call::CallContext;
use super::compression::decoder_for;
use super::errors::{decode_as_protocol, BodyKind};
use super::transport::Response;
use crate::codec::tensor::TensorReader;
use crate::error::{QuillError, Result};
use crate::tensor::Tensor;

/// Decodes the frames as chunks arrive. Memory stays bounded by the tensor size (checked
/// against `max_decoded_size` as soon as TENSOR_META arrives) plus one frame.
pub(crate) async fn read_tensor(ctx: &CallContext, mut resp: Response) -> Result<Tensor> {
    let mut decoder = decoder_for(resp.headers(), None)?;
    let mut reader = TensorReader::with_limit(ctx.max_decoded_size, "max_decoded_size");
    loop {
        while let Some(piece) = decoder.next_output()? {
            // Malformed frames, an oversized tensor or bytes after it: the peer broke
            // the protocol.
            reader.push(&piece).map_err(decode_as_protocol)?;
            // A small compressed chunk can decode to endless empty frames: yield between
            // the 64 KiB pieces so the call deadline can end the call (see stream.rs).
            if decoder.inflates() {
                tokio::task::yield_now().await;
            }
        }
        let chunk = resp.chunk(&ctx.label, BodyKind::Stream).await?;
        match chunk {
            Some(chunk) => decoder.push(chunk),
            None => break,
        }
    }
    decoder.finish()?;
    // The body ended without a whole tensor: the response was cut short.
    reader
        .finish()
        .map_err(|e| QuillError::stream(format!("tensor response of {}: {e}", ctx.label.path)))
}
