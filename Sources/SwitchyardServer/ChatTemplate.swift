import Foundation

/// Turns chat messages into a prompt with the checkpoint's own
/// `chat_template` from `tokenizer_config.json`, run by Switchyard's Jinja
/// (`JinjaTemplate`) as transformers runs it. A template that uses Jinja
/// Switchyard does not support falls back to a native renderer for its
/// family, recognised by its markers (the server logs why); a model without
/// a template gets the documented default (see docs/server.md):
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
    /// The checkpoint's template, compiled; nil renders `family` natively.
    public var jinja: JinjaTemplate?
    /// Why the checkpoint's template could not be compiled, when it could not.
    public var fallbackReason: String?

    public init(family: Family, bosToken: String = "", eosToken: String = "", jinja: JinjaTemplate? = nil) {
        self.family = family
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.jinja = jinja
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
        var template = ChatTemplate(family: source.map(detect) ?? .plain, bosToken: token("bos_token"), eosToken: token("eos_token"))
        if let source {
            do { template.jinja = try JinjaTemplate(source) } catch { template.fallbackReason = error.description }
        }
        return template
    }

    /// The family a Jinja template belongs to, by its markers.
    public static func detect(_ template: String) -> Family {
        if template.contains("<|im_start|>") { return .chatml }
        if template.contains("[INST]") { return .inst }
        if template.contains("<|user|>") && template.contains("<|assistant|>") { return .tulu }
        return .plain
    }

    /// The prompt text for `messages`, ending where the assistant's reply
    /// starts. A template that rejects the conversation (`raise_exception`,
    /// such as roles that do not alternate) is a 400 naming `messages`.
    public func render(_ messages: [ChatMessage]) throws(APIError) -> String {
        guard let jinja else { return renderNatively(messages) }
        // What transformers' apply_chat_template passes, without tools.
        let context: [String: Any] = [
            "messages": messages.map { ["role": $0.role, "content": $0.content] },
            "add_generation_prompt": true, "bos_token": bosToken, "eos_token": eosToken,
            "tools": NSNull(), "documents": NSNull(),
        ]
        do {
            return try jinja.render(context)
        } catch .raised(let message) {
            throw .invalid("messages", "the model's chat template rejected the conversation: \(message)")
        } catch {
            throw .invalid("messages", "the model's chat template failed on these messages: \(error.description)")
        }
    }

    /// The family's native rendering (no template, or one that failed to compile).
    public func renderNatively(_ messages: [ChatMessage]) -> String {
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
    /// Templates print their own special tokens (transformers and vLLM
    /// encode chat prompts without adding any).
    public var rendersSpecialTokens: Bool { jinja != nil || (family == .inst && !bosToken.isEmpty) }
}
