//! Client events against the bundled server. One test: the listener is process-wide.

mod common;

use std::sync::{Arc, Mutex};

use common::Server;
use quill::client::events::{self, Event, EventKind, Level};
use quill::client::{Call, MessageStream, Reply};
use quill::QuillError;

#[test]
fn events_report_connections_retries_timeouts_cancels_and_limits() {
    let server = Server::start(&[]);
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = seen.clone();
    events::set_listener(
        Some(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        })),
        Level::Debug,
    );
    let client = server.client_with(|c| {
        c.max_retries = 1;
        c.max_decoded_size = 1024;
    });
    client.set_bearer_token("s3cret-token").unwrap();
    let echo = || Call::proto("echo.v1.EchoService", "Echo", "hi");
    client.run_blocking::<Reply>(echo()).unwrap();
    client.run_blocking::<Reply>(echo()).unwrap();
    let retry = Call::json(
        "test.v1.FaultService",
        "Error",
        r#"{"status": 503, "retry_after": 0}"#,
    );
    let e = client
        .run_blocking::<Reply>(retry.idempotent(true))
        .unwrap_err();
    assert!(
        matches!(&e, QuillError::Status { problem } if problem.status == 503),
        "{e:?}"
    );
    let slow = Call::json("test.v1.FaultService", "Slow", r#"{"ms": 2000}"#);
    let e = client
        .run_blocking::<Reply>(slow.timeout_ms(50))
        .unwrap_err();
    assert!(matches!(e, QuillError::Timeout { .. }), "{e:?}");
    let stream: MessageStream = client
        .run_blocking(Call::json(
            "test.v1.FaultService",
            "StreamSlow",
            r#"{"messages": 10, "interval_ms": 200}"#,
        ))
        .unwrap();
    stream.cancel();
    let big = Call::json("test.v1.FaultService", "Big", r#"{"bytes": 4096}"#);
    let e = client.run_blocking::<Reply>(big).unwrap_err();
    assert!(
        matches!(&e, QuillError::Protocol { reason } if reason.contains("1024")),
        "{e:?}"
    );
    events::set_listener(None, Level::Debug);

    let seen = seen.lock().unwrap();
    let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind).collect();
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    assert!(count(EventKind::ConnectionOpened) >= 1, "{kinds:?}");
    assert!(count(EventKind::ConnectionReused) >= 1, "{kinds:?}");
    assert!(count(EventKind::CallFinished) >= 3, "{kinds:?}");
    assert_eq!(count(EventKind::RetryScheduled), 1, "{kinds:?}");
    assert!(count(EventKind::CallFailed) >= 2, "{kinds:?}");
    assert_eq!(count(EventKind::Timeout), 1, "{kinds:?}");
    assert_eq!(count(EventKind::StreamCancelled), 1, "{kinds:?}");
    assert_eq!(count(EventKind::DecodeLimit), 1, "{kinds:?}");
    let finished = seen
        .iter()
        .find(|e| e.kind == EventKind::CallFinished)
        .unwrap();
    assert_eq!(
        (finished.level, finished.status, finished.target.as_str()),
        (Level::Debug, Some(200), "echo.v1.EchoService/Echo")
    );
    assert!(finished.elapsed > std::time::Duration::ZERO);
    let levels = |k| seen.iter().find(|e| e.kind == k).map(|e| e.level);
    assert_eq!(levels(EventKind::RetryScheduled), Some(Level::Info));
    assert_eq!(levels(EventKind::Timeout), Some(Level::Warning));
    assert_eq!(levels(EventKind::DecodeLimit), Some(Level::Warning));
    for e in seen.iter() {
        assert!(!e.message.contains("s3cret"), "{e:?}");
        assert!(!e.message.is_empty(), "{e:?}");
    }
}
