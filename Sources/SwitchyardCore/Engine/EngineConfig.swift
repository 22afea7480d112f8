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

    /// Capacity from a memory budget, at least one full-length sequence.
    public static func fromMemory(model: ModelConfig, kvCacheBytes: Int, maxModelLen: Int, blockSize: Int = 16) -> EngineConfig {
        let perBlock = PagedKVCache.bytesPerBlock(config: model, blockSize: blockSize)
        return EngineConfig(maxModelLen: maxModelLen, blockSize: blockSize, numKVBlocks: max(1, kvCacheBytes / perBlock))
    }
}
