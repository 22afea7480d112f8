import Foundation
import SwitchyardModel

extension RoutingProfile {
    /// A reproducible skewed profile for placement scaling runs: expert
    /// popularity at each layer follows a Zipf law with exponent `skew` over a
    /// random permutation of the experts, and with probability `affinity` a
    /// token's first expert at layer l+1 is the fixed successor of its first
    /// expert at layer l (the consecutive-layer affinity real routers show,
    /// which is what traffic-aware placement exploits).
    public static func synthetic(numLayers: Int, numExperts: Int, topK: Int, tokens: Int,
                                 skew: Double, affinity: Double, seed: UInt64) throws -> RoutingProfile {
        guard numLayers >= 1, numExperts >= 2, topK >= 1, topK <= numExperts, tokens >= 1 else {
            throw PlacementError.invalidPlacement("synthetic profile needs layers ≥ 1, experts ≥ 2, 1 ≤ top-k ≤ experts, tokens ≥ 1")
        }
        guard skew >= 0, (0...1).contains(affinity) else {
            throw PlacementError.invalidPlacement("synthetic profile needs skew ≥ 0 and affinity in 0...1")
        }
        var rng = Xoshiro256(seed: seed)
        func unit() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        // Cumulative popularity per layer over a shuffled expert order.
        var cumulative: [[Double]] = []
        var order: [[Int]] = []
        var successor: [[Int]] = []
        for _ in 0..<numLayers {
            var perm = Array(0..<numExperts)
            perm.shuffle(using: &rng)
            order.append(perm)
            var c: [Double] = []
            var s = 0.0
            for r in 0..<numExperts { s += 1 / pow(Double(r + 1), skew); c.append(s) }
            cumulative.append(c.map { $0 / s })
            var succ = Array(0..<numExperts)
            succ.shuffle(using: &rng)
            successor.append(succ)
        }
        func draw(_ l: Int) -> Int {
            let u = unit()
            var lo = 0, hi = numExperts - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if cumulative[l][mid] < u { lo = mid + 1 } else { hi = mid }
            }
            return order[l][lo]
        }
        var profile = RoutingProfile(numLayers: numLayers, numExperts: numExperts, topK: topK,
                                     source: "synthetic L=\(numLayers) E=\(numExperts) k=\(topK) tokens=\(tokens) skew=\(skew) affinity=\(affinity) seed=\(seed)")
        var path = Array(repeating: [Int](), count: numLayers)
        for _ in 0..<tokens {
            for l in 0..<numLayers {
                var chosen: [Int] = []
                if l > 0 && unit() < affinity { chosen.append(successor[l - 1][path[l - 1][0]]) }
                while chosen.count < topK {
                    let e = draw(l)
                    if !chosen.contains(e) { chosen.append(e) }
                }
                path[l] = chosen
            }
            profile.add(path: path)
        }
        return profile
    }
}
