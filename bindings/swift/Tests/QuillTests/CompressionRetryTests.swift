// zstd both ways with the decompression-bomb limit, and idempotent retries, against the
// bundled server.

import Foundation
import Quill
import XCTest

final class CompressionRetryTests: XCTestCase {
    private let echo = "echo.v1.EchoService"
    private let fault = "test.v1.FaultService"

    private func requests(_ client: QuillClient) async throws -> Int {
        let stats = try jsonObject(try await client.callJson(service: fault, method: "Stats", json: "{}"))
        return try XCTUnwrap(stats["requests"] as? Int)
    }

    func testZstdBothWaysAndTheBombLimit() async throws {
        let client = try QuillClient.fromConfig(
            config: ClientConfig(
                baseUrl: try TestServer.url, enableCompression: true, maxDecodedSize: 1 << 20,
                httpVersion: .auto))
        let big = #"{"pad": ""# + String(repeating: "q", count: 4096) + #""}"#
        // The first request goes plain: the server has not yet said it decodes zstd.
        let first = try jsonObject(try await client.callJson(service: echo, method: "Headers", json: big))
        XCTAssertNil(first["content-encoding"])
        let seen = try jsonObject(try await client.callJson(service: echo, method: "Headers", json: big))
        XCTAssertEqual(seen["content-encoding"] as? String, "zstd")
        // A 512 KiB round trip, compressed both ways.
        let payload = Data((0..<(1 << 19)).map { UInt8($0 % 256) })
        let back = try await client.call(service: echo, method: "Echo", body: payload)
        XCTAssertEqual(back, payload)
        // Bomb answers in zstd whatever was asked: within the limit it decodes ...
        let small = try await client.call(service: fault, method: "Bomb", body: Data(#"{"bytes": 100000}"#.utf8))
        XCTAssertEqual(small.count, 100_000)
        // ... and 1 GiB of zeros stops at max_decoded_size instead of filling memory.
        await expectQuillErrorAsync("Protocol", contains: "max_decoded_size") {
            try await client.call(service: self.fault, method: "Bomb", body: Data(#"{"bytes": 1073741824}"#.utf8))
        }
    }

    func testIdempotentCallsAreRetriedOn503AndOthersAreNot() async throws {
        let client = try QuillClient.fromConfig(
            config: ClientConfig(baseUrl: try TestServer.url, maxRetries: 2, httpVersion: .auto))
        var before = try await requests(client)
        await expectQuillErrorAsync("Status") {
            try await client.callJson(service: fault, method: "Error", json: #"{"status": 503}"#, idempotent: true)
        }
        // Three attempts, plus the Stats call.
        var after = try await requests(client)
        XCTAssertEqual(after - before, 4)
        before = after
        await expectQuillErrorAsync("Status") {
            try await client.callJson(service: fault, method: "Error", json: #"{"status": 503}"#)
        }
        after = try await requests(client)
        XCTAssertEqual(after - before, 2)
        // A 400 is never retried.
        before = after
        await expectQuillErrorAsync("Status") {
            try await client.callJson(service: fault, method: "Error", json: #"{"status": 400}"#, idempotent: true)
        }
        after = try await requests(client)
        XCTAssertEqual(after - before, 2)
    }
}
