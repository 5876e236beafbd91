// Hand-written additions to the generated bindings (Quill.swift): `AsyncSequence`
// views of the response streams, so that
//
//     let stream = try await client.tokenStream(service: "inference.v1.LLMService",
//                                               method: "GenerateStream",
//                                               body: Data(#"{"prompt":"Alice"}"#.utf8),
//                                               contentTypeJson: true)
//     for try await batch in stream.batches {
//         print(batch.text(), terminator: "")
//     }
//
// works with `break`, `throw` and task cancellation: leaving the loop early cancels the
// stream (the connection is closed, so the server sees the client go).

import Foundation

/// A response stream of the generated bindings: `next()` until `nil`, `cancel()` to stop
/// early. `MessageStream` (raw messages), `TokenStream` (decoded token batches) and
/// `GenerateStream` (typed `GenerateResponse`s) conform.
public protocol QuillStreamSource: AnyObject, Sendable {
    associatedtype Item: Sendable
    /// The next item, `nil` after the end of the stream.
    func next() async throws -> Item?
    /// Stops the stream; idempotent. A pending or later `next()` throws
    /// `QuillError.Cancelled` (unless the stream had already ended or failed).
    func cancel()
}

extension MessageStream: QuillStreamSource {
    public typealias Item = Data
}

extension TokenStream: QuillStreamSource {
    public typealias Item = TokenBatch
}

extension GenerateStream: QuillStreamSource {
    public typealias Item = GenerateResponse
}

/// An `AsyncSequence` over a `MessageStream`, `TokenStream` or `GenerateStream`.
///
/// - The items come from `next()` until it returns `nil`; errors are the stream's
///   `QuillError`s (`.Stream`, `.Protocol`, `.Timeout`, `.Cancelled`, …).
/// - Leaving a `for try await` loop early (`break`, `return`, an error thrown by the
///   loop body), or dropping the iterator before the end, calls `cancel()` on the stream.
/// - Cancelling the surrounding `Task` calls `cancel()` too: the pending `next()` then
///   throws `QuillError.Cancelled`.
/// - A stream is consumed once: iterators made from the same stream share its items.
public struct QuillAsyncStream<Source: QuillStreamSource>: AsyncSequence, Sendable {
    public typealias Element = Source.Item

    /// The wrapped stream object (for `cancel()` from elsewhere).
    public let source: Source

    public init(_ source: Source) {
        self.source = source
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(StreamGuard(source))
    }

    public struct Iterator: AsyncIteratorProtocol, Sendable {
        fileprivate let state: StreamGuard<Source>

        fileprivate init(_ state: StreamGuard<Source>) {
            self.state = state
        }

        public mutating func next() async throws -> Source.Item? {
            try await state.next()
        }
    }
}

/// Owns one iteration: remembers whether the stream finished (end or error) and cancels
/// it when the last copy of the iterator goes away before that.
private final class StreamGuard<Source: QuillStreamSource>: @unchecked Sendable {
    private let source: Source
    private let lock = NSLock()
    private var finished = false  // guarded by `lock`

    init(_ source: Source) {
        self.source = source
    }

    private var isFinished: Bool {
        lock.lock()
        defer { lock.unlock() }
        return finished
    }

    private func finish() {
        lock.lock()
        finished = true
        lock.unlock()
    }

    func next() async throws -> Source.Item? {
        if isFinished { return nil }
        let source = self.source
        do {
            let item = try await withTaskCancellationHandler {
                try await source.next()
            } onCancel: {
                source.cancel()
            }
            if item == nil { finish() }
            return item
        } catch {
            // Errors are sticky in the core; after one the sequence is over.
            finish()
            throw error
        }
    }

    deinit {
        if !isFinished { source.cancel() }
    }
}

extension MessageStream {
    /// The messages as an `AsyncSequence` of `Data`; see `QuillAsyncStream`.
    public var messages: QuillAsyncStream<MessageStream> { QuillAsyncStream(self) }
}

extension TokenStream {
    /// The token batches as an `AsyncSequence`; see `QuillAsyncStream`.
    public var batches: QuillAsyncStream<TokenStream> { QuillAsyncStream(self) }
}

extension GenerateStream {
    /// The responses as an `AsyncSequence`; see `QuillAsyncStream`. `timing()` stays
    /// available on the stream (or on the sequence) while and after iterating.
    public var responses: QuillAsyncStream<GenerateStream> { QuillAsyncStream(self) }
}

extension QuillAsyncStream where Source == GenerateStream {
    /// The timing of the underlying `GenerateStream` so far; final once it ended.
    public func timing() -> StreamTiming { source.timing() }
}

// MARK: - Cancellation

/// Runs `body` with a `CancelToken` that cancelling the current `Task` fires, so a call
/// given the token ends at once (its connection closed or HTTP/2 stream reset, so the
/// server sees the client go) and throws `QuillError.Cancelled`. uniffi's Swift futures
/// do not forward `Task` cancellation to Rust themselves.
///
///     let reply = try await withCancellation { token in
///         try await client.call(service: "echo.v1.EchoService", method: "Echo",
///                               body: payload, cancel: token)
///     }
public func withCancellation<T: Sendable>(
    _ body: (CancelToken) async throws -> T
) async throws -> T {
    let token = CancelToken()
    return try await withTaskCancellationHandler {
        try await body(token)
    } onCancel: {
        token.cancel()
    }
}

// MARK: - Bidirectional and client streaming

/// The request side of `BidiCall` and `ClientStreamCall`, for the one pump below.
public protocol QuillRequestSink: AnyObject, Sendable {
    func send(message: Data) async throws
    func finish() async throws
    func abort(reason: String)
}

extension BidiCall: QuillRequestSink {}
extension ClientStreamCall: QuillRequestSink {}

/// What the request pump ended with: nothing, or the request sequence's own error.
private final class PumpOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?  // guarded by `lock`

    func fail(_ e: Error) {
        lock.lock()
        error = e
        lock.unlock()
    }

    var failure: Error? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }
}

/// Sends every element of `requests`, then END_STREAM. A failing or cancelled request
/// sequence breaks the request stream off (the server sees a truncated stream) and is
/// recorded in `outcome`; once the call is over (`Cancelled` from `send`), the pump stops
/// quietly, since the answer side reports how the call ended.
private func pump<S: AsyncSequence & Sendable>(
    _ requests: S, into call: QuillRequestSink, outcome: PumpOutcome
) async where S.Element == Data {
    await pump(
        requests, outcome: outcome, send: { try await call.send(message: $0) },
        finish: { try await call.finish() }, abort: { call.abort(reason: $0) })
}

/// The pump for any request type: the generated call objects each have their own `send`
/// (`Data` for raw calls, `GenerateRequest` for chat), the rest is the same.
private func pump<S: AsyncSequence & Sendable>(
    _ requests: S, outcome: PumpOutcome,
    send: (S.Element) async throws -> Void,
    finish: () async throws -> Void,
    abort: (String) -> Void
) async {
    do {
        for try await request in requests {
            try Task.checkCancellation()
            try await send(request)
        }
        try Task.checkCancellation()
        try await finish()
    } catch QuillError.Cancelled {
        return
    } catch is CancellationError {
        abort("the request sequence was cancelled")
    } catch {
        // Recorded first: the answer side, failing on the abort, reports this error.
        outcome.fail(error)
        abort("the request sequence failed: \(error)")
    }
}

extension QuillClient {
    /// A bidirectional streaming call: every element of `requests` goes out as it is
    /// produced, and the replies arrive while the requests are still going out (full
    /// duplex).
    ///
    ///     for try await reply in client.bidiStream(
    ///         service: "echo.v1.EchoService", method: "BidiEcho", requests: requests) { … }
    ///
    /// Leaving the loop early or cancelling the consuming task cancels both directions,
    /// so the server sees the client go. A server error ends the sequence with its
    /// `QuillError` after every reply that came before it; a failing request sequence
    /// breaks the request off and its own error ends the sequence.
    public func bidiStream<S: AsyncSequence & Sendable>(
        service: String, method: String, requests: S
    ) -> AsyncThrowingStream<Data, Error> where S.Element == Data {
        let call = openBidi(service: service, method: method)
        return AsyncThrowingStream { continuation in
            let task = Task {
                let outcome = PumpOutcome()
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await pump(requests, into: call, outcome: outcome) }
                    do {
                        let replies = try await withCancellation { try await call.responses(cancel: $0) }
                        for try await reply in replies.messages {
                            continuation.yield(reply)
                        }
                        continuation.finish(throwing: outcome.failure)
                    } catch {
                        continuation.finish(throwing: outcome.failure ?? error)
                    }
                    // The call is over: requests not yet sent have nowhere to go.
                    group.cancelAll()
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// A client-streaming call: sends every element of `requests`, then returns the one
    /// reply. Cancelling the task cancels the call (`QuillError.Cancelled`); a failing
    /// request sequence breaks the request off and its error is thrown.
    ///
    ///     let reply = try await client.clientStream(
    ///         service: "echo.v1.EchoService", method: "ClientStream", requests: requests)
    public func clientStream<S: AsyncSequence & Sendable>(
        service: String, method: String, requests: S
    ) async throws -> Data where S.Element == Data {
        let call = openClientStream(service: service, method: method)
        let outcome = PumpOutcome()
        return try await withThrowingTaskGroup(of: Data?.self) { group in
            group.addTask {
                await pump(requests, into: call, outcome: outcome)
                return nil
            }
            group.addTask {
                try await withCancellation { try await call.response(cancel: $0) }
            }
            do {
                while let result = try await group.next() {
                    if let reply = result {
                        group.cancelAll()
                        return reply
                    }
                }
            } catch {
                group.cancelAll()
                throw outcome.failure ?? error
            }
            throw outcome.failure ?? QuillError.Cancelled(reason: "the call ended without a reply")
        }
    }
}

// MARK: - Typed inference API (quill.inference.v1.InferenceService)

extension QuillClient {
    /// `Generate` as an `AsyncSequence` of `GenerateResponse`s, timed from the call.
    ///
    ///     let request = GenerateRequest(inputIds: [101, 2023], maxNewTokens: 64, temperature: 0.7)
    ///     let stream = try await client.generateStream(request)
    ///     for try await response in stream {
    ///         print(response.tokens.text(), terminator: "")
    ///     }
    ///     print(stream.timing().tokensPerSecond ?? 0)
    ///
    /// Cancelling the task while the call opens or while iterating, or leaving the loop
    /// early, ends the call (the server sees the client go; the generated `generate` alone
    /// would keep waiting, as uniffi's futures ignore `Task` cancellation). A stream that
    /// ends before a response marked `isComplete` throws `QuillError.Stream`.
    public func generateStream(
        _ request: GenerateRequest, headers: [HeaderEntry] = []
    ) async throws -> QuillAsyncStream<GenerateStream> {
        let stream = try await withCancellation { token in
            try await generate(request: request, headers: headers, cancel: token)
        }
        return stream.responses
    }

    /// The whole text of a `Generate` call (the tokens' texts joined, as
    /// `GenerateStream.text()`), once its last response arrived.
    ///
    ///     let text = try await client.generateText(GenerateRequest(inputIds: ids, maxNewTokens: 32))
    ///
    /// Cancelling the task ends the call at any point with `QuillError.Cancelled`.
    public func generateText(
        _ request: GenerateRequest, headers: [HeaderEntry] = []
    ) async throws -> String {
        let stream = try await withCancellation { token in
            try await generate(request: request, headers: headers, cancel: token)
        }
        // `text()` is one Rust future over the whole stream: only `cancel()` can stop it.
        return try await withTaskCancellationHandler {
            try await stream.text()
        } onCancel: {
            stream.cancel()
        }
    }

    /// `Chat`: every element of `requests` starts a generation as it is produced, and
    /// the responses of the generations come back in order (`tokens.sequenceId` tells
    /// them apart), while later requests are still being produced.
    ///
    ///     let (turns, next) = AsyncStream<GenerateRequest>.makeStream()
    ///     next.yield(GenerateRequest(inputIds: prompt, maxNewTokens: 64))
    ///     for try await response in client.chat(turns) {
    ///         print(response.tokens.text(), terminator: "")
    ///         if response.isComplete { next.finish() }   // or yield the next turn
    ///     }
    ///
    /// As `bidiStream`: leaving the loop early or cancelling the consuming task cancels
    /// both directions; a server error ends the sequence with its `QuillError` after the
    /// responses before it; a failing request sequence breaks the request off and its
    /// own error ends the sequence. A generation cut off before its complete response is
    /// `QuillError.Stream`.
    public func chat<S: AsyncSequence & Sendable>(
        _ requests: S
    ) -> AsyncThrowingStream<GenerateResponse, Error> where S.Element == GenerateRequest {
        let call = openChat()
        return AsyncThrowingStream { continuation in
            let task = Task {
                let outcome = PumpOutcome()
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        await pump(
                            requests, outcome: outcome,
                            send: { try await call.send(request: $0) },
                            finish: { try await call.finish() },
                            abort: { call.abort(reason: $0) })
                    }
                    do {
                        let responses = try await withCancellation { try await call.responses(cancel: $0) }
                        for try await response in responses.responses {
                            continuation.yield(response)
                        }
                        continuation.finish(throwing: outcome.failure)
                    } catch {
                        continuation.finish(throwing: outcome.failure ?? error)
                    }
                    // The call is over: requests not yet sent have nowhere to go.
                    group.cancelAll()
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

// MARK: - DType

extension DType: CaseIterable {
    /// Every dtype, in wire-number order (protocol §7).
    public static var allCases: [DType] {
        [.float32, .float16, .bfloat16, .float64, .int8, .int32, .int64, .uint8, .bool]
    }
}

extension DType {
    /// The dtype of a canonical name such as `"float32"` (or `"bool_"`); unknown names
    /// throw `QuillError.UnsupportedDType`.
    public init(name: String) throws {
        self = try dtypeFromName(name: name)
    }

    /// The dtype of a wire number (1...9); others throw `QuillError.UnsupportedDType`.
    public init(wireValue: UInt8) throws {
        self = try dtypeFromWireValue(value: wireValue)
    }

    /// Canonical lower-case name (`"float32"`, `"bool"`, …).
    public var name: String { row.name }
    /// Number used on the wire (protocol §7).
    public var wireValue: UInt8 { row.wireValue }
    /// Size of one element in bytes.
    public var elementSize: Int { Int(row.elementSize) }
    public var isFloat: Bool { row.isFloat }
    public var isInteger: Bool { row.isInteger }
    public var isSigned: Bool { row.isSigned }

    /// This dtype's row of the core's table (`info()`), read once per dtype.
    private var row: DTypeInfo { dtypeRows[self]! }
}

/// The dtype table lives in the core; a global `let` is initialised once, thread-safely.
private let dtypeRows: [DType: DTypeInfo] = Dictionary(
    uniqueKeysWithValues: DType.allCases.map { ($0, $0.info()) })

// MARK: - Tensor elements

/// A Swift type that is the element of one tensor dtype. Tensor data is little-endian,
/// row-major; these conversions are explicit about it, so they hold on any host.
public protocol TensorElement: Sendable {
    static var dtype: DType { get }
    /// Appends the little-endian bytes of `self`.
    func appendLittleEndian(to data: inout Data)
    /// The value of `MemoryLayout<Self>.size` little-endian bytes.
    static func fromLittleEndian(_ bytes: UnsafeRawBufferPointer) -> Self
}

extension TensorElement where Self: FixedWidthInteger {
    public func appendLittleEndian(to data: inout Data) {
        withUnsafeBytes(of: littleEndian) { data.append(contentsOf: $0) }
    }
    public static func fromLittleEndian(_ bytes: UnsafeRawBufferPointer) -> Self {
        Self(littleEndian: bytes.loadUnaligned(as: Self.self))
    }
}

extension Int8: TensorElement { public static var dtype: DType { .int8 } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }

extension Float: TensorElement {
    public static var dtype: DType { .float32 }
    public func appendLittleEndian(to data: inout Data) {
        withUnsafeBytes(of: bitPattern.littleEndian) { data.append(contentsOf: $0) }
    }
    public static func fromLittleEndian(_ bytes: UnsafeRawBufferPointer) -> Float {
        Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
    }
}

extension Double: TensorElement {
    public static var dtype: DType { .float64 }
    public func appendLittleEndian(to data: inout Data) {
        withUnsafeBytes(of: bitPattern.littleEndian) { data.append(contentsOf: $0) }
    }
    public static func fromLittleEndian(_ bytes: UnsafeRawBufferPointer) -> Double {
        Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)))
    }
}

extension Bool: TensorElement {
    public static var dtype: DType { .bool }
    public func appendLittleEndian(to data: inout Data) { data.append(self ? 1 : 0) }
    public static func fromLittleEndian(_ bytes: UnsafeRawBufferPointer) -> Bool { bytes[0] != 0 }
}

extension Tensor {
    /// A tensor of `values` with the dtype of `T` (`[Float]` → float32, `[Int64]` →
    /// int64, …); `shape` defaults to one dimension. Throws `QuillError.InvalidArgument`
    /// when the shape does not hold `values.count` elements.
    public static func from<T: TensorElement>(
        _ values: [T], shape: [UInt64]? = nil, name: String? = nil
    ) throws -> Tensor {
        var data = Data(capacity: values.count * MemoryLayout<T>.size)
        for v in values { v.appendLittleEndian(to: &data) }
        return try Tensor.fromBytes(
            data: data, shape: shape ?? [UInt64(values.count)], dtype: T.dtype, name: name)
    }

    /// A copy of the elements as `T`; throws `QuillError.InvalidArgument` unless the
    /// tensor's dtype is `T.dtype`.
    public func values<T: TensorElement>(as type: T.Type = T.self) throws -> [T] {
        guard dtype() == T.dtype, MemoryLayout<T>.size == dtype().elementSize else {
            throw QuillError.InvalidArgument(
                reason: "tensor has dtype \(dtype().name), not \(T.dtype.name) (\(T.self))")
        }
        let size = MemoryLayout<T>.size
        return withUnsafeBytes { raw in
            stride(from: 0, to: raw.count, by: size).map {
                T.fromLittleEndian(UnsafeRawBufferPointer(rebasing: raw[$0..<$0 + size]))
            }
        }
    }

    /// Calls `body` with the element bytes where they are, without copying them (the
    /// generated `toBytes()` copies twice: into a RustBuffer, then into `Data`). The
    /// bytes are immutable and stay valid while `body` runs; do not keep the pointer.
    ///
    ///     let sum = tensor.withUnsafeBytes { raw in raw.reduce(0) { $0 + Int($1) } }
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        // The tensor owns the memory: keep it alive until `body` returns.
        try withExtendedLifetime(self) {
            let count = Int(sizeBytes())
            let start = UnsafeRawPointer(bitPattern: UInt(dataAddress()))
            return try body(UnsafeRawBufferPointer(start: count == 0 ? nil : start, count: count))
        }
    }

    /// The element bytes as `Data`, copied once (`toBytes()` copies twice).
    public func toData() -> Data {
        withUnsafeBytes { Data($0) }
    }
}

// MARK: - Tokens

extension Token {
    /// Decodes exactly one token (protocol §8); leftover or missing bytes throw
    /// `QuillError.Decode`.
    public static func decode(_ bytes: Data) throws -> Token {
        try decodeToken(bytes: bytes)
    }
}

extension TokenBatch {
    /// Decodes exactly one token batch (protocol §8); leftover or missing bytes throw
    /// `QuillError.Decode`.
    public static func decode(_ bytes: Data) throws -> TokenBatch {
        try decodeTokenBatch(bytes: bytes)
    }
}

// MARK: - Logging

/// A `QuillLogger` that hands every event to a closure (point it at `os.Logger`,
/// `print`, or a test's collector).
public final class ClosureLogger: QuillLogger {
    private let body: @Sendable (LogEvent) -> Void

    public init(_ body: @escaping @Sendable (LogEvent) -> Void) {
        self.body = body
    }

    public func log(event: LogEvent) throws {
        body(event)
    }
}

/// Routes the client events of this process (connections, finished and failed calls,
/// retries, timeouts, cancelled streams, size limits) from `level` up to `body`, on the
/// thread where each happened; keep it quick. Events never carry header values or
/// bodies. `setLogger(logger: nil, level: .warning)` removes it.
///
///     setLogger(level: .info) { event in
///         os.Logger(subsystem: "dev.quill", category: "client").info("\(event.message)")
///     }
public func setLogger(level: Level = .info, _ body: @escaping @Sendable (LogEvent) -> Void) {
    setLogger(logger: ClosureLogger(body), level: level)
}
