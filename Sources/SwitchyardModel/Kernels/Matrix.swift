import CKernels

/// A row-major `[rows, cols]` weight matrix (HF `nn.Linear` layout: one row
/// per output feature) that stays in its checkpoint dtype, usually pointing
/// straight into a memory-mapped safetensors file.
///
/// An MXFP4 matrix (`dtype == .mxfp4`) points at its 4-bit blocks (`data`,
/// `cols / 2` bytes a row) and E8M0 scales (`scales`, `cols / 32` bytes a
/// row); consecutive rows may be `rowStride` stored rows apart (gpt-oss
/// interleaves gate and up rows in one tensor).
///
/// A BF16 matrix may instead be packed for the products (`layout ==
/// .packedBF16`, see `MatrixLayout`); every kernel reads both layouts.
public struct Matrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let dtype: DType
    public let data: UnsafeRawPointer
    public let scales: UnsafeRawPointer?
    public let rowStride: Int
    public let layout: MatrixLayout

    public init(rows: Int, cols: Int, dtype: DType, data: UnsafeRawPointer, scales: UnsafeRawPointer? = nil, rowStride: Int = 1,
                layout: MatrixLayout = .rowMajor) {
        precondition(layout == .rowMajor || (dtype == .bf16 && rows % 64 == 0 && cols % 16 == 0),
                     "packed matrices are BF16 with rows a multiple of 64 and columns of 16")
        self.rows = rows
        self.cols = cols
        self.dtype = dtype
        self.data = data
        self.scales = scales
        self.rowStride = rowStride
        self.layout = layout
    }

    /// Row ranges that split this matrix without cutting a stored block:
    /// 64 for a packed matrix (`rows(_:)` and the GEMM path need it; the
    /// direct kernels take any range but read whole blocks), else 1.
    @inline(__always)
    public var rowAlignment: Int { layout == .packedBF16 ? 64 : 1 }

    /// Bytes one row takes (for MXFP4: its blocks and its scales).
    @inline(__always)
    public var rowBytes: Int { dtype == .mxfp4 ? cols / 2 + cols / 32 : cols * dtype.byteSize }
    public var byteCount: Int { rows * rowBytes }

    /// Rows `range` of this matrix, sharing its storage. A packed matrix
    /// splits at multiples of 64 rows only.
    public func rows(_ range: Range<Int>) -> Matrix {
        if layout == .packedBF16 {
            precondition(range.lowerBound % 64 == 0 && range.upperBound % 64 == 0,
                         "a packed matrix splits at multiples of 64 rows, not \(range)")
            return Matrix(rows: range.count, cols: cols, dtype: dtype, data: data + range.lowerBound * cols * 2,
                          layout: .packedBF16)
        }
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
            return Matrix(rows: rows, cols: cols, dtype: dtype, data: UnsafeRawPointer(dst), layout: layout)
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
        if layout == .packedBF16 {
            sy_packed_bf16_widen_rows(data.assumingMemoryBound(to: UInt16.self), cols, r0, n, dst)
        } else if dtype == .mxfp4 {
            MXFP4.dequantizeRows(self, r0, count: n, into: dst)
        } else {
            convertToFloat(data + r0 * cols * dtype.byteSize, dtype: dtype, count: n * cols, into: dst)
        }
    }

    /// Rows `r0 ..< r0 + n` as BF16 (weight tiles of a BF16 product); MXFP4
    /// values are exact in BF16.
    func narrowRows(_ r0: Int, count n: Int, into dst: UnsafeMutablePointer<UInt16>,
                    scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
        if layout == .packedBF16 {
            sy_packed_bf16_unpack_rows(data.assumingMemoryBound(to: UInt16.self), cols, r0, n, dst)
        } else if dtype == .mxfp4 {
            MXFP4.dequantizeRowsToBF16(self, r0, count: n, into: dst, scratch: scratch)
        } else {
            convertToBF16(data + r0 * cols * dtype.byteSize, dtype: dtype, count: n * cols, into: dst,
                          scratch: scratch, scratchCount: scratchCount)
        }
    }
}
