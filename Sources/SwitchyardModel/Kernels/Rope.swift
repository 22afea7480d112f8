import Foundation

/// Rotary position embedding. Angles are computed in Float32 exactly as
/// transformers does (`inv_freq` in fp32, `position * inv_freq` in fp32), so
/// long positions round the same way.
///
/// Pair layout: Hugging Face's rotate-half convention rotates value `i` with
/// value `i + dim/2`; DeepSeek's interleaved one rotates `2i` with `2i + 1`.
/// YaRN scaling changes the frequencies and scales cos and sin.
public struct Rope: Sendable {
    /// Rotated values per head.
    public let headDim: Int
    public let invFreq: [Float]
    public let interleaved: Bool
    /// YaRN's attention factor (1 without scaling), folded into cos and sin.
    public let attentionFactor: Float

    public init(headDim: Int, theta: Float) {
        self.headDim = headDim
        let half = headDim / 2
        invFreq = (0..<half).map { i in 1 / powf(theta, Float(2 * i) / Float(headDim)) }
        interleaved = false
        attentionFactor = 1
    }

    public init(config c: ModelConfig) {
        headDim = c.rope.dim
        interleaved = c.rope.interleaved
        if let yarn = c.rope.yarn {
            invFreq = yarn.inverseFrequencies(dim: c.rope.dim, theta: Double(c.ropeTheta))
            attentionFactor = Float(yarn.attentionFactor)
        } else {
            invFreq = (0..<(c.rope.dim / 2)).map { i in 1 / powf(c.ropeTheta, Float(2 * i) / Float(c.rope.dim)) }
            attentionFactor = 1
        }
    }

    /// Fills `cos`/`sin` (each `headDim / 2` values) for `position`.
    @inline(__always)
    public func angles(position: Int, cos c: UnsafeMutablePointer<Float>, sin s: UnsafeMutablePointer<Float>) {
        let p = Float(position)
        for i in 0..<invFreq.count {
            let a = p * invFreq[i]
            c[i] = cosf(a) * attentionFactor
            s[i] = sinf(a) * attentionFactor
        }
    }

    /// Rotates `heads` head vectors at `x` in place, head `h` starting at
    /// `x + h * stride` (default: packed heads of `headDim`).
    @inline(__always)
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, stride: Int? = nil,
                      cos c: UnsafePointer<Float>, sin s: UnsafePointer<Float>) {
        let half = headDim / 2, stride = stride ?? headDim
        for h in 0..<heads {
            let v = x + h * stride
            if interleaved {
                for i in 0..<half {
                    let a = v[2 * i], b = v[2 * i + 1]
                    v[2 * i] = a * c[i] - b * s[i]
                    v[2 * i + 1] = b * c[i] + a * s[i]
                }
            } else {
                for i in 0..<half {
                    let a = v[i], b = v[i + half]
                    v[i] = a * c[i] - b * s[i]
                    v[i + half] = b * c[i] + a * s[i]
                }
            }
        }
    }
}
