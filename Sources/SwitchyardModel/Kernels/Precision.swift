/// Widening of 16-bit weight formats to Float32. BF16 is the top half of an
/// IEEE float, so widening is a shift; F16 uses the hardware conversion (F16C
/// on x86-64-v3).
@inline(__always)
func widenBF16(_ v: SIMD8<UInt16>) -> SIMD8<Float> {
    // Interleave a zero below each value: the BF16 bits land in the top half
    // of each 32-bit lane (vpunpcklwd), with no generic conversion call.
    var z = SIMD16<UInt16>()
    z.oddHalf = v
    return unsafeBitCast(z, to: SIMD8<Float>.self)
}

@inline(__always)
func widenBF16(_ v: UInt16) -> Float {
    Float(bitPattern: UInt32(v) << 16)
}

/// Round-to-nearest-even narrowing, as torch does for `.to(torch.bfloat16)`.
@inline(__always)
public func narrowToBF16(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return 0x7FC0 }
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

@inline(__always)
func widenF16(_ v: SIMD8<UInt16>) -> SIMD8<Float> {
    #if arch(x86_64) || arch(arm64)
    return SIMD8<Float>(unsafeBitCast(v, to: SIMD8<Float16>.self))
    #else
    var out = SIMD8<Float>()
    for i in 0..<8 { out[i] = widenF16(v[i]) }
    return out
    #endif
}

@inline(__always)
func widenF16(_ v: UInt16) -> Float {
    #if arch(x86_64) || arch(arm64)
    return Float(Float16(bitPattern: v))
    #else
    // IEEE half to single by hand, for targets without Float16.
    let sign = UInt32(v & 0x8000) << 16
    var exp = Int32((v >> 10) & 0x1F)
    var mant = UInt32(v & 0x3FF)
    if exp == 0 {
        if mant == 0 { return Float(bitPattern: sign) }
        while mant & 0x400 == 0 { mant <<= 1; exp -= 1 }
        exp += 1; mant &= 0x3FF
    } else if exp == 31 {
        return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
    }
    return Float(bitPattern: sign | UInt32(exp + 112) << 23 | (mant << 13))
    #endif
}

/// Converts `count` elements of `dtype` at `src` to Float32 at `dst`.
public func convertToFloat(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .bf16:
        var i = 0
        while i + 8 <= count {
            let v = (src + 2 * i).loadUnaligned(as: SIMD8<UInt16>.self)
            UnsafeMutableRawPointer(dst + i).storeBytes(of: widenBF16(v), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = widenBF16((src + 2 * i).loadUnaligned(as: UInt16.self)); i += 1 }
    case .f16:
        var i = 0
        while i + 8 <= count {
            let v = (src + 2 * i).loadUnaligned(as: SIMD8<UInt16>.self)
            UnsafeMutableRawPointer(dst + i).storeBytes(of: widenF16(v), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = widenF16((src + 2 * i).loadUnaligned(as: UInt16.self)); i += 1 }
    case .u8:
        for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
    case .mxfp4:
        preconditionFailure("MXFP4 matrices widen through Matrix.widenRows (their scales live apart from the blocks)")
    }
}

/// A 16-bit weight format the matrix-vector kernel is specialised for.
protocol HalfWidthFormat {
    static func widen(_ v: SIMD8<UInt16>) -> SIMD8<Float>
    static func widen(_ v: UInt16) -> Float
}

enum BF16Format: HalfWidthFormat {
    @inline(__always) static func widen(_ v: SIMD8<UInt16>) -> SIMD8<Float> { widenBF16(v) }
    @inline(__always) static func widen(_ v: UInt16) -> Float { widenBF16(v) }
}

enum F16Format: HalfWidthFormat {
    @inline(__always) static func widen(_ v: SIMD8<UInt16>) -> SIMD8<Float> { widenF16(v) }
    @inline(__always) static func widen(_ v: UInt16) -> Float { widenF16(v) }
}

/// Narrows `count` Float32 values to BF16 (round to nearest even, as
/// `narrowToBF16`), 16 at a time.
public func narrowToBF16(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) {
    var i = 0
    let one = SIMD16<UInt32>(repeating: 1), bias = SIMD16<UInt32>(repeating: 0x7FFF)
    while i + 16 <= count {
        let bits = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<UInt32>.self)
        let rounded = (bits &+ bias &+ ((bits &>> 16) & one)) &>> 16
        UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: rounded), as: SIMD16<UInt16>.self)
        i += 16
    }
    while i < count { dst[i] = narrowToBF16(src[i]); i += 1 }
}

/// Rounds `count` Float32 values to the nearest BF16 value, keeping them as
/// Float32 (what the direct kernel multiplies in bfloat16 mode).
public func roundThroughBF16(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<Float>) {
    var i = 0
    let one = SIMD16<UInt32>(repeating: 1), bias = SIMD16<UInt32>(repeating: 0x7FFF)
    let mask = SIMD16<UInt32>(repeating: 0xFFFF_0000)
    while i + 16 <= count {
        let bits = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<UInt32>.self)
        let rounded = (bits &+ bias &+ ((bits &>> 16) & one)) & mask
        UnsafeMutableRawPointer(dst + i).storeBytes(of: rounded, as: SIMD16<UInt32>.self)
        i += 16
    }
    while i < count { dst[i] = widenBF16(narrowToBF16(src[i])); i += 1 }
}

/// Converts `count` 16-bit or Float32 weights to BF16 (weight tiles for a
/// BF16 product when the checkpoint is not BF16).
func convertToBF16(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<UInt16>,
                   scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
    switch dtype {
    case .bf16:
        dst.update(from: src.assumingMemoryBound(to: UInt16.self), count: count)
    case .f32:
        narrowToBF16(src.assumingMemoryBound(to: Float.self), count: count, into: dst)
    case .f16:
        var i = 0
        while i < count {
            let n = min(scratchCount, count - i)
            convertToFloat(src + 2 * i, dtype: .f16, count: n, into: scratch)
            narrowToBF16(scratch, count: n, into: dst + i)
            i += n
        }
    case .u8, .mxfp4:
        preconditionFailure("BF16 tiles of \(dtype) weights come from Matrix.narrowRows")
    }
}
