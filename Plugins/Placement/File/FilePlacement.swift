import Foundation
import SwitchyardCore

/// A placement read from a JSON expert map (`{"num_devices": N,
/// "expert_device": [[device of expert e] per layer]}`, the format
/// `switchyard place --output` writes).
public struct FilePlacement: ExpertPlacement {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        let map: ExpertMap
        do { map = try JSONDecoder().decode(ExpertMap.self, from: Data(contentsOf: URL(fileURLWithPath: path))) } catch {
            throw PlacementError.invalidPlacement("\(path): not an expert map (\(error.localizedDescription)); expected {\"num_devices\": N, \"expert_device\": [[...], ...]}")
        }
        guard map.numDevices == p.numDevices else {
            throw PlacementError.invalidPlacement("\(path) places experts on \(map.numDevices) devices, but \(p.numDevices) were asked for")
        }
        guard map.device.count == p.numLayers, map.device.allSatisfy({ $0.count == p.numExperts && $0.allSatisfy { (0..<p.numDevices).contains($0) } }) else {
            throw PlacementError.invalidPlacement("\(path): expert_device must have \(p.numLayers) layers of \(p.numExperts) device ids in 0..<\(p.numDevices)")
        }
        return map
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("file", summary: "an expert map read from a JSON file",
                                   options: [StrategyOption("path", type: "string", default: "(required)", help: "the expert map JSON")]) { config in
            let path = try config.string("path", default: "")
            guard !path.isEmpty else {
                throw StrategyError.invalidConfig(strategy: "file", reason: "needs {\"path\": \"map.json\"} in --placement-config")
            }
            return FilePlacement(path: path)
        }
    }
}
