/// A row-major `[rows, cols]` weight matrix (HF `nn.Linear` layout: one row
/// per output feature) that stays in its checkpoint dtype, usually pointing
/// straight into a memory-mapped safetensors file.
///
/// An MXFP4 matrix (`dtype == .mxfp4`) points at its 4-bit blocks (`data`,
/// `cols / 2` bytes a row) and E8M0 scales (`scales`, `cols / 32` bytes a
/// row); consecutive rows may be `rowStride` stored rows apart (gpt-oss
/// interleaves gate and up rows in one tensor).
public struct Matrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let dtype: DType
    public let data: UnsafeRawPointer
    public let scales: UnsafeRawPointer?
    public let rowStride: Int

    public init(rows: Int, cols: Int, dtype: DType, data: UnsafeRawPointer, scales: UnsafeRawPointer? = nil, rowStride: Int = 1) {
        self.rows = rows
        self.cols = cols
        self.dtype = dtype
        self.data = data
        self.scales = scales
        self.rowStride = rowStride
    }

    /// Bytes one row takes (for MXFP4: its blocks and its scales).
    @inline(__always)
    public var rowBytes: Int { dtype == .mxfp4 ? cols / 2 + cols / 32 : cols * dtype.byteSize }
    public var byteCount: Int { rows * rowBytes }

    /// Rows `range` of this matrix, sharing its storage.
    public func rows(_ range: Range<Int>) -> Matrix {
        if dtype == .mxfp4 {
            let r = range.lowerBound * rowStride
            return Matrix(rows: range.count, cols: cols, dtype: dtype, data: data + r * (cols / 2),
                          scales: scales! + r * (cols / 32), rowStride: rowStride)
        }
        return Matrix(rows: range.count, cols: cols, dtype: dtype, data: data + range.lowerBound * cols * dtype.byteSize)
    }

    /// Copies this matrix into `byteCount` bytes at `dst` (rows contiguous;
    /// an MXFP4 matrix's blocks, then its scales) and returns the copy.
    public func copy(to dst: UnsafeMutableRawPointer) -> Matrix {
        guard dtype == .mxfp4 else {
            dst.copyMemory(from: data, byteCount: byteCount)
            return Matrix(rows: rows, cols: cols, dtype: dtype, data: UnsafeRawPointer(dst))
        }
        let blockBytes = cols / 2, scaleBytes = cols / 32
        let scalesOut = dst + rows * blockBytes
        for r in 0..<rows {
            (dst + r * blockBytes).copyMemory(from: data + r * rowStride * blockBytes, byteCount: blockBytes)
            (scalesOut + r * scaleBytes).copyMemory(from: scales! + r * rowStride * scaleBytes, byteCount: scaleBytes)
        }
        return Matrix(rows: rows, cols: cols, dtype: .mxfp4, data: UnsafeRawPointer(dst), scales: UnsafeRawPointer(scalesOut))
    }

    /// Every other row starting at `phase` (0 or 1), sharing storage.
    public func interleavedRows(phase: Int) -> Matrix {
        precondition(dtype == .mxfp4, "interleaved views are for MXFP4 matrices")
        let r = phase * rowStride
        return Matrix(rows: rows / 2, cols: cols, dtype: dtype, data: data + r * (cols / 2),
                      scales: scales! + r * (cols / 32), rowStride: 2 * rowStride)
    }

    /// Copies row `r` into `dst` as Float32 (embedding lookup).
    public func copyRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        widenRows(r, count: 1, into: dst)
    }

    /// Rows `r0 ..< r0 + n` as Float32, `[n, cols]` (weight tiles, embedding rows).
    public func widenRows(_ r0: Int, count n: Int, into dst: UnsafeMutablePointer<Float>) {
        if dtype == .mxfp4 {
            MXFP4.dequantizeRows(self, r0, count: n, into: dst)
        } else {
            convertToFloat(data + r0 * cols * dtype.byteSize, dtype: dtype, count: n * cols, into: dst)
        }
    }

    /// Rows `r0 ..< r0 + n` as BF16 (weight tiles of a BF16 product); MXFP4
    /// values are exact in BF16.
    func narrowRows(_ r0: Int, count n: Int, into dst: UnsafeMutablePointer<UInt16>,
                    scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
        if dtype == .mxfp4 {
            MXFP4.dequantizeRowsToBF16(self, r0, count: n, into: dst, scratch: scratch)
        } else {
            convertToBF16(data + r0 * cols * dtype.byteSize, dtype: dtype, count: n * cols, into: dst,
                          scratch: scratch, scratchCount: scratchCount)
        }
    }
}
