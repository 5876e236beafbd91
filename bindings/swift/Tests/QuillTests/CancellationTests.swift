// Cancelling a Task inside a call ends the Rust call at once (`withCancellation` fires
// the call's `CancelToken`), the server sees the client go (its `Stats` route), and many
// cancels leave no thread, call or connection behind.

import Foundation
import Quill
import XCTest

final class CancellationTests: XCTestCase {
    private let fault = "test.v1.FaultService"

    private func stat(_ client: QuillClient, _ key: String) async throws -> Int {
        let stats = try jsonObject(try await client.callJson(service: fault, method: "Stats", json: "{}"))
        return try XCTUnwrap(stats[key] as? Int, "no \(key) in \(stats)")
    }

    /// Milliseconds until the server's `key` reaches `target` (fails after `limitMs`).
    @discardableResult
    private func msUntil(_ client: QuillClient, _ key: String, reaches target: Int, limitMs: Double)
        async throws -> Double
    {
        let start = Date()
        while try await stat(client, key) < target {
            let ms = Date().timeIntervalSince(start) * 1000
            if ms > limitMs {
                XCTFail("the server's \(key) did not reach \(target) within \(limitMs) ms")
                return ms
            }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        return Date().timeIntervalSince(start) * 1000
    }

    private func waitUntilServerHoldsACall(_ client: QuillClient) async throws {
        let deadline = Date().addingTimeInterval(5)
        while try await stat(client, "in_flight") < 1 {
            if Date() > deadline { return XCTFail("the call never reached the server") }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
    }

    func testCancellingATaskInsideAUnaryCallEndsItOnTheServer() async throws {
        let client = try TestServer.client()
        let before = try await stat(client, "abandoned")
        let fault = self.fault
        let task = Task {
            try await withCancellation { token in
                try await client.callJson(
                    service: fault, method: "Slow", json: #"{"ms": 10000}"#, cancel: token)
            }
        }
        try await waitUntilServerHoldsACall(client)
        task.cancel()
        switch await task.result {
        case .success(let reply): XCTFail("expected cancellation, got \(reply)")
        case .failure(let error): XCTAssertEqual((error as? QuillError)?.kind, "Cancelled", "\(error)")
        }
        let ms = try await msUntil(client, "abandoned", reaches: before + 1, limitMs: 100)
        print("server saw the cancelled unary call go after \(Int(ms)) ms")
    }

    func testCancellingATaskInsideAStreamOpenEndsItOnTheServer() async throws {
        let client = try TestServer.client()
        let before = try await stat(client, "abandoned")
        let fault = self.fault
        // Slow answers its headers only after 10 s: the open is what waits.
        let task = Task {
            try await withCancellation { token in
                try await client.serverStream(
                    service: fault, method: "Slow", body: Data(#"{"ms": 10000}"#.utf8),
                    contentTypeJson: true, cancel: token)
            }
        }
        try await waitUntilServerHoldsACall(client)
        task.cancel()
        if case .success = await task.result { XCTFail("expected cancellation") }
        try await msUntil(client, "abandoned", reaches: before + 1, limitMs: 100)
    }

    func testManyCancelledCallsLeaveNothingBehind() async throws {
        let cancels = Int(ProcessInfo.processInfo.environment["QUILL_CANCELS"] ?? "") ?? 1_000
        let client = try TestServer.client()
        _ = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: Data([1]))
        let threadsBefore = threadCount()
        // Tasks of an idle client: its open connection and the pool's idle reaper.
        let tasksBefore = client.liveTasks()
        let abandonedBefore = try await stat(client, "abandoned")
        let fault = self.fault
        let start = Date()
        for i in 0..<cancels {
            let task = Task {
                try await withCancellation { token in
                    try await client.callJson(
                        service: fault, method: "Slow", json: #"{"ms": 10000}"#, cancel: token)
                }
            }
            // Half are cancelled at once, half once the request is likely out.
            if i % 2 == 1 { try await Task.sleep(nanoseconds: 1_000_000) }
            task.cancel()
            _ = await task.result
        }
        let seconds = Date().timeIntervalSince(start)
        let deadline = Date().addingTimeInterval(2)
        while try await stat(client, "in_flight") > 0, Date() < deadline {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        let inFlight = try await stat(client, "in_flight")
        XCTAssertEqual(inFlight, 0)
        let grown = threadCount() - threadsBefore
        XCTAssertLessThanOrEqual(grown, 2, "\(grown) more threads after \(cancels) cancels")
        let open = try establishedConnections(to: try TestServer.url)
        XCTAssertLessThanOrEqual(open, 4, "\(open) connections still open after \(cancels) cancels")
        // No call task survives its cancel: the client's runtime is back to what an idle
        // client runs (one more if the Stats calls above left a second connection).
        let tasksDeadline = Date().addingTimeInterval(2)
        while client.liveTasks() > tasksBefore + 1, Date() < tasksDeadline {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        let tasks = client.liveTasks()
        XCTAssertLessThanOrEqual(
            tasks, tasksBefore + 1, "\(tasks) tasks alive after \(cancels) cancels (\(tasksBefore) before)")
        let reached = try await stat(client, "abandoned") - abandonedBefore
        print(
            "\(cancels) cancelled calls in \(String(format: "%.2f", seconds)) s (\(reached) reached "
                + "the server); threads \(grown >= 0 ? "+" : "")\(grown); connections open \(open); "
                + "runtime tasks alive \(tasks) (\(tasksBefore) before)")
    }
}

/// Threads of this process (`/proc/self/task`).
private func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
}

/// Client sockets ESTABLISHED to the port of `url` on 127.0.0.1, from `/proc/net/tcp`.
private func establishedConnections(to url: String) throws -> Int {
    let port = try XCTUnwrap(Int(url.split(separator: ":").last ?? ""))
    let remote = String(format: "0100007F:%04X", port)
    let table = try String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)
    return table.split(separator: "\n").dropFirst().filter { line in
        let cols = line.split(separator: " ", omittingEmptySubsequences: true)
        return cols.count > 3 && cols[2] == remote && cols[3] == "01"
    }.count
}
