import Foundation

/// The rotary embedding a model uses beyond its theta: how many of each
/// head's values rotate, YaRN context scaling, and the pair layout.
public struct RopeConfig: Sendable, Equatable {
    /// Rotated values per head (the head dim, or MLA's `qk_rope_head_dim`).
    public var dim = 0
    public var yarn: YarnScaling?
    /// DeepSeek pairs value `2i` with `2i + 1`; Hugging Face's rotate-half
    /// convention pairs `i` with `i + dim/2`.
    public var interleaved = false

    public init() {}
}

/// YaRN (NTK-by-parts) RoPE scaling, as transformers computes it: low
/// frequencies are interpolated by `factor`, high ones kept, with a linear
/// ramp between the correction dims of `betaFast` and `betaSlow` rotations;
/// cos and sin are scaled by `attentionFactor`.
public struct YarnScaling: Sendable, Equatable {
    public var factor: Double
    public var originalMaxPositions: Int
    public var betaFast: Double
    public var betaSlow: Double
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var attentionFactorOverride: Double?
    public var truncate: Bool

    static func mscaleFactor(_ scale: Double, _ m: Double = 1) -> Double {
        scale <= 1 ? 1 : 0.1 * m * log(scale) + 1
    }

    /// What cos and sin are multiplied by.
    public var attentionFactor: Double {
        if let a = attentionFactorOverride { return a }
        if let m = mscale, let all = mscaleAllDim, m != 0, all != 0 {
            return YarnScaling.mscaleFactor(factor, m) / YarnScaling.mscaleFactor(factor, all)
        }
        return YarnScaling.mscaleFactor(factor)
    }

    /// DeepSeek's extra softmax scale: `mscale(factor, mscale_all_dim)²`.
    public var softmaxScaleMultiplier: Double {
        guard let all = mscaleAllDim, all != 0 else { return 1 }
        let m = YarnScaling.mscaleFactor(factor, all)
        return m * m
    }

    public func inverseFrequencies(dim: Int, theta: Double) -> [Float] {
        func correctionDim(_ rotations: Double) -> Double {
            Double(dim) * log(Double(originalMaxPositions) / (rotations * 2 * Double.pi)) / (2 * log(theta))
        }
        var low = correctionDim(betaFast), high = correctionDim(betaSlow)
        if truncate { low = low.rounded(.down); high = high.rounded(.up) }
        low = max(low, 0)
        high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }
        return (0..<(dim / 2)).map { i in
            // transformers computes these in float32.
            let pos = powf(Float(theta), Float(2 * i) / Float(dim))
            let extrapolated = 1 / pos, interpolated = 1 / (Float(factor) * pos)
            let ramp = Float(min(max((Double(i) - low) / (high - low), 0), 1))
            let keep = 1 - ramp
            return interpolated * (1 - keep) + extrapolated * keep
        }
    }
}

extension YarnScaling {
    /// From a config's `yarn` RoPE parameters; an absent
    /// `original_max_position_embeddings` is `defaultOriginal`, an absent
    /// `factor` is `maxPositions / original` as transformers derives it.
    init(_ p: RopeParameters, maxPositions: Int, defaultOriginal: Int, file: String) throws {
        let original = p.originalMaxPositionEmbeddings ?? defaultOriginal
        guard let factor = p.factor ?? p.originalMaxPositionEmbeddings.map({ Double(maxPositions) / Double($0) }) else {
            throw CheckpointError.invalidConfig(file: file, reason: "rope type \"yarn\" needs \"factor\"")
        }
        self.init(factor: factor, originalMaxPositions: original, betaFast: p.betaFast ?? 32, betaSlow: p.betaSlow ?? 1,
                  mscale: p.mscale, mscaleAllDim: p.mscaleAllDim, attentionFactorOverride: p.attentionFactor,
                  truncate: p.truncate ?? true)
    }
}
