import Foundation
import HummingbirdCore
import Logging

/// `--max-connections`: at the cap the server stops accepting, and new
/// connections wait in the listen backlog, so it never runs out of file
/// descriptors (where accept fails over and over). Reaching the cap is
/// logged, at most once a minute, since clients then wait.
struct ConnectionCap: AvailableConnectionsDelegate {
    let maxConnections: Int
    let logger: Logger
    var open = 0
    var lastWarning: Date = .distantPast

    init(_ maxConnections: Int, logger: Logger) {
        self.maxConnections = maxConnections
        self.logger = logger
    }

    mutating func connectionOpened() {
        open += 1
        if open >= maxConnections, Date().timeIntervalSince(lastWarning) > 60 {
            lastWarning = Date()
            logger.warning("\(open) connections open, the --max-connections cap: new connections wait in the backlog until one closes")
        }
    }

    mutating func connectionClosed() { open -= 1 }

    func isAcceptingNewConnections() -> Bool { open < maxConnections }
}
