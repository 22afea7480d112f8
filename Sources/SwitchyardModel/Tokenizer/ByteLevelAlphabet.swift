/// GPT-2's reversible byte-to-character map: printable bytes map to
/// themselves, the rest to code points from U+0100 up, so every byte string
/// becomes a string of visible characters BPE can work on.
enum ByteLevelAlphabet {
    static let byteToScalar: [Unicode.Scalar] = {
        func visible(_ b: Int) -> Bool { (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) }
        var scalars = [Unicode.Scalar](repeating: "\0", count: 256)
        var n = 0
        for b in 0..<256 {
            if visible(b) {
                scalars[b] = Unicode.Scalar(UInt32(b))!
            } else {
                scalars[b] = Unicode.Scalar(UInt32(256 + n))!
                n += 1
            }
        }
        return scalars
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var m: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { m[s.value] = UInt8(b) }
        return m
    }()

    static func encode(_ s: Substring) -> String {
        var out = String.UnicodeScalarView()
        for b in s.utf8 { out.append(byteToScalar[Int(b)]) }
        return String(out)
    }

    static func decode(_ s: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.unicodeScalars.count)
        for u in s.unicodeScalars {
            if let b = scalarToByte[u.value] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(u).utf8)) }
        }
        return bytes
    }
}
