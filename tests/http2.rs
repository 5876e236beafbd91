//! HTTP versions against the bundled server: the profiles each announces and the server
//! names, and HTTP/2 multiplexing calls and streams over one connection where HTTP/1.1
//! needs a pool of them. (The whole suite also runs over HTTP/2: `QUILL_TEST_HTTP_VERSION`
//! in `tests/common/mod.rs`.)
#![cfg(feature = "server")]
// Test helpers return `quill::Result`; its error carries a `Problem` inline (see lib.rs).
#![allow(clippy::result_large_err)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The event listener is process-wide: tests that install one take turns.
static LISTENER: Mutex<()> = Mutex::new(());

/// Counts the connections clients open to one server, through the event listener, for
/// as long as it lives (it holds the listener's turn and removes it when dropped).
struct ConnectionCount {
    opened: Arc<AtomicUsize>,
    _turn: MutexGuard<'static, ()>,
}

impl ConnectionCount {
    fn of(s: &Server) -> ConnectionCount {
        let turn = LISTENER.lock().unwrap_or_else(|p| p.into_inner());
        let peer = format!("127.0.0.1:{}", s.port());
        let opened = Arc::new(AtomicUsize::new(0));
        let count = opened.clone();
        events::set_listener(
            Some(Arc::new(move |e: &Event| {
                if e.kind == EventKind::ConnectionOpened && e.target == peer {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            })),
            Level::Debug,
        );
        ConnectionCount {
            opened,
            _turn: turn,
        }
    }

    fn get(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        events::set_listener(None, Level::Debug);
    }
}

use common::Server;
use futures_util::future::join_all;
use quill::client::events::{self, Event, EventKind, Level};
use quill::client::{Call, HttpVersion, Reply, TokenStream};
use quill::QuillError;
use serde_json::Value;

#[test]
fn each_version_announces_only_what_it_speaks() {
    let s = Server::start(&[]);
    // The HTTP/3 run serves TLS, where `Auto` offers h2 by ALPN and gets it.
    let tls = common::over_http3();
    let mut cases = vec![
        if tls {
            (HttpVersion::Auto, "prism=turbo, classic", "turbo")
        } else {
            (HttpVersion::Auto, "prism=classic", "classic") // cleartext: HTTP/1.1
        },
        (HttpVersion::Http1, "prism=classic", "classic"),
        (HttpVersion::Http2, "prism=turbo", "turbo"),
    ];
    if tls {
        cases.push((HttpVersion::Http3, "prism=hyper", "hyper"));
    }
    for (version, prefer, selected) in cases {
        let c = s.client_with(|cfg| cfg.http_version = version);
        assert_eq!(c.http_version(), version);
        assert_eq!(c.selected_prism(), None, "nothing named before an answer");
        let seen = c
            .run_blocking::<Reply>(Call::json("echo.v1.EchoService", "Headers", "{}"))
            .unwrap();
        let seen: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(seen["prefer"], prefer, "{version:?}");
        assert_eq!(c.selected_prism().as_deref(), Some(selected), "{version:?}");
    }
}

/// One async call alone, which opens the connection the client's later async calls share
/// (a blocking call would take a lane with a connection of its own).
fn warm_up(c: &quill::QuillClient) {
    let reply = c.block_on(c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "warm")));
    assert_eq!(reply.unwrap().body, "warm");
}

/// Runs 100 unary calls and 20 token streams at once on a new client (after one call
/// alone, if `warm`) and returns how many connections it opened to the server.
fn connections_for(
    s: &Server,
    version: HttpVersion,
    opened: &ConnectionCount,
    warm: bool,
) -> usize {
    let before = opened.get();
    let c = s.client_with(|cfg| cfg.http_version = version);
    if warm {
        warm_up(&c);
    }
    c.block_on(async {
        let calls = (0..100).map(|i| {
            let body = format!("call {i}").into_bytes();
            let c = &c;
            async move {
                let reply = c
                    .run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", body.clone()))
                    .await
                    .unwrap();
                assert_eq!(reply.body, body);
            }
        });
        let streams = (0..20u32).map(|i| {
            let c = &c;
            async move {
                let request = format!(r#"{{"batches": {}, "batch_size": 4}}"#, 5 + i % 3);
                let stream = c
                    .run::<TokenStream>(Call::json("test.v1.FaultService", "Batches", request))
                    .await
                    .unwrap();
                let mut tokens = 0;
                while let Some(batch) = stream.next_batch().await.unwrap() {
                    tokens += batch.tokens.len();
                }
                assert_eq!(tokens as u32, 4 * (5 + i % 3));
            }
        });
        tokio::join!(join_all(calls), join_all(streams));
    });
    opened.get() - before
}

#[test]
fn http2_multiplexes_calls_and_streams_on_one_connection() {
    let s = Server::start(&[]);
    let opened = ConnectionCount::of(&s);
    // From cold, hyper-util's pool can open one spare connection: a call that found no
    // idle connection and then starts its own connect in the instant the first one is
    // pooled. The spare is dropped once connected (docs/reliability.md). So a cold start
    // allows two; once a connection is pooled, 120 more calls open none.
    let cold = connections_for(&s, HttpVersion::Http2, &opened, false);
    let warm = connections_for(&s, HttpVersion::Http2, &opened, true);
    let h1 = connections_for(&s, HttpVersion::Http1, &opened, true);
    assert!(
        (1..=2).contains(&cold),
        "HTTP/2 from cold: {cold} connection(s) for 120 concurrent calls and streams"
    );
    assert_eq!(
        warm, 1,
        "HTTP/2: the warm-up call's connection carries 120 concurrent calls and streams"
    );
    assert!(h1 > 1, "HTTP/1.1 needs a pool: {h1} connection(s)");
}

const FAULT: &str = "test.v1.FaultService";

#[test]
fn a_server_allowing_one_stream_queues_a_hundred_callers() {
    let s = Server::start(&["--h2-max-streams", "1"]);
    let c = s.client_with(|cfg| cfg.http_version = HttpVersion::Http2);
    let started = std::time::Instant::now();
    let results =
        c.block_on(join_all((0..100).map(|_| {
            c.run::<Reply>(Call::json(FAULT, "Slow", r#"{"ms": 5}"#))
        })));
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    // One at a time: 100 × 5 ms at least.
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
}

#[test]
fn a_killed_server_ends_every_open_stream_with_an_error_on_time() {
    let mut s = Server::start(&["--h2-max-streams", "1000"]);
    let c = s.client_with(|cfg| {
        cfg.http_version = HttpVersion::Http2;
        cfg.timeout_ms = 20_000;
    });
    let request = r#"{"messages": 1000, "interval_ms": 50}"#;
    let streams = c.block_on(join_all((0..500).map(|_| {
        c.run::<quill::MessageStream>(Call::json(FAULT, "StreamSlow", request))
    })));
    let streams: Vec<_> = streams.into_iter().map(Result::unwrap).collect();
    // Every stream is live: its first message arrives.
    c.block_on(join_all(streams.iter().map(|st| async move {
        assert!(st.next_message().await.unwrap().is_some());
    })));
    let killed = std::time::Instant::now();
    s.kill();
    let ends = c.block_on(join_all(streams.iter().map(|st| async move {
        loop {
            match st.next_message().await {
                Ok(Some(_)) => continue, // delivered before the kill
                other => return other,
            }
        }
    })));
    // Ended by the kill, not by the 20 s call timeout.
    assert!(
        killed.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    for end in ends {
        // Never a clean end: the streams were cut.
        match end {
            Err(QuillError::Stream { .. } | QuillError::Connection { .. }) => {}
            other => panic!("expected a stream or connection error, got {other:?}"),
        }
    }
}

#[test]
fn http1_calls_beyond_max_connections_wait_for_a_free_one() {
    let s = Server::start(&[]);
    let opened = ConnectionCount::of(&s);
    let c = s.client_with(|cfg| {
        cfg.http_version = HttpVersion::Http1;
        cfg.max_connections = 2;
    });
    let started = std::time::Instant::now();
    let results =
        c.block_on(join_all((0..10).map(|_| {
            c.run::<Reply>(Call::json(FAULT, "Slow", r#"{"ms": 100}"#))
        })));
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(opened.get() <= 2, "{} connections", opened.get());
    assert!(
        elapsed >= std::time::Duration::from_millis(500),
        "two at a time: {elapsed:?}"
    );

    // A stream holds its slot until it ends; a call that cannot get one in time is a
    // timeout, and gets one as soon as the stream is gone.
    let one = s.client_with(|cfg| {
        cfg.http_version = HttpVersion::Http1;
        cfg.max_connections = 1;
    });
    let stream = one
        .run_blocking::<quill::MessageStream>(Call::json(
            FAULT,
            "StreamSlow",
            r#"{"messages": 100, "interval_ms": 50}"#,
        ))
        .unwrap();
    let waited =
        one.run_blocking::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "x").timeout_ms(300));
    assert!(
        matches!(waited, Err(QuillError::Timeout { .. })),
        "{waited:?}"
    );
    stream.cancel();
    let reply = one
        .run_blocking::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "x").timeout_ms(5000))
        .unwrap();
    assert_eq!(reply.body, "x");
}

#[test]
fn a_reset_stream_fails_alone_and_its_siblings_complete() {
    let s = Server::start(&[]);
    let c = s.client_with(|cfg| cfg.http_version = HttpVersion::Http2);
    let read_all = |request: &'static str, route: &'static str| {
        let c = &c;
        async move {
            let stream = c
                .run::<quill::MessageStream>(Call::json(FAULT, route, request))
                .await?;
            let mut n = 0;
            while stream.next_message().await?.is_some() {
                n += 1;
            }
            Ok::<_, QuillError>(n)
        }
    };
    let slow = r#"{"messages": 10, "interval_ms": 20}"#;
    let (cut, siblings) = c.block_on(async {
        tokio::join!(
            read_all(r#"{"messages": 3}"#, "StreamCut"),
            join_all((0..5).map(|_| read_all(slow, "StreamSlow")))
        )
    });
    // The aborted body reaches the client as RST_STREAM of that stream only.
    assert!(matches!(cut, Err(QuillError::Stream { .. })), "{cut:?}");
    for sibling in siblings {
        assert_eq!(sibling.unwrap(), 10);
    }
    // The connection is still good for new calls.
    let reply = c
        .run_blocking::<Reply>(Call::proto("echo.v1.EchoService", "Echo", "after"))
        .unwrap();
    assert_eq!(reply.body, "after");
}

#[test]
fn after_goaway_open_streams_finish_and_new_calls_take_a_new_connection() {
    let s = Server::start(&[]);
    let opened = ConnectionCount::of(&s);
    let c = s.client_with(|cfg| cfg.http_version = HttpVersion::Http2);
    let slow = r#"{"messages": 10, "interval_ms": 30}"#;
    // One call alone opens the first connection, so the streams cannot race hyper-util's
    // spare connect (see http2_multiplexes_calls_and_streams_on_one_connection).
    warm_up(&c);
    let (open, after) = c.block_on(async {
        let streams = join_all(
            (0..3).map(|_| c.run::<quill::MessageStream>(Call::json(FAULT, "StreamSlow", slow))),
        )
        .await;
        let streams: Vec<_> = streams.into_iter().map(Result::unwrap).collect();
        let goaway = c
            .run::<Reply>(Call::json(FAULT, "GoAway", "{}"))
            .await
            .unwrap();
        assert_eq!(goaway.body, r#"{"ok":true}"#);
        // Give the GOAWAY frame time to arrive before the next calls are made.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // The first later call opens the new connection alone, for the same reason.
        let echo =
            |i: usize| c.run::<Reply>(Call::proto("echo.v1.EchoService", "Echo", format!("{i}")));
        let mut after = vec![echo(0).await];
        after.extend(join_all((1..5).map(echo)).await);
        let open = join_all(streams.iter().map(|st| async move {
            let mut n = 0;
            while st.next_message().await?.is_some() {
                n += 1;
            }
            Ok::<_, QuillError>(n)
        }))
        .await;
        (open, after)
    });
    for (i, reply) in after.into_iter().enumerate() {
        assert_eq!(reply.unwrap().body, format!("{i}"));
    }
    for n in open {
        assert_eq!(n.unwrap(), 10, "a stream open at the GOAWAY finishes");
    }
    assert_eq!(opened.get(), 2, "the later calls took a new connection");
}

/// Live `Stall` requests the server holds.
fn stalled(c: &quill::QuillClient) -> u64 {
    let reply = c
        .run_blocking::<Reply>(Call::json(FAULT, "Stats", "{}"))
        .unwrap();
    serde_json::from_slice::<Value>(&reply.body).unwrap()["stalled"]
        .as_u64()
        .unwrap()
}

/// A server that stops reading an upload: the body fills the flow-control window (TCP
/// buffers on HTTP/1.1, the stream window on HTTP/2) and the write stalls. The call's
/// deadline still ends it on time and the client stays usable. On HTTP/2 the client
/// resets the stream, which the server sees. On HTTP/1.1 the connection library keeps
/// the connection until its queued bytes are written (plain reqwest does the same;
/// docs/reliability.md), and the next call takes another connection.
#[test]
fn a_flow_control_stall_ends_at_the_deadline() {
    let s = Server::start(&[]);
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let c = s.client_with(|cfg| cfg.http_version = version);
        let before = stalled(&c);
        // 64 MiB: far beyond every window and socket buffer on the way.
        let body = bytes::Bytes::from(vec![7u8; 64 << 20]);
        let start = Instant::now();
        let err = c
            .run_blocking::<Reply>(
                Call::proto(FAULT, "Stall", body)
                    .header("quill-stall-ms", "60000")
                    .timeout_ms(300),
            )
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, QuillError::Timeout { .. }),
            "{version:?}: {err:?}"
        );
        // Never before the deadline (set inside the call, after `start`), and long
        // before the server's 60 s stall ends; the slack is for a loaded machine.
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{version:?}: the stalled call ended after {took:?}, not at its 300 ms deadline"
        );
        // The client is fine for the next call, at once.
        let reply = c
            .run_blocking::<Reply>(
                Call::proto("echo.v1.EchoService", "Echo", "after").timeout_ms(1_000),
            )
            .unwrap();
        assert_eq!(reply.body, "after");
        if version == HttpVersion::Http2 {
            let gone = Instant::now();
            while stalled(&c) > before {
                assert!(
                    gone.elapsed() < Duration::from_secs(10),
                    "the server still holds the stalled HTTP/2 stream 10 s later"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Dropping a call's future (what a cancelled Kotlin coroutine, Swift task or asyncio
/// task does) ends the call on the server at once, on both versions: the connection is
/// closed (HTTP/1.1) or the stream reset (HTTP/2), and the server drops the handler.
#[test]
fn a_dropped_call_is_abandoned_on_the_server_at_once() {
    let s = Server::start(&[]);
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let c = s.client_with(|cfg| cfg.http_version = version);
        let stat = |key: &str| -> u64 {
            let reply = c
                .run_blocking::<Reply>(Call::json(FAULT, "Stats", "{}"))
                .unwrap();
            serde_json::from_slice::<Value>(&reply.body).unwrap()[key]
                .as_u64()
                .unwrap()
        };
        let before = stat("abandoned");
        let slow = c.block_on(async {
            let call = c.run::<Reply>(Call::json(FAULT, "Slow", r#"{"ms": 60000}"#));
            // Give up after 200 ms: the call's future is dropped.
            tokio::time::timeout(Duration::from_millis(200), call).await
        });
        assert!(slow.is_err(), "{version:?}: the slow call finished");
        // Abandoned, not answered: the handler would only answer after 60 s. At once on
        // an idle machine; the bound leaves room for a loaded one.
        let dropped = Instant::now();
        while stat("abandoned") <= before {
            assert!(
                dropped.elapsed() < Duration::from_secs(10),
                "{version:?}: the server still holds the dropped call after 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(stat("in_flight"), 0, "{version:?}");
    }
}
