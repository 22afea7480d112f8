import Foundation

/// Writes a safetensors file: tensors are declared first (name, dtype,
/// shape), then their bytes are streamed in declaration order, so a large
/// checkpoint never needs to be in memory at once.
public struct SafetensorsWriter {
    public struct Entry {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public mutating func declare(_ name: String, dtype: DType, shape: [Int]) {
        entries.append(Entry(name: name, dtype: dtype, shape: shape))
    }

    /// Writes the file; `fill(entry, buffer)` must fill `entry.byteCount` bytes.
    public func write(to url: URL, metadata: [String: String] = ["format": "pt"],
                      fill: (Entry, UnsafeMutableRawBufferPointer) throws -> Void) throws {
        var header = "{\"__metadata__\":{"
        header += metadata.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        header += "}"
        var offset = 0
        for e in entries {
            header += ",\"\(e.name)\":{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + e.byteCount)]}"
            offset += e.byteCount
        }
        header += "}"
        // Pad so the data section starts 8-byte aligned, as the reference writer does.
        while (header.utf8.count) % 8 != 0 { header += " " }
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw CheckpointError.fileUnreadable(file: url.path, reason: "cannot create the file (does the directory exist and is it writable?)")
        }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var length = UInt64(header.utf8.count).littleEndian
        try handle.write(contentsOf: Data(bytes: &length, count: 8))
        try handle.write(contentsOf: Data(header.utf8))
        let maxBytes = entries.map(\.byteCount).max() ?? 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        defer { buffer.deallocate() }
        for e in entries {
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<e.byteCount])
            try fill(e, slice)
            try handle.write(contentsOf: Data(bytesNoCopy: slice.baseAddress!, count: e.byteCount, deallocator: .none))
        }
    }
}
