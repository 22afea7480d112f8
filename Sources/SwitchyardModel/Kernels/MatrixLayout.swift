import CKernels
import Foundation

/// How a matrix's values lie in memory.
public enum MatrixLayout: Sendable, Equatable {
    /// As Hugging Face stores an `nn.Linear` weight: `[rows, cols]`, one
    /// output row after another.
    case rowMajor
    /// BF16 packed for the products, as oneDNN's BF16 matmul reads weights
    /// (its format BA16a64b2a; `CKernels/packed.c`): output rows in blocks
    /// of 64, each block's columns in pairs, a pair of every row after
    /// another. oneDNN multiplies it without reordering the weights on every
    /// call (1.2-2x at 8-64 tokens), and the direct kernel streams each
    /// block front to back. Rows a multiple of 64, columns of 16.
    case packedBF16
}

extension Matrix {
    /// Whether `packed(into:)` takes this matrix: row-major BF16, rows a
    /// multiple of 64 and columns of 16.
    public var canPack: Bool {
        dtype == .bf16 && layout == .rowMajor && rowStride == 1 && rows % 64 == 0 && cols % 16 == 0
    }

    /// This matrix packed (`MatrixLayout.packedBF16`) into `byteCount`
    /// bytes at `dst`, which must outlive the result.
    public func packed(into dst: UnsafeMutableRawPointer) -> Matrix {
        precondition(canPack, "only row-major BF16 matrices with rows a multiple of 64 and columns of 16 pack")
        sy_packed_bf16_pack(data.assumingMemoryBound(to: UInt16.self), rows, cols, dst.assumingMemoryBound(to: UInt16.self))
        return Matrix(rows: rows, cols: cols, dtype: .bf16, data: UnsafeRawPointer(dst), layout: .packedBF16)
    }

    /// Asks the kernel to reclaim the whole pages under this matrix
    /// (`MADV_PAGEOUT`): once packed, the stored experts are not read until
    /// a float32 mode asks for them again, and without this the pages they
    /// faulted in while packing would stay in this process's resident set
    /// beside the packed copy. Contents are kept: a mapped checkpoint's
    /// pages are read back from the file, anonymous ones from swap. A kernel
    /// without `MADV_PAGEOUT` (before Linux 5.4) ignores it.
    public func releasePages() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: data) + page - 1) / page * page
        let end = (Int(bitPattern: data) + byteCount) / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, MADV_PAGEOUT)
    }

    /// This matrix's values in row-major order (`byteCount` bytes at `dst`),
    /// whatever its layout: for consumers of Hugging Face's layout (a GPU's
    /// BLAS). MXFP4 matrices come out as `copy(to:)` writes them.
    public func writeRowMajor(to dst: UnsafeMutableRawPointer) {
        if layout == .packedBF16 || dtype != .mxfp4 {
            writeRowMajor(rows: 0..<rows, to: dst)
        } else {
            _ = copy(to: dst)
        }
    }

    /// Rows `range` of `writeRowMajor(to:)`, written where that call writes
    /// them (`dst` is the whole matrix's destination), so threads can split
    /// one matrix. BF16 and Float32 matrices.
    public func writeRowMajor(rows range: Range<Int>, to dst: UnsafeMutableRawPointer) {
        precondition(dtype != .mxfp4, "row ranges of MXFP4 matrices are not written row-major")
        let rowBytes = cols * dtype.byteSize
        if layout == .packedBF16 {
            sy_packed_bf16_unpack_rows(data.assumingMemoryBound(to: UInt16.self), cols, range.lowerBound, range.count,
                                       (dst + range.lowerBound * rowBytes).assumingMemoryBound(to: UInt16.self))
        } else if rowStride == 1 {
            (dst + range.lowerBound * rowBytes).copyMemory(from: data + range.lowerBound * rowBytes, byteCount: range.count * rowBytes)
        } else {
            for r in range { (dst + r * rowBytes).copyMemory(from: data + r * rowStride * rowBytes, byteCount: rowBytes) }
        }
    }
}

/// Memory for packed weights, owned by the `ModelWeights` whose matrices
/// point into it. Aligned to 2 MiB and offered to transparent huge pages:
/// the experts are read in long streams, and a 4 KiB page per 4 KiB read
/// costs TLB misses the mapped checkpoint already pays.
public final class PackedWeightStore: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let bytes: Int

    public struct AllocationError: Error, CustomStringConvertible {
        public let bytes: Int
        public var description: String {
            "cannot allocate \(bytes) bytes to pack the expert weights; free memory, or keep them as stored with --expert-layout stored"
        }
    }

    public init(bytes: Int) throws {
        var p: UnsafeMutableRawPointer?
        let alignment = 2 << 20
        guard posix_memalign(&p, alignment, max(bytes, 1)) == 0, let p else { throw AllocationError(bytes: bytes) }
        _ = madvise(p, bytes, MADV_HUGEPAGE)
        base = p
        self.bytes = bytes
    }

    deinit { free(base) }
}
