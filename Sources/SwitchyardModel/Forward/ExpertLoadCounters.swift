/// What the MoE layers did: tokens routed to each (layer, expert), and the
/// expert weight bytes read (an expert's weights count once each time it is
/// computed in a layer in a forward). The serving core aggregates these into
/// benchmark results.
public final class ExpertLoadCounters: @unchecked Sendable {
    public let numLayers: Int
    public let numExperts: Int
    /// `tokens[layer * numExperts + expert]`.
    public private(set) var tokens: [Int]
    public private(set) var expertWeightBytesRead: Int = 0
    /// Shared experts' weight bytes (DeepSeek, GLM, Qwen2-MoE), counted apart:
    /// every token uses them, so placement and routing never change them.
    public private(set) var sharedExpertWeightBytesRead: Int = 0
    public private(set) var expertActivations: Int = 0
    /// Consecutive-layer pairs, `pairs[(l * E + a) * E + b]`: tokens routed to
    /// a at layer l and b at layer l+1. Empty unless `recordPairs()` was called
    /// (it costs (L−1)·E² counters and a copy of every token's route).
    public private(set) var pairs: [Int] = []
    public var recordsPairs: Bool { !pairs.isEmpty }

    public func recordPairs() {
        if pairs.isEmpty { pairs = Array(repeating: 0, count: max(0, numLayers - 1) * numExperts * numExperts) }
    }

    @inline(__always)
    func recordPair(layer: Int, from a: UnsafePointer<Int32>, to b: UnsafePointer<Int32>, k: Int) {
        let e = numExperts
        for i in 0..<k { for j in 0..<k { pairs[(layer * e + Int(a[i])) * e + Int(b[j])] += 1 } }
    }

    public init(numLayers: Int, numExperts: Int) {
        self.numLayers = numLayers
        self.numExperts = max(numExperts, 1)
        tokens = Array(repeating: 0, count: numLayers * self.numExperts)
    }

    @inline(__always)
    func record(layer: Int, expert: Int, tokenCount: Int, bytes: Int) {
        tokens[layer * numExperts + expert] += tokenCount
        expertWeightBytesRead += bytes
        expertActivations += 1
    }

    @inline(__always)
    func recordShared(bytes: Int) { sharedExpertWeightBytesRead += bytes }

    public func reset() {
        for i in tokens.indices { tokens[i] = 0 }
        for i in pairs.indices { pairs[i] = 0 }
        expertWeightBytesRead = 0
        sharedExpertWeightBytesRead = 0
        expertActivations = 0
    }
}
