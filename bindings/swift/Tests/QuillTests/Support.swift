import Foundation
import XCTest

import Quill

/// Bytes from a hex string; spaces are ignored ("00 00 00 2a").
func hex(_ text: String) -> Data {
    let digits = Array(text.filter { !$0.isWhitespace })
    precondition(digits.count % 2 == 0, "odd hex string")
    var out = Data(capacity: digits.count / 2)
    var i = 0
    while i < digits.count {
        out.append(UInt8(String(digits[i...i + 1]), radix: 16)!)
        i += 2
    }
    return out
}

func hexString(_ data: Data) -> String {
    data.map { String(format: "%02x", $0) }.joined(separator: " ")
}

extension QuillError {
    /// The case name, for assertions.
    var kind: String {
        switch self {
        case .InvalidArgument: return "InvalidArgument"
        case .UnsupportedDType: return "UnsupportedDType"
        case .Decode: return "Decode"
        case .Connection: return "Connection"
        case .Timeout: return "Timeout"
        case .Status: return "Status"
        case .Stream: return "Stream"
        case .Protocol: return "Protocol"
        case .Cancelled: return "Cancelled"
        }
    }

    /// The message of every case except `.Status`.
    var message: String {
        switch self {
        case .InvalidArgument(let m), .UnsupportedDType(let m), .Decode(let m),
            .Connection(let m), .Timeout(let m), .Stream(let m), .Protocol(let m),
            .Cancelled(let m):
            return m
        case .Status(let problem):
            return problem.body
        }
    }

    var problem: Problem? {
        if case .Status(let problem) = self { return problem }
        return nil
    }
}

/// Runs `body`, which must throw a `QuillError` of case `kind` (whose message contains
/// `contains`, if given); returns the error.
@discardableResult
func expectQuillError<T>(
    _ kind: String, contains: String? = nil,
    file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws -> T
) -> QuillError? {
    do {
        let value = try body()
        XCTFail("expected QuillError.\(kind), got \(value)", file: file, line: line)
    } catch let error as QuillError {
        XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
        if let contains {
            XCTAssertTrue(
                error.message.contains(contains), "\(error.message) lacks \(contains)",
                file: file, line: line)
        }
        return error
    } catch {
        XCTFail("expected QuillError.\(kind), got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// `expectQuillError` for async calls.
@discardableResult
func expectQuillErrorAsync<T>(
    _ kind: String, contains: String? = nil,
    file: StaticString = #filePath, line: UInt = #line,
    _ body: () async throws -> T
) async -> QuillError? {
    do {
        let value = try await body()
        XCTFail("expected QuillError.\(kind), got \(value)", file: file, line: line)
    } catch let error as QuillError {
        XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
        if let contains {
            XCTAssertTrue(
                error.message.contains(contains), "\(error.message) lacks \(contains)",
                file: file, line: line)
        }
        return error
    } catch {
        XCTFail("expected QuillError.\(kind), got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// The bundled server the client tests talk to: `QUILL_URL` (set by scripts/test-swift,
/// which starts `quill-server --port 0` with `QUILL_SERVER_TOKEN`) and `QUILL_TOKEN`, the
/// bearer token its `Auth` route demands. Without `QUILL_URL` the client tests are
/// skipped, unless `QUILL_REQUIRE_SERVER=1`, which makes that a failure.
enum TestServer {
    static var url: String {
        get throws {
            let env = ProcessInfo.processInfo.environment
            if let url = env["QUILL_URL"], !url.isEmpty { return url }
            if env["QUILL_REQUIRE_SERVER"] == "1" {
                XCTFail("QUILL_URL is not set but QUILL_REQUIRE_SERVER=1")
            }
            throw XCTSkip("QUILL_URL not set: start `scripts/serve --port 0` and export it")
        }
    }

    /// The TLS server of scripts/test-swift (HTTPS and HTTP/3) and its certificate.
    static var tls: (url: String, caPem: Data) {
        get throws {
            let env = ProcessInfo.processInfo.environment
            if let url = env["QUILL_TLS_URL"], !url.isEmpty, let pem = env["QUILL_TLS_CA_PEM"] {
                return (url, Data(pem.utf8))
            }
            if env["QUILL_REQUIRE_SERVER"] == "1" {
                XCTFail("QUILL_TLS_URL is not set but QUILL_REQUIRE_SERVER=1")
            }
            throw XCTSkip("QUILL_TLS_URL not set: start `scripts/serve --port 0 --tls-self-signed DIR`")
        }
    }

    static var token: String? {
        ProcessInfo.processInfo.environment["QUILL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func client(timeoutMs: UInt64 = 30_000, compression: Bool = false) throws -> QuillClient {
        try QuillClient(baseUrl: try url, timeoutMs: timeoutMs, enableCompression: compression)
    }
}

/// JSON text to a dictionary.
func jsonObject(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws
    -> [String: Any]
{
    let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
    guard let object = value as? [String: Any] else {
        XCTFail("not a JSON object: \(text)", file: file, line: line)
        return [:]
    }
    return object
}

func jsonObject(_ data: Data, file: StaticString = #filePath, line: UInt = #line) throws
    -> [String: Any]
{
    try jsonObject(String(decoding: data, as: UTF8.self), file: file, line: line)
}

/// A dictionary to JSON text.
func jsonText(_ object: [String: Any]) -> String {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}
