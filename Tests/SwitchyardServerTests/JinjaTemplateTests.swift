import Foundation
import Testing
@testable import SwitchyardServer

/// Switchyard's Jinja renders chat templates exactly as Python's jinja2 does
/// under transformers' settings. The reference outputs come from
/// tools/jinja/make_reference.py: eight chat templates in the shapes
/// checkpoints ship, each over several conversations (system prompts,
/// multi-turn, tool calls, thinking, a bad role order that must raise), and
/// one small template per Jinja feature.
@Suite struct JinjaTemplateTests {
    struct Case {
        var name: String
        var template: String
        var context: [String: Any]
        var output: String?
        var raises: String?
    }

    static func cases() throws -> [Case] {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/jinja-reference", withExtension: "json"))
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try #require(root["cases"] as? [[String: Any]])
        return cases.map { c in
            Case(name: c["name"] as? String ?? "", template: c["template"] as? String ?? "",
                 context: c["context"] as? [String: Any] ?? [:], output: c["output"] as? String, raises: c["raises"] as? String)
        }
    }

    @Test func rendersEveryReferenceCaseAsJinja2Does() throws {
        let cases = try Self.cases()
        #expect(cases.count >= 80)
        var failures: [String] = []
        for c in cases {
            do {
                let template = try JinjaTemplate(c.template)
                let out = try template.render(c.context)
                if let expected = c.output {
                    if out != expected { failures.append("\(c.name): got \(out.debugDescription), expected \(expected.debugDescription)") }
                } else {
                    failures.append("\(c.name): rendered \(out.debugDescription) but jinja2 raised \(c.raises ?? "")")
                }
            } catch .raised(let message) {
                if message != c.raises { failures.append("\(c.name): raised \(message.debugDescription), expected \(c.output.map { "output \($0.debugDescription)" } ?? (c.raises ?? ""))") }
            } catch {
                failures.append("\(c.name): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(cases.count) cases differ:\n\(failures.joined(separator: "\n"))")
    }

    @Test func unsupportedOrMalformedTemplatesAreNamedErrors() {
        #expect(throws: JinjaError.unsupported("`{% macro %}`")) { try JinjaTemplate("{% macro m() %}x{% endmacro %}") }
        #expect(throws: JinjaError.syntax("`{% if %}` without `{% endif %}`")) { try JinjaTemplate("{% if true %}x") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ 'unterminated }}") }
        #expect(throws: JinjaError.syntax("`{% break %}` outside a loop")) { try JinjaTemplate("{% if true %}{% break %}{% endif %}") }
        #expect(throws: JinjaError.unsupported("the method `append()` on a list")) {
            try JinjaTemplate("{% set xs = [] %}{{ xs.append(1) }}").render([:])
        }
        #expect(throws: JinjaError.unsupported("the filter `nosuchfilter`")) {
            try JinjaTemplate("{{ 1|nosuchfilter }}").render([:])
        }
    }
}
