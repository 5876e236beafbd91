// The core types through the generated Swift bindings: the dtype table, tensors, tokens
// and their wire encodings (protocol §6-§8), and typed errors for bad input. Mirrors the
// Kotlin and Python suites; needs no server.

import Foundation
import Quill
import XCTest

final class DTypeTests: XCTestCase {
    /// Protocol §7: name, wire number, element size.
    static let table: [(DType, String, UInt8, UInt32)] = [
        (.float32, "float32", 1, 4),
        (.float16, "float16", 2, 2),
        (.bfloat16, "bfloat16", 3, 2),
        (.float64, "float64", 4, 8),
        (.int8, "int8", 5, 1),
        (.int32, "int32", 6, 4),
        (.int64, "int64", 7, 8),
        (.uint8, "uint8", 8, 1),
        (.bool, "bool", 9, 1),
    ]

    func testTable() throws {
        XCTAssertEqual(Self.table.map { $0.2 }, Array(1...9))
        for (dtype, name, wire, size) in Self.table {
            let info = dtype.info()
            XCTAssertEqual(info.name, name)
            XCTAssertEqual(info.wireValue, wire)
            XCTAssertEqual(info.elementSize, size)
            XCTAssertEqual(dtype.name, name)
            XCTAssertEqual(dtype.elementSize, Int(size))
            XCTAssertEqual(try dtypeFromName(name: name), dtype)
            XCTAssertEqual(try dtypeFromWireValue(value: wire), dtype)
        }
    }

    func testKinds() {
        let floats = Self.table.map { $0.0 }.filter { $0.info().isFloat }
        XCTAssertEqual(floats, [.float32, .float16, .bfloat16, .float64])
        let ints = Self.table.map { $0.0 }.filter { $0.info().isInteger }
        XCTAssertEqual(ints, [.int8, .int32, .int64, .uint8])
        XCTAssertTrue(DType.int8.info().isSigned)
        XCTAssertFalse(DType.uint8.isSigned)
        XCTAssertFalse(DType.bool.isFloat || DType.bool.isInteger)
        XCTAssertEqual(try dtypeFromName(name: "bool_"), .bool)
    }

    func testUnknownDTypesThrowUnsupportedDType() {
        expectQuillError("UnsupportedDType", contains: "complex64") {
            try dtypeFromName(name: "complex64")
        }
        expectQuillError("UnsupportedDType", contains: "0") { try dtypeFromWireValue(value: 0) }
        expectQuillError("UnsupportedDType", contains: "10") { try dtypeFromWireValue(value: 10) }
        expectQuillError("UnsupportedDType") { try dtypeFromWireValue(value: 255) }
    }
}

final class TensorTests: XCTestCase {
    /// A 9-byte tensor frame header (type, 4 reserved bytes, big-endian length) + payload.
    static func frame(_ type: UInt8, _ payload: Data) -> Data {
        var out = Data([type, 0, 0, 0, 0])
        let n = UInt32(payload.count)
        out.append(contentsOf: [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
        out.append(payload)
        return out
    }

    func testFromDataRoundTripIsByteExact() throws {
        let bytes = Data((0..<24).map { UInt8($0 * 7 % 256) })
        let t = try Tensor.fromBytes(data: bytes, shape: [2, 3], dtype: .float32, name: "x")
        XCTAssertEqual(t.shape(), [2, 3])
        XCTAssertEqual(t.dtype(), .float32)
        XCTAssertEqual(t.name(), "x")
        XCTAssertEqual(t.numElements(), 6)
        XCTAssertEqual(t.sizeBytes(), 24)
        XCTAssertEqual(t.toBytes(), bytes)
        XCTAssertEqual(t.meta(), TensorMeta(shape: [2, 3], dtype: .float32, name: "x", device: .cpu))

        let frames = t.encode()
        let back = try Tensor.decode(frames: frames)
        XCTAssertTrue(back.equals(other: t))
        XCTAssertEqual(back.toBytes(), bytes)
        XCTAssertEqual(back.shape(), [2, 3])
        XCTAssertEqual(back.name(), "x")
        XCTAssertEqual(back.encode(), frames, "re-encoding is byte-exact")
    }

    func testEveryDTypeRoundTrips() throws {
        for (dtype, name, _, size) in DTypeTests.table {
            let shape: [UInt64] = [3, 1, 5]
            let count = 15 * Int(size)
            // Bool elements are 0 or 1; other dtypes take any byte.
            let mask: UInt8 = dtype == .bool ? 1 : 0xff
            let bytes = Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 3) & mask })
            let t = try Tensor.fromBytes(data: bytes, shape: shape, dtype: dtype, name: name)
            let back = try Tensor.decode(frames: t.encode())
            XCTAssertEqual(back.dtype(), dtype, name)
            XCTAssertEqual(back.shape(), shape, name)
            XCTAssertEqual(back.toBytes(), bytes, name)
            XCTAssertEqual(try back.meta().sizeBytes(), UInt64(count))
            XCTAssertEqual(try back.meta().numElements(), 15)
        }
    }

    func testFloatValuesAreLittleEndian() throws {
        var bytes = Data()
        for v: Float in [1.0, -2.5, 0.0, .infinity] {
            withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
        let t = try Tensor.fromBytes(data: bytes, shape: [4], dtype: .float32, name: nil)
        let back = try Tensor.decode(frames: t.encode()).toBytes()
        let values = stride(from: 0, to: back.count, by: 4).map { i -> Float in
            let bits = back[back.startIndex + i..<back.startIndex + i + 4].enumerated()
                .reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            return Float(bitPattern: bits)
        }
        XCTAssertEqual(values, [1.0, -2.5, 0.0, .infinity])
    }

    func testProtocolMetaExampleIsByteExact() throws {
        // Protocol §6: shape [2, 3], float32, 24 bytes, name "x".
        let meta = hex("02 0200000000000000 0300000000000000 01 00 1800000000000000 0100 78")
        let payload = Data(count: 24)
        let frames = Self.frame(0x10, meta) + Self.frame(0x11, payload) + Self.frame(0x02, Data())
        let t = try Tensor.decode(frames: frames)
        XCTAssertEqual(t.shape(), [2, 3])
        XCTAssertEqual(t.dtype(), .float32)
        XCTAssertEqual(t.name(), "x")
        XCTAssertEqual(t.encode(), frames)
        let zeros = try Tensor.zeros(shape: [2, 3], dtype: .float32, name: "x")
        XCTAssertEqual(zeros.encode(), frames)
    }

    func testLargeTensorIsChunked() throws {
        // Over one 64 KiB TENSOR_PAYLOAD frame.
        let count = 200_000
        let bytes = Data((0..<count).map { UInt8($0 % 251) })
        let t = try Tensor.fromBytes(data: bytes, shape: [UInt64(count)], dtype: .uint8, name: nil)
        let frames = t.encode()
        XCTAssertGreaterThan(frames.count, count + 4 * 9)
        XCTAssertEqual(try Tensor.decode(frames: frames).toBytes(), bytes)
    }

    func testBadTensorsThrowTheRightCase() {
        expectQuillError("InvalidArgument", contains: "23 bytes") {
            try Tensor.fromBytes(data: Data(count: 23), shape: [2, 3], dtype: .float32, name: nil)
        }
        expectQuillError("InvalidArgument") {
            try Tensor.fromBytes(data: Data(count: 25), shape: [2, 3], dtype: .float32, name: nil)
        }
        expectQuillError("InvalidArgument", contains: "64 bits") {
            try TensorMeta(shape: [1 << 32, 1 << 32], dtype: .uint8, name: nil, device: .cpu).sizeBytes()
        }
        expectQuillError("InvalidArgument", contains: "256 dimensions") {
            try Tensor.zeros(shape: Array(repeating: 1, count: 256), dtype: .float32, name: nil)
        }
        expectQuillError("Decode") { try Tensor.decode(frames: Data()) }
        expectQuillError("Decode", contains: "before TENSOR_META") {
            try Tensor.decode(frames: Self.frame(0x11, Data(count: 4)) + Self.frame(0x02, Data()))
        }
        let unknownDType = hex("01 0200000000000000 0b 00 0800000000000000 0000")
        expectQuillError("UnsupportedDType", contains: "11") {
            try Tensor.decode(frames: Self.frame(0x10, unknownDType))
        }
        let meta = hex("01 0200000000000000 01 00 0800000000000000 0000")
        expectQuillError("Decode") {
            // Declares 8 bytes, carries 4.
            try Tensor.decode(frames: Self.frame(0x10, meta) + Self.frame(0x11, Data(count: 4)) + Self.frame(0x02, Data()))
        }
        expectQuillError("Decode") {
            // Truncated: no END_STREAM.
            try Tensor.decode(frames: Self.frame(0x10, meta) + Self.frame(0x11, Data(count: 8)))
        }
    }

    func testCoreRulesReachSwift() throws {
        expectQuillError("InvalidArgument", contains: "must be 0 or 1") {
            try Tensor.fromBytes(data: Data([0, 1, 2]), shape: [3], dtype: .bool, name: nil)
        }
        expectQuillError("InvalidArgument", contains: "2^63 - 1 bytes") {
            try Tensor.zeros(shape: [0, 1 << 63], dtype: .uint8, name: nil)
        }
        _ = try Tensor.zeros(shape: [0, (1 << 63) - 1], dtype: .uint8, name: nil)
        expectQuillError("InvalidArgument", contains: "timeout_ms") {
            try QuillClient(baseUrl: "http://127.0.0.1:9", timeoutMs: 2_592_000_001)
        }
    }
}

final class TokenTests: XCTestCase {
    static let helloHex = "00 00 00 2a 00 00 00 00 03 bf 00 00 00 00 05 68 65 6c 6c 6f"
    static let plainHex = "00 00 00 07 00 00 00 01 00"

    func testProtocolExamplesAreByteExact() throws {
        // Protocol §8.
        let hello = Token(id: 42, position: 0, text: "hello", logprob: -0.5)
        XCTAssertEqual(hexString(try hello.encode()), Self.helloHex)
        XCTAssertEqual(try decodeToken(bytes: hex(Self.helloHex)), hello)

        let plain = Token(id: 7, position: 1)
        XCTAssertEqual(hexString(try plain.encode()), Self.plainHex)
        let back = try decodeToken(bytes: hex(Self.plainHex))
        XCTAssertEqual(back, plain)
        XCTAssertNil(back.text)
        XCTAssertNil(back.logprob)
        XCTAssertFalse(back.isSpecial)
    }

    func testTokenFields() throws {
        let special = Token(id: 2, position: 9, text: "</s>", logprob: nil, isSpecial: true)
        XCTAssertEqual(try decodeToken(bytes: try special.encode()), special)
        let hello = Token(id: 42, position: 0, text: "hello", logprob: -0.5)
        XCTAssertEqual(hello.prob()!, exp(-0.5), accuracy: 1e-6)
        XCTAssertNil(Token(id: 1, position: 0).prob())
        let unicode = Token(id: 3, position: 1, text: " Grüße 🦀", logprob: -1.25)
        XCTAssertEqual(try decodeToken(bytes: try unicode.encode()), unicode)
    }

    func testBatchLayoutIsByteExact() throws {
        let batch = TokenBatch(tokens: [Token(id: 7, position: 1)], sequenceId: 1, isFinal: true)
        let expected = "03 00 00 00 01 00 01 " + Self.plainHex
        XCTAssertEqual(hexString(try batch.encode()), expected)
        XCTAssertEqual(try decodeTokenBatch(bytes: hex(expected)), batch)

        let empty = TokenBatch(tokens: [])
        XCTAssertEqual(hexString(try empty.encode()), "00 00 00")
        XCTAssertEqual(try decodeTokenBatch(bytes: hex("00 00 00")), empty)
    }

    func testBatchRoundTripAndHelpers() throws {
        var tokens: [Token] = []
        for i in 0..<50 {
            let text: String? = i % 3 == 0 ? nil : "w\(i)"
            let logprob: Float? = i % 2 == 0 ? -Float(i) / 10 : nil
            tokens.append(
                Token(id: UInt32(i * 11), position: UInt32(i), text: text, logprob: logprob, isSpecial: i == 49))
        }
        let batch = TokenBatch(tokens: tokens, sequenceId: 77, isFinal: false)
        let bytes = try batch.encode()
        let back = try decodeTokenBatch(bytes: bytes)
        XCTAssertEqual(back, batch)
        XCTAssertEqual(try back.encode(), bytes)
        XCTAssertEqual(back.tokenIds(), tokens.map { $0.id })
        XCTAssertEqual(back.text(), tokens.compactMap { $0.text }.joined())
        XCTAssertTrue(back.metadata.isEmpty, "metadata is not on the wire")
    }

    func testBadTokenBytesThrowDecode() throws {
        let good = hex(Self.helloHex)
        for cut in 0..<good.count {
            expectQuillError("Decode") { try decodeToken(bytes: good.prefix(cut)) }
        }
        expectQuillError("Decode") { try decodeToken(bytes: good + Data([0])) }
        // Text that is not UTF-8.
        expectQuillError("Decode", contains: "UTF-8") {
            try decodeToken(bytes: hex("00 00 00 01 00 00 00 00 01 00 02 c3 28"))
        }
        // A batch that declares 5 tokens but carries none.
        expectQuillError("Decode") { try decodeTokenBatch(bytes: hex("00 00 05")) }
        expectQuillError("Decode") { try decodeTokenBatch(bytes: Data()) }
        let batch = try TokenBatch(tokens: [Token(id: 1, position: 0, text: "a")]).encode()
        expectQuillError("Decode") { try decodeTokenBatch(bytes: batch.dropLast()) }
    }

    func testOversizedTextThrowsInvalidArgument() {
        let huge = Token(id: 1, position: 0, text: String(repeating: "a", count: 65_536))
        expectQuillError("InvalidArgument", contains: "65535") { try huge.encode() }
    }
}
