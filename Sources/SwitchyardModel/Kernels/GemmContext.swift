/// One model's matrix-product state: the options in force and the scratch
/// every product needs (weight tiles, activations converted to BF16), each
/// grown once and reused, so the hot path does not allocate.
public final class GemmContext: @unchecked Sendable {
    public internal(set) var options: ComputeOptions

    /// Weight tiles (widened or narrowed), one region per kernel thread.
    let tiles = ByteBuffer()
    /// Activations converted to BF16 for the product in flight, or per
    /// thread for single-threaded products (`cpu-ep`).
    let inputs = ByteBuffer()
    /// Activations rounded through BF16 and kept as Float32, for the direct
    /// kernel in bfloat16 mode.
    let rounded = ScratchBuffer()

    /// Bytes of weight tile per thread: large enough that the GEMM runs at
    /// full speed on it, small enough to stay in L2.
    public static let tileBytes = 1 << 20

    public init(options: ComputeOptions = .exact) {
        self.options = options
    }

    /// Per-thread regions for `threads` single-threaded products at once,
    /// with activations up to `inputElements` each. Call before the fork.
    func reservePerThread(threads: Int, inputElements: Int) -> (tiles: UnsafeMutableRawPointer, inputs: UnsafeMutableRawPointer) {
        (tiles.reserve(GemmContext.tileBytes * threads), inputs.reserve(inputElements * 2 * threads))
    }

    /// Scratch for `threads` single-threaded products at once (`Linear.product`
    /// on threads an executor manages itself), with inputs of up to `tokens`
    /// rows of up to `cols` columns. Call before the fork; grows, never shrinks.
    public func reserveThreadScratch(threads: Int, tokens: Int, cols: Int) -> ThreadScratchSet {
        let inputStride = tokens * cols
        let roundedStride = max(Linear.gemmMinTokens(options), Linear.gemmMinTokens(options, layout: .packedBF16)) * cols
        let (t, i) = reservePerThread(threads: threads, inputElements: inputStride)
        let r = rounded.reserve(threads * roundedStride)
        return ThreadScratchSet(tiles: t, inputs: i.assumingMemoryBound(to: UInt16.self), inputStride: inputStride,
                                rounded: r, roundedStride: roundedStride)
    }
}

/// One thread's scratch for `Linear.product`: a weight tile of
/// `GemmContext.tileBytes`, room to convert its input to BF16, and room to
/// round a direct-kernel input through BF16.
public struct ThreadScratch: @unchecked Sendable {
    public let tile: UnsafeMutableRawPointer
    public let input: UnsafeMutablePointer<UInt16>
    public let rounded: UnsafeMutablePointer<Float>
}

/// Per-thread scratch regions reserved together (`GemmContext.reserveThreadScratch`).
public struct ThreadScratchSet: @unchecked Sendable {
    let tiles: UnsafeMutableRawPointer
    let inputs: UnsafeMutablePointer<UInt16>
    let inputStride: Int
    let rounded: UnsafeMutablePointer<Float>
    let roundedStride: Int

    @inline(__always)
    public func thread(_ part: Int) -> ThreadScratch {
        ThreadScratch(tile: tiles + part * GemmContext.tileBytes, input: inputs + part * inputStride,
                      rounded: rounded + part * roundedStride)
    }
}

/// A reusable raw byte buffer that only grows (64-byte aligned).
final class ByteBuffer: @unchecked Sendable {
    private(set) var pointer: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init() {
        capacity = 64
        pointer = .allocate(byteCount: capacity, alignment: 64)
    }

    @inline(__always)
    func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity {
            pointer.deallocate()
            capacity = max(bytes, capacity * 3 / 2)
            pointer = .allocate(byteCount: capacity, alignment: 64)
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}
