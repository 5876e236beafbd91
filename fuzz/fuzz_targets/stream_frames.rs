//! Varint stream frames (protocol.md §3) through `MessageReader`, fed in chunks whose
//! sizes come from the first bytes of the input.
//!
//! Checks: no panic; the chunked and the one-piece decodings agree (messages, credits,
//! end, outcome kind); `decode_messages` agrees with both; and messages cut from the
//! input survive `decode_messages(encode_messages(msgs))` and a chunked read.
#![no_main]

use std::mem::discriminant;

use libfuzzer_sys::fuzz_target;
use quill::codec::stream::{decode_messages, encode_messages, Event, MessageReader};
use quill::QuillError;
use quill_fuzz::{chunks, messages, take_cuts};

#[derive(Debug)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    credits: Vec<u64>,
    ended: bool,
    result: Result<(), QuillError>,
}

fn read(pieces: &[&[u8]]) -> Outcome {
    let mut r = MessageReader::new();
    let mut out = Outcome {
        messages: Vec::new(),
        credits: Vec::new(),
        ended: false,
        result: Ok(()),
    };
    for piece in pieces {
        r.push(piece);
        loop {
            match r.next_event() {
                Ok(None) => break,
                Ok(Some(Event::Message(m))) => {
                    assert!(!out.ended, "a message after End");
                    out.messages.push(m.to_vec());
                }
                Ok(Some(Event::Credit(c))) => out.credits.push(c),
                Ok(Some(Event::End)) => {
                    assert!(!out.ended, "End twice");
                    out.ended = true;
                }
                Err(e) => {
                    out.result = Err(e);
                    return out;
                }
            }
        }
    }
    out.result = r.finish();
    assert_eq!(out.result.is_ok(), out.ended, "finish() disagrees with End");
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = take_cuts(input);

    // Arbitrary bytes: chunking must not change what is decoded.
    let whole = read(&[data]);
    let split = read(&chunks(data, &cuts));
    assert_eq!(whole.messages, split.messages);
    assert_eq!(whole.credits, split.credits);
    assert_eq!(whole.ended, split.ended);
    match (&whole.result, &split.result) {
        (Ok(()), Ok(())) => {}
        (Err(a), Err(b)) => assert_eq!(discriminant(a), discriminant(b), "{a} vs {b}"),
        (a, b) => panic!("whole {a:?} vs chunked {b:?}"),
    }
    match decode_messages(data) {
        Ok(msgs) => {
            assert!(whole.result.is_ok());
            let msgs: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
            assert_eq!(msgs, whole.messages);
        }
        Err(e) => assert!(whole.result.is_err(), "decode_messages failed alone: {e}"),
    }

    // Round trip of messages cut from the input.
    let msgs = messages(data, &cuts);
    let body = encode_messages(msgs.iter().copied()).expect("small messages encode");
    let back = decode_messages(&body).expect("an encoded body decodes");
    assert_eq!(back.len(), msgs.len());
    for (a, b) in back.iter().zip(&msgs) {
        assert_eq!(&a[..], *b);
    }
    let chunked = read(&chunks(&body, &cuts));
    assert!(chunked.result.is_ok(), "{:?}", chunked.result);
    assert!(chunked.credits.is_empty());
    assert_eq!(chunked.messages.len(), msgs.len());
    for (a, b) in chunked.messages.iter().zip(&msgs) {
        assert_eq!(&a[..], *b);
    }
});
