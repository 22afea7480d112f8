/// Hands out KV-cache block ids from a fixed pool. A sequence's blocks form
/// its block table; freeing returns them for reuse. Not thread-safe: only the
/// engine loop touches it.
public struct BlockAllocator: Sendable {
    public let numBlocks: Int
    public let blockSize: Int
    private var free: [Int32]

    public init(numBlocks: Int, blockSize: Int) {
        precondition(numBlocks > 0 && blockSize > 0)
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        // Pop from the end: low ids first.
        free = (0..<Int32(numBlocks)).reversed().map { $0 }
    }

    public var freeBlocks: Int { free.count }
    public var usedBlocks: Int { numBlocks - free.count }
    public var usage: Double { Double(usedBlocks) / Double(numBlocks) }

    /// Blocks needed to hold `tokens` positions.
    public func blocks(forTokens tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Grows `table` to cover `tokens` positions; false (and no change) if
    /// the pool has too few free blocks.
    public mutating func ensure(_ table: inout [Int32], coveringTokens tokens: Int) -> Bool {
        let needed = blocks(forTokens: tokens) - table.count
        if needed <= 0 { return true }
        if needed > free.count { return false }
        for _ in 0..<needed { table.append(free.removeLast()) }
        return true
    }

    public mutating func release(_ table: inout [Int32]) {
        free.append(contentsOf: table.reversed())
        table.removeAll()
    }
}
