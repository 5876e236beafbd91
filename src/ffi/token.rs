//! `Token` and `TokenBatch` (records, copied across) for Kotlin and Swift.

use crate::error::Result;
use crate::token::{Token, TokenBatch};

#[uniffi::export]
impl Token {
    /// Probability `exp(logprob)`, or null without a logprob.
    #[uniffi::method(name = "prob")]
    fn ffi_prob(&self) -> Option<f64> {
        self.prob()
    }

    /// Whether this is a special end-of-sequence token.
    #[uniffi::method(name = "is_eos")]
    fn ffi_is_eos(&self) -> bool {
        self.is_eos()
    }

    /// The binary encoding of protocol §8.
    #[uniffi::method(name = "encode")]
    fn ffi_encode(&self) -> Result<Vec<u8>> {
        self.encode()
    }
}

#[uniffi::export]
impl TokenBatch {
    /// Concatenated text of the tokens that have text.
    #[uniffi::method(name = "text")]
    fn ffi_text(&self) -> String {
        self.text()
    }

    #[uniffi::method(name = "token_ids")]
    fn ffi_token_ids(&self) -> Vec<u32> {
        self.token_ids()
    }

    /// The binary encoding of protocol §8 (metadata is not encoded).
    #[uniffi::method(name = "encode")]
    fn ffi_encode(&self) -> Result<Vec<u8>> {
        self.encode()
    }
}

/// Decode one token (protocol §8); leftover bytes are an error. (uniffi gives records
/// no static functions, so the decoders are free functions.)
#[uniffi::export(name = "decode_token")]
fn ffi_decode_token(bytes: &[u8]) -> Result<Token> {
    Token::decode(bytes)
}

/// Decode one token batch (protocol §8); leftover bytes are an error.
#[uniffi::export(name = "decode_token_batch")]
fn ffi_decode_token_batch(bytes: &[u8]) -> Result<TokenBatch> {
    TokenBatch::decode(bytes)
}
