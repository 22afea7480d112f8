import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardModel

/// Engine and workload flags of one A/B arm.
struct ArmOptions: ParsableArguments {
    @OptionGroup var engine: EngineOptions
    @OptionGroup var workload: WorkloadOptions
}

struct ABCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ab",
        abstract: "Run two engine configurations on the identical workload, alternating A, B, A, B, and compare every metric.",
        discussion: """
        Flags other than --a/--b/--repeats/--goodput/--save-result are shared by both arms (model, workload, engine).
        Example: switchyard ab --model DIR --num-prompts 32 --a "--scheduler fcfs" --b "--scheduler chunked" --repeats 3
        """)

    @Option(parsing: .unconditional, help: "Flags of arm A, e.g. \"--scheduler chunked\".")
    var a: String

    @Option(parsing: .unconditional, help: "Flags of arm B.")
    var b: String

    @Option(help: "Runs of each arm, alternating.")
    var repeats: Int = 1

    @Option(parsing: .upToNextOption, help: "SLOs for goodput in ms, e.g. --goodput ttft:500 tpot:50.")
    var goodput: [String] = []

    @Option(name: .customLong("save-result"), help: "Write both arms' results and the ratios as JSON.")
    var saveResult: String?

    @Argument(parsing: .allUnrecognized, help: "Shared flags: --model DIR and any workload or engine flag.")
    var shared: [String] = []

    func validate() throws {
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
    }

    /// One row of the comparison: a name and how to read it from a run.
    struct Metric: Sendable {
        let name: String
        let value: @Sendable (BenchmarkReport) -> Double
        /// Counters that must not change between repeats of one arm.
        let deterministic: Bool
    }

    static let metrics: [Metric] = [
        Metric(name: "Request throughput (req/s)", value: { $0.metrics.requestThroughput }, deterministic: false),
        Metric(name: "Output token throughput (tok/s)", value: { $0.metrics.outputThroughput }, deterministic: false),
        Metric(name: "Total token throughput (tok/s)", value: { $0.metrics.totalTokenThroughput }, deterministic: false),
        Metric(name: "Request goodput (req/s)", value: { $0.metrics.requestGoodput ?? .nan }, deterministic: false),
        Metric(name: "Mean TTFT (ms)", value: { ServingMetrics.mean($0.metrics.ttftsMs) }, deterministic: false),
        Metric(name: "Median TTFT (ms)", value: { ServingMetrics.percentile($0.metrics.ttftsMs, 50) }, deterministic: false),
        Metric(name: "P99 TTFT (ms)", value: { ServingMetrics.percentile($0.metrics.ttftsMs, 99) }, deterministic: false),
        Metric(name: "Mean TPOT (ms)", value: { ServingMetrics.mean($0.metrics.tpotsMs) }, deterministic: false),
        Metric(name: "P99 TPOT (ms)", value: { ServingMetrics.percentile($0.metrics.tpotsMs, 99) }, deterministic: false),
        Metric(name: "Mean ITL (ms)", value: { ServingMetrics.mean($0.metrics.itlsMs) }, deterministic: false),
        Metric(name: "P99 ITL (ms)", value: { ServingMetrics.percentile($0.metrics.itlsMs, 99) }, deterministic: false),
        Metric(name: "Mean E2EL (ms)", value: { ServingMetrics.mean($0.metrics.e2elsMs) }, deterministic: false),
        Metric(name: "Total generated tokens", value: { Double($0.metrics.totalOutputTokens) }, deterministic: true),
        Metric(name: "Iterations", value: { $0.engine.map { Double($0.iterations) } ?? .nan }, deterministic: true),
        Metric(name: "Decode stalls", value: { $0.engine.map { Double($0.decodeStalls) } ?? .nan }, deterministic: true),
        Metric(name: "Preemptions", value: { $0.engine.map { Double($0.preemptions) } ?? .nan }, deterministic: true),
        Metric(name: "Expert weight bytes read (MiB)", value: { $0.moe.map { Double($0.expertWeightBytesRead) / 1_048_576 } ?? .nan }, deterministic: true),
        Metric(name: "Shared expert weight bytes read (MiB)", value: { $0.moe.map { Double($0.sharedExpertWeightBytesRead) / 1_048_576 } ?? .nan }, deterministic: true),
        Metric(name: "Expert bytes per prompt token (KiB)",
               value: { $0.moe.map { Double($0.expertWeightBytesRead) / 1024 / Double(max($0.promptTokens, 1)) } ?? .nan }, deterministic: true),
        Metric(name: "Expert bytes per output token (KiB)",
               value: { $0.moe.map { Double($0.expertWeightBytesRead) / 1024 / Double(max($0.outputTokens, 1)) } ?? .nan }, deterministic: true),
        Metric(name: "Forward time (s)", value: { $0.engine?.forwardSeconds ?? .nan }, deterministic: false),
        Metric(name: "Expert phase time (s)", value: { $0.moe?.devices?.expertPhaseSeconds ?? .nan }, deterministic: false),
        Metric(name: "Busiest device busy time (s)", value: { $0.moe?.devices?.busySeconds.max() ?? .nan }, deterministic: false),
        Metric(name: "Worst-layer device load (max/mean)", value: { $0.moe?.devices?.worstLayerImbalance ?? .nan }, deterministic: false),
        Metric(name: "Per-forward device load (max/mean)", value: { $0.moe?.devices?.perForwardImbalance ?? .nan }, deterministic: false),
        Metric(name: "Cross-device token pairs", value: { $0.moe?.devices?.crossDevicePairs.map { Double($0.reduce(0, +)) } ?? .nan }, deterministic: false),
    ]

    func run() async throws {
        let slo: GoodputSLO
        do { slo = try GoodputSLO.parse(goodput) } catch let e as WorkloadError { throw CLIError("error: \(e.description)") }
        let base = try ArmOptions.parse(shared)
        let arms = try [a, b].map { spec -> ArmOptions in
            let options = try ArmOptions.parse(shared + splitArguments(spec))
            // Both arms must see the identical workload.
            if String(describing: options.workload) != String(describing: base.workload) {
                throw CLIError("error: workload flags belong to the shared flags, not to --a/--b (\"\(spec)\")")
            }
            // Fail on a bad arm before anything runs.
            _ = try options.engine.makeScheduler(numLayers: 1, maxModelLen: 2)
            return options
        }
        var workload: [WorkloadRequest]?
        var runs: [[BenchmarkReport]] = [[], []]
        for r in 0..<repeats {
            for (i, arm) in arms.enumerated() {
                let engine = try arm.engine.makeEngine()
                if workload == nil {
                    workload = try base.workload.build(vocabSize: engine.model.config.vocabSize,
                                                       maxModelLen: engine.config.maxModelLen, tokenizer: engine.tokenizer)
                }
                FileHandle.standardError.write(Data("run \(r + 1)/\(repeats), arm \(i == 0 ? "A" : "B")\n".utf8))
                engine.model.counters.reset()
                engine.model.experts.resetStats()
                if engine.model.experts.expertDevice != nil { engine.model.counters.recordPairs() }
                let (records, duration) = await BenchmarkRunner(engine: engine, workload: workload!)
                    .run(seed: base.workload.seed, clock: try base.workload.clock)
                let metrics = ServingMetrics(records: records, duration: duration, slo: slo)
                let stats = engine.stats
                engine.shutdown()
                runs[i].append(BenchmarkReport(
                    metrics: metrics, records: records, engine: stats,
                    moe: .init(counters: engine.model.counters, promptTokens: metrics.totalInputTokens, outputTokens: metrics.totalOutputTokens,
                               executor: engine.model.experts),
                    label: i == 0 ? "A" : "B", requestRate: try base.workload.rate, burstiness: base.workload.burstiness,
                    model: arm.engine.model))
            }
        }
        print("A: \(a)\nB: \(b)\nrepeats: \(repeats) (alternating A, B)")
        let header = "Metric".padding(toLength: 38, withPad: " ", startingAt: 0) + "         A          B      B/A   B/A range"
        print(header)
        print(String(repeating: "-", count: header.count))
        var ratios: [String: Any] = [:]
        var nondeterministic: [String] = []
        for m in Self.metrics {
            let va = runs[0].map(m.value), vb = runs[1].map(m.value)
            if va.allSatisfy(\.isNaN) { continue }
            let per = zip(vb, va).map { $0 / $1 }
            let ratio = ServingMetrics.mean(per)
            let lo = per.min() ?? .nan, hi = per.max() ?? .nan
            let ratioText = ratio.isFinite ? String(format: "%8.3f  %.3f–%.3f", ratio, lo, hi) : "       –"
            print(m.name.padding(toLength: 38, withPad: " ", startingAt: 0)
                  + String(format: "%10.2f %10.2f ", ServingMetrics.mean(va), ServingMetrics.mean(vb)) + ratioText)
            func json(_ v: [Double]) -> [Any] { v.map { $0.isFinite ? $0 as Any : NSNull() } }
            ratios[m.name] = ["a": json(va), "b": json(vb), "b_over_a": json(per), "mean_b_over_a": ratio.isFinite ? ratio as Any : NSNull()]
            if m.deterministic && (Set(va).count > 1 || Set(vb).count > 1) { nondeterministic.append(m.name) }
        }
        // An executor's own counters (the hybrid executor's tokens per site,
        // bytes to the GPU, dense products), where an arm has them.
        let counterNames = Set(runs.joined().flatMap { $0.moe?.devices?.stats.counters.keys.map { $0 } ?? [] }).sorted()
        for name in counterNames {
            let va = runs[0].map { $0.moe?.devices?.stats.counters[name] ?? .nan }, vb = runs[1].map { $0.moe?.devices?.stats.counters[name] ?? .nan }
            let ratio = ServingMetrics.mean(zip(vb, va).map { $0 / $1 })
            func cell(_ v: [Double]) -> String {
                let m = ServingMetrics.mean(v)
                return m.isFinite ? String(format: "%10.2f", m) : "–".leftPadded(10)
            }
            print(name.padding(toLength: 38, withPad: " ", startingAt: 0) + cell(va) + " " + cell(vb) + " "
                  + (ratio.isFinite ? String(format: "%8.3f", ratio) : "       –"))
        }
        if repeats > 1 {
            print(nondeterministic.isEmpty ? "deterministic counters identical across repeats of each arm: yes"
                                           : "WARNING: counters differ across repeats: \(nondeterministic.joined(separator: ", ")) (arrivals during the run make the schedule timing-dependent; use --arrival-clock iteration, or --request-rate inf, for identical schedules)")
        }
        if let path = saveResult {
            let json: [String: Any] = ["a": ["flags": a, "runs": runs[0].map { $0.json() }],
                                       "b": ["flags": b, "runs": runs[1].map { $0.json() }],
                                       "shared_flags": shared, "repeats": repeats, "comparison": ratios,
                                       "nondeterministic_counters": nondeterministic]
            try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        }
    }
}

/// Splits an arm's flag string like a shell would (whitespace, single or double quotes).
func splitArguments(_ s: String) -> [String] {
    var out: [String] = []
    var current = ""
    var quote: Character?
    var inToken = false
    for c in s {
        if let q = quote {
            if c == q { quote = nil } else { current.append(c) }
        } else if c == "'" || c == "\"" {
            quote = c
            inToken = true
        } else if c.isWhitespace {
            if inToken { out.append(current); current = ""; inToken = false }
        } else {
            current.append(c)
            inToken = true
        }
    }
    if inToken { out.append(current) }
    return out
}

extension String {
    /// Right-aligned in `width` columns.
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
