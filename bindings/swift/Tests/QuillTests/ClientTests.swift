// QuillClient against the bundled server (QUILL_URL, see TestServer): unary and JSON
// calls, headers and auth, Problem Details, timeouts, connection errors, tensors, streams
// through the AsyncSequence wrapper, and one client shared by many tasks.

import Foundation
import Quill
import XCTest

final class ClientTests: XCTestCase {
    func testProperties() throws {
        let url = try TestServer.url
        let client = try QuillClient(baseUrl: url + "/", timeoutMs: 1234, enableCompression: true)
        XCTAssertEqual(client.baseUrl(), url)
        XCTAssertEqual(client.timeoutMs(), 1234)
        XCTAssertTrue(client.compressionEnabled())
        let defaults = try QuillClient(baseUrl: "http://localhost:8080")
        XCTAssertEqual(defaults.timeoutMs(), 30_000)
        XCTAssertFalse(defaults.compressionEnabled())
        XCTAssertEqual(defaults.config().baseUrl, "http://localhost:8080")
    }

    func testUnaryEchoIsByteExact() async throws {
        let client = try TestServer.client()
        let payload = Data((0..<10_000).map { UInt8($0 % 256) })
        let back = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: payload)
        XCTAssertEqual(back, payload)
        let empty = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: Data())
        XCTAssertEqual(empty, Data())
    }

    func testCallSyncOnThreadsOfItsOwn() throws {
        let client = try TestServer.client()
        let payload = Data((0..<1024).map { UInt8($0 % 251) })
        XCTAssertEqual(
            try client.callSync(service: "echo.v1.EchoService", method: "Echo", body: payload), payload)
        // Eight threads at once share the client.
        let replies = EchoCount()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for _ in 0..<25 {
                let body = Data(repeating: UInt8(i), count: 100 + i)
                if (try? client.callSync(service: "echo.v1.EchoService", method: "Echo", body: body)) == body {
                    replies.add()
                }
            }
        }
        XCTAssertEqual(replies.value, 200)
        // Errors are the same typed errors as the async call's.
        let error = expectQuillError("Status") {
            try client.callSync(service: "echo.v1.EchoService", method: "NoSuchMethod", body: Data())
        }
        XCTAssertEqual(error?.problem?.status, 404)
    }

    func testUnaryAndJsonGenerate() async throws {
        let client = try TestServer.client(compression: true)
        let raw = try await client.call(
            service: "inference.v1.LLMService", method: "Generate", body: Data(#"{"prompt": "Hello"}"#.utf8))
        XCTAssertEqual(try jsonObject(raw)["finish_reason"] as? String, "length")

        let text = try await client.callJson(
            service: "inference.v1.LLMService", method: "Generate",
            json: jsonText(["prompt": "Hello", "max_tokens": 100]))
        let response = try jsonObject(text)
        let tokens = try XCTUnwrap(response["tokens"] as? [[String: Any]])
        XCTAssertEqual(tokens.count, 100)
        XCTAssertEqual(response["text"] as? String, tokens.map { $0["text"] as! String }.joined())
        XCTAssertEqual(Set(tokens[0].keys), ["id", "text", "logprob", "position", "is_special"])
    }

    func testContentTypes() async throws {
        let client = try TestServer.client()
        let proto = try jsonObject(
            try await client.call(service: "echo.v1.EchoService", method: "Headers", body: Data("x".utf8)))
        XCTAssertEqual(proto["content-type"] as? String, "application/proto")
        let json = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(json["content-type"] as? String, "application/json")
        XCTAssertTrue((json["user-agent"] as? String ?? "").hasPrefix("quill/"))
    }

    func testHeadersAndAuthArrive() async throws {
        let client = try TestServer.client()
        try client.setBearerToken(token: "my-auth-token")
        try client.setApiKey(key: "api-key-123")
        try client.setHeader(name: "X-Request-ID", value: "abc123")
        var seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(seen["authorization"] as? String, "Bearer my-auth-token")
        XCTAssertEqual(seen["x-api-key"] as? String, "api-key-123")
        XCTAssertEqual(seen["x-request-id"] as? String, "abc123")

        // Secrets are redacted in what the client shows.
        let shown = client.headers()
        XCTAssertEqual(Set(shown.map { $0.name }), ["Authorization", "X-API-Key", "X-Request-ID"])
        XCTAssertFalse("\(shown)".contains("my-auth-token"))
        XCTAssertFalse("\(shown)".contains("api-key-123"))
        XCTAssertTrue(shown.contains(HeaderEntry(name: "X-Request-ID", value: "abc123")))

        XCTAssertTrue(client.removeHeader(name: "x-request-id"))
        XCTAssertFalse(client.removeHeader(name: "X-Request-ID"))
        seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertNil(seen["x-request-id"])

        try client.setApiKey(key: "api-key-123", headerName: "Authorization")
        seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(seen["authorization"] as? String, "api-key-123")
    }

    func testAuthRoute() async throws {
        let client = try TestServer.client()
        guard let token = TestServer.token else {
            throw XCTSkip("QUILL_TOKEN not set (the server was started without --token)")
        }
        let denied = await expectQuillErrorAsync("Status") {
            try await client.call(service: "test.v1.FaultService", method: "Auth", body: Data())
        }
        XCTAssertEqual(denied?.problem?.status, 401)
        XCTAssertEqual(denied?.problem?.title, "Unauthenticated")

        try client.setBearerToken(token: "wrong-" + token)
        let wrong = await expectQuillErrorAsync("Status") {
            try await client.call(service: "test.v1.FaultService", method: "Auth", body: Data())
        }
        XCTAssertFalse("\(String(describing: wrong))".contains(token), "the token never shows in errors")

        try client.setBearerToken(token: token)
        let ok = try await client.callJson(service: "test.v1.FaultService", method: "Auth", json: "{}")
        XCTAssertEqual(try jsonObject(ok)["ok"] as? Bool, true)
    }

    func testHeaderInjectionRefused() throws {
        let client = try TestServer.client()
        for (name, value) in [("X-Bad", "a\r\nInjected: 1"), ("X-Bad", "a\nb"), ("Bad Name", "v"), ("", "v")] {
            expectQuillError("InvalidArgument") { try client.setHeader(name: name, value: value) }
        }
        expectQuillError("InvalidArgument") { try client.setBearerToken(token: "tok\r\nX-Evil: 1") }
        expectQuillError("InvalidArgument") { try client.setHeader(name: "Content-Type", value: "text/plain") }
    }

    func testBadBaseUrl() {
        expectQuillError("InvalidArgument") { try QuillClient(baseUrl: "not a url") }
        expectQuillError("InvalidArgument") { try QuillClient(baseUrl: "ftp://example.com") }
        expectQuillError("InvalidArgument") { try QuillClient(baseUrl: "http://user:pw@example.com") }
    }

    func testProblemDetails() async throws {
        let client = try TestServer.client()
        let request = jsonText([
            "status": 429, "title": "Quota exceeded", "detail": "try later", "instance": "/quota/7",
            "retry_after": 2, "proto_type": "pkg.QuotaError", "proto_detail_base64": "CgRwZWVy",
        ])
        let error = await expectQuillErrorAsync("Status") {
            try await client.callJson(service: "test.v1.FaultService", method: "Error", json: request)
        }
        let problem = try XCTUnwrap(error?.problem)
        XCTAssertEqual(problem.status, 429)
        XCTAssertEqual(problem.problemType, "urn:quill:error:429")
        XCTAssertEqual(problem.title, "Quota exceeded")
        XCTAssertEqual(problem.detail, "try later")
        XCTAssertEqual(problem.instance, "/quota/7")
        XCTAssertEqual(problem.protoType, "pkg.QuotaError")
        XCTAssertEqual(problem.protoDetail, Data([0x0a, 0x04]) + Data("peer".utf8))
        XCTAssertEqual(problem.retryAfterMs, 2000)
        XCTAssertTrue(problem.body.contains("\"extra\""), problem.body)
    }

    func testPlainTextHtmlAndNotFound() async throws {
        let client = try TestServer.client()
        for (method, status, text) in [("PlainText", 502, "bad gateway from proxy"), ("Html", 503, "<html")] {
            let error = await expectQuillErrorAsync("Status") {
                try await client.call(service: "test.v1.FaultService", method: method, body: Data())
            }
            let problem = try XCTUnwrap(error?.problem)
            XCTAssertEqual(problem.status, UInt16(status))
            XCTAssertTrue(problem.body.contains(text), problem.body)
            XCTAssertNil(problem.title)
        }
        let missing = await expectQuillErrorAsync("Status") {
            try await client.call(service: "nope.v1.Missing", method: "Method", body: Data())
        }
        XCTAssertEqual(missing?.problem?.status, 404)
        XCTAssertEqual(missing?.problem?.problemType, "urn:quill:error:404")
    }

    func testTimeout() async throws {
        let client = try TestServer.client(timeoutMs: 500)
        let start = Date()
        await expectQuillErrorAsync("Timeout") {
            try await client.callJson(service: "test.v1.FaultService", method: "Slow", json: #"{"ms": 3000}"#)
        }
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(elapsed, 0.45)
        XCTAssertLessThan(elapsed, 1.5)
    }

    func testConnectionRefused() async throws {
        _ = try TestServer.url  // only with the rest of the client suite
        // Port 1 (tcpmux): nothing listens there.
        let client = try QuillClient(baseUrl: "http://127.0.0.1:1", timeoutMs: 10_000)
        let start = Date()
        let error = await expectQuillErrorAsync("Connection") {
            try await client.call(service: "service", method: "method", body: Data("data".utf8))
        }
        XCTAssertTrue(error?.message.lowercased().contains("connect") ?? false, "\(String(describing: error))")
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
    }

    func testTensorDownloadAndUpload() async throws {
        let client = try TestServer.client()
        let t = try await client.callTensor(
            service: "tensor.v1.TensorService", method: "Download",
            body: Data(#"{"shape": [300, 1000], "dtype": "uint8"}"#.utf8), contentTypeJson: true)
        XCTAssertEqual(t.shape(), [300, 1000])
        XCTAssertEqual(t.dtype(), .uint8)
        let bytes = t.toBytes()
        XCTAssertEqual(bytes.count, 300_000)
        XCTAssertTrue(bytes.enumerated().allSatisfy { $0.element == UInt8($0.offset % 251) })

        let x = try Tensor.fromBytes(data: Data((0..<24).map { UInt8($0) }), shape: [2, 3], dtype: .float32, name: "x")
        let answer = try jsonObject(
            try await client.sendTensor(service: "tensor.v1.TensorService", method: "Upload", tensor: x))
        XCTAssertEqual(answer["shape"] as? [Int], [2, 3])
        XCTAssertEqual(answer["dtype"] as? String, "float32")
        XCTAssertEqual(answer["name"] as? String, "x")
        XCTAssertEqual(answer["size_bytes"] as? Int, 24)
        XCTAssertEqual(answer["fnv1a64"] as? String, fnv1a64(x.toBytes()))
    }

    private func fnv1a64(_ data: Data) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in data { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        let digits = String(h, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    // MARK: streams

    func testTokenStreamThroughAsyncSequence() async throws {
        let client = try TestServer.client()
        let request = jsonText(["prompt": "Alice", "max_tokens": 10, "batch_size": 4, "sequence_id": 7, "seed": 3])
        let stream = try await client.tokenStream(
            service: "inference.v1.LLMService", method: "GenerateStream", body: Data(request.utf8),
            contentTypeJson: true)
        var batches: [TokenBatch] = []
        for try await batch in stream.batches {
            batches.append(batch)
        }
        XCTAssertEqual(batches.map { $0.tokens.count }, [4, 4, 2])
        XCTAssertEqual(batches.map { $0.isFinal }, [false, false, true])
        XCTAssertTrue(batches.allSatisfy { $0.sequenceId == 7 })
        let tokens = batches.flatMap { $0.tokens }
        XCTAssertEqual(tokens.map { $0.position }, Array(0..<10))

        // The same request as one unary call gives the same tokens.
        let unary = try jsonObject(
            try await client.callJson(service: "inference.v1.LLMService", method: "Generate", json: request))
        XCTAssertEqual(batches.map { $0.text() }.joined(), unary["text"] as? String)
        let ids = (unary["tokens"] as? [[String: Any]] ?? []).map { ($0["id"] as? NSNumber)?.uint32Value }
        XCTAssertEqual(ids, tokens.map { $0.id })
    }

    func testMessageStreamThroughAsyncSequence() async throws {
        let client = try TestServer.client()
        let stream = try await client.serverStream(
            service: "test.v1.FaultService", method: "StreamCombined", body: Data(), contentTypeJson: true)
        var messages: [String] = []
        for try await message in stream.messages {
            messages.append(String(decoding: message, as: UTF8.self))
        }
        XCTAssertEqual(messages, ["one", "two", "three"])
    }

    func testCutStreamThrowsStreamError() async throws {
        let client = try TestServer.client()
        let stream = try await client.serverStream(
            service: "test.v1.FaultService", method: "StreamCut", body: Data(#"{"messages": 3}"#.utf8),
            contentTypeJson: true)
        var received: [String] = []
        await expectQuillErrorAsync("Stream") {
            for try await message in stream.messages {
                received.append(String(decoding: message, as: UTF8.self))
            }
        }
        XCTAssertEqual(received, ["message 0", "message 1", "message 2"])
    }

    private func cancelledStreams(_ client: QuillClient) async throws -> Int {
        let stats = try jsonObject(
            try await client.callJson(service: "test.v1.FaultService", method: "Stats", json: "{}"))
        return try XCTUnwrap(stats["cancelled_streams"] as? Int)
    }

    /// Waits until the server counted more than `before` cancelled streams.
    private func awaitServerSawCancel(_ client: QuillClient, after before: Int) async throws {
        let deadline = Date().addingTimeInterval(5)
        while try await cancelledStreams(client) <= before {
            if Date() > deadline {
                XCTFail("the server never saw the stream cancelled")
                return
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    func testBreakingOutOfTheLoopCancelsTheStream() async throws {
        let client = try TestServer.client()
        let before = try await cancelledStreams(client)
        let stream = try await client.serverStream(
            service: "test.v1.FaultService", method: "StreamSlow",
            body: Data(#"{"messages": 100, "interval_ms": 50}"#.utf8), contentTypeJson: true)
        var first: Data?
        for try await message in stream.messages {
            first = message
            break
        }
        XCTAssertEqual(first.map { String(decoding: $0, as: UTF8.self) }, "tick 0")
        // The iterator is gone, so the stream was cancelled locally ...
        await expectQuillErrorAsync("Cancelled") { try await stream.next() }
        // ... and the server noticed the client go.
        try await awaitServerSawCancel(client, after: before)
    }

    func testCancellingTheTaskCancelsTheStream() async throws {
        let client = try TestServer.client()
        let before = try await cancelledStreams(client)
        let stream = try await client.serverStream(
            service: "test.v1.FaultService", method: "StreamSlow",
            body: Data(#"{"messages": 10, "interval_ms": 20000}"#.utf8), contentTypeJson: true)
        let task = Task { () -> [Data] in
            var got: [Data] = []
            for try await message in stream.messages { got.append(message) }
            return got
        }
        try await Task.sleep(nanoseconds: 300_000_000)  // the task waits for "tick 1"
        let start = Date()
        task.cancel()
        let result = await task.result
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
        switch result {
        case .success(let got): XCTFail("expected cancellation, got \(got.count) messages")
        case .failure(let error):
            XCTAssertEqual((error as? QuillError)?.kind, "Cancelled", "\(error)")
        }
        try await awaitServerSawCancel(client, after: before)
    }

    func testConcurrentTasksShareOneClient() async throws {
        let client = try TestServer.client()
        let count = 48
        let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for i in 0..<count {
                group.addTask {
                    switch i % 3 {
                    case 0:
                        let payload = Data("payload \(i) ".utf8) + Data(repeating: UInt8(i), count: i * 100)
                        let back = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: payload)
                        return (i, back == payload)
                    case 1:
                        let text = try await client.callJson(
                            service: "inference.v1.LLMService", method: "Generate",
                            json: #"{"prompt": "Alice", "max_tokens": 5, "seed": \#(i)}"#)
                        let tokens = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                        return (i, (tokens?["tokens"] as? [Any])?.count == 5)
                    default:
                        let stream = try await client.tokenStream(
                            service: "inference.v1.LLMService", method: "GenerateStream",
                            body: Data(#"{"max_tokens": 9, "batch_size": 3, "seed": \#(i)}"#.utf8),
                            contentTypeJson: true)
                        var n = 0
                        for try await batch in stream.batches { n += batch.tokens.count }
                        return (i, n == 9)
                    }
                }
            }
            var all: [Int: Bool] = [:]
            for try await (i, ok) in group { all[i] = ok }
            return all
        }
        XCTAssertEqual(results.count, count)
        XCTAssertEqual(results.filter { !$0.value }.map { $0.key }.sorted(), [])
    }

    func testFromConfig() async throws {
        let url = try TestServer.url
        let client = try QuillClient.fromConfig(
            config: ClientConfig(
                baseUrl: url, timeoutMs: 5000, userAgent: "quill-swift-test/1", httpVersion: .auto))
        XCTAssertEqual(client.timeoutMs(), 5000)
        let seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(seen["user-agent"] as? String, "quill-swift-test/1")
        XCTAssertEqual(seen["prefer"] as? String, "prism=classic")
        XCTAssertEqual(client.selectedPrism(), "classic")
    }

    func testHttp3OverQuicCallsStreamsAndMigrates() async throws {
        let tls = try TestServer.tls
        let client = try QuillClient.fromConfig(
            config: ClientConfig(baseUrl: tls.url, caCertPem: tls.caPem, httpVersion: .http3))
        XCTAssertFalse(try client.rebind(), "nothing bound before the first call")
        let seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(seen["prefer"] as? String, "prism=hyper")
        XCTAssertEqual(client.selectedPrism(), "hyper")
        let replies = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for i in 0..<20 {
                group.addTask {
                    (i, try await client.call(
                        service: "echo.v1.EchoService", method: "Echo", body: Data("q\(i)".utf8)))
                }
            }
            var all: [Int: Data] = [:]
            for try await (i, reply) in group { all[i] = reply }
            return all
        }
        XCTAssertEqual(replies.count, 20)
        for (i, reply) in replies { XCTAssertEqual(reply, Data("q\(i)".utf8)) }
        // A network change mid-stream: the stream continues on the migrated connection.
        let stream = try await client.tokenStream(
            service: "inference.v1.LLMService", method: "GenerateStream",
            body: Data(#"{"prompt": "Alice", "max_tokens": 6}"#.utf8), contentTypeJson: true)
        var tokens = 0
        var moved = false
        for try await batch in stream.batches {
            tokens += batch.tokens.count
            if !moved {
                XCTAssertTrue(try client.rebind())
                moved = true
            }
        }
        XCTAssertEqual(tokens, 6)
    }

    func testHttp2OverH2cMultiplexesCalls() async throws {
        let client = try QuillClient.fromConfig(
            config: ClientConfig(baseUrl: try TestServer.url, httpVersion: .http2))
        XCTAssertNil(client.selectedPrism())
        let seen = try jsonObject(
            try await client.callJson(service: "echo.v1.EchoService", method: "Headers", json: "{}"))
        XCTAssertEqual(seen["prefer"] as? String, "prism=turbo")
        XCTAssertEqual(client.selectedPrism(), "turbo")
        let replies = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for i in 0..<50 {
                group.addTask {
                    (i, try await client.call(
                        service: "echo.v1.EchoService", method: "Echo", body: Data("m\(i)".utf8)))
                }
            }
            var all: [Int: Data] = [:]
            for try await (i, reply) in group { all[i] = reply }
            return all
        }
        XCTAssertEqual(replies.count, 50)
        for (i, reply) in replies { XCTAssertEqual(reply, Data("m\(i)".utf8)) }
        let stream = try await client.tokenStream(
            service: "inference.v1.LLMService", method: "GenerateStream",
            body: Data(#"{"prompt": "Alice", "max_tokens": 8}"#.utf8), contentTypeJson: true)
        var tokens = 0
        for try await batch in stream.batches { tokens += batch.tokens.count }
        XCTAssertEqual(tokens, 8)
    }
}

/// Echoes that came back right, counted from many threads.
private final class EchoCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
