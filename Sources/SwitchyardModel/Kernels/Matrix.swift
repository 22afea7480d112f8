/// A row-major `[rows, cols]` weight matrix (HF `nn.Linear` layout: one row
/// per output feature) that stays in its checkpoint dtype, usually pointing
/// straight into a memory-mapped safetensors file.
public struct Matrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let dtype: DType
    public let data: UnsafeRawPointer

    public init(rows: Int, cols: Int, dtype: DType, data: UnsafeRawPointer) {
        self.rows = rows
        self.cols = cols
        self.dtype = dtype
        self.data = data
    }

    public var byteCount: Int { rows * cols * dtype.byteSize }

    /// Rows `range` of this matrix, sharing its storage.
    public func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, dtype: dtype, data: data + range.lowerBound * cols * dtype.byteSize)
    }

    /// Copies row `r` into `dst` as Float32 (embedding lookup).
    public func copyRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        convertToFloat(data + r * cols * dtype.byteSize, dtype: dtype, count: cols, into: dst)
    }
}
