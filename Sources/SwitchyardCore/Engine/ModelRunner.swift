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

    /// Where each scheduled sequence's logits rows start in the last
    /// forward's result, and how many it has (0, 1 for the last token, or
    /// every token of a prefill chunk whose prompt is being scored).
    private(set) var firstRow: [Int] = []
    private(set) var rowCount: [Int] = []

    /// Which rows a scheduled sequence needs: the last one to sample, every
    /// row of a prompt chunk that is being scored.
    private func selection(_ s: KVCacheManager.Scheduled, numLayers: Int) -> LogitsSelection {
        let seq = s.seq
        guard s.layers.upperBound == numLayers else { return .none }
        if seq.request.promptLogprobs != nil && seq.computedTokens < seq.request.promptTokens.count - 1 { return .all }
        return seq.computedTokens + s.tokens == seq.tokens.count ? .last : .none
    }

    /// Runs the forward; the rows of scheduled sequence i are
    /// `firstRow[i] ..< firstRow[i] + rowCount[i]` of the result.
    func forward(_ scheduled: [KVCacheManager.Scheduled]) throws -> LogitsView {
        let numLayers = model.config.numLayers
        batch.tokens.removeAll(keepingCapacity: true)
        batch.sequences.removeAll(keepingCapacity: true)
        firstRow.removeAll(keepingCapacity: true)
        rowCount.removeAll(keepingCapacity: true)
        var rows = 0
        for s in scheduled {
            let seq = s.seq
            let end = seq.computedTokens + s.tokens
            let carry = s.layers.lowerBound > 0 ? carried[seq.handle] : nil
            let logits = selection(s, numLayers: numLayers)
            let n = logits == .all ? s.tokens : logits == .last ? 1 : 0
            firstRow.append(rows)
            rowCount.append(n)
            rows += n
            batch.append(tokens: seq.tokens[seq.computedTokens..<end], startPosition: seq.computedTokens,
                         blockTable: seq.blockTable,
                         logits: logits,
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
