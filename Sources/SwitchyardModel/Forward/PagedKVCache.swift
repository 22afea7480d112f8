/// Key/value storage for every layer in fixed-size blocks. A sequence owns a
/// list of block ids (its block table); position `p` of the sequence lives in
/// block `table[p / blockSize]`, slot `p % blockSize`. Block allocation is the
/// serving core's job; this type only stores and addresses.
///
/// Layout: `[layer][block][kvHead][slot][headDim]`, so the keys one head reads
/// for consecutive positions are contiguous within a block.
public final class PagedKVCache: @unchecked Sendable {
    public let numLayers: Int
    public let numBlocks: Int
    public let blockSize: Int
    public let numKVHeads: Int
    public let headDim: Int
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    public init(numLayers: Int, numBlocks: Int, blockSize: Int, numKVHeads: Int, headDim: Int) {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numLayers = numLayers
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        let count = numLayers * numBlocks * blockSize * numKVHeads * headDim
        // Left uninitialised on purpose: attention only reads slots a forward
        // has written, and untouched pages of a large allocation cost no
        // memory until used.
        keys = .allocate(capacity: count)
        values = .allocate(capacity: count)
    }

    public convenience init(config: ModelConfig, numBlocks: Int, blockSize: Int = 16) {
        self.init(numLayers: config.numLayers, numBlocks: numBlocks, blockSize: blockSize,
                  numKVHeads: config.numKVHeads, headDim: config.headDim)
    }

    /// Bytes one block takes across all layers (keys and values).
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int) -> Int {
        2 * config.numLayers * blockSize * config.numKVHeads * config.headDim * MemoryLayout<Float>.size
    }

    public var totalBytes: Int { 2 * numLayers * numBlocks * blockSize * numKVHeads * headDim * MemoryLayout<Float>.size }

    @inline(__always)
    var blockStride: Int { numKVHeads * blockSize * headDim }

    /// Start of the `head` keys (or values) of `block` in `layer`.
    @inline(__always)
    func offset(layer: Int, block: Int, head: Int) -> Int {
        ((layer * numBlocks + block) * numKVHeads + head) * blockSize * headDim
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }
}
