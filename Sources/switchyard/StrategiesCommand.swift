import ArgumentParser
import SwitchyardCore

struct StrategiesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strategies",
        abstract: "List the registered serving strategies, by kind, with their options.")

    func run() throws {
        for kind in StrategyKind.allCases {
            let infos = strategies.all.filter { $0.kind == kind }
            let usage: String
            switch kind {
            case .scheduler: usage = "bench, ab, serve: --scheduler NAME --scheduler-config JSON"
            case .placement: usage = "generate, logits, bench, ab, serve with --execution cpu-ep, and place: --placement NAME --placement-config JSON [--placement-profile FILE]"
            case .execution: usage = "generate, logits, bench, ab, serve: --execution NAME --execution-config JSON, or --devices N / --numa"
            }
            print("\(kind.rawValue)s (\(usage)):")
            if infos.isEmpty { print("  (none registered yet)") }
            for info in infos {
                print("  \(info.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(info.summary)")
                for o in info.options {
                    print("      \(o.name) (\(o.type), default \(o.defaultValue)): \(o.help)")
                }
            }
        }
    }
}
