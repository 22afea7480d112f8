import ArgumentParser
import SwitchyardCore

struct StrategiesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strategies",
        abstract: "List the registered serving strategies, by kind, with their options.")

    func run() throws {
        for kind in StrategyKind.allCases {
            let infos = strategies.all.filter { $0.kind == kind }
            print("\(kind.rawValue)s (--\(kind.rawValue) NAME --\(kind.rawValue)-config JSON):")
            if infos.isEmpty { print("  (none registered yet)") }
            for info in infos {
                print("  \(info.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(info.summary)")
                for o in info.options {
                    print("      \(o.name) (\(o.type), default \(o.defaultValue)): \(o.help)")
                }
            }
        }
    }
}
