import SwitchyardModel

/// Engine-level settings (vLLM's names where they exist).
public struct EngineConfig: Sendable {
    /// Longest prompt + output a request may have.
    public var maxModelLen: Int
    public var blockSize: Int
    /// KV-cache capacity in blocks.
    public var numKVBlocks: Int

    public init(maxModelLen: Int, blockSize: Int = 16, numKVBlocks: Int) {
        self.maxModelLen = maxModelLen
        self.blockSize = blockSize
        self.numKVBlocks = numKVBlocks
    }

    /// Capacity from a memory budget, at least one full-length sequence
    /// (a BF16 cache, bfloat16 mode, holds twice the blocks).
    public static func fromMemory(model: ModelConfig, kvCacheBytes: Int, maxModelLen: Int, blockSize: Int = 16,
                                  compute: ComputeOptions = .exact) -> EngineConfig {
        let perBlock = PagedKVCache.bytesPerBlock(config: model, blockSize: blockSize, compute: compute)
        return EngineConfig(maxModelLen: maxModelLen, blockSize: blockSize, numKVBlocks: max(1, kvCacheBytes / perBlock))
    }
}
