// The typed quill.inference.v1 API against the bundled server: Generate (batches,
// positions, determinism, stop tokens, streamed embeddings, errors, timing), Embed
// (layers, pooling), Chat, and the Extras.swift wrappers, including that leaving a
// pregenerated stream early or cancelling the task reading it ends it on the server.

import Foundation
import Quill
import XCTest

/// An `AsyncSequence` of requests from a fixed list.
private func requests(_ items: [GenerateRequest]) -> AsyncStream<GenerateRequest> {
    AsyncStream { continuation in
        for item in items { continuation.yield(item) }
        continuation.finish()
    }
}

/// Every response of `stream`, read with the generated `next()`.
private func drain(_ stream: GenerateStream) async throws -> [GenerateResponse] {
    var responses: [GenerateResponse] = []
    while let response = try await stream.next() {
        responses.append(response)
    }
    return responses
}

private func ids(_ responses: [GenerateResponse]) -> [UInt32] {
    responses.flatMap { $0.tokens.tokenIds() }
}

final class InferenceTests: XCTestCase {
    private let fault = "test.v1.FaultService"
    /// Greedy (temperature 0), so the same request always gives the same tokens.
    private let greedy = GenerateRequest(inputIds: [101, 2023, 2003], maxNewTokens: 20, temperature: 0)
    /// The server's benchmark mode: 64 tokens per response, the whole stream encoded
    /// before it starts (about 15 MB for a million tokens: more than the socket buffers
    /// hold, so the server is still writing when the client goes).
    private let pregenerate = [HeaderEntry(name: "quill-pregenerate", value: "64")]
    private let million = GenerateRequest(inputIds: [7], maxNewTokens: 1_000_000, temperature: 0)

    private func stats(_ client: QuillClient) async throws -> [String: Any] {
        try jsonObject(try await client.callJson(service: fault, method: "Stats", json: "{}"))
    }

    private func stat(_ client: QuillClient, _ key: String) async throws -> Int {
        let s = try await stats(client)
        return try XCTUnwrap(s[key] as? Int, "no \(key) in \(s)")
    }

    /// Polls `Stats` until no Generate stream is open and `cancelled_streams` reached
    /// `cancelled` (fails after `limitMs`); returns the milliseconds that took.
    @discardableResult
    private func untilServerDropped(
        _ client: QuillClient, cancelled: Int, limitMs: Double = 3000,
        file: StaticString = #filePath, line: UInt = #line
    ) async throws -> Double {
        let start = Date()
        while true {
            let s = try await stats(client)
            let open = try XCTUnwrap(s["open_streams"] as? Int)
            let gone = try XCTUnwrap(s["cancelled_streams"] as? Int)
            let ms = Date().timeIntervalSince(start) * 1000
            if open == 0 && gone >= cancelled { return ms }
            if ms > limitMs {
                XCTFail("after \(Int(limitMs)) ms the server still has \(s)", file: file, line: line)
                return ms
            }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
    }

    // MARK: - Generate

    func testGenerateStreamsBatchesOfEightEndingWithLength() async throws {
        let client = try TestServer.client()
        let responses = try await drain(try await client.generate(request: greedy))
        XCTAssertEqual(responses.map { $0.tokens.tokens.count }, [8, 8, 4])
        XCTAssertEqual(responses.flatMap { $0.tokens.tokens.map(\.position) }, Array(0..<20))
        XCTAssertEqual(responses.map(\.totalGenerated), [8, 16, 20])
        XCTAssertEqual(responses.map(\.isComplete), [false, false, true])
        XCTAssertEqual(responses.map(\.finishReason), [nil, nil, "length"])
        XCTAssertTrue(responses.allSatisfy { $0.embedding == nil }, "no embeddings unless asked for")

        // Same request, same tokens; `text()` is the batches' texts joined.
        let again = try await drain(try await client.generate(request: greedy))
        XCTAssertEqual(ids(again), ids(responses))
        let text = try await client.generate(request: greedy).text()
        XCTAssertFalse(text.isEmpty)
        XCTAssertEqual(text, responses.map { $0.tokens.text() }.joined())
    }

    func testAStopTokenEndsTheGenerationAndIsIncluded() async throws {
        let client = try TestServer.client()
        let full = ids(try await drain(try await client.generate(request: greedy)))
        let stop = full[5]
        let cut = try XCTUnwrap(full.firstIndex(of: stop))
        var request = greedy
        request.stopTokenIds = [stop]
        let responses = try await drain(try await client.generate(request: request))
        XCTAssertEqual(ids(responses), Array(full[...cut]))
        XCTAssertEqual(responses.last?.tokens.tokens.last?.id, stop)
        XCTAssertEqual(responses.last?.finishReason, "stop")
        XCTAssertEqual(responses.last?.totalGenerated, UInt32(cut + 1))
        XCTAssertEqual(responses.map(\.isComplete), Array(repeating: false, count: responses.count - 1) + [true])
    }

    func testStreamedEmbeddingsAreFloat32OneByEight() async throws {
        let client = try TestServer.client()
        var request = greedy
        request.streamEmbeddings = true
        let responses = try await drain(try await client.generate(request: request))
        XCTAssertEqual(responses.count, 3)
        for response in responses {
            let embedding = try XCTUnwrap(response.embedding)
            XCTAssertEqual(embedding.shape(), [1, 8])
            XCTAssertEqual(embedding.dtype(), .float32)
            let values = try embedding.values(as: Float.self)
            XCTAssertEqual(values.count, 8)
            XCTAssertTrue(values.allSatisfy(\.isFinite))
        }
        // Embeddings change nothing about the tokens.
        let plain = try await drain(try await client.generate(request: greedy))
        XCTAssertEqual(ids(responses), ids(plain))
    }

    func testTooManyNewTokensIsA400() async throws {
        let client = try TestServer.client()
        let error = await expectQuillErrorAsync("Status", contains: "max_new_tokens") {
            try await client.generate(request: GenerateRequest(inputIds: [1], maxNewTokens: 5000))
        }
        XCTAssertEqual(error?.problem?.status, 400)
        // The extras throw the same error.
        let viaExtras = await expectQuillErrorAsync("Status") {
            try await client.generateStream(GenerateRequest(inputIds: [1], maxNewTokens: 5000))
        }
        XCTAssertEqual(viaExtras?.problem?.status, 400)
    }

    func testTimingOfAGenerateStream() async throws {
        let client = try TestServer.client()
        let stream = try await client.generate(request: greedy)
        let before = stream.timing()
        XCTAssertEqual(before.tokens, 0)
        XCTAssertNil(before.timeToFirstTokenMs)
        _ = try await drain(stream)
        let t = stream.timing()
        XCTAssertEqual(t.tokens, 20)
        XCTAssertEqual(t.responses, 3)
        let ttft = try XCTUnwrap(t.timeToFirstTokenMs)
        let elapsed = try XCTUnwrap(t.elapsedMs)
        XCTAssertGreaterThan(ttft, 0)
        XCTAssertLessThanOrEqual(ttft, elapsed)
        let p50 = try XCTUnwrap(t.interTokenP50Ms)
        let p99 = try XCTUnwrap(t.interTokenP99Ms)
        XCTAssertGreaterThanOrEqual(p50, 0)
        XCTAssertLessThanOrEqual(p50, p99)
        let rate = try XCTUnwrap(t.tokensPerSecond)
        XCTAssertGreaterThan(rate, 0)
        XCTAssertEqual(rate, 20 / (elapsed / 1000), accuracy: rate * 1e-6)
    }

    // MARK: - Embed

    func testEmbedLayersAndPooling() async throws {
        let client = try TestServer.client()
        let layers = try await client.embed(request: EmbedRequest(inputIds: [1, 2, 3], layers: [-1, 0]))
        XCTAssertEqual(layers.count, 2)
        for tensor in layers {
            XCTAssertEqual(tensor.shape(), [3, 64])
            XCTAssertEqual(tensor.dtype(), .float32)
        }
        let last = try layers[0].values(as: Float.self)
        XCTAssertNotEqual(last, try layers[1].values(as: Float.self), "layers differ")

        // Default layer is -1; pooling with "first" keeps its first row.
        let unpooled = try await client.embed(request: EmbedRequest(inputIds: [1, 2, 3]))
        XCTAssertEqual(unpooled.count, 1)
        XCTAssertEqual(try unpooled[0].values(as: Float.self), last)
        let first = try await client.embed(
            request: EmbedRequest(inputIds: [1, 2, 3], pool: true, poolStrategy: "first"))
        XCTAssertEqual(first.count, 1)
        XCTAssertEqual(first[0].shape(), [1, 64])
        XCTAssertEqual(try first[0].values(as: Float.self), Array(last[0..<64]))
        // Mean (the default strategy) is a different row.
        let mean = try await client.embed(request: EmbedRequest(inputIds: [1, 2, 3], pool: true))
        XCTAssertEqual(mean[0].shape(), [1, 64])
        XCTAssertNotEqual(try mean[0].values(as: Float.self), Array(last[0..<64]))

        let error = await expectQuillErrorAsync("Status", contains: "pool_strategy") {
            try await client.embed(request: EmbedRequest(inputIds: [1], pool: true, poolStrategy: "median"))
        }
        XCTAssertEqual(error?.problem?.status, 400)
    }

    // MARK: - Chat and the Extras.swift wrappers

    func testChatAnswersEachRequestInOrder() async throws {
        let client = try TestServer.client()
        let turns = [
            GenerateRequest(inputIds: [11], maxNewTokens: 4, temperature: 0),
            GenerateRequest(inputIds: [12, 13], maxNewTokens: 10, temperature: 0),
        ]
        var responses: [GenerateResponse] = []
        for try await response in client.chat(requests(turns)) {
            responses.append(response)
        }
        let sequence = responses.map { $0.tokens.sequenceId }
        XCTAssertEqual(sequence, [1, 2, 2])
        XCTAssertEqual(responses.map { $0.tokens.tokens.count }, [4, 8, 2])
        XCTAssertEqual(responses.map(\.isComplete), [true, false, true])
        // Each turn is the generation Generate gives for the same request.
        for (i, turn) in turns.enumerated() {
            let generated = ids(try await drain(try await client.generate(request: turn)))
            XCTAssertEqual(ids(responses.filter { $0.tokens.sequenceId == UInt32(i + 1) }), generated)
        }
    }

    func testChatIsFullDuplex() async throws {
        let client = try TestServer.client()
        let (turns, next) = AsyncStream<GenerateRequest>.makeStream()
        var iterator = client.chat(turns).makeAsyncIterator()
        // Each turn's answer arrives before the next turn is even produced.
        for turn in 1...3 {
            next.yield(GenerateRequest(inputIds: [UInt32(turn)], maxNewTokens: 3, temperature: 0))
            let response = try await iterator.next()
            XCTAssertEqual(response?.tokens.sequenceId, UInt32(turn))
            XCTAssertEqual(response?.isComplete, true)
        }
        next.finish()
        let end = try await iterator.next()
        XCTAssertNil(end)
    }

    func testGenerateStreamAndGenerateText() async throws {
        let client = try TestServer.client()
        let expected = try await drain(try await client.generate(request: greedy))
        let stream = try await client.generateStream(greedy)
        var responses: [GenerateResponse] = []
        for try await response in stream {
            responses.append(response)
        }
        XCTAssertEqual(ids(responses), ids(expected))
        XCTAssertEqual(responses.last?.finishReason, "length")
        XCTAssertEqual(stream.timing().tokens, 20)
        XCTAssertEqual(stream.timing(), stream.source.timing())

        let text = try await client.generateText(greedy)
        XCTAssertEqual(text, expected.map { $0.tokens.text() }.joined())
    }

    // MARK: - Cancellation reaches the server

    func testLeavingTheLoopEarlyEndsTheStreamOnTheServer() async throws {
        let client = try TestServer.client()
        let before = try await stat(client, "cancelled_streams")
        let stream = try await client.generateStream(million, headers: pregenerate)
        var tokens = 0
        for try await response in stream {
            tokens += response.tokens.tokens.count
            break
        }
        XCTAssertEqual(tokens, 64)
        // The loop's end cancelled the stream: nothing more comes out of it.
        await expectQuillErrorAsync("Cancelled") { try await stream.source.next() }
        let ms = try await untilServerDropped(client, cancelled: before + 1)
        print("server saw the abandoned Generate stream go after \(Int(ms)) ms")
    }

    func testCancellingTheIteratingTaskEndsTheStreamOnTheServer() async throws {
        let client = try TestServer.client()
        let before = try await stat(client, "cancelled_streams")
        let (started, reading) = AsyncStream<Int>.makeStream()
        let request = million
        let headers = pregenerate
        let task = Task {
            var tokens = 0
            for try await response in try await client.generateStream(request, headers: headers) {
                tokens += response.tokens.tokens.count
                reading.yield(tokens)
            }
            return tokens
        }
        for await _ in started { break }
        task.cancel()
        switch await task.result {
        case .success(let tokens): XCTFail("the stream ran to its end (\(tokens) tokens)")
        case .failure(let error): XCTAssertEqual((error as? QuillError)?.kind, "Cancelled", "\(error)")
        }
        try await untilServerDropped(client, cancelled: before + 1)
    }

    func testCancellingATaskInGenerateTextEndsIt() async throws {
        let client = try TestServer.client()
        let before = try await stat(client, "cancelled_streams")
        let request = million
        let headers = pregenerate
        let task = Task { try await client.generateText(request, headers: headers) }
        // Wait until the server holds the stream (it pregenerates before answering).
        let deadline = Date().addingTimeInterval(30)
        while try await stat(client, "open_streams") < 1 {
            if Date() > deadline { return XCTFail("the Generate call never reached the server") }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        let cancelled = Date()
        task.cancel()
        switch await task.result {
        case .success(let text): XCTFail("the stream ran to its end (\(text.count) characters)")
        case .failure(let error): XCTAssertEqual((error as? QuillError)?.kind, "Cancelled", "\(error)")
        }
        // The client side ends at once, whether the call was still opening or in `text()`.
        XCTAssertLessThan(Date().timeIntervalSince(cancelled), 1)
        // The cancel may land while the server is still pregenerating (over a second in
        // a debug build), and it only sees the client go once it starts writing.
        try await untilServerDropped(client, cancelled: before + 1, limitMs: 15_000)
    }
}
