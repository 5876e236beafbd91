//! HTTP/3 0-RTT: a resumed connection carries idempotent calls in its first flight and
//! never a non-idempotent one. Its own test binary, so no other test's calls share the
//! process while it counts.

mod common;

use std::time::Duration;

use common::{test_certificate, Server};
use quill::client::{Call, HttpVersion, Reply};
use quill::{ClientConfig, QuillClient};

#[test]
fn only_idempotent_calls_go_out_as_early_data() {
    let (cert, key, pem) = test_certificate();
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut cfg = ClientConfig::new(&s.url);
    cfg.http_version = HttpVersion::Http3;
    cfg.ca_cert_pem = Some(pem.clone());
    cfg.timeout_ms = 10_000;
    // A connection idle for 300 ms closes, so each round below resumes a new one.
    cfg.http2.keep_alive_interval_ms = None;
    cfg.http2.keep_alive_timeout_ms = 300;
    let c = QuillClient::with_config(cfg).unwrap();
    let echo = |body: &'static str, idempotent: bool| {
        let call = Call::proto("echo.v1.EchoService", "Echo", body).idempotent(idempotent);
        let reply = c.run_blocking::<Reply>(call).unwrap();
        assert_eq!(&reply.body[..], body.as_bytes());
    };
    let idle = || std::thread::sleep(Duration::from_millis(700));

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
    // Resumed: an idempotent call goes out at once, as 0-RTT, and is answered.
    echo("idempotent", true);
    assert_eq!(c.early_data_calls(), 1);
    // On the same connection after the handshake: ordinary 1-RTT again.
    std::thread::sleep(Duration::from_millis(50));
    echo("later", true);
    assert_eq!(c.early_data_calls(), 1);
}
