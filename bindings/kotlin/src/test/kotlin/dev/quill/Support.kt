package dev.quill

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.extension.AfterAllCallback
import org.junit.jupiter.api.extension.BeforeAllCallback
import org.junit.jupiter.api.extension.ExtensionContext
import org.junit.jupiter.api.extension.ParameterContext
import org.junit.jupiter.api.extension.ParameterResolver

/** `"00 0a ff"` → bytes (spaces and `|` ignored), as the protocol writes its examples. */
fun hex(s: String): ByteArray {
    val digits = s.filter { it.isLetterOrDigit() }
    require(digits.length % 2 == 0) { "odd number of hex digits in $s" }
    return ByteArray(digits.length / 2) { digits.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
}

fun ByteArray.toHex(): String = joinToString(" ") { "%02x".format(it) }

/** A running bundled server: its base URL and the bearer token it demands on Auth. */
class QuillServer(val baseUrl: String, val token: String, internal val process: Process) {
    val port: Int get() = baseUrl.substringAfterLast(':').toInt()
}

/**
 * JUnit 5 extension: starts `quill-server --port 0 --token <t>` before the class's tests,
 * reads its `listening on http://127.0.0.1:PORT` line, injects [QuillServer] parameters,
 * and kills the process after the class. The binary comes from the system property
 * `quill.server` (set by the pom), else `$QUILL_SERVER_BIN`, else
 * `../../target/debug/quill-server`.
 */
class QuillServerExtension : BeforeAllCallback, AfterAllCallback, ParameterResolver {
    companion object {
        const val TOKEN = "kotlin-test-token"
        private val NS = ExtensionContext.Namespace.create(QuillServerExtension::class.java)

        fun serverBinary(): File {
            val path = System.getProperty("quill.server")
                ?: System.getenv("QUILL_SERVER_BIN")
                ?: "../../target/debug/quill-server"
            val f = File(path)
            check(f.canExecute()) {
                "quill-server not found at ${f.absolutePath}: run `cargo build --features server` " +
                    "(scripts/test-kotlin does) or set -Dquill.server=PATH"
            }
            return f
        }

        /** Starts the server (with [extra] arguments) and waits (at most 20 s) for its `listening on` line. */
        fun start(token: String = TOKEN, vararg extra: String): QuillServer {
            val proc = ProcessBuilder(serverBinary().absolutePath, "--port", "0", "--token", token, *extra)
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start()
            val reader = BufferedReader(InputStreamReader(proc.inputStream))
            val line = CompletableFuture.supplyAsync { reader.readLine() }
            val first = try {
                line.get(20, TimeUnit.SECONDS)
            } catch (e: Exception) {
                proc.destroyForcibly()
                throw IllegalStateException("quill-server did not report its address", e)
            }
            val prefix = "listening on "
            if (first == null || !first.startsWith(prefix)) {
                proc.destroyForcibly()
                error("unexpected first line from quill-server: $first")
            }
            return QuillServer(first.removePrefix(prefix).trim(), token, proc)
        }

        fun stop(server: QuillServer) {
            server.process.destroy()
            if (!server.process.waitFor(5, TimeUnit.SECONDS)) server.process.destroyForcibly()
        }
    }

    override fun beforeAll(context: ExtensionContext) {
        context.getStore(NS).put("server", start())
    }

    override fun afterAll(context: ExtensionContext) {
        (context.getStore(NS).remove("server") as QuillServer?)?.let(::stop)
    }

    override fun supportsParameter(p: ParameterContext, e: ExtensionContext) =
        p.parameter.type == QuillServer::class.java

    override fun resolveParameter(p: ParameterContext, e: ExtensionContext): Any =
        // Stores are hierarchical: the class-level value is visible from each test.
        e.getStore(NS).get("server") as QuillServer
}
