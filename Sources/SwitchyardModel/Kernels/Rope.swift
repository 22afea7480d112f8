import Foundation

/// Rotary position embedding in Hugging Face's rotate-half convention: value
/// `i` pairs with value `i + d/2`. Angles are computed in Float32 exactly as
/// transformers does (`inv_freq` in fp32, `position * inv_freq` in fp32), so
/// long positions round the same way.
public struct Rope: Sendable {
    public let headDim: Int
    public let invFreq: [Float]

    public init(headDim: Int, theta: Float) {
        self.headDim = headDim
        let half = headDim / 2
        invFreq = (0..<half).map { i in 1 / powf(theta, Float(2 * i) / Float(headDim)) }
    }

    /// Fills `cos`/`sin` (each `headDim / 2` values) for `position`.
    @inline(__always)
    public func angles(position: Int, cos c: UnsafeMutablePointer<Float>, sin s: UnsafeMutablePointer<Float>) {
        let p = Float(position)
        for i in 0..<invFreq.count {
            let a = p * invFreq[i]
            c[i] = cosf(a)
            s[i] = sinf(a)
        }
    }

    /// Rotates `heads` consecutive head vectors at `x` in place.
    @inline(__always)
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, cos c: UnsafePointer<Float>, sin s: UnsafePointer<Float>) {
        let half = headDim / 2
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let a = v[i], b = v[i + half]
                v[i] = a * c[i] - b * s[i]
                v[i + half] = b * c[i] + a * s[i]
            }
        }
    }
}
