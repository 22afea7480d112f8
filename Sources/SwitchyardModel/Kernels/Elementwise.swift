import CKernels
import Foundation

/// Small per-row kernels of the forward pass. Each works on one row so the
/// caller decides how rows are spread over threads.
public enum Elementwise {
    /// `out = x / sqrt(mean(x²) + eps) * weight`, over `n` values (HF RMSNorm, fp32).
    @inline(__always)
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float, n: Int,
                               out: UnsafeMutablePointer<Float>) {
        let xr = UnsafeRawPointer(x)
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let v = (xr + 4 * i).loadUnaligned(as: SIMD8<Float>.self)
            acc.addProduct(v, v)
            i += 8
        }
        var ss = acc.sum()
        while i < n { ss += x[i] * x[i]; i += 1 }
        let scale = 1 / (ss / Float(n) + eps).squareRoot()
        for j in 0..<n { out[j] = weight[j] * (x[j] * scale) }
    }

    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }

    @inline(__always)
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// `gate[i] = silu(gate[i]) * up[i]`: the SwiGLU combine, on glibc's
    /// vector expf (with it a prefill's feed-forward phase took 0.90x the
    /// time of the scalar loop).
    @inline(__always)
    public static func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, n: Int) {
        sy_swiglu_f32(gate, up, n)
    }

    /// In-place softmax over `n` values, in fp32 like torch, on glibc's
    /// vector expf: with it prefill attention took 0.56x the time of the
    /// scalar loop (docs/results/before-after-vector-exp).
    @inline(__always)
    public static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int) {
        sy_softmax_f32(x, n, 0, 0)
    }

    /// Softmax over `n` values plus one extra logit `sink` that takes its
    /// share of the mass and is then dropped (gpt-oss attention sinks):
    /// `x[i] = e^x[i] / (e^sink + Σ e^x[j])`.
    @inline(__always)
    public static func softmax(_ x: UnsafeMutablePointer<Float>, n: Int, sink: Float) {
        sy_softmax_f32(x, n, 1, sink)
    }

    /// `y += a * x` over `n` values.
    @inline(__always)
    public static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int) {
        let av = SIMD8<Float>(repeating: a)
        let xr = UnsafeRawPointer(x)
        let yr = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 8 <= n {
            var v = (yr + 4 * i).loadUnaligned(as: SIMD8<Float>.self)
            v.addProduct(av, (xr + 4 * i).loadUnaligned(as: SIMD8<Float>.self))
            (yr + 4 * i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { y[i] += a * x[i]; i += 1 }
    }

    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, n: Int) -> Float {
        let ar = UnsafeRawPointer(a), br = UnsafeRawPointer(b)
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc.addProduct((ar + 4 * i).loadUnaligned(as: SIMD8<Float>.self), (br + 4 * i).loadUnaligned(as: SIMD8<Float>.self))
            i += 8
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// `dot(a, widen(b))` for BF16 `b` (a BF16 KV cache), summed in the
    /// same order as `dot`, so the result equals `dot` over the widened values.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<UInt16>, n: Int) -> Float {
        let ar = UnsafeRawPointer(a), br = UnsafeRawPointer(b)
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc.addProduct((ar + 4 * i).loadUnaligned(as: SIMD8<Float>.self), widenBF16((br + 2 * i).loadUnaligned(as: SIMD8<UInt16>.self)))
            i += 8
        }
        var s = acc.sum()
        while i < n { s += a[i] * widenBF16(b[i]); i += 1 }
        return s
    }

    /// `y += a * widen(x)` for BF16 `x`, as `axpy` over the widened values.
    @inline(__always)
    public static func axpy(_ a: Float, _ x: UnsafePointer<UInt16>, _ y: UnsafeMutablePointer<Float>, n: Int) {
        let av = SIMD8<Float>(repeating: a)
        let xr = UnsafeRawPointer(x)
        let yr = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 8 <= n {
            var v = (yr + 4 * i).loadUnaligned(as: SIMD8<Float>.self)
            v.addProduct(av, widenBF16((xr + 2 * i).loadUnaligned(as: SIMD8<UInt16>.self)))
            (yr + 4 * i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { y[i] += a * widenBF16(x[i]); i += 1 }
    }
}
