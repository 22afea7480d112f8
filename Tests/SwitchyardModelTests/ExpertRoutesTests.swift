import Foundation
@testable import SwitchyardModel
import Testing

/// An executor that, like a GPU summing its experts per token, takes the
/// even-numbered experts' share of each token's sum itself (`ExpertRoutes`)
/// and leaves NaN in their output rows, so a row `MoEBlock` failed to skip
/// shows in the logits.
final class SummingExecutor: ExpertExecutor, @unchecked Sendable {
    private let cpu: SharedPoolExecutor
    var devices: [ExecutionDevice] { cpu.devices }
    var expertDevice: [[Int]]? { nil }
    var stats: ExpertExecutionStats { cpu.stats }
    func resetStats() { cpu.resetStats() }
    let sums: Bool
    private(set) var summed = 0

    init(weights: ModelWeights, sums: Bool) {
        cpu = SharedPoolExecutor(weights: weights)
        self.sums = sums
    }

    func run(_ work: ExpertWork) {
        cpu.run(work)
        guard sums, let r = work.routes else { return }
        let h = work.hiddenSize
        r.combined.initialize(repeating: 0, count: r.tokens * h)
        for a in 0..<r.tokens * r.perToken where r.expert[a] % 2 == 0 {
            let row = work.output + Int(r.row[a]) * h, sum = r.combined + (a / r.perToken) * h
            for c in 0..<h { sum[c] += r.weight[a] * row[c] }
        }
        for j in stride(from: 0, to: work.numExperts, by: 2) where work.tokenCount[j] > 0 {
            r.combinedExperts[j] = true
            (work.output + Int(work.rowOffset[j]) * h).update(repeating: .nan, count: Int(work.tokenCount[j]) * h)
            summed += 1
        }
    }
}

@Suite struct ExpertRoutesTests {
    /// The MoE block starts each token's sum from what the executor summed
    /// and adds only the other experts' rows: the logits are the CPU's up
    /// to the order of each sum, and the NaN rows of summed experts never
    /// reach them. An executor that sums nothing leaves the forward
    /// bit-identical.
    @Test(arguments: ["qwen3_moe", "qwen2_moe", "deepseek_v3"])
    func anExecutorsPerTokenSumsReplaceItsExpertsRows(_ name: String) throws {
        let model = try Transformer(directory: Fixtures.model(name))
        let prompt = (0..<12).map { Int32(($0 * 31 + 5) % model.config.vocabSize) }
        let reference = try Generator(model: model, blockSize: 16).allLogits(prompt)
        for sums in [false, true] {
            let executor = SummingExecutor(weights: model.weights, sums: sums)
            model.install(experts: executor)
            defer { model.install(experts: nil) }
            let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
            let worst = zip(logits, reference).map { zip($0, $1).map { abs($0 - $1) / (1 + abs($1)) }.max()! }.max()!
            if sums {
                #expect(executor.summed > 0)
                #expect(worst < 1e-4, "\(worst)")
            } else {
                #expect(logits == reference)
            }
        }
    }
}
