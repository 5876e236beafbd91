// Bidirectional and client streaming from AsyncSequences against the bundled server:
// echo, full duplex, leaving early, a server failure mid-stream, and a failing request
// sequence.

import Foundation
import Quill
import XCTest

/// An `AsyncSequence` of request messages from a fixed list.
private func messages(_ items: [String]) -> AsyncStream<Data> {
    AsyncStream { continuation in
        for item in items { continuation.yield(Data(item.utf8)) }
        continuation.finish()
    }
}

private struct ProducerBroke: Error, Equatable {}

final class StreamingTests: XCTestCase {
    private let echo = "echo.v1.EchoService"

    func testBidiStreamEchoesEveryRequest() async throws {
        let client = try TestServer.client()
        let sent = (0..<20).map { "message \($0)" }
        var replies: [String] = []
        for try await reply in client.bidiStream(service: echo, method: "BidiEcho", requests: messages(sent)) {
            replies.append(String(decoding: reply, as: UTF8.self))
        }
        XCTAssertEqual(replies, sent)
    }

    func testBidiStreamIsFullDuplex() async throws {
        let client = try TestServer.client()
        let (requests, requestInput) = AsyncStream<Data>.makeStream()
        var iterator = client.bidiStream(service: echo, method: "BidiEcho", requests: requests)
            .makeAsyncIterator()
        // Each reply arrives before the next request is even produced.
        for i in 0..<5 {
            requestInput.yield(Data("ping \(i)".utf8))
            let reply = try await iterator.next()
            XCTAssertEqual(reply.map { String(decoding: $0, as: UTF8.self) }, "ping \(i)")
        }
        requestInput.finish()
        let end = try await iterator.next()
        XCTAssertNil(end)
    }

    func testLeavingTheBidiLoopEarlyEndsBothDirections() async throws {
        let client = try TestServer.client()
        // An endless request sequence: only leaving the loop can end this call.
        let endless = AsyncStream<Data> { continuation in
            let producer = Task {
                var i = 0
                while !Task.isCancelled {
                    continuation.yield(Data("m\(i)".utf8))
                    i += 1
                    try? await Task.sleep(nanoseconds: 5_000_000)
                }
            }
            continuation.onTermination = { _ in producer.cancel() }
        }
        var first: [String] = []
        for try await reply in client.bidiStream(service: echo, method: "BidiEcho", requests: endless) {
            first.append(String(decoding: reply, as: UTF8.self))
            if first.count == 3 { break }
        }
        XCTAssertEqual(first, ["m0", "m1", "m2"])
        let after = try await client.call(service: echo, method: "Echo", body: Data("after".utf8))
        XCTAssertEqual(after, Data("after".utf8))
    }

    func testAServerFailureMidStreamEndsTheSequenceAfterEarlierReplies() async throws {
        let client = try TestServer.client()
        var received: [String] = []
        let requests = messages(["a", "b", "quill:server-cancel", "never echoed"])
        await expectQuillErrorAsync("Stream", contains: "CANCEL") {
            for try await reply in client.bidiStream(service: echo, method: "BidiEcho", requests: requests) {
                received.append(String(decoding: reply, as: UTF8.self))
            }
        }
        XCTAssertEqual(received, ["a", "b"])
    }

    func testClientStreamSendsASequenceAndReturnsTheReply() async throws {
        let client = try TestServer.client()
        let reply = try await client.clientStream(
            service: echo, method: "ClientStream", requests: messages(["a", "bc", ""]))
        let counts = try jsonObject(String(decoding: reply, as: UTF8.self))
        XCTAssertEqual(counts["count"] as? Int, 3)
        XCTAssertEqual(counts["bytes"] as? Int, 3)
    }

    func testAFailingRequestSequenceThrowsItsOwnError() async throws {
        let client = try TestServer.client()
        let failing = AsyncThrowingStream<Data, Error> { continuation in
            continuation.yield(Data("a".utf8))
            continuation.finish(throwing: ProducerBroke())
        }
        do {
            _ = try await client.clientStream(service: echo, method: "ClientStream", requests: failing)
            XCTFail("expected the request sequence's error")
        } catch let error as ProducerBroke {
            XCTAssertEqual(error, ProducerBroke())
        }
        // The call object is single-use; a second start is refused.
        let call = client.openClientStream(service: echo, method: "ClientStream")
        try await call.finish()
        let empty = try jsonObject(String(decoding: try await call.response(), as: UTF8.self))
        XCTAssertEqual(empty["count"] as? Int, 0)
        await expectQuillErrorAsync("InvalidArgument") { try await call.response() }
    }
}
