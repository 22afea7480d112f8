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
///
/// A BF16 cache (`storesBF16`, bfloat16 mode, as vLLM keeps the KV cache in
/// the model's dtype) holds its keys and values as BF16 in `keys16` and
/// `values16`: half the memory and half the bytes each decode reads. The
/// values are the ones a Float32 cache holds in that mode (keys and values
/// are rounded to BF16 before their products either way), so attention
/// computes the same sums from either.
public final class PagedKVCache: @unchecked Sendable {
    public let numLayers: Int
    public let numBlocks: Int
    public let blockSize: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let storesValues: Bool
    public let storesBF16: Bool
    private let keyStorage: UnsafeMutableRawPointer
    private let valueStorage: UnsafeMutableRawPointer
    /// Float32 storage (a Float32 cache only).
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>
    /// BF16 storage (a BF16 cache only).
    let keys16: UnsafeMutablePointer<UInt16>
    let values16: UnsafeMutablePointer<UInt16>

    public init(numLayers: Int, numBlocks: Int, blockSize: Int, numKVHeads: Int, headDim: Int, storesValues: Bool = true,
                storesBF16: Bool = false) {
        precondition(numBlocks > 0 && blockSize > 0)
        precondition(!storesBF16 || storesValues, "a latent (MLA) cache is Float32")
        self.numLayers = numLayers
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.storesValues = storesValues
        self.storesBF16 = storesBF16
        let count = numLayers * numBlocks * blockSize * numKVHeads * headDim
        let bytes = count * (storesBF16 ? 2 : 4)
        // Left uninitialised on purpose: attention only reads slots a forward
        // has written, and untouched pages of a large allocation cost no
        // memory until used.
        keyStorage = .allocate(byteCount: bytes, alignment: 64)
        valueStorage = storesValues ? .allocate(byteCount: bytes, alignment: 64) : keyStorage
        // The other element type's pointers point into the unmapped first
        // page: a read through the wrong type faults at once instead of
        // returning another type's bits.
        if storesBF16 {
            keys16 = keyStorage.bindMemory(to: UInt16.self, capacity: count)
            values16 = valueStorage.bindMemory(to: UInt16.self, capacity: count)
            keys = UnsafeMutableRawPointer(bitPattern: 64)!.assumingMemoryBound(to: Float.self)
            values = keys
        } else {
            keys = keyStorage.bindMemory(to: Float.self, capacity: count)
            values = valueStorage.bindMemory(to: Float.self, capacity: count)
            keys16 = UnsafeMutableRawPointer(bitPattern: 64)!.assumingMemoryBound(to: UInt16.self)
            values16 = keys16
        }
    }

    /// A cache for `config`, BF16 where `storesBF16(config:compute:)` says so.
    public convenience init(config: ModelConfig, numBlocks: Int, blockSize: Int = 16, compute: ComputeOptions = .exact) {
        self.init(numLayers: config.numLayers, numBlocks: numBlocks, blockSize: blockSize,
                  numKVHeads: config.numKVHeads, headDim: config.headDim, storesValues: config.latentAttention == nil,
                  storesBF16: Self.storesBF16(config: config, compute: compute))
    }

    /// bfloat16 mode keeps grouped-query caches in BF16; latent (MLA)
    /// caches, whose attention still multiplies in Float32, stay Float32.
    public static func storesBF16(config: ModelConfig, compute: ComputeOptions) -> Bool {
        compute.dtype == .bfloat16 && config.latentAttention == nil
    }

    /// Bytes one element of a cache for `config` under `compute` takes.
    public static func elementBytes(config: ModelConfig, compute: ComputeOptions) -> Int {
        storesBF16(config: config, compute: compute) ? 2 : 4
    }

    /// Bytes one block takes across all layers.
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int, compute: ComputeOptions = .exact) -> Int {
        blockSize * config.kvCacheBytesPerToken(elementBytes: elementBytes(config: config, compute: compute))
    }

    public var totalBytes: Int {
        (storesValues ? 2 : 1) * numLayers * numBlocks * blockSize * numKVHeads * headDim * (storesBF16 ? 2 : 4)
    }

    @inline(__always)
    var blockStride: Int { numKVHeads * blockSize * headDim }

    /// Start (in elements) of the `head` keys (or values) of `block` in `layer`.
    @inline(__always)
    func offset(layer: Int, block: Int, head: Int) -> Int {
        ((layer * numBlocks + block) * numKVHeads + head) * blockSize * headDim
    }

    /// `count` keys (or values) from element `offset` as Float32, whichever
    /// the storage (tests and the Float32 paths).
    func read(values readValues: Bool, offset: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        if storesBF16 {
            convertToFloat(UnsafeRawPointer((readValues ? values16 : keys16) + offset), dtype: .bf16, count: count, into: dst)
        } else {
            dst.update(from: (readValues ? values : keys) + offset, count: count)
        }
    }

    deinit {
        keyStorage.deallocate()
        if storesValues { valueStorage.deallocate() }
    }
}
