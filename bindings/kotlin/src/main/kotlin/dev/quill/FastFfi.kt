// The JVM fast path: JNI functions of the same native library (src/ffi/jvm.rs) for the
// calls a Kotlin loop makes most. The generated uniffi methods pay for two JNA calls,
// each allocating a JNA Structure for its call status (about 9 µs apiece on JDK 17);
// these take the object's own handle, borrowed, and cost tens of nanoseconds.
//
// Borrowing follows the generated `callWithHandle` exactly, without its handle clone:
// the object's call counter is raised while the handle is in use, so a concurrent
// `close()` frees the Rust object only after the call. The generated fields are read by
// reflection once; `FastFfiTest` fails if a uniffi upgrade renames them.

package dev.quill

import java.lang.reflect.Field
import java.nio.ByteBuffer
import java.util.concurrent.atomic.AtomicLong
import com.sun.jna.NativeLibrary

internal object FastFfi {
    init {
        // The JVM links `external` functions only in libraries it loaded itself; the
        // generated bindings loaded this one through JNA, under the name they resolve.
        val name = System.getProperty("uniffi.component.quill.libraryOverride") ?: "quill"
        System.load(NativeLibrary.getInstance(name).file.absolutePath)
    }

    /** An error of the core in uniffi's serialization, thrown by the native side. */
    class Failure(val encoded: ByteArray) : RuntimeException(null, null, false, false) {
        fun toQuillException(): QuillException = FfiConverterTypeQuillError.read(ByteBuffer.wrap(encoded))
    }

    @JvmStatic external fun tensorNumElements(handle: Long): Long
    @JvmStatic external fun tensorSizeBytes(handle: Long): Long
    @JvmStatic external fun tensorDTypeWire(handle: Long): Int
    @JvmStatic external fun tensorShape(handle: Long): LongArray
    @JvmStatic external fun tensorFromArray(array: Any, elementSize: Int, shape: LongArray, dtype: Int, name: String?): Long
    @JvmStatic external fun tensorFromDirect(
        buffer: ByteBuffer, position: Int, length: Int, shape: LongArray, dtype: Int, name: String?,
    ): Long
    @JvmStatic external fun tensorCopyToArray(handle: Long, array: Any, elementSize: Int, byteOffset: Int)
    @JvmStatic external fun tensorCopyToDirect(handle: Long, buffer: ByteBuffer, position: Int)
    @JvmStatic external fun tensorView(retained: Long): ByteBuffer
    @JvmStatic external fun tensorRetain(handle: Long): Long
    @JvmStatic external fun tensorRelease(retained: Long)
    @JvmStatic external fun setLogger(enabled: Boolean, level: Int)

    /** The logger `installLogger` set; read by [dispatchLog] on whatever thread logs. */
    @Volatile var logger: QuillLogger? = null

    /** Called by the native side for every event at the installed level. */
    @JvmStatic
    fun dispatchLog(level: Int, kind: Int, target: String, status: Int, elapsedUs: Long, message: String) {
        val sink = logger ?: return
        val event = LogEvent(
            Level.entries[level], EventKind.entries[kind], target,
            if (status < 0) null else status.toUShort(), elapsedUs.toULong(), message,
        )
        try {
            sink.log(event)
        } catch (_: Exception) {
            // A failing logger must not fail the call that reported.
        }
    }

    @JvmStatic external fun clientCall(client: Long, service: String, method: String, body: ByteArray, idempotent: Boolean): ByteArray
}

/** Runs [block], turning the native side's error into the generated `QuillException`. */
internal inline fun <R> fast(block: () -> R): R =
    try {
        block()
    } catch (f: FastFfi.Failure) {
        throw f.toQuillException()
    }

/** The generated fields of one object class that borrowing needs. */
internal class Borrowing(cls: Class<*>) {
    val handle: Field = field(cls, "handle")
    val counter: Field = field(cls, "callCounter")
    val cleanable: Field = field(cls, "cleanable")

    private companion object {
        fun field(cls: Class<*>, name: String): Field = cls.getDeclaredField(name).apply { isAccessible = true }
    }

    /** [block] with the object's handle, the object kept alive meanwhile. */
    inline fun <R> with(obj: Any, block: (Long) -> R): R {
        val calls = counter.get(obj) as AtomicLong
        do {
            val c = calls.get()
            check(c != 0L) { "${obj.javaClass.simpleName} object has already been destroyed" }
            check(c != Long.MAX_VALUE) { "${obj.javaClass.simpleName} call counter would overflow" }
        } while (!calls.compareAndSet(c, c + 1L))
        try {
            return block(handle.getLong(obj))
        } finally {
            if (calls.decrementAndGet() == 0L) (cleanable.get(obj) as UniffiCleaner.Cleanable?)?.clean()
        }
    }
}

internal val tensorBorrowing = Borrowing(Tensor::class.java)
internal val clientBorrowing = Borrowing(QuillClient::class.java)

internal inline fun <R> Tensor.borrow(block: (Long) -> R): R = fast { tensorBorrowing.with(this, block) }

/** A generated `Tensor` over a handle the native side made. */
internal fun tensorOf(handle: Long): Tensor = Tensor(UniffiWithHandle, handle)
