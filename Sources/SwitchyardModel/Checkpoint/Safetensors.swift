import Foundation

/// One tensor inside a memory-mapped safetensors file.
public struct TensorRecord: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let file: MappedFile
    /// Absolute byte offset of the first element within `file`.
    public let offset: Int
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.byteSize }
    public var data: UnsafeRawPointer { file.base + offset }
}

/// Reader for the safetensors format: an 8-byte little-endian header length,
/// a JSON header mapping tensor names to dtype, shape and data offsets, then
/// the raw data. Every field is validated against the file size so a
/// truncated or corrupt file is reported, never read out of bounds.
public enum Safetensors {
    public static func read(path: String) throws -> [String: TensorRecord] {
        let file = try MappedFile(path: path)
        let name = (path as NSString).lastPathComponent
        guard file.size >= 8 else {
            throw CheckpointError.truncatedHeader(file: name, reason: "file is \(file.size) bytes, shorter than the 8-byte length prefix")
        }
        let headerLength = Int(UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self)))
        guard headerLength > 0, headerLength <= file.size - 8 else {
            throw CheckpointError.truncatedHeader(file: name, reason: "header claims \(headerLength) bytes but the file has \(file.size - 8) after the prefix")
        }
        let headerData = Data(bytes: file.base + 8, count: headerLength)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw CheckpointError.truncatedHeader(file: name, reason: "header is not valid JSON")
        }
        guard let entries = json as? [String: Any] else {
            throw CheckpointError.invalidHeader(file: name, reason: "header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.size - dataStart
        var records: [String: TensorRecord] = [:]
        records.reserveCapacity(entries.count)
        for (tensor, value) in entries where tensor != "__metadata__" {
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any],
                  let offsetsAny = entry["data_offsets"] as? [Any], offsetsAny.count == 2 else {
                throw CheckpointError.invalidHeader(file: name, reason: "entry for tensor \(tensor) lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName), dtype != .mxfp4 else {
                throw CheckpointError.unsupportedDType(file: name, tensor: tensor, dtype: dtypeName)
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offsets = offsetsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, offsets.count == 2, shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError.invalidHeader(file: name, reason: "tensor \(tensor) has a non-integer shape or offset")
            }
            let (begin, end) = (offsets[0], offsets[1])
            let expectedBytes = shape.reduce(1, *) * dtype.byteSize
            guard begin >= 0, end >= begin else {
                throw CheckpointError.invalidHeader(file: name, reason: "tensor \(tensor) has data_offsets [\(begin), \(end)]")
            }
            guard end - begin == expectedBytes else {
                throw CheckpointError.invalidHeader(file: name, reason: "tensor \(tensor) spans \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(expectedBytes)")
            }
            guard end <= dataSize else {
                throw CheckpointError.tensorOutOfBounds(file: name, tensor: tensor, reason: "ends at byte \(end) of a \(dataSize)-byte data section")
            }
            records[tensor] = TensorRecord(name: tensor, dtype: dtype, shape: shape, file: file, offset: dataStart + begin)
        }
        return records
    }
}
