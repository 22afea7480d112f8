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
    static let tileBytes = 1 << 20

    public init(options: ComputeOptions = .exact) {
        self.options = options
    }

    /// Per-thread regions for `threads` single-threaded products at once,
    /// with activations up to `inputElements` each. Call before the fork.
    func reservePerThread(threads: Int, inputElements: Int) -> (tiles: UnsafeMutableRawPointer, inputs: UnsafeMutableRawPointer) {
        (tiles.reserve(GemmContext.tileBytes * threads), inputs.reserve(inputElements * 2 * threads))
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
