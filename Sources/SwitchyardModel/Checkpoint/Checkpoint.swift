import Foundation

/// A Hugging Face checkpoint directory: `config.json`, one or more
/// `*.safetensors` files (listed by `model.safetensors.index.json` when
/// sharded), and optional tokenizer and generation config files. Tensors are
/// memory-mapped and handed out in their stored dtype.
public final class Checkpoint: @unchecked Sendable {
    public let directory: URL
    public let config: ModelConfig
    public let tensors: [String: TensorRecord]
    /// Copies made for tensors whose mapped bytes are misaligned for their dtype.
    private var ownedCopies: [UnsafeMutableRawPointer] = []
    private let lock = NSLock()

    public static let indexFile = "model.safetensors.index.json"

    public init(directory path: String) throws {
        directory = URL(fileURLWithPath: path).standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw CheckpointError.missingFile(file: directory.path, hint: "pass a checkpoint directory (with config.json and *.safetensors) to --model")
        }
        config = try ModelConfig.load(directory: directory)
        tensors = try Checkpoint.loadTensors(directory: directory)
    }

    static func loadTensors(directory: URL) throws -> [String: TensorRecord] {
        let indexURL = directory.appendingPathComponent(indexFile)
        if FileManager.default.fileExists(atPath: indexURL.path) {
            struct Index: Decodable { var weight_map: [String: String] }
            let index: Index
            do { index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: indexURL)) } catch {
                throw CheckpointError.invalidConfig(file: indexURL.path, reason: ModelConfig.describe(error))
            }
            var byFile: [String: [String]] = [:]
            for (tensor, file) in index.weight_map { byFile[file, default: []].append(tensor) }
            var all: [String: TensorRecord] = [:]
            for (file, names) in byFile.sorted(by: { $0.key < $1.key }) {
                let path = directory.appendingPathComponent(file).path
                guard FileManager.default.fileExists(atPath: path) else {
                    throw CheckpointError.indexNamesMissingFile(index: indexURL.path, tensor: names.sorted()[0], file: file)
                }
                let records = try Safetensors.read(path: path)
                for name in names.sorted() {
                    guard let r = records[name] else {
                        throw CheckpointError.missingTensor(tensor: "\(name) (expected in \(file) by \(indexFile))", directory: directory.path)
                    }
                    all[name] = r
                }
            }
            return all
        }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path))?
            .filter { $0.hasSuffix(".safetensors") }.sorted() ?? []
        guard !files.isEmpty else { throw CheckpointError.noWeights(directory: directory.path) }
        var all: [String: TensorRecord] = [:]
        for file in files {
            for (name, r) in try Safetensors.read(path: directory.appendingPathComponent(file).path) {
                all[name] = r
            }
        }
        return all
    }

    public func has(_ name: String) -> Bool { tensors[name] != nil }

    func record(_ name: String) throws -> TensorRecord {
        guard let r = tensors[name] else {
            throw CheckpointError.missingTensor(tensor: name, directory: directory.path)
        }
        return r
    }

    static func fileName(_ r: TensorRecord) -> String { (r.file.path as NSString).lastPathComponent }

    /// A `[rows, cols]` weight matrix, checked against the shape the config implies.
    public func matrix(_ name: String, rows: Int, cols: Int) throws -> Matrix {
        let r = try record(name)
        guard r.shape == [rows, cols] else {
            throw CheckpointError.wrongShape(file: Checkpoint.fileName(r), tensor: name, expected: [rows, cols], found: r.shape)
        }
        return Matrix(rows: rows, cols: cols, dtype: r.dtype, data: aligned(r))
    }

    /// Expert `expert`'s slice of a fused `[experts, rows, cols]` tensor.
    public func matrix(_ name: String, expert: Int, of experts: Int, rows rowRange: Range<Int>, totalRows: Int, cols: Int) throws -> Matrix {
        let r = try record(name)
        guard r.shape == [experts, totalRows, cols] else {
            throw CheckpointError.wrongShape(file: Checkpoint.fileName(r), tensor: name, expected: [experts, totalRows, cols], found: r.shape)
        }
        let base = aligned(r) + (expert * totalRows + rowRange.lowerBound) * cols * r.dtype.byteSize
        return Matrix(rows: rowRange.count, cols: cols, dtype: r.dtype, data: base)
    }

    /// A 1-D tensor widened to Float32 (norm weights, biases).
    public func vector(_ name: String, count: Int) throws -> [Float] {
        let r = try record(name)
        guard r.shape == [count] else {
            throw CheckpointError.wrongShape(file: Checkpoint.fileName(r), tensor: name, expected: [count], found: r.shape)
        }
        return [Float](unsafeUninitializedCapacity: count) { buf, n in
            convertToFloat(r.data, dtype: r.dtype, count: count, into: buf.baseAddress!)
            n = count
        }
    }

    /// `w` transposed, in its own dtype, in memory this checkpoint owns: for
    /// weights the forward needs the other way round (MLA's absorbed keys).
    /// Elements are moved bit for bit, so the values are exactly the stored ones.
    public func transposed(_ w: Matrix) -> Matrix {
        let copy = UnsafeMutableRawPointer.allocate(byteCount: max(w.byteCount, 1), alignment: 64)
        Checkpoint.gather(from: w.data, into: copy, count: w.rows * w.cols, size: w.dtype.byteSize) { i in
            let c = i / w.rows, r = i % w.rows
            return r * w.cols + c
        }
        lock.lock()
        ownedCopies.append(copy)
        lock.unlock()
        return Matrix(rows: w.cols, cols: w.rows, dtype: w.dtype, data: UnsafeRawPointer(copy))
    }

    /// `dst[j] = src[source(j)]` for `count` elements of `size` bytes, typed
    /// so each element is one load and one store.
    static func gather(from src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer, count: Int, size: Int,
                       _ source: (Int) -> Int) {
        func run<T>(_: T.Type) {
            let s = src.assumingMemoryBound(to: T.self), d = dst.assumingMemoryBound(to: T.self)
            for j in 0..<count { d[j] = s[source(j)] }
        }
        switch size {
        case 2: run(UInt16.self)
        case 4: run(UInt32.self)
        default:
            for j in 0..<count { (dst + j * size).copyMemory(from: src + source(j) * size, byteCount: size) }
        }
    }

    /// A `[count, length]` tensor as `count` Float32 rows (per-expert biases).
    public func vectors(_ name: String, count: Int, length: Int) throws -> [[Float]] {
        let r = try record(name)
        guard r.shape == [count, length] else {
            throw CheckpointError.wrongShape(file: Checkpoint.fileName(r), tensor: name, expected: [count, length], found: r.shape)
        }
        let all = [Float](unsafeUninitializedCapacity: count * length) { buf, n in
            convertToFloat(r.data, dtype: r.dtype, count: count * length, into: buf.baseAddress!)
            n = count * length
        }
        return (0..<count).map { Array(all[($0 * length)..<(($0 + 1) * length)]) }
    }

    /// From an input-major `[experts, inputs, outputs]` tensor (transformers'
    /// fused expert layout), expert `expert`'s output columns `first, first +
    /// stride, ...` as an output-major `[outputs / stride, inputs]` matrix in
    /// the stored dtype, copied once into memory this checkpoint owns.
    public func transposedExpertSlab(_ name: String, expert: Int, of experts: Int, inputs: Int, outputs: Int,
                                     first: Int, stride: Int) throws -> Matrix {
        let r = try record(name)
        guard r.shape == [experts, inputs, outputs] else {
            throw CheckpointError.wrongShape(file: Checkpoint.fileName(r), tensor: name, expected: [experts, inputs, outputs], found: r.shape)
        }
        let size = r.dtype.byteSize, rows = (outputs - first + stride - 1) / stride
        let slab = r.data + expert * inputs * outputs * size
        let copy = UnsafeMutableRawPointer.allocate(byteCount: max(rows * inputs * size, 1), alignment: 64)
        Checkpoint.gather(from: slab, into: copy, count: rows * inputs, size: size) { j in
            let o = j / inputs, i = j % inputs
            return i * outputs + first + o * stride
        }
        lock.lock()
        ownedCopies.append(copy)
        lock.unlock()
        return Matrix(rows: rows, cols: inputs, dtype: r.dtype, data: UnsafeRawPointer(copy))
    }

    /// Expert `expert`'s `[rows, cols]` MXFP4 matrix from `<name>_blocks`
    /// (`[experts, rows, cols/32, 16]` bytes) and `<name>_scales`
    /// (`[experts, rows, cols/32]`), used in place.
    public func mxfp4(_ name: String, expert: Int, of experts: Int, rows: Int, cols: Int) throws -> Matrix {
        let blocks = try record(name + "_blocks"), scales = try record(name + "_scales")
        for (t, expected) in [(blocks, [experts, rows, cols / 32, 16]), (scales, [experts, rows, cols / 32])] {
            let tensorName = t.name
            guard t.dtype == .u8 else {
                throw CheckpointError.invalidHeader(file: Checkpoint.fileName(t), reason: "tensor \(tensorName) has dtype \(t.dtype.rawValue); MXFP4 blocks and scales are U8")
            }
            guard t.shape == expected else {
                throw CheckpointError.wrongShape(file: Checkpoint.fileName(t), tensor: tensorName, expected: expected, found: t.shape)
            }
        }
        return Matrix(rows: rows, cols: cols, dtype: .mxfp4, data: blocks.data + expert * rows * (cols / 2),
                      scales: scales.data + expert * rows * (cols / 32))
    }

    /// BLAS needs Float32 data 4-byte aligned; safetensors does not promise it.
    private func aligned(_ r: TensorRecord) -> UnsafeRawPointer {
        if Int(bitPattern: r.data) % r.dtype.byteSize == 0 { return r.data }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: r.byteCount, alignment: 64)
        copy.copyMemory(from: r.data, byteCount: r.byteCount)
        lock.lock()
        ownedCopies.append(copy)
        lock.unlock()
        return UnsafeRawPointer(copy)
    }

    deinit { for p in ownedCopies { p.deallocate() } }
}
