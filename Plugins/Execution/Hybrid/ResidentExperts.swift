import Foundation

/// Which routed experts live in GPU memory: the hottest ones that fit the
/// budget the dense weights and the KV cache leave. Seeded from a routing
/// profile (`--placement-profile`) or, without one, from the live counts;
/// then kept current from what the router does, a bounded number of swaps
/// per step so a burst of one topic cannot flush the cache (kTransformers
/// keeps a static mask; llama.cpp's newer expert cache swaps freely).
public struct ResidentExperts: Sendable, Equatable {
    public struct Expert: Hashable, Sendable, Comparable {
        public var layer: Int
        public var expert: Int
        public init(layer: Int, expert: Int) {
            self.layer = layer
            self.expert = expert
        }
        public static func < (a: Expert, b: Expert) -> Bool { (a.layer, a.expert) < (b.layer, b.expert) }
    }

    /// `[layer][expert]` recent tokens per expert: an exponential moving
    /// average of each step's counts (layers without routed experts have
    /// none).
    public private(set) var heat: [[Double]]
    public private(set) var resident: Set<Expert>
    public let expertBytes: Int
    public let budgetBytes: Int
    /// Weight of each new step's counts in `heat`.
    public var decay: Double
    /// A challenger must be this much hotter than the coldest resident
    /// expert to replace it (0.25: 25% hotter), so two near-equal experts do
    /// not trade places every step.
    public var hysteresis: Double

    public var capacity: Int { expertBytes > 0 ? budgetBytes / expertBytes : 0 }

    /// The hottest experts of `heat` (a profile's counts, or zeros) that fit
    /// `budgetBytes`; ties go to the lower (layer, expert).
    public init(heat: [[Double]], expertBytes: Int, budgetBytes: Int, decay: Double = 0.1, hysteresis: Double = 0.25) {
        self.heat = heat
        self.expertBytes = expertBytes
        self.budgetBytes = budgetBytes
        self.decay = decay
        self.hysteresis = hysteresis
        let all = heat.enumerated().flatMap { l, row in row.indices.map { Expert(layer: l, expert: $0) } }
        let ranked = all.sorted { a, b in
            let ha = heat[a.layer][a.expert], hb = heat[b.layer][b.expert]
            return ha != hb ? ha > hb : a < b
        }
        resident = Set(ranked.prefix(expertBytes > 0 ? budgetBytes / expertBytes : 0))
        coldest = Array(repeating: nil, count: heat.count)
        for l in heat.indices { refreshColdest(l) }
    }

    public func isResident(layer: Int, expert: Int) -> Bool { resident.contains(Expert(layer: layer, expert: expert)) }

    /// Residency flags of one layer, for the planner.
    public func flags(layer: Int) -> [Bool] { heat[layer].indices.map { isResident(layer: layer, expert: $0) } }

    /// Folds one step's token counts of `layer` into the heat.
    public mutating func observe(layer: Int, tokenCount: [Int]) {
        for e in heat[layer].indices { heat[layer][e] = (1 - decay) * heat[layer][e] + decay * Double(tokenCount[e]) }
        refreshColdest(layer)
    }

    /// Replaces at most `maxSwaps` resident experts by hotter non-resident
    /// experts of `layer` (the layer just observed), each time evicting the
    /// coldest resident expert of any layer, while the challenger clears the
    /// hysteresis; returns the (evicted, admitted) pairs in order, which the
    /// executor turns into copies. Costs one sort of the layer's experts and
    /// a scan of one minimum per layer, not a sort of every expert.
    public mutating func rebalance(layer: Int, maxSwaps: Int) -> [(evicted: Expert, admitted: Expert)] {
        guard maxSwaps > 0, !resident.isEmpty else { return [] }
        let challengers = heat[layer].indices.filter { !resident.contains(Expert(layer: layer, expert: $0)) }
            .sorted { heat[layer][$0] != heat[layer][$1] ? heat[layer][$0] > heat[layer][$1] : $0 < $1 }
        var swaps: [(evicted: Expert, admitted: Expert)] = []
        for e in challengers.prefix(maxSwaps) {
            guard let cold = globallyColdest() else { break }
            let hot = Expert(layer: layer, expert: e)
            guard heat[layer][e] > heat[cold.layer][cold.expert] * (1 + hysteresis) else { break }
            resident.remove(cold)
            resident.insert(hot)
            swaps.append((cold, hot))
            refreshColdest(cold.layer)
            refreshColdest(layer)
        }
        return swaps
    }

    /// Per layer, its coldest resident expert (ties: lower id), kept as heat
    /// and residency change so finding the global one scans layers only.
    private var coldest: [Int?]

    private mutating func refreshColdest(_ layer: Int) {
        var best: Int?
        for e in heat[layer].indices where resident.contains(Expert(layer: layer, expert: e)) {
            if best == nil || heat[layer][e] < heat[layer][best!] { best = e }
        }
        coldest[layer] = best
    }

    private func globallyColdest() -> Expert? {
        var best: Expert?
        for (l, e) in coldest.enumerated() {
            guard let e else { continue }
            if best == nil || heat[l][e] < heat[best!.layer][best!.expert] { best = Expert(layer: l, expert: e) }
        }
        return best
    }
}
