// The hand-written conveniences of Extras.swift that need no server (the AsyncSequence
// wrapper is tested against the server in ClientTests).

import Foundation
import Quill
import XCTest

final class ExtrasTests: XCTestCase {
    func testDTypeProperties() throws {
        XCTAssertEqual(DType.allCases.map { $0.wireValue }, Array(1...9))
        for (dtype, name, wire, size) in DTypeTests.table {
            XCTAssertEqual(dtype.name, name)
            XCTAssertEqual(dtype.wireValue, wire)
            XCTAssertEqual(dtype.elementSize, Int(size))
            XCTAssertEqual(try DType(name: name), dtype)
            XCTAssertEqual(try DType(wireValue: wire), dtype)
        }
        XCTAssertTrue(DType.bfloat16.isFloat && DType.int64.isSigned && DType.uint8.isInteger)
        expectQuillError("UnsupportedDType") { try DType(wireValue: 0) }
        expectQuillError("UnsupportedDType") { try DType(name: "complex64") }
    }

    func testTypedTensorsRoundTrip() throws {
        let floats: [Float] = [1.5, -2, 0, .greatestFiniteMagnitude, -.infinity, 3.25]
        let t = try Tensor.from(floats, shape: [2, 3], name: "f")
        XCTAssertEqual(t.dtype(), .float32)
        XCTAssertEqual(t.shape(), [2, 3])
        XCTAssertEqual(t.toBytes().prefix(4), Data([0x00, 0x00, 0xc0, 0x3f]), "little-endian 1.5")
        let back = try Tensor.decode(frames: t.encode())
        XCTAssertEqual(try back.values(as: Float.self), floats)

        let doubles: [Double] = [.pi, -1e300, 0.5]
        XCTAssertEqual(try Tensor.decode(frames: Tensor.from(doubles).encode()).values(), doubles)
        let ints: [Int32] = [.min, -1, 0, 1, .max]
        XCTAssertEqual(try Tensor.from(ints).values(as: Int32.self), ints)
        let longs: [Int64] = [.min, 42, .max]
        XCTAssertEqual(try Tensor.from(longs).values(as: Int64.self), longs)
        let bytes: [UInt8] = [0, 127, 255]
        XCTAssertEqual(try Tensor.from(bytes).values(as: UInt8.self), bytes)
        let signed: [Int8] = [-128, 0, 127]
        XCTAssertEqual(try Tensor.from(signed).values(as: Int8.self), signed)
        let flags = [true, false, true]
        let b = try Tensor.from(flags)
        XCTAssertEqual(b.dtype(), .bool)
        XCTAssertEqual(b.toBytes(), Data([1, 0, 1]))
        XCTAssertEqual(try b.values(as: Bool.self), flags)
    }

    func testZeroCopyViewAndOneCopyData() throws {
        let values: [Float] = (0..<100_000).map { Float($0) * 0.5 }
        let t = try Tensor.from(values, shape: [100, 1000])
        let generated = t.toBytes()
        // The view is the tensor's own memory: the same bytes, the same address each time.
        let (bytes, first) = t.withUnsafeBytes { (Data($0), $0.baseAddress) }
        XCTAssertEqual(bytes, generated)
        XCTAssertEqual(t.withUnsafeBytes { $0.baseAddress }, first)
        XCTAssertEqual(t.withUnsafeBytes { $0.count }, 400_000)
        XCTAssertEqual(t.toData(), generated)
        XCTAssertEqual(try t.values(as: Float.self), values)
        let empty = try Tensor.zeros(shape: [0, 3], dtype: .float32, name: nil)
        XCTAssertEqual(empty.withUnsafeBytes { $0.count }, 0)
        XCTAssertEqual(empty.toData(), Data())
        // A tensor that arrived over the wire is viewed in place too.
        let decoded = try Tensor.decode(frames: t.encode())
        XCTAssertEqual(decoded.withUnsafeBytes { Data($0) }, generated)
    }

    func testTypedTensorErrors() throws {
        expectQuillError("InvalidArgument") { try Tensor.from([Float](repeating: 0, count: 5), shape: [2, 3]) }
        let t = try Tensor.from([Float](repeating: 1, count: 4))
        expectQuillError("InvalidArgument", contains: "float32") { try t.values(as: Double.self) }
        expectQuillError("InvalidArgument") { try t.values(as: Int32.self) }
    }

    func testTokenDecodeStatics() throws {
        let hello = Token(id: 42, position: 0, text: "hello", logprob: -0.5)
        XCTAssertEqual(try Token.decode(hex(TokenTests.helloHex)), hello)
        let batch = TokenBatch(tokens: [hello], sequenceId: 3)
        XCTAssertEqual(try TokenBatch.decode(batch.encode()), batch)
        expectQuillError("Decode") { try Token.decode(Data([0, 0])) }
        expectQuillError("Decode") { try TokenBatch.decode(Data([1])) }
    }

    func testEndOfSequence() {
        XCTAssertEqual(Token(id: 2, position: 9, text: "</s>", logprob: 0).prob(), 1.0)
        XCTAssertFalse(Token(id: 2, position: 9, text: "</s>").isEos())
        XCTAssertTrue(Token(id: 2, position: 9, text: "</s>", isSpecial: true).isEos())
        XCTAssertTrue(Token(id: 2, position: 9, text: "<|eot_id|>", isSpecial: true).isEos())
    }
}
