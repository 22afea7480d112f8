import Foundation

/// Text to token ids and back. Implementations must match Hugging Face's
/// `tokenizers` exactly, since models only understand the ids they were
/// trained on.
public protocol Tokenizer: Sendable {
    var vocabSize: Int { get }
    var bosTokenId: Int32? { get }
    var eosTokenId: Int32? { get }
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int32]
    func decode(_ ids: [Int32], skipSpecialTokens: Bool) -> String
    func tokenId(_ token: String) -> Int32?
    /// An upper bound on the bytes of text one token stands for: a text of
    /// B bytes encodes to at least B / maxTokenBytes tokens, which lets a
    /// server refuse a prompt that is surely too long without encoding it.
    var maxTokenBytes: Int { get }
    /// `encode`, allowed to stop once more than `maxTokens` ids are out.
    func encode(_ text: String, addSpecialTokens: Bool, maxTokens: Int) -> [Int32]
}

public extension Tokenizer {
    var maxTokenBytes: Int { Int.max }
    func encode(_ text: String, addSpecialTokens: Bool, maxTokens: Int) -> [Int32] { encode(text, addSpecialTokens: addSpecialTokens) }
    func encode(_ text: String) -> [Int32] { encode(text, addSpecialTokens: true) }
    func decode(_ ids: [Int32]) -> String { decode(ids, skipSpecialTokens: false) }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case missing(directory: String)
    case invalid(file: String, reason: String)
    case unsupported(file: String, component: String)

    public var description: String {
        switch self {
        case let .missing(dir):
            return "\(dir) has no tokenizer.json; pass token ids with --tokens instead of --prompt, or add the model's tokenizer.json"
        case let .invalid(file, reason):
            return "invalid \(file): \(reason)"
        case let .unsupported(file, component):
            return "\(file): \(component) is not supported (supported: BPE models with ByteLevel, Split, Metaspace, Digits or WhitespaceSplit pre-tokenizers)"
        }
    }
}

/// Loads the tokenizer of a checkpoint directory.
public enum TokenizerLoader {
    public static func load(directory: String) throws -> any Tokenizer {
        let dir = URL(fileURLWithPath: directory)
        let file = dir.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw TokenizerError.missing(directory: directory)
        }
        let data: Data
        do { data = try Data(contentsOf: file) } catch {
            throw TokenizerError.invalid(file: file.path, reason: error.localizedDescription)
        }
        let configURL = dir.appendingPathComponent("tokenizer_config.json")
        let configData = try? Data(contentsOf: configURL)
        return try BPETokenizer(json: data, tokenizerConfig: configData, file: file.path)
    }
}
