import Hummingbird
import NIOCore
import Synchronization

/// The request context of every route: Hummingbird's core context plus the
/// connection, so a generation can be tied to its client's socket.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Cancels a connection's generation in flight the moment its client hangs
/// up, while leaving connections that stay open free to carry the next request
/// (HTTP keep-alive, as vLLM and llama.cpp's servers do).
///
/// Hummingbird allows remote half-closure, so a client's hang-up reaches the
/// pipeline as `ChannelEvent.inputClosed` while the connection stays open
/// until the response ends; a handler at the head of the pipeline sees it at
/// once, even while no token is being written (a queued or prefilling
/// request). An HTTP/1.1 connection runs one request at a time, so each
/// connection needs one slot, its current run, and one handler, not one hook
/// per request.
final class ConnectionWatch: Sendable {
    private enum Slot { case idle, running([@Sendable () -> Void]) }
    private let connections = Mutex<[ObjectIdentifier: Slot]>([:])

    /// Runs `body` with `run` as the connection's current request.
    func during<T>(_ run: GenerationRun, on channel: any Channel, _ body: () async -> T) async -> T {
        await during([run], on: channel, body)
    }

    /// Runs `body` with `runs` (the choices of one HTTP request) as the
    /// connection's current request: a hang-up cancels all of them.
    func during<T>(_ runs: [GenerationRun], on channel: any Channel, _ body: () async -> T) async -> T {
        await during(cancelling: runs.map { run in { run.cancel() } }, on: channel, body)
    }

    /// Runs `body` with `cancels` called if the client hangs up meanwhile
    /// (a request still being tokenized, or its generation runs).
    func during<T>(cancelling cancels: [@Sendable () -> Void], on channel: any Channel, _ body: () async -> T) async -> T {
        let key = ObjectIdentifier(channel)
        let first = connections.withLock { c -> Bool in
            defer { c[key] = .running(cancels) }
            return c[key] == nil
        }
        if first {
            let hangUp: @Sendable () -> Void = { [self] in
                if case .running(let cs)? = connections.withLock({ $0.removeValue(forKey: key) }) { cs.forEach { $0() } }
            }
            channel.eventLoop.execute {
                // A channel that closed before this ran never reports it to
                // the handler: its close future does.
                try? channel.pipeline.syncOperations.addHandler(HangUpHandler(onHangUp: hangUp), position: .first)
            }
            channel.closeFuture.whenComplete { _ in hangUp() }
        }
        defer {
            connections.withLock { c in if c[key] != nil { c[key] = .idle } }
        }
        return await body()
    }

    /// Connections with a close hook: those open now, for tests.
    var watchedConnections: Int { connections.withLock { $0.count } }
}

/// Reports the client's end of the connection closing; passes everything on.
private final class HangUpHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    let onHangUp: @Sendable () -> Void
    init(onHangUp: @escaping @Sendable () -> Void) { self.onHangUp = onHangUp }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { onHangUp() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        onHangUp()
        context.fireChannelInactive()
    }
}
