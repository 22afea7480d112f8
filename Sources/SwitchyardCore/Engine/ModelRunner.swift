import SwitchyardModel

/// Turns an iteration's scheduled sequences into one ragged forward, and
/// keeps, per sequence, the hidden states (and, with route recording, the
/// routes) of a layered-prefill chunk between its layer groups: the engine
/// never sees them.
final class ModelRunner {
    let model: Transformer
    let cache: PagedKVCache
    private var batch = ForwardBatch()
    /// Layered prefill: a chunk's rows after the last layer it ran, by sequence handle.
    private var carried: [Int: Carry] = [:]
    /// Tests: an error to throw instead of running forward number `n` (from 0).
    var injectedFault: ((_ forward: Int) -> (any Error)?)?
    private var forwards = 0

    private struct Carry {
        var hidden: [Float]
        var routes: [Int32]?
    }

    init(model: Transformer, cache: PagedKVCache) {
        self.model = model
        self.cache = cache
    }

    /// Runs the forward; afterwards `row(i)` of the result is the logits of
    /// the i-th scheduled sequence that completed all its tokens.
    func forward(_ scheduled: [KVCacheManager.Scheduled]) throws -> LogitsView {
        let numLayers = model.config.numLayers
        batch.tokens.removeAll(keepingCapacity: true)
        batch.sequences.removeAll(keepingCapacity: true)
        for s in scheduled {
            let seq = s.seq
            let end = seq.computedTokens + s.tokens
            let carry = s.layers.lowerBound > 0 ? carried[seq.handle] : nil
            batch.append(tokens: seq.tokens[seq.computedTokens..<end], startPosition: seq.computedTokens,
                         blockTable: seq.blockTable,
                         logits: s.layers.upperBound == numLayers && end == seq.tokens.count ? .last : .none,
                         layers: s.layers == 0..<numLayers ? nil : s.layers,
                         inputHidden: carry?.hidden, inputRoutes: carry?.routes)
        }
        defer { forwards += 1 }
        if let fault = injectedFault?(forwards) { throw fault }
        let logits = try model.forward(batch, cache: cache)
        // The batch lets go of the carried arrays, so the writes below reuse
        // their storage instead of copying it.
        batch.sequences.removeAll(keepingCapacity: true)
        // Chunks stopping before the last layer keep their rows for the next group.
        var row = 0
        for s in scheduled {
            if s.layers.upperBound < numLayers { keep(s, row: row) }
            row += s.tokens
        }
        return logits
    }

    private func keep(_ s: KVCacheManager.Scheduled, row: Int) {
        let h = model.config.hiddenSize, k = model.config.numExpertsPerToken
        let handle = s.seq.handle
        var carry = carried.removeValue(forKey: handle) ?? Carry(hidden: [], routes: nil)
        let src = UnsafeBufferPointer(start: model.lastHidden! + row * h, count: s.tokens * h)
        if carry.hidden.count == src.count {
            _ = carry.hidden.withUnsafeMutableBufferPointer { $0.update(fromContentsOf: src) }
        } else {
            carry.hidden = Array(src)
        }
        if model.counters.recordsPairs {
            carry.routes = Array(UnsafeBufferPointer(
                start: model.recordedRoute(layer: s.layers.upperBound - 1, row: row, tokens: batch.tokenCount), count: s.tokens * k))
        } else {
            carry.routes = nil
        }
        carried[handle] = carry
    }

    /// Forgets what was kept for a sequence (finished or preempted).
    func release(handle: Int) { carried[handle] = nil }
}
