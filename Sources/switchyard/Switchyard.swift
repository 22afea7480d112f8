import ArgumentParser
import Foundation
import Logging
import SwitchyardModel

/// Logs go to stderr; `SWITCHYARD_LOG_LEVEL` (trace, debug, info, notice,
/// warning, error) sets the level, `warning` by default so command output
/// stays clean.
let log: Logger = {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        let name = ProcessInfo.processInfo.environment["SWITCHYARD_LOG_LEVEL"] ?? "warning"
        handler.logLevel = Logger.Level(rawValue: name.lowercased()) ?? .warning
        return handler
    }
    return Logger(label: "switchyard")
}()

@main
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A serving engine for Mixture-of-Experts language models.",
        subcommands: [GenerateCommand.self, LogitsCommand.self, ServeCommand.self, BenchCommand.self, ABCommand.self, StrategiesCommand.self, PlaceCommand.self, ProfileCommand.self, TopologyCommand.self, ModelCommand.self,
                      KernelBenchCommand.self, ForwardBenchCommand.self])
}

/// Parses "3,17,250" (spaces allowed) into token ids.
func parseTokenList(_ s: String) throws -> [Int32] {
    let parts = s.split(whereSeparator: { $0 == "," || $0 == " " })
    var ids: [Int32] = []
    for p in parts {
        guard let v = Int32(p), v >= 0 else {
            throw ValidationError("--tokens expects comma-separated non-negative integers; \"\(p)\" is not one")
        }
        ids.append(v)
    }
    guard !ids.isEmpty else { throw ValidationError("--tokens is empty; pass ids like 3,17,250") }
    return ids
}

/// Errors from the library print as their message, not as a Swift dump.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    /// ArgumentParser prints "Error: " before the description, so a message
    /// written as "error: ..." loses its own prefix.
    init(_ message: String) { description = message.hasPrefix("error: ") ? String(message.dropFirst(7)) : message }
}

func loadModel(_ path: String) throws -> Transformer {
    do {
        let t0 = Date()
        let model = try Transformer(directory: path)
        let c = model.config
        log.info("loaded model", metadata: [
            "path": "\(path)", "architecture": "\(c.architecture.rawValue)", "layers": "\(c.numLayers)",
            "experts": "\(c.numExperts)", "top_k": "\(c.numExpertsPerToken)",
            "load_ms": "\(Int(Date().timeIntervalSince(t0) * 1000))", "kernel_threads": "\(Parallel.threadCount)"])
        return model
    } catch let e as CheckpointError {
        throw CLIError("error: \(e.description)")
    }
}

/// Streams partial output lines; `stdout` is a C global Swift 6 will not touch directly.
func flushStandardOutput() {
    fflush(nil)
}
