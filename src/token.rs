//! `Token` and `TokenBatch` and their binary encoding (protocol.md §8, big-endian).

use std::collections::HashMap;

use crate::error::{QuillError, Result};
use crate::protocol::{MAX_BATCH_TOKENS, MAX_TOKEN_TEXT};

const TOKEN_HAS_TEXT: u8 = 0x01;
const TOKEN_HAS_LOGPROB: u8 = 0x02;
const TOKEN_IS_SPECIAL: u8 = 0x04;
const BATCH_HAS_SEQUENCE_ID: u8 = 0x01;
const BATCH_IS_FINAL: u8 = 0x02;

/// Texts that mark the end of a sequence when carried by a special token.
const EOS_TEXTS: [&str; 4] = ["</s>", "<|endoftext|>", "<eos>", "<|eot_id|>"];

/// One generated token.
///
/// ```
/// use quill::Token;
/// let t = Token::with_text(42, "hello", 0, Some(-0.5));
/// assert_eq!(hex(&t.encode().unwrap()), "0000002a0000000003bf000000000568656c6c6f");
/// assert_eq!(Token::decode(&t.encode().unwrap()).unwrap(), t);
/// # fn hex(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub id: u32,
    pub position: u32,
    pub text: Option<String>,
    pub logprob: Option<f32>,
    #[serde(default)]
    pub is_special: bool,
}

/// Equality and hashing follow the byte encoding: logprobs compare by their bits, so a
/// NaN logprob equals itself, `-0.0` differs from `0.0`, and `decode(encode(t)) == t`
/// always holds.
impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.id == other.id
            && self.position == other.position
            && self.text == other.text
            && self.logprob.map(f32::to_bits) == other.logprob.map(f32::to_bits)
            && self.is_special == other.is_special
    }
}

impl Eq for Token {}

impl std::hash::Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (
            self.id,
            self.position,
            &self.text,
            self.logprob.map(f32::to_bits),
            self.is_special,
        )
            .hash(state);
    }
}

impl Token {
    pub fn new(id: u32, position: u32) -> Token {
        Token {
            id,
            position,
            text: None,
            logprob: None,
            is_special: false,
        }
    }

    pub fn with_text(
        id: u32,
        text: impl Into<String>,
        position: u32,
        logprob: Option<f32>,
    ) -> Token {
        Token {
            id,
            position,
            text: Some(text.into()),
            logprob,
            is_special: false,
        }
    }

    /// Appends the encoding to `out`; fails on text over 65 535 bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        let mut flags = 0u8;
        if self.text.is_some() {
            flags |= TOKEN_HAS_TEXT;
        }
        if self.logprob.is_some() {
            flags |= TOKEN_HAS_LOGPROB;
        }
        if self.is_special {
            flags |= TOKEN_IS_SPECIAL;
        }
        out.push(flags);
        if let Some(lp) = self.logprob {
            out.extend_from_slice(&lp.to_be_bytes());
        }
        if let Some(text) = &self.text {
            if text.len() > MAX_TOKEN_TEXT {
                return Err(QuillError::invalid(format!(
                    "token {} text is {} bytes; at most {MAX_TOKEN_TEXT} can be encoded",
                    self.id,
                    text.len()
                )));
            }
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        Ok(())
    }

    /// The binary encoding of protocol §8.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(9 + self.text.as_ref().map_or(0, |t| t.len() + 2) + 4);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one token; bytes left over are an error.
    pub fn decode(bytes: &[u8]) -> Result<Token> {
        let mut r = Reader::new(bytes, "token");
        let t = Token::read(&mut r)?;
        r.finish()?;
        Ok(t)
    }

    fn read(r: &mut Reader<'_>) -> Result<Token> {
        let id = r.u32()?;
        let position = r.u32()?;
        let flags = r.u8()?;
        let logprob = if flags & TOKEN_HAS_LOGPROB != 0 {
            Some(f32::from_be_bytes(r.array()?))
        } else {
            None
        };
        let text = if flags & TOKEN_HAS_TEXT != 0 {
            let len = r.u16()? as usize;
            let raw = r.take(len)?;
            Some(
                std::str::from_utf8(raw)
                    .map_err(|e| {
                        QuillError::decode(format!("token {id} text is not valid UTF-8: {e}"))
                    })?
                    .to_owned(),
            )
        } else {
            None
        };
        Ok(Token {
            id,
            position,
            text,
            logprob,
            is_special: flags & TOKEN_IS_SPECIAL != 0,
        })
    }

    /// Probability, `exp(logprob)`, when a logprob is known.
    pub fn prob(&self) -> Option<f64> {
        self.logprob.map(|lp| (lp as f64).exp())
    }

    /// Whether this is a special end-of-sequence token (`</s>`, `<|endoftext|>`, `<eos>`,
    /// `<|eot_id|>`).
    pub fn is_eos(&self) -> bool {
        self.is_special && self.text.as_deref().is_some_and(|t| EOS_TEXTS.contains(&t))
    }
}

/// A batch of tokens of one sequence, as streamed by an LLM server.
///
/// `metadata` travels only in memory: the wire encoding carries no metadata.
///
/// ```
/// use quill::{Token, TokenBatch};
/// let mut b = TokenBatch::new(Some(1));
/// b.tokens.push(Token::with_text(1, "Hello", 0, None));
/// b.tokens.push(Token::with_text(3, " World", 1, None));
/// assert_eq!(b.text(), "Hello World");
/// let back = TokenBatch::decode(&b.encode().unwrap()).unwrap();
/// assert_eq!(back.tokens, b.tokens);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenBatch {
    pub tokens: Vec<Token>,
    pub sequence_id: Option<u32>,
    pub is_final: bool,
    pub metadata: HashMap<String, String>,
}

impl TokenBatch {
    pub fn new(sequence_id: Option<u32>) -> TokenBatch {
        TokenBatch {
            sequence_id,
            ..TokenBatch::default()
        }
    }

    /// Concatenated text of the tokens that have text.
    pub fn text(&self) -> String {
        self.tokens
            .iter()
            .filter_map(|t| t.text.as_deref())
            .collect()
    }

    pub fn token_ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    pub fn positions(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.position).collect()
    }

    /// The binary encoding of protocol §8 (metadata is not encoded).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.tokens.len() > MAX_BATCH_TOKENS {
            return Err(QuillError::invalid(format!(
                "batch has {} tokens; at most {MAX_BATCH_TOKENS} can be encoded",
                self.tokens.len()
            )));
        }
        let text_bytes: usize = self
            .tokens
            .iter()
            .map(|t| t.text.as_ref().map_or(0, |s| s.len() + 2))
            .sum();
        let mut out = Vec::with_capacity(7 + self.tokens.len() * 13 + text_bytes);
        let mut flags = 0u8;
        if self.sequence_id.is_some() {
            flags |= BATCH_HAS_SEQUENCE_ID;
        }
        if self.is_final {
            flags |= BATCH_IS_FINAL;
        }
        out.push(flags);
        if let Some(id) = self.sequence_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&(self.tokens.len() as u16).to_be_bytes());
        for t in &self.tokens {
            t.encode_into(&mut out)?;
        }
        Ok(out)
    }

    /// Decodes exactly one batch; bytes left over are an error.
    pub fn decode(bytes: &[u8]) -> Result<TokenBatch> {
        let mut r = Reader::new(bytes, "token batch");
        let flags = r.u8()?;
        let sequence_id = if flags & BATCH_HAS_SEQUENCE_ID != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let count = r.u16()? as usize;
        // Each token is at least 9 bytes: refuse impossible counts before allocating.
        if count.saturating_mul(9) > r.remaining() {
            return Err(QuillError::decode(format!(
                "token batch declares {count} tokens but only {} bytes follow",
                r.remaining()
            )));
        }
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            tokens.push(Token::read(&mut r)?);
        }
        r.finish()?;
        Ok(TokenBatch {
            tokens,
            sequence_id,
            is_final: flags & BATCH_IS_FINAL != 0,
            metadata: HashMap::new(),
        })
    }
}

/// Bounds-checked big-endian reader whose errors name what was being decoded.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(QuillError::decode(format!(
                "truncated {}: needed {n} more bytes at offset {}, only {} left",
                self.what,
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(QuillError::decode(format!(
                "{} bytes left over after the {}",
                self.remaining(),
                self.what
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn protocol_examples() {
        let t = Token::with_text(42, "hello", 0, Some(-0.5));
        let hex = "00 00 00 2a 00 00 00 00 03 bf 00 00 00 00 05 68 65 6c 6c 6f";
        assert_eq!(t.encode().unwrap(), unhex(hex));
        assert_eq!(Token::decode(&unhex(hex)).unwrap(), t);
        let t = Token::new(7, 1);
        let hex = "00 00 00 07 00 00 00 01 00";
        assert_eq!(t.encode().unwrap(), unhex(hex));
        assert_eq!(Token::decode(&unhex(hex)).unwrap(), t);
    }

    #[test]
    fn batch_layout() {
        let mut b = TokenBatch::new(Some(1));
        b.is_final = true;
        b.tokens.push(Token::new(7, 1));
        let expect = unhex("03 00 00 00 01 00 01 00 00 00 07 00 00 00 01 00");
        assert_eq!(b.encode().unwrap(), expect);
        let back = TokenBatch::decode(&expect).unwrap();
        assert_eq!(back, b);
        assert_eq!(
            TokenBatch::decode(&unhex("00 00 00")).unwrap(),
            TokenBatch::default()
        );
    }

    #[test]
    fn bad_input() {
        let good = Token::with_text(42, "hello", 0, Some(-0.5))
            .encode()
            .unwrap();
        for cut in 0..good.len() {
            assert!(
                matches!(Token::decode(&good[..cut]), Err(QuillError::Decode { .. })),
                "cut {cut}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(Token::decode(&extra)
            .unwrap_err()
            .to_string()
            .contains("left over"));
        let bad_utf8 = unhex("00 00 00 01 00 00 00 00 01 00 02 c3 28");
        assert!(Token::decode(&bad_utf8)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        let long = Token::with_text(1, "x".repeat(65_536), 0, None);
        assert!(matches!(
            long.encode(),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(Token::with_text(1, "x".repeat(65_535), 0, None)
            .encode()
            .is_ok());
        let mut b = TokenBatch::new(None);
        b.tokens = vec![Token::new(1, 1); 65_536];
        assert!(matches!(
            b.encode(),
            Err(QuillError::InvalidArgument { .. })
        ));
        // Declares 65 535 tokens with no bytes behind them.
        assert!(matches!(
            TokenBatch::decode(&unhex("00 ff ff")),
            Err(QuillError::Decode { .. })
        ));
    }

    #[test]
    fn eos_and_prob() {
        let mut t = Token::with_text(2, "</s>", 9, Some(0.0));
        assert!(!t.is_eos());
        t.is_special = true;
        assert!(t.is_eos());
        assert_eq!(t.prob(), Some(1.0));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = Token> {
            (
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(".{0,40}"),
                // Any bit pattern, NaNs included: equality follows the encoding.
                proptest::option::of(any::<u32>().prop_map(f32::from_bits)),
                any::<bool>(),
            )
                .prop_map(|(id, position, text, logprob, is_special)| Token {
                    id,
                    position,
                    text,
                    logprob,
                    is_special,
                })
        }

        proptest! {
            #[test]
            fn token_round_trip(t in token()) {
                prop_assert_eq!(Token::decode(&t.encode().unwrap()).unwrap(), t);
            }

            #[test]
            fn batch_round_trip(tokens in proptest::collection::vec(token(), 0..20), seq in proptest::option::of(any::<u32>()), fin in any::<bool>()) {
                let b = TokenBatch { tokens, sequence_id: seq, is_final: fin, metadata: HashMap::new() };
                prop_assert_eq!(TokenBatch::decode(&b.encode().unwrap()).unwrap(), b);
            }

            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = TokenBatch::decode(&bytes);
                let _ = Token::decode(&bytes);
            }
        }
    }
}
