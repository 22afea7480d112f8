import ArgumentParser
import Foundation
import SwitchyardModel

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate a continuation of a prompt and report tokens/s.")

    @Option(help: "Checkpoint directory (Hugging Face format).")
    var model: String

    @Option(help: "Prompt text (needs the model's tokenizer.json).")
    var prompt: String?

    @Option(help: "Prompt as comma-separated token ids; output is printed as ids.")
    var tokens: String?

    @Option(name: .customLong("max-tokens"), help: "Tokens to generate.")
    var maxTokens: Int = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass in (0, 1].")
    var topP: Float = 1

    @Option(name: .customLong("top-k"), help: "Sample among the k most likely tokens; 0 disables.")
    var topK: Int = 0

    @Option(help: "Random seed for sampling.")
    var seed: UInt64?

    @Flag(name: .customLong("ignore-eos"), help: "Keep generating past the end-of-sequence token.")
    var ignoreEOS = false

    func validate() throws {
        if (prompt == nil) == (tokens == nil) { throw ValidationError("pass exactly one of --prompt or --tokens") }
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1") }
        if topK < 0 { throw ValidationError("--top-k must be 0 (off) or positive") }
        do { try SamplingParams(temperature: temperature, topP: topP, topK: topK).validate() } catch {
            throw ValidationError("\(error)")
        }
    }

    @OptionGroup var compute: ComputeFlags
    @OptionGroup var execution: ExecutionFlags

    func run() throws {
        let transformer = try loadModel(model)
        try compute.apply(to: transformer)
        try execution.prepare(transformer)
        var tokenizer: (any Tokenizer)?
        let ids: [Int32]
        if let prompt {
            do { tokenizer = try TokenizerLoader.load(directory: model) } catch let e as TokenizerError {
                throw CLIError("error: \(e.description)")
            }
            ids = tokenizer!.encode(prompt)
            if ids.isEmpty { throw CLIError("error: the prompt encodes to no tokens") }
        } else {
            ids = try parseTokenList(tokens!)
        }
        let config = transformer.config
        if ids.count + maxTokens > config.maxPositionEmbeddings {
            throw CLIError("error: prompt (\(ids.count) tokens) + --max-tokens (\(maxTokens)) exceeds the model's max_position_embeddings (\(config.maxPositionEmbeddings)); shorten the prompt or lower --max-tokens")
        }
        var stops = Set<Int32>()
        if !ignoreEOS {
            for e in config.eosTokenIds { stops.insert(Int32(e)) }
            if let e = tokenizer?.eosTokenId { stops.insert(e) }
        }
        let sampling = SamplingParams(temperature: temperature, topP: topP, topK: topK, seed: seed)
        var generated: [Int32] = []
        var printed = ""
        if tokenizer != nil { print(tokenizer!.decode(ids, skipSpecialTokens: true), terminator: "") }
        let result: GenerationResult
        do {
            result = try Generator(model: transformer).generate(prompt: ids, maxTokens: maxTokens, sampling: sampling, stopTokens: stops) { token in
                generated.append(token)
                guard let tok = tokenizer else { return }
                // Print only complete characters: wait while the tail is a partial UTF-8 sequence.
                let text = tok.decode(generated, skipSpecialTokens: true)
                guard !text.hasSuffix("\u{FFFD}"), text.count >= printed.count, text.hasPrefix(printed) else { return }
                print(text.dropFirst(printed.count), terminator: "")
                flushStandardOutput()
                printed = text
            }
        } catch let e as ForwardError {
            throw CLIError("error: \(e.description)")
        }
        if tokenizer == nil {
            print(result.tokens.map(String.init).joined(separator: ","))
        } else {
            let text = tokenizer!.decode(generated, skipSpecialTokens: true)
            if text.count > printed.count, text.hasPrefix(printed) { print(text.dropFirst(printed.count), terminator: "") }
            print("")
        }
        flushStandardOutput()
        let prefillTPS = Double(result.promptTokens) / max(result.prefillSeconds, 1e-9)
        FileHandle.standardError.write(Data(String(format: "prompt %d tokens, prefill %.1f tok/s; generated %d tokens, decode %.1f tok/s%@\n",
            result.promptTokens, prefillTPS, result.tokens.count, result.decodeTokensPerSecond,
            result.finishedByStop ? " (stopped at end-of-sequence)" : "").utf8))
    }
}
