/// Key/value storage for every layer in fixed-size blocks. A sequence owns a
/// list of block ids (its block table); position `p` of the sequence lives in
/// block `table[p / blockSize]`, slot `p % blockSize`. Block allocation is the
/// serving core's job; this type only stores and addresses.
///
/// Layout: `[layer][block][kvHead][slot][headDim]`, so the keys one head reads
/// for consecutive positions are contiguous within a block.
///
/// Multi-head latent attention caches one row per token (the latent and the
/// rotated key, `headDim` wide, one "head") that serves as both key and
/// value, so such a cache has no separate values (`storesValues` false) and
/// `values` aliases `keys`.
public final class PagedKVCache: @unchecked Sendable {
    public let numLayers: Int
    public let numBlocks: Int
    public let blockSize: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let storesValues: Bool
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    public init(numLayers: Int, numBlocks: Int, blockSize: Int, numKVHeads: Int, headDim: Int, storesValues: Bool = true) {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numLayers = numLayers
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.storesValues = storesValues
        let count = numLayers * numBlocks * blockSize * numKVHeads * headDim
        // Left uninitialised on purpose: attention only reads slots a forward
        // has written, and untouched pages of a large allocation cost no
        // memory until used.
        keys = .allocate(capacity: count)
        values = storesValues ? .allocate(capacity: count) : keys
    }

    public convenience init(config: ModelConfig, numBlocks: Int, blockSize: Int = 16) {
        self.init(numLayers: config.numLayers, numBlocks: numBlocks, blockSize: blockSize,
                  numKVHeads: config.numKVHeads, headDim: config.headDim, storesValues: config.latentAttention == nil)
    }

    /// Bytes one block takes across all layers.
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int) -> Int {
        blockSize * config.kvCacheBytesPerToken
    }

    public var totalBytes: Int {
        (storesValues ? 2 : 1) * numLayers * numBlocks * blockSize * numKVHeads * headDim * MemoryLayout<Float>.size
    }

    @inline(__always)
    var blockStride: Int { numKVHeads * blockSize * headDim }

    /// Start of the `head` keys (or values) of `block` in `layer`.
    @inline(__always)
    func offset(layer: Int, block: Int, head: Int) -> Int {
        ((layer * numBlocks + block) * numKVHeads + head) * blockSize * headDim
    }

    deinit {
        keys.deallocate()
        if storesValues { values.deallocate() }
    }
}
