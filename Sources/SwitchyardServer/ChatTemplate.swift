import Foundation

/// Turns chat messages into a prompt. Switchyard does not run Jinja: it
/// recognises the common template families in `tokenizer_config.json`'s
/// `chat_template` by their markers and renders them natively; a model
/// without a recognised template gets the documented default
/// (see docs/server.md):
///
///     system: You are terse.
///     user: Hello
///     assistant:
///
/// (one `role: content` line per message, then `assistant:` to prompt
/// the reply).
public struct ChatTemplate: Sendable, Equatable {
    public enum Family: String, Sendable {
        /// `<|im_start|>role\ncontent<|im_end|>\n` … `<|im_start|>assistant\n` (Qwen).
        case chatml
        /// `<s>[INST] user [/INST] assistant</s>` (Mistral, Mixtral).
        case inst
        /// `<|system|>\n…\n<|user|>\n…\n<|assistant|>\n` (Tulu, OLMoE).
        case tulu
        /// `role: content` lines, then `assistant:`.
        case plain
    }

    public var family: Family
    public var bosToken: String
    public var eosToken: String

    public init(family: Family, bosToken: String = "", eosToken: String = "") {
        self.family = family
        self.bosToken = bosToken
        self.eosToken = eosToken
    }

    public static let `default` = ChatTemplate(family: .plain)

    /// Reads `tokenizer_config.json` from a checkpoint directory; no file, no
    /// `chat_template` or an unrecognised one gives the default.
    public static func load(directory: String) -> ChatTemplate {
        let url = URL(fileURLWithPath: directory).appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: url),
              let config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return .default }
        func token(_ key: String) -> String {
            if let s = config[key] as? String { return s }
            if let o = config[key] as? [String: Any], let s = o["content"] as? String { return s }
            return ""
        }
        var source: String?
        if let s = config["chat_template"] as? String { source = s }
        if let list = config["chat_template"] as? [[String: Any]] {
            source = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
        }
        return ChatTemplate(family: source.map(detect) ?? .plain, bosToken: token("bos_token"), eosToken: token("eos_token"))
    }

    /// The family a Jinja template belongs to, by its markers.
    public static func detect(_ template: String) -> Family {
        if template.contains("<|im_start|>") { return .chatml }
        if template.contains("[INST]") { return .inst }
        if template.contains("<|user|>") && template.contains("<|assistant|>") { return .tulu }
        return .plain
    }

    /// The prompt text for `messages`, ending where the assistant's reply starts.
    public func render(_ messages: [ChatMessage]) -> String {
        var out = ""
        switch family {
        case .chatml:
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            out += "<|im_start|>assistant\n"
        case .inst:
            out += bosToken
            var system = messages.filter { $0.role == "system" || $0.role == "developer" }.map(\.content).joined(separator: "\n\n")
            for m in messages where m.role != "system" && m.role != "developer" {
                if m.role == "assistant" {
                    out += " \(m.content)\(eosToken)"
                } else {
                    let text = system.isEmpty ? m.content : system + "\n\n" + m.content
                    system = ""
                    out += "[INST] \(text) [/INST]"
                }
            }
        case .tulu:
            for m in messages { out += "<|\(m.role == "developer" ? "system" : m.role)|>\n\(m.content)\n" }
            out += "<|assistant|>\n"
        case .plain:
            for m in messages { out += "\(m.role): \(m.content)\n" }
            out += "assistant:"
        }
        return out
    }

    /// Marker tokens that end an assistant turn (stop tokens when the
    /// tokenizer has them as single tokens).
    public var endMarkers: [String] {
        switch family {
        case .chatml: ["<|im_end|>"]
        case .tulu: ["<|user|>"]
        case .inst, .plain: []
        }
    }

    /// Whether the rendered prompt already carries the BOS token, so
    /// encoding must not add another.
    public var rendersSpecialTokens: Bool { family == .inst && !bosToken.isEmpty }
}
