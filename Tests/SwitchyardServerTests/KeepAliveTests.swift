import ChunkedScheduler
import Foundation
import Logging
import Synchronization
import Testing
@testable import SwitchyardCore
import SwitchyardModel
@testable import SwitchyardServer
#if canImport(Glibc)
import Glibc
#endif

/// One client TCP connection speaking HTTP/1.1 by hand, so a test can see
/// exactly which requests share a connection. Blocking I/O runs on GCD
/// threads, off the cooperative pool the server's handlers need.
final class RawHTTPConnection: @unchecked Sendable {
    private let fd: Int32
    var fileDescriptor: Int32 { fd }
    private var buffer: [UInt8] = []

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    /// Sends one request and reads its whole response (fixed length or chunked).
    func exchange(_ method: String, _ path: String, body: String = "") async throws -> Response {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Response, any Error>) in
            DispatchQueue.global().async {
                k.resume(with: Result { try self.exchangeBlocking(method, path, body: body) })
            }
        }
    }

    /// The end of the connection as the client sees it: true once the server closed it.
    func serverClosed() async -> Bool {
        await withCheckedContinuation { k in
            DispatchQueue.global().async {
                var byte: UInt8 = 0
                k.resume(returning: recv(self.fd, &byte, 1, 0) == 0)
            }
        }
    }

    private func exchangeBlocking(_ method: String, _ path: String, body: String) throws -> Response {
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            sent += n
        }
        let head = String(decoding: try readUntil(Array("\r\n\r\n".utf8)), as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let status = Int(lines.removeFirst().split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines where !line.isEmpty {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        var payload: [UInt8] = []
        if headers["transfer-encoding"] == "chunked" {
            while true {
                let sizeLine = String(decoding: try readUntil(Array("\r\n".utf8)), as: UTF8.self)
                let size = Int(sizeLine.split(separator: ";")[0], radix: 16) ?? 0
                payload += try read(size + 2).dropLast(2)
                if size == 0 { break }
            }
        } else {
            payload = try read(Int(headers["content-length"] ?? "0") ?? 0)
        }
        return Response(status: status, headers: headers, body: String(decoding: payload, as: UTF8.self))
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { throw POSIXError(.ECONNRESET) }
        buffer += chunk[0..<n]
    }

    private func readUntil(_ marker: [UInt8]) throws -> [UInt8] {
        while true {
            if buffer.count >= marker.count {
                for i in 0...(buffer.count - marker.count) where Array(buffer[i..<(i + marker.count)]) == marker {
                    let out = Array(buffer[0..<i])
                    buffer.removeFirst(i + marker.count)
                    return out
                }
            }
            try fill()
        }
    }

    private func read(_ count: Int) throws -> [UInt8] {
        while buffer.count < count { try fill() }
        defer { buffer.removeFirst(count) }
        return Array(buffer[0..<count])
    }
}

/// Generation responses leave the connection open for the next request, as
/// vLLM's and llama.cpp's servers do, and a hang-up still cancels at once.
@Suite(.serialized) struct KeepAliveTests {
    @Test func oneConnectionCarriesStreamedAndWholeCompletionsInTurn() async throws {
        let model = try loadModel()
        let prompt: [Int32] = [17, 400, 923, 55, 1200, 7, 3000]
        let offline = try await offlineTexts(model, prompts: [prompt], maxTokens: [6])[0]
        let s = try await TestServer(engine: try makeEngine(model))
        let conn = try RawHTTPConnection(port: s.port)
        let body = #"{"prompt": [17, 400, 923, 55, 1200, 7, 3000], "max_tokens": 6, "temperature": 0, "ignore_eos": true"#
        for round in 0..<2 {
            let whole = try await conn.exchange("POST", "/v1/completions", body: body + "}")
            #expect(whole.status == 200, "round \(round)")
            #expect(whole.headers["connection"]?.lowercased() != "close")
            let text = ((try JSONSerialization.jsonObject(with: Data(whole.body.utf8)) as? [String: Any])?["choices"] as? [[String: Any]])?.first?["text"] as? String
            #expect(text == offline.text)

            let streamed = try await conn.exchange("POST", "/v1/completions", body: body + #", "stream": true}"#)
            #expect(streamed.status == 200)
            #expect(streamed.headers["connection"]?.lowercased() != "close")
            var parser = SSE.Parser()
            let (streamedText, finish, _, done) = streamedText(parser.feed(Array(streamed.body.utf8)))
            #expect(done && finish == "length")
            #expect(streamedText == offline.text)
        }
        // Errors and other routes share the connection too.
        #expect(try await conn.exchange("POST", "/v1/completions", body: #"{"prompt": 5}"#).status == 400)
        #expect(try await conn.exchange("GET", "/health").status == 200)
        #expect(s.server.connections.watchedConnections == 1)
        #expect(s.engine.stats.runningRequests == 0)
        await s.stop()
    }

    @Test func hangingUpOnAWholeCompletionInPrefillCancelsIt() async throws {
        // The scheduler admits nothing, so the request writes nothing before
        // the client leaves: only the hang-up itself can tell the server.
        let gate = GateScheduler()
        let s = try await TestServer(engine: try makeEngine(try loadModel(), scheduler: gate, numKVBlocks: 64))
        let conn = try RawHTTPConnection(port: s.port)
        let pending = Task { try? await conn.exchange("POST", "/v1/completions", body: #"{"prompt": [1, 2, 3], "max_tokens": 5}"#) }
        #expect(await s.eventually { s.engine.stats.waitingRequests == 1 })
        shutdown(conn.fileDescriptor, Int32(SHUT_RDWR))
        _ = await pending.value
        #expect(await s.eventually { s.engine.stats.cancelledRequests == 1 && s.engine.stats.waitingRequests == 0 })
        #expect(await s.eventually { s.server.connections.watchedConnections == 0 })
        #expect(s.engine.freeKVBlocks == 64)
        gate.open()
        await s.stop()
    }
}

extension RawHTTPConnection {
    /// Sends bytes and nothing more (half a request).
    func sendRaw(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { send(fileDescriptor, $0.baseAddress, $0.count, 0) }
    }
}

/// Connections that send nothing, or half a request, are closed after their
/// timeouts instead of being held forever.
@Suite(.serialized) struct ConnectionTimeoutTests {
    @Test func idleHalfHeaderAndHalfBodyConnectionsAreClosed() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel()), idleTimeout: .seconds(1), bodyTimeout: .seconds(1))
        let idle = try RawHTTPConnection(port: s.port)
        let slowHeader = try RawHTTPConnection(port: s.port)
        slowHeader.sendRaw("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        let slowBody = try RawHTTPConnection(port: s.port)
        slowBody.sendRaw("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
        let start = Date()
        #expect(await idle.serverClosed())
        #expect(await slowHeader.serverClosed())
        #expect(await slowBody.serverClosed())
        // Closed by the timeouts, not by the 120 s receive timeout of the client.
        #expect(Date().timeIntervalSince(start) < 60)
        // And the server still serves.
        let ok = try await s.post("/v1/completions", #"{"prompt": [1, 2, 3], "max_tokens": 2}"#)
        #expect(ok.status == 200)
        await s.stop()
    }
}

/// Beyond `--max-connections`, new connections wait in the backlog (rather
/// than the server accepting until it runs out of descriptors), and are
/// served as soon as a slot frees.
@Suite(.serialized) struct ConnectionCapTests {
    @Test func theCapCountsOpenConnections() {
        var cap = ConnectionCap(2, logger: Logger(label: "test"))
        cap.connectionOpened()
        #expect(cap.isAcceptingNewConnections())
        cap.connectionOpened()
        #expect(!cap.isAcceptingNewConnections())
        #expect(cap.lastWarning > .distantPast)
        cap.connectionClosed()
        #expect(cap.isAcceptingNewConnections())
    }

    @Test func aConnectionBeyondTheCapWaitsUntilOneCloses() async throws {
        #expect(ServerConfig.defaultMaxConnections >= 16)
        let s = try await TestServer(engine: try makeEngine(try loadModel()), maxConnections: 1)
        var holder: RawHTTPConnection? = try RawHTTPConnection(port: s.port)
        let first = try await holder!.exchange("GET", "/health")
        #expect(first.status == 200)
        // A second client: connected by the kernel, not accepted by the server.
        let second = try RawHTTPConnection(port: s.port)
        let answered = Mutex(false)
        let waiting = Task {
            let r = try await second.exchange("GET", "/health")
            answered.withLock { $0 = true }
            return r
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(!answered.withLock { $0 }, "the server accepted a connection beyond its cap")
        holder = nil  // closes the first connection
        let r = try await waiting.value
        #expect(r.status == 200)
        await s.stop()
    }
}

/// SIGTERM drains with a deadline: a client holding half a body open cannot
/// keep the server alive past `--shutdown-timeout`.
@Suite struct ShutdownTests {
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/switchyard").path

    /// The port from a started server's start-up line ("switchyard serving
    /// ... on http://127.0.0.1:PORT (...)") on its standard error, and what
    /// it printed up to there.
    static func servingPort(_ err: Pipe) -> (port: Int?, text: String) {
        var text = ""
        while true {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { return (nil, text) }
            text += String(decoding: chunk, as: UTF8.self)
            if let r = text.range(of: "http://127.0.0.1:"), let end = text[r.upperBound...].firstIndex(of: " ") {
                return (Int(text[r.upperBound..<end]), text)
            }
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary), "needs the debug switchyard binary (swift build)"),
          .timeLimit(.minutes(5)))
    func sigtermExitsWithinTheShutdownTimeoutWithAHalfSentBodyOpen() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "--model", modelDirectory, "--port", "0", "--shutdown-timeout", "1", "--body-timeout", "600",
                       "--log-level", "warning"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let (port, text) = Self.servingPort(err)
        let open = try RawHTTPConnection(port: try #require(port, "no start-up line: \(text)"))
        open.sendRaw("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
        try await Task.sleep(for: .milliseconds(300))
        let start = Date()
        p.terminate()  // SIGTERM
        while p.isRunning && Date().timeIntervalSince(start) < 60 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!p.isRunning)
        #expect(Date().timeIntervalSince(start) < 30, "the drain waited on the half-sent body (its body timeout is 600 s)")
        if p.isRunning { p.interrupt() } else { #expect(p.terminationStatus == 0) }
    }
}

/// The descriptor limit never makes the server spin or wedge. Past it,
/// accept fails with EMFILE and swift-nio's listener retries in a busy loop
/// (measured: a full core), so connections are capped below the limit:
/// `--max-connections` above what `ulimit -n` allows is clamped with a
/// warning. With `ulimit -n 160` (room for 32 connections) and 100 idle
/// clients, the extra clients wait in the backlog, the server stays idle,
/// and once the clients leave a normal request is answered.
@Suite struct DescriptorLimitTests {
    /// User plus system CPU seconds of process `pid` so far (/proc/<pid>/stat).
    static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields after the command: state is index 0; utime and stime are 11 and 12.
        guard fields.count > 12, let u = Double(fields[11]), let k = Double(fields[12]) else { return nil }
        return (u + k) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ShutdownTests.binary), "needs the debug switchyard binary (swift build)"),
          .timeLimit(.minutes(3)))
    func connectionsStayBelowTheDescriptorLimitSoTheServerNeitherSpinsNorWedges() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "ulimit -n 160 && exec \"$0\" serve --model \"$1\" --port 0 --max-connections 1000 --idle-timeout 600 --log-level warning",
                       ShutdownTests.binary, modelDirectory]
        let err = Pipe()
        p.standardError = err
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let (port, text) = ShutdownTests.servingPort(err)
        let serverPort = try #require(port, "no start-up line: \(text)")
        #expect(text.contains("--max-connections 1000 is more than the descriptor limit allows (ulimit -n 160, 128 kept for the engine): using 32"),
                "\(text)")
        // More idle connections than the server has descriptors: the kernel
        // completes them into the backlog; the server can accept only some.
        var idle: [RawHTTPConnection] = []
        for _ in 0..<100 { idle.append(try RawHTTPConnection(port: serverPort)) }
        try await Task.sleep(for: .seconds(1))
        let before = try #require(Self.cpuSeconds(p.processIdentifier))
        try await Task.sleep(for: .seconds(3))
        let after = try #require(Self.cpuSeconds(p.processIdentifier))
        // A busy accept loop would burn about one core (3 s here).
        #expect(after - before < 1.0, "server used \(after - before) s of CPU in 3 s while at its descriptor limit")
        idle.removeAll()
        let client = try RawHTTPConnection(port: serverPort)
        let r = try await client.exchange("POST", "/v1/completions", body: #"{"prompt": [5, 6, 7], "max_tokens": 2}"#)
        #expect(r.status == 200, "\(r.body)")
        p.terminate()
        while p.isRunning { try await Task.sleep(for: .milliseconds(50)) }
    }
}

/// A client that hangs up while its prompt is being tokenized cancels the
/// tokenizing, and nothing reaches the engine.
@Suite(.serialized) struct TokenizingCancelTests {
    /// The real tokenizer, but encoding waits until its task is cancelled
    /// (at most 30 s), as a very long prompt would keep it busy.
    final class SlowTokenizer: Tokenizer, @unchecked Sendable {
        let inner: any Tokenizer
        let started = Mutex(false)
        let cancelled = Mutex(false)
        init(_ inner: any Tokenizer) { self.inner = inner }
        var vocabSize: Int { inner.vocabSize }
        var bosTokenId: Int32? { inner.bosTokenId }
        var eosTokenId: Int32? { inner.eosTokenId }
        func decode(_ ids: [Int32], skipSpecialTokens: Bool) -> String { inner.decode(ids, skipSpecialTokens: skipSpecialTokens) }
        func tokenId(_ token: String) -> Int32? { inner.tokenId(token) }
        func encode(_ text: String, addSpecialTokens: Bool) -> [Int32] { inner.encode(text, addSpecialTokens: addSpecialTokens) }
        func encode(_ text: String, addSpecialTokens: Bool, maxTokens: Int) -> [Int32] {
            started.withLock { $0 = true }
            let deadline = Date().addingTimeInterval(30)
            while !Task.isCancelled && Date() < deadline { usleep(1000) }
            cancelled.withLock { $0 = Task.isCancelled }
            return inner.encode(text, addSpecialTokens: addSpecialTokens)
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func hangingUpWhileTokenizingCancelsIt() async throws {
        let tok = SlowTokenizer(try loadTokenizer())
        let engine = Engine(model: try loadModel(), config: EngineConfig(maxModelLen: 256, blockSize: 16, numKVBlocks: 64),
                            scheduler: ChunkedScheduler(), tokenizer: tok)
        let s = try await TestServer(engine: engine)
        var client: RawHTTPConnection? = try RawHTTPConnection(port: s.port)
        let body = #"{"prompt": "def f(x):", "max_tokens": 4}"#
        client!.sendRaw("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        #expect(await s.eventually { tok.started.withLock { $0 } })
        client = nil  // hang up
        #expect(await s.eventually { tok.cancelled.withLock { $0 } })
        // Nothing was submitted: no request ran, was cancelled or rejected in the engine.
        try await Task.sleep(for: .milliseconds(200))
        #expect(engine.stats.cancelledRequests == 0 && engine.stats.iterations == 0 && engine.stats.rejectedRequests == 0)
        await s.stop()
    }
}

/// A KV cache that cannot hold one --max-model-len sequence is refused at
/// start-up with both figures and the flags to change.
@Suite struct StartupCheckTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ShutdownTests.binary), "needs the debug switchyard binary (swift build)"),
          .timeLimit(.minutes(2)))
    func aKVCacheSmallerThanTheContextIsAStartUpError() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ShutdownTests.binary)
        p.arguments = ["serve", "--model", modelDirectory, "--port", "0", "--max-model-len", "1024", "--num-kv-blocks", "4"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus != 0)
        #expect(text.contains("--max-model-len 1024") && text.contains("64 tokens") && text.contains("--num-kv-blocks"), "\(text)")
    }
}
