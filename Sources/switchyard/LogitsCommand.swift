import ArgumentParser
import Foundation
import SwitchyardModel

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Print the float32 vocabulary logits for every input position as JSON.")

    @Option(help: "Checkpoint directory (Hugging Face format).")
    var model: String

    @Option(help: "Comma-separated input token ids, e.g. 3,17,250.")
    var tokens: String

    @OptionGroup var compute: ComputeFlags
    @OptionGroup var execution: ExecutionFlags

    func run() throws {
        let ids = try parseTokenList(tokens)
        let transformer = try loadModel(model)
        // The exactness tool: float32 unless asked otherwise.
        try compute.apply(to: transformer, defaultDType: "float32")
        try execution.prepare(transformer)
        let rows: [[Float]]
        do {
            rows = try Generator(model: transformer).allLogits(ids)
        } catch let e as ForwardError {
            throw CLIError("error: \(e.description)")
        }
        var out = "{\"logits\": ["
        for (i, row) in rows.enumerated() {
            if i > 0 { out += ", " }
            out += "[" + row.map { formatFloat($0) }.joined(separator: ", ") + "]"
        }
        out += "]}"
        print(out)
    }
}

/// Shortest text that reads back as the same Float32 (JSON has no NaN/Inf: those become null).
func formatFloat(_ f: Float) -> String {
    f.isFinite ? "\(f)" : "null"
}
