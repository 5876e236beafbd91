// The core's client events through a Swift closure logger: kinds, levels, statuses, no
// secrets, removal, and a logger that throws.

import Foundation
import Quill
import XCTest

/// Events collected from any thread.
private final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [LogEvent] = []

    func add(_ event: LogEvent) {
        lock.lock()
        items.append(event)
        lock.unlock()
    }

    var events: [LogEvent] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

private final class Throwing: QuillLogger {
    struct Broke: Error {}
    func log(event: LogEvent) throws { throw Broke() }
}

final class LoggingTests: XCTestCase {
    override func tearDown() {
        setLogger(logger: nil, level: .warning)
    }

    func testEventsReachTheLoggerAndSecretsNeverDo() async throws {
        let collector = Collector()
        setLogger(level: .debug) { collector.add($0) }
        let client = try TestServer.client(timeoutMs: 300)
        try client.setBearerToken(token: "sekrit-bearer-123")
        try client.setSecretHeader(name: "X-Secret", value: "sekrit-header-456")
        _ = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: Data("hi".utf8))
        await expectQuillErrorAsync("Status") {
            try await client.callJson(
                service: "test.v1.FaultService", method: "Error", json: #"{"status": 503}"#)
        }
        await expectQuillErrorAsync("Timeout") {
            try await client.callJson(service: "test.v1.FaultService", method: "Slow", json: #"{"ms": 5000}"#)
        }
        let events = collector.events
        let kinds = Set(events.map { "\($0.kind)" })
        for kind in ["connectionOpened", "callFinished", "callFailed", "timeout"] {
            XCTAssertTrue(kinds.contains(kind), "no \(kind) among \(kinds)")
        }
        let failed = try XCTUnwrap(events.first { $0.kind == .callFailed && $0.status != nil })
        XCTAssertEqual(failed.status, 503)
        XCTAssertEqual(failed.target, "test.v1.FaultService/Error")
        for event in events {
            XCTAssertFalse(
                event.message.contains("sekrit") || event.target.contains("sekrit"),
                "a secret reached the logger: \(event)")
        }
        // Removed: later calls report nothing.
        setLogger(logger: nil, level: .warning)
        let seen = collector.events.count
        _ = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: Data([1]))
        XCTAssertEqual(collector.events.count, seen)
    }

    func testAThrowingLoggerNeverFailsACall() async throws {
        setLogger(logger: Throwing(), level: .debug)
        let client = try TestServer.client()
        let back = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: Data("ok".utf8))
        XCTAssertEqual(back, Data("ok".utf8))
    }
}
