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
    }

    public func isResident(layer: Int, expert: Int) -> Bool { resident.contains(Expert(layer: layer, expert: expert)) }

    /// Residency flags of one layer, for the planner.
    public func flags(layer: Int) -> [Bool] { heat[layer].indices.map { isResident(layer: layer, expert: $0) } }

    /// Folds one step's token counts of `layer` into the heat.
    public mutating func observe(layer: Int, tokenCount: [Int]) {
        for e in heat[layer].indices { heat[layer][e] = (1 - decay) * heat[layer][e] + decay * Double(tokenCount[e]) }
    }

    /// Replaces at most `maxSwaps` resident experts by hotter non-resident
    /// ones (the hottest challenger against the coldest resident, while the
    /// challenger clears the hysteresis); returns the (evicted, admitted)
    /// pairs in order, which the executor turns into copies.
    public mutating func rebalance(maxSwaps: Int) -> [(evicted: Expert, admitted: Expert)] {
        func h(_ x: Expert) -> Double { heat[x.layer][x.expert] }
        var outside = heat.enumerated().flatMap { l, row in row.indices.map { Expert(layer: l, expert: $0) } }
            .filter { !resident.contains($0) }
            .sorted { h($0) != h($1) ? h($0) > h($1) : $0 < $1 }
        var inside = resident.sorted { h($0) != h($1) ? h($0) < h($1) : $0 < $1 }
        var swaps: [(evicted: Expert, admitted: Expert)] = []
        while swaps.count < maxSwaps, let hot = outside.first, let cold = inside.first, h(hot) > h(cold) * (1 + hysteresis) {
            resident.remove(cold)
            resident.insert(hot)
            swaps.append((cold, hot))
            outside.removeFirst()
            inside.removeFirst()
        }
        return swaps
    }
}
