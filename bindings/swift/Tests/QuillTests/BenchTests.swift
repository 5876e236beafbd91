// The Swift micro-benchmark (scripts/bench-swift; skipped in the tests): a trivial call
// through the generated bindings, tensor data in and out, and 1 KiB unary Echo through
// QuillClient against URLSession (FoundationNetworking) on the same server, in one run.
// Prints Markdown table rows prefixed with "BENCH ".

import Foundation
import Quill
import XCTest

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

final class BenchTests: XCTestCase {
    private func nsPerOp(iterations: Int, _ body: () throws -> Void) rethrows -> Double {
        for _ in 0..<min(iterations / 10, 10_000) { try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations { try body() }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / Double(iterations)
    }

    /// Sorted per-call latencies in µs over `count` calls.
    private func latencies(count: Int, _ call: () async throws -> Void) async rethrows -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let start = DispatchTime.now().uptimeNanoseconds
            try await call()
            out.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
        }
        return out.sorted()
    }

    private func row(_ name: String, _ result: String, _ notes: String) {
        print("BENCH | \(name) | \(result) | \(notes) |")
    }

    func testBenchmark() async throws {
        guard ProcessInfo.processInfo.environment["QUILL_BENCH"] == "1" else {
            throw XCTSkip("the benchmark runs only under scripts/bench-swift (QUILL_BENCH=1)")
        }
        // 1. Trivial calls.
        let small = try Tensor.fromBytes(data: Data(count: 4), shape: [4], dtype: .uint8, name: nil)
        var sink: UInt64 = 0
        let trivial = nsPerOp(iterations: 2_000_000) { sink &+= small.numElements() }
        row("`Tensor.numElements()` (handle in, u64 out)", String(format: "%.3f µs/call", trivial / 1000),
            "a C call with the call status on the stack")
        let meta = nsPerOp(iterations: 200_000) { sink &+= UInt64(small.meta().shape.count) }
        row("`Tensor.meta()` (record out)", String(format: "%.3f µs/call", meta / 1000), "a record through a RustBuffer")
        let info = nsPerOp(iterations: 200_000) { sink &+= UInt64(DType.float32.elementSize) }
        row("`DType.float32.elementSize` (extras)", String(format: "%.3f µs/call", info / 1000), "the core's dtype table")

        // 2. Tensor data, 16 MiB.
        let size = 16 << 20
        let bytes = Data(repeating: 7, count: size)
        func gibs(_ ns: Double) -> Double { Double(size) / (ns / 1e9) / Double(1 << 30) }
        let inNs = try nsPerOp(iterations: 40) {
            _ = try Tensor.fromBytes(data: bytes, shape: [UInt64(size)], dtype: .uint8, name: nil)
        }
        row("16 MiB in: `Tensor.fromBytes(Data)`", String(format: "%.2f ms (%.1f GiB/s)", inNs / 1e6, gibs(inNs)),
            "the generated path (`Data` lowered through a RustBuffer)")
        let big = try Tensor.fromBytes(data: bytes, shape: [UInt64(size)], dtype: .uint8, name: nil)
        let outNs = nsPerOp(iterations: 40) { sink &+= UInt64(big.toBytes().count) }
        row("16 MiB out: `Tensor.toBytes()`", String(format: "%.2f ms (%.1f GiB/s)", outNs / 1e6, gibs(outNs)),
            "the generated path: a RustBuffer, then `Data`")
        let dataNs = nsPerOp(iterations: 40) { sink &+= UInt64(big.toData().count) }
        row("16 MiB out: `Tensor.toData()` (extras)", String(format: "%.2f ms (%.1f GiB/s)", dataNs / 1e6, gibs(dataNs)),
            "one copy from the tensor's memory")
        let viewNs = nsPerOp(iterations: 200_000) { sink &+= UInt64(big.withUnsafeBytes { $0.count }) }
        row("16 MiB out: `Tensor.withUnsafeBytes` (extras)", String(format: "%.3f µs", viewNs / 1000),
            "no copy: the bytes where they are")

        // 3. Echo 1 KiB, interleaved rounds.
        let url = try TestServer.url
        let client = try TestServer.client()
        let body = Data((0..<1024).map { UInt8($0 % 251) })
        let session = URLSession(configuration: .ephemeral)
        var request = URLRequest(url: URL(string: url + "/echo.v1.EchoService/Echo")!)
        request.httpMethod = "POST"
        request.setValue("application/proto", forHTTPHeaderField: "Content-Type")
        request.httpBody = body
        let calls: [(String, () async throws -> Void)] = [
            ("`QuillClient.call` (async)", {
                let reply = try await client.call(service: "echo.v1.EchoService", method: "Echo", body: body)
                precondition(reply.count == 1024)
            }),
            ("`QuillClient.callSync` (blocking, calling thread)", {
                let reply = try client.callSync(service: "echo.v1.EchoService", method: "Echo", body: body)
                precondition(reply.count == 1024)
            }),
            ("URLSession `data(for:)` (FoundationNetworking)", {
                let (reply, _) = try await session.data(for: request)
                precondition(reply.count == 1024)
            }),
        ]
        for (_, call) in calls { for _ in 0..<200 { try await call() } }
        var samples = Array(repeating: [Double](), count: calls.count)
        for _ in 0..<5 {
            for (i, (_, call)) in calls.enumerated() {
                samples[i] += try await latencies(count: 1000, call)
            }
        }
        for (i, (name, _)) in calls.enumerated() {
            let lat = samples[i].sorted()
            let mean = lat.reduce(0, +) / Double(lat.count)
            row("Echo 1 KiB, \(name)",
                String(format: "%.1f µs mean, %.1f p50, %.1f p99", mean, lat[lat.count / 2], lat[lat.count * 99 / 100]),
                "\(lat.count) sequential calls, five interleaved rounds; HTTP/1.1 keep-alive")
        }
        print("BENCH-SINK \(sink)")
    }
}
