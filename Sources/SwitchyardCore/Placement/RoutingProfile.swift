import Foundation
import SwitchyardModel

/// Where tokens went: `P[l][e]`, tokens routed to expert e at layer l, and
/// `R[l][a][b]`, tokens routed to a at layer l and to b at layer l+1 (each
/// of a token's k×k expert pairs counts once). Placement strategies read it;
/// the JSON format is documented in docs/placement.md.
public struct RoutingProfile: Codable, Sendable, Equatable {
    public var numLayers: Int
    public var numExperts: Int
    public var topK: Int
    public var tokens: Int
    /// `[layer][expert]`.
    public var expertTokens: [[Int]]
    /// `[layer][a][b]` for layer pairs (l, l+1): `numLayers - 1` entries.
    public var pairTokens: [[[Int]]]
    public var source: String

    enum CodingKeys: String, CodingKey {
        case numLayers = "num_layers"
        case numExperts = "num_experts"
        case topK = "top_k"
        case tokens
        case expertTokens = "expert_tokens"
        case pairTokens = "pair_tokens"
        case source
    }

    public init(numLayers: Int, numExperts: Int, topK: Int, source: String = "") {
        self.numLayers = numLayers
        self.numExperts = numExperts
        self.topK = topK
        tokens = 0
        expertTokens = Array(repeating: Array(repeating: 0, count: numExperts), count: numLayers)
        pairTokens = Array(repeating: Array(repeating: Array(repeating: 0, count: numExperts), count: numExperts),
                           count: max(0, numLayers - 1))
        self.source = source
    }

    /// Adds one token's path: its experts at every layer.
    public mutating func add(path: [[Int]]) {
        precondition(path.count == numLayers)
        tokens += 1
        for (l, experts) in path.enumerated() {
            for e in experts { expertTokens[l][e] += 1 }
            if l + 1 < numLayers {
                for a in experts { for b in path[l + 1] { pairTokens[l][a][b] += 1 } }
            }
        }
    }

    /// The profile an engine recorded (`ExpertLoadCounters.recordPairs()`
    /// before the run).
    public init(counters: ExpertLoadCounters, topK: Int, source: String) {
        self.init(numLayers: counters.numLayers, numExperts: counters.numExperts, topK: topK, source: source)
        let e = counters.numExperts
        for l in 0..<numLayers { expertTokens[l] = Array(counters.tokens[(l * e)..<((l + 1) * e)]) }
        if counters.recordsPairs {
            for l in 0..<(numLayers - 1) {
                for a in 0..<e { pairTokens[l][a] = Array(counters.pairs[((l * e + a) * e)..<((l * e + a) * e + e)]) }
            }
        }
        tokens = (expertTokens.map { $0.reduce(0, +) }.max() ?? 0) / max(topK, 1)
    }

    public static func load(path: String) throws -> RoutingProfile {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw PlacementError.invalidProfile(path: path, reason: error.localizedDescription)
        }
        let p: RoutingProfile
        do { p = try JSONDecoder().decode(RoutingProfile.self, from: data) } catch {
            throw PlacementError.invalidProfile(path: path, reason: "not a routing profile (\(error))")
        }
        guard p.expertTokens.count == p.numLayers, p.expertTokens.allSatisfy({ $0.count == p.numExperts }),
              p.pairTokens.count == max(0, p.numLayers - 1),
              p.pairTokens.allSatisfy({ $0.count == p.numExperts && $0.allSatisfy { $0.count == p.numExperts } }) else {
            throw PlacementError.invalidProfile(path: path, reason: "expert_tokens must be num_layers × num_experts and pair_tokens (num_layers−1) × num_experts × num_experts")
        }
        return p
    }

    public func save(path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try enc.encode(self).write(to: URL(fileURLWithPath: path))
    }

    /// Imports per-token routing records in the format of the Mixtral-8x7B
    /// trace (`{"dataset", "problem_id", "token_idx", "layer", "experts"}` per
    /// line): records are grouped into token paths, and only tokens with all
    /// `numLayers` layers are kept.
    public static func importTokenRecords(paths: [String], numLayers: Int, numExperts: Int) throws -> RoutingProfile {
        struct Key: Hashable { let dataset: String; let problem: Int; let token: Int }
        var paths_: [Key: [Int: [Int]]] = [:]
        var topK = 0
        for path in paths {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw PlacementError.invalidProfile(path: path, reason: error.localizedDescription)
            }
            for (i, line) in text.split(separator: "\n").enumerated() {
                guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                      let layer = (o["layer"] as? NSNumber)?.intValue, let experts = o["experts"] as? [NSNumber],
                      let token = (o["token_idx"] as? NSNumber)?.intValue else {
                    throw PlacementError.invalidProfile(path: path, reason: "line \(i + 1): expected layer, experts and token_idx")
                }
                let e = experts.map(\.intValue)
                guard layer >= 0, layer < numLayers, e.allSatisfy({ $0 >= 0 && $0 < numExperts }) else {
                    throw PlacementError.invalidProfile(path: path, reason: "line \(i + 1): layer or expert out of range")
                }
                topK = max(topK, e.count)
                let key = Key(dataset: o["dataset"] as? String ?? path, problem: (o["problem_id"] as? NSNumber)?.intValue ?? 0, token: token)
                paths_[key, default: [:]][layer] = e
            }
        }
        var profile = RoutingProfile(numLayers: numLayers, numExperts: numExperts, topK: topK,
                                     source: paths.map { ($0 as NSString).lastPathComponent }.joined(separator: ","))
        for key in paths_.keys.sorted(by: { ($0.dataset, $0.problem, $0.token) < ($1.dataset, $1.problem, $1.token) }) {
            let layers = paths_[key]!
            guard layers.count == numLayers else { continue }
            profile.add(path: (0..<numLayers).map { layers[$0]! })
        }
        return profile
    }
}

public enum PlacementError: Error, CustomStringConvertible, Equatable {
    case invalidProfile(path: String, reason: String)
    case invalidPlacement(String)

    public var description: String {
        switch self {
        case let .invalidProfile(path, reason): return "\(path): \(reason)"
        case let .invalidPlacement(m): return m
        }
    }
}
