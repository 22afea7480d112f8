import Foundation

/// The result of generating one continuation.
public struct GenerationResult: Sendable {
    public var tokens: [Int32]
    public var promptTokens: Int
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    public var finishedByStop: Bool

    /// Decode speed over the tokens after the first (the first comes from prefill).
    public var decodeTokensPerSecond: Double {
        tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

/// Generates one sequence with a private KV cache: the building block of the
/// `generate` command and of tests that compare batched serving with
/// requests run alone.
public final class Generator: @unchecked Sendable {
    public let model: Transformer
    public let blockSize: Int

    public init(model: Transformer, blockSize: Int = 16) {
        self.model = model
        self.blockSize = blockSize
    }

    public func generate(prompt: [Int32], maxTokens: Int, sampling: SamplingParams = .greedy,
                         stopTokens: Set<Int32> = [], onToken: (Int32) -> Void = { _ in }) throws -> GenerationResult {
        precondition(!prompt.isEmpty, "the prompt needs at least one token")
        try sampling.validate()
        let total = prompt.count + maxTokens
        let blocks = (total + blockSize - 1) / blockSize
        let cache = PagedKVCache(config: model.config, numBlocks: max(blocks, 1), blockSize: blockSize, compute: model.compute)
        let table = (0..<Int32(max(blocks, 1))).map { $0 }
        var sampler = Sampler(sampling)
        var out: [Int32] = []
        out.reserveCapacity(maxTokens)
        let t0 = Date()
        var batch = ForwardBatch()
        batch.append(tokens: prompt, startPosition: 0, blockTable: table, logits: .last)
        var logits = try model.forward(batch, cache: cache)
        let t1 = Date()
        var stopped = false
        var position = prompt.count
        while out.count < maxTokens {
            let next = Int32(sampler.sample(logits.row(0)))
            out.append(next)
            onToken(next)
            if stopTokens.contains(next) { stopped = true; break }
            if out.count == maxTokens { break }
            batch = ForwardBatch()
            batch.append(tokens: [next], startPosition: position, blockTable: table, logits: .last)
            logits = try model.forward(batch, cache: cache)
            position += 1
        }
        return GenerationResult(tokens: out, promptTokens: prompt.count,
                                prefillSeconds: t1.timeIntervalSince(t0),
                                decodeSeconds: Date().timeIntervalSince(t1), finishedByStop: stopped)
    }

    /// Logits for every position of `tokens` (one prefill over a fresh cache).
    public func allLogits(_ tokens: [Int32]) throws -> [[Float]] {
        let blocks = (tokens.count + blockSize - 1) / blockSize
        let cache = PagedKVCache(config: model.config, numBlocks: max(blocks, 1), blockSize: blockSize, compute: model.compute)
        var batch = ForwardBatch()
        batch.append(tokens: tokens, startPosition: 0, blockTable: (0..<Int32(max(blocks, 1))).map { $0 }, logits: .all)
        return try model.forward(batch, cache: cache).toArrays()
    }
}
