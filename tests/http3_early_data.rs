//! HTTP/3 0-RTT: a resumed connection carries idempotent calls in its first flight and
//! never a non-idempotent one, and a call whose early data the server refuses is sent
//! again. Its own test binary, so no other test's calls share the process while it
//! counts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{test_certificate, Server};
use quill::client::events::{self, Event, EventKind, Level};
use quill::client::{Call, HttpVersion, Reply};
use quill::{ClientConfig, QuillClient};

/// The bundled server on HTTPS and HTTP/3 with the test certificate, on `port` (0: any).
fn tls_server(port: u16) -> Server {
    let (cert, key, _) = test_certificate();
    let port = port.to_string();
    Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--port",
        &port,
    ])
}

/// An HTTP/3 client whose idle connections close after 300 ms, so that a call made
/// after [`idle`] resumes a new connection.
fn client(url: &str) -> QuillClient {
    let mut cfg = ClientConfig::new(url);
    cfg.http_version = HttpVersion::Http3;
    cfg.ca_cert_pem = Some(test_certificate().2.clone());
    cfg.timeout_ms = 10_000;
    cfg.http2.keep_alive_interval_ms = None;
    cfg.http2.keep_alive_timeout_ms = 300;
    QuillClient::with_config(cfg).unwrap()
}

/// Attempts at a call that goes out early (see the tests).
const ROUNDS: usize = 5;

fn idle() {
    std::thread::sleep(Duration::from_millis(700));
}

fn echo(c: &QuillClient, body: &'static str, idempotent: bool) {
    let call = Call::proto("echo.v1.EchoService", "Echo", body).idempotent(idempotent);
    let reply = c.run_blocking::<Reply>(call).unwrap();
    assert_eq!(&reply.body[..], body.as_bytes());
}

#[test]
fn only_idempotent_calls_go_out_as_early_data() {
    let s = tls_server(0);
    let c = client(&s.url);
    let echo = |body, idempotent| echo(&c, body, idempotent);

    // First connection: a full handshake, which leaves a session ticket.
    echo("full", true);
    assert_eq!(c.early_data_calls(), 0, "nothing to resume yet");
    idle();
    // Resumed: a non-idempotent call waits for the handshake, whatever the timing.
    for _ in 0..3 {
        echo("not idempotent", false);
        assert_eq!(c.early_data_calls(), 0);
        idle();
    }
    // Resumed: an idempotent call goes out at once, as 0-RTT, and is answered. On a
    // loaded machine the handshake can finish before the call is sent, which then goes
    // out as 1-RTT: a later round is early.
    for round in 0..ROUNDS {
        if round > 0 {
            idle();
        }
        echo("idempotent", true);
        if c.early_data_calls() > 0 {
            break;
        }
    }
    assert_eq!(c.early_data_calls(), 1);
    // On the same connection after the handshake: ordinary 1-RTT again.
    std::thread::sleep(Duration::from_millis(50));
    echo("later", true);
    assert_eq!(c.early_data_calls(), 1);
}

#[test]
fn early_data_the_server_refuses_is_sent_again_after_the_handshake() {
    let retries = Arc::new(Mutex::new(Vec::new()));
    let seen = retries.clone();
    events::set_listener(
        Some(Arc::new(move |e: &Event| {
            if e.kind == EventKind::RetryScheduled {
                seen.lock().unwrap().push(e.message.clone());
            }
        })),
        Level::Debug,
    );
    let mut server = tls_server(0);
    let port = server.port();
    let c = client(&server.url);
    // A full handshake with the first server leaves its session ticket.
    echo(&c, "full", true);
    // A new server process on the same port cannot resume the old one's session, so it
    // refuses the early data: the call must still be answered, once. (A round whose
    // handshake finished before the call was sent is not early; the next one is.)
    for _ in 0..ROUNDS {
        server.kill();
        idle();
        server = tls_server(port);
        echo(&c, "refused, then sent again", true);
        if c.early_data_calls() > 0 {
            break;
        }
    }
    events::set_listener(None, Level::Debug);
    assert_eq!(c.early_data_calls(), 1, "the call went out as early data");
    let retries = retries.lock().unwrap();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].contains("refused the 0-RTT"), "{retries:?}");
    // Later connections work too, early or not (the client may still hold a second
    // ticket of the first server, refused in turn).
    idle();
    echo(&c, "later", true);
}
