package dev.quill

import java.util.concurrent.ConcurrentLinkedQueue
import java.util.logging.Handler
import java.util.logging.LogRecord
import java.util.logging.Logger
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.extension.ExtendWith

/** The core's client events through a Kotlin logger and the java.util.logging adapter. */
@ExtendWith(QuillServerExtension::class)
class LoggingTest {
    private val echo = "echo.v1.EchoService"
    private val fault = "test.v1.FaultService"

    private class Recorder : QuillLogger {
        val events = ConcurrentLinkedQueue<LogEvent>()
        override fun log(event: LogEvent) {
            events += event
        }
    }

    @AfterEach
    fun removeLogger() = installLogger(null)

    @Test
    fun `events reach the logger and secrets never do`(server: QuillServer): Unit = runBlocking {
        val recorder = Recorder()
        setLogger(recorder, Level.DEBUG)
        QuillClient(server.baseUrl, 300u, false).use { c ->
            c.setBearerToken("sekrit-bearer-123")
            c.setSecretHeader("X-Secret", "sekrit-header-456")
            c.call(echo, "Echo", "hi".toByteArray())
            assertThrows<QuillException.Status> {
                runBlocking { c.callJson(fault, "Error", """{"status": 503, "detail": "down"}""") }
            }
            assertThrows<QuillException.Timeout> { runBlocking { c.callJson(fault, "Slow", """{"ms": 5000}""") } }
        }
        val events = recorder.events.toList()
        val kinds = events.map { it.kind }.toSet()
        for (kind in listOf(EventKind.CONNECTION_OPENED, EventKind.CALL_FINISHED, EventKind.CALL_FAILED, EventKind.TIMEOUT)) {
            assertTrue(kind in kinds, "no $kind among $kinds")
        }
        val failed = events.first { it.kind == EventKind.CALL_FAILED && it.status != null }
        assertEquals(503.toUShort(), failed.status)
        assertEquals("$fault/Error", failed.target)
        for (e in events) {
            assertFalse("sekrit" in e.message || "sekrit" in e.target, "a secret reached the logger: $e")
        }
        // Removed: later calls report nothing.
        setLogger(null, Level.WARNING)
        val seen = recorder.events.size
        QuillClient(server.baseUrl, 10_000u, false).use { it.call(echo, "Echo", ByteArray(1)) }
        assertEquals(seen, recorder.events.size)
    }

    @Test
    fun `installLogger delivers the same events through the JNI bridge`(server: QuillServer): Unit = runBlocking {
        val recorder = Recorder()
        installLogger(recorder, Level.DEBUG)
        QuillClient(server.baseUrl, 10_000u, false).use { c ->
            c.setBearerToken("sekrit-bearer-123")
            c.call(echo, "Echo", "hi".toByteArray())
            assertThrows<QuillException.Status> { runBlocking { c.callJson(fault, "Error", """{"status": 418}""") } }
        }
        QuillClient(server.baseUrl, 200u, false).use { c ->
            assertThrows<QuillException.Timeout> { runBlocking { c.callJson(fault, "Slow", """{"ms": 2000}""") } }
        }
        val events = recorder.events.toList()
        val finished = events.first { it.kind == EventKind.CALL_FINISHED }
        assertEquals("$echo/Echo", finished.target)
        assertEquals(Level.DEBUG, finished.level)
        assertTrue(finished.elapsedUs > 0u)
        val failed = events.first { it.kind == EventKind.CALL_FAILED && it.status != null }
        assertEquals(418.toUShort(), failed.status)
        // Each kind arrives at its level: the bridge passes both as Kotlin ordinals.
        assertEquals(Level.DEBUG, events.first { it.kind == EventKind.CONNECTION_OPENED }.level)
        assertEquals(Level.INFO, failed.level)
        assertEquals(Level.WARNING, events.first { it.kind == EventKind.TIMEOUT }.level)
        for (e in events) assertFalse("sekrit" in e.message || "sekrit" in e.target, "$e")
        installLogger(null)
        val seen = recorder.events.size
        QuillClient(server.baseUrl, 10_000u, false).use { it.call(echo, "Echo", ByteArray(1)) }
        assertEquals(seen, recorder.events.size)
        // A throwing logger on this path is dropped too.
        installLogger(object : QuillLogger { override fun log(event: LogEvent) = throw IllegalStateException("broke") }, Level.DEBUG)
        QuillClient(server.baseUrl, 10_000u, false).use { c ->
            assertEquals("ok", String(c.callBlocking(echo, "Echo", "ok".toByteArray())))
        }
    }

    @Test
    fun `the java util logging adapter writes records at the matching level`(server: QuillServer): Unit =
        runBlocking {
            val jul = Logger.getLogger("dev.quill.test")
            jul.useParentHandlers = false
            jul.level = java.util.logging.Level.FINE
            val records = ConcurrentLinkedQueue<LogRecord>()
            val handler = object : Handler() {
                override fun publish(record: LogRecord) { records += record }
                override fun flush() {}
                override fun close() {}
            }
            jul.addHandler(handler)
            try {
                installJavaUtilLogging(jul)
                QuillClient(server.baseUrl, 10_000u, false).use { it.call(echo, "Echo", ByteArray(1)) }
                val finished = records.firstOrNull { it.message.startsWith("CALL_FINISHED $echo/Echo") }
                    ?: error("no CALL_FINISHED record among ${records.map { it.message }}")
                assertEquals(java.util.logging.Level.FINE, finished.level)
            } finally {
                jul.removeHandler(handler)
            }
        }

    @Test
    fun `a throwing logger never fails a call`(server: QuillServer): Unit = runBlocking {
        setLogger(
            object : QuillLogger {
                override fun log(event: LogEvent) = throw IllegalStateException("the logger broke")
            },
            Level.DEBUG,
        )
        QuillClient(server.baseUrl, 10_000u, false).use { c ->
            assertEquals("ok", String(c.call(echo, "Echo", "ok".toByteArray())))
        }
    }
}
