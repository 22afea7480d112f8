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

    /// The reference cases' names, one test result each.
    static let caseNames: [String] = ((try? cases()) ?? []).map(\.name)

    @Test func theReferenceCoversEveryTemplateShapeAndFeature() throws {
        let names = try Self.cases().map(\.name)
        #expect(names.count >= 80)
        #expect(Set(names).count == names.count, "case names must be unique: each is one test result")
    }

    @Test(arguments: caseNames)
    func rendersTheReferenceCaseAsJinja2Does(_ name: String) throws {
        let c = try #require(try Self.cases().first { $0.name == name })
        do {
            let out = try JinjaTemplate(c.template).render(c.context)
            if let expected = c.output {
                #expect(out == expected)
            } else {
                Issue.record("rendered \(out.debugDescription) but jinja2 raised \(c.raises ?? "")")
            }
        } catch .raised(let message) {
            #expect(message == c.raises, "expected \(c.output.map { "output \($0.debugDescription)" } ?? (c.raises ?? ""))")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func unsupportedOrMalformedTemplatesAreNamedErrors() {
        #expect(throws: JinjaError.unsupported("`{% call %}`")) { try JinjaTemplate("{% call m() %}x{% endcall %}") }
        #expect(throws: JinjaError.syntax("`{% macro m %}` without `{% endmacro %}`")) { try JinjaTemplate("{% macro m() %}x") }
        #expect(throws: JinjaError.runtime("macro `m` has no parameter `y`")) {
            try JinjaTemplate("{% macro m(x) %}{{ x }}{% endmacro %}{{ m(y=1) }}").render([:])
        }
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
