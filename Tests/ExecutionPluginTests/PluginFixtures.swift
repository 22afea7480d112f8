import Foundation

/// The model fixtures, read in place from the model tests' resources (this
/// target tests plug-ins against the same checkpoints).
enum PluginFixtures {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let defaultModel = tests.deletingLastPathComponent().appendingPathComponent("models/stdlib-moe").path
    static func model(_ name: String) -> String {
        tests.appendingPathComponent("SwitchyardModelTests/Fixtures/models/\(name)").path
    }
}
