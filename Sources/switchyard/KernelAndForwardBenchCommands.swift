import ArgumentParser
import Foundation
import SwitchyardModel

struct KernelBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-bench",
        abstract: "Measure the expert GEMM and BF16 matrix-vector kernels against OpenBLAS peak sgemm and a streaming read, in the same run.")

    @Option(help: "Seconds to spend on each measurement (median of runs).")
    var seconds: Double = 0.5

    @Option(name: .customLong("save-result"), help: "Write the results as JSON to this file.")
    var saveResult: String?

    func run() throws {
        var o = KernelBenchmark.Options()
        o.minSeconds = seconds
        do { try OneDNN.load() } catch { print("oneDNN columns skipped: \(error)") }
        print("machine: \(MachineTopology.detect()); kernel threads \(Parallel.threadCount); \(OneDNN.description)")
        let r = KernelBenchmark.run(o)
        print("direct kernel below: " + r.gemmMinTokens.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) tokens" }.joined(separator: ", "))
        let n = o.peakGemmSize
        print(String(format: "peak %dx%dx%d in cache: OpenBLAS sgemm %.1f GFLOP/s", n, n, n, r.peakSgemmGflops)
              + (r.peakOneDNNF32Gflops.map { String(format: ", oneDNN f32 %.1f", $0) } ?? "")
              + (r.peakOneDNNBF16Gflops.map { String(format: ", oneDNN bf16 %.1f", $0) } ?? ""))
        print(String(format: "streaming read (%d MiB): %.2f GB/s", o.matVecBytes >> 20, r.streamingReadGBs))
        print(String(format: "BF16 matrix-vector (%d MiB): %.2f GB/s = %.1f%% of the streaming read",
                     o.matVecBytes >> 20, r.bf16MatVecGBs, 100 * r.bf16MatVecGBs / r.streamingReadGBs))
        if let g = r.bf16MatVecNativeGBs {
            print(String(format: "BF16 matrix-vector, bfloat16 mode, AVX512-BF16 kernel: %.2f GB/s = %.1f%% of the streaming read (%.2fx the portable kernel)",
                         g, 100 * g / r.streamingReadGBs, g / r.bf16MatVecGBs))
        }
        if let g = r.mxfp4MatVecGBs {
            print(String(format: "MXFP4 matrix-vector (%d MiB, 2880 columns), bfloat16 mode, AVX512-BF16 kernel: %.2f GB/s = %.1f%% of the streaming read",
                         o.matVecBytes >> 20, g, 100 * g / r.streamingReadGBs))
        }
        print(String(format: "decode MoE layer (%d cold experts, 1 token each, gate/up then down): %.2f GB/s = %.1f%% of the streaming read",
                     r.moeDecodeExperts, r.moeDecodeGBs, 100 * r.moeDecodeGBs / r.streamingReadGBs))
        if let p = r.moePrefillGflops, let peak = r.peakOneDNNBF16Gflops {
            print(String(format: "prefill MoE layer (%d cold experts x %d tokens, oneDNN bf16): %.1f GFLOP/s = %.1f%% of the oneDNN bf16 peak",
                         o.prefillExperts, o.prefillTokensPerExpert, p, 100 * p / peak)
                  + (r.moePrefillPackedGflops.map { String(format: "; packed experts %.1f = %.1f%% (%.2fx)", $0, 100 * $0 / peak, $0 / p) } ?? ""))
        }
        print("expert projection [\(o.expertRows)x\(o.expertCols)] BF16, cycling through \(o.expertPoolBytes >> 20) MiB of experts (GFLOP/s; % of the same-run peak of that library and type; each product's rows split across the threads, except \"whole\": one expert per thread):")
        print("  tokens | direct   GB/s | OpenBLAS (widen)      | oneDNN f32 (widen)    | oneDNN bf16           | used (bf16) | bf16 direct: stored  packed | oneDNN packed, whole  | used (packed)")
        func cell(_ v: Double?, _ peak: Double?) -> String {
            guard let v else { return "           -         " }
            return String(format: "%8.1f", v) + (peak.map { String(format: " (%5.1f%%)", 100 * v / $0) } ?? "          ") + "    "
        }
        for row in r.expertProjection {
            print(String(format: "  %6d | %6.1f %6.1f | ", row.tokens, row.directGflops, row.directWeightGBs)
                  + cell(row.sgemmGflops, r.peakSgemmGflops) + " | " + cell(row.onednnF32Gflops, r.peakOneDNNF32Gflops) + " | "
                  + cell(row.onednnBF16Gflops, r.peakOneDNNBF16Gflops) + " | " + row.chosen.padding(toLength: 11, withPad: " ", startingAt: 0)
                  + " |       " + (row.directBF16Gflops.map { String(format: "%8.1f", $0) } ?? "       -")
                  + (row.directBF16PackedGflops.map { String(format: "  %6.1f", $0) } ?? "       -")
                  + " | " + cell(row.onednnBF16PackedGflops, r.peakOneDNNBF16Gflops) + " | " + (row.chosenPacked ?? "-"))
        }
        if let path = saveResult { try writeJSON(r, to: path) }
    }
}

struct ForwardBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward-bench",
        abstract: "Measure decode tokens/s at several batch sizes and prefill tokens/s, next to the decode roofline.")

    @Option(help: "Checkpoint directory.")
    var model: String

    @Option(name: .customLong("batch-sizes"), help: "Comma-separated decode batch sizes.")
    var batchSizes: String = "1,16"

    @Option(help: "Context tokens per sequence before decoding.")
    var context: Int = 64

    @Option(name: .customLong("decode-steps"), help: "Timed decode iterations per batch size.")
    var decodeSteps: Int = 32

    @Option(name: .customLong("prefill-len"), help: "Prompt length of the prefill measurement.")
    var prefillLen: Int = 512

    @Option(name: .customLong("save-result"), help: "Write the results as JSON to this file.")
    var saveResult: String?

    @OptionGroup var compute: ComputeFlags

    func run() throws {
        let t = try loadModel(model)
        try compute.apply(to: t)
        var o = ForwardBenchmark.Options()
        o.batchSizes = try parseTokenList(batchSizes).map(Int.init)
        o.context = context
        o.decodeSteps = decodeSteps
        o.prefillLength = prefillLen
        print("machine: \(MachineTopology.detect()); kernel threads \(Parallel.threadCount); \(t.compute)"
              + (t.compute.gemm == .onednn ? " (\(OneDNN.description))" : ""))
        let r = try ForwardBenchmark.run(model: t, o)
        print(String(format: "streaming read %.2f GB/s; active weights %.1f MiB/token + KV cache %.2f MiB/token (%d B per cached token) → decode roofline %.1f tok/s",
                     r.streamingReadGBs, Double(r.activeWeightBytesPerToken) / 1048576, Double(r.kvCacheBytesPerDecodeToken) / 1048576,
                     r.kvCacheBytesPerToken, r.rooflineDecodeTokensPerSecond))
        // "of roofline": against the best streaming read sampled in the run;
        // "paired": each step against a read taken right after it.
        print("  batch   tok/s    ms/iter   of roofline   paired   expert MiB/token   shared-expert MiB/token")
        for row in r.decode {
            let frac = row.fractionOfRoofline.map { String(format: "%9.1f%%", 100 * $0) } ?? "        -"
            let paired = row.fractionOfPairedRoofline.map { String(format: "%6.1f%%", 100 * $0) } ?? "      -"
            print(String(format: "  %5d  %7.1f  %8.2f  %@   %@   %8.2f   %8.2f", row.batch, row.tokensPerSecond, row.msPerIteration,
                         frac, paired, row.expertWeightBytesPerToken / 1048576, row.sharedExpertWeightBytesPerToken / 1048576))
        }
        print("  time per decode iteration by phase (ms): qkv / attention / o-proj / feed-forward / lm-head / other")
        for row in r.decode {
            let p = row.profile, n = Double(max(p.forwards, 1)) / 1000
            print(String(format: "  %5d  %6.3f / %6.3f / %6.3f / %6.3f / %6.3f / %6.3f", row.batch, p.qkvSeconds / n,
                         p.attentionSeconds / n, p.outputProjectionSeconds / n, p.feedForwardSeconds / n, p.lmHeadSeconds / n, p.otherSeconds / n))
        }
        print(String(format: "prefill %d tokens: %.1f tok/s (expert weights %.3f MiB/token)", r.prefillTokens,
                     r.prefillTokensPerSecond, r.expertWeightBytesPerPrefillToken / 1048576))
        let p = r.prefillProfile
        print(String(format: "  prefill by phase (ms): qkv %.1f / attention %.1f / o-proj %.1f / feed-forward %.1f / lm-head %.1f / other %.1f",
                     p.qkvSeconds * 1000, p.attentionSeconds * 1000, p.outputProjectionSeconds * 1000, p.feedForwardSeconds * 1000,
                     p.lmHeadSeconds * 1000, p.otherSeconds * 1000))
        if let path = saveResult { try writeJSON(r, to: path) }
    }
}

func writeJSON(_ value: some Encodable, to path: String) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try enc.encode(value).write(to: URL(fileURLWithPath: path))
}
