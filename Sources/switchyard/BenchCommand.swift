import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardModel
import SwitchyardServer

/// Workload flags (vLLM `bench serve` names).
struct WorkloadOptions: ParsableArguments {
    @Option(name: .customLong("num-prompts"), help: "Requests in a synthetic or JSONL workload.")
    var numPrompts: Int = 64

    @Option(name: .customLong("request-rate"), help: "Requests per second; inf submits all at t=0.")
    var requestRate: String = "inf"

    @Option(help: "Arrival burstiness: 1 is Poisson, below 1 burstier (Gamma arrivals).")
    var burstiness: Double = 1

    @Option(name: .customLong("input-len"), help: "Mean prompt tokens (synthetic).")
    var inputLen: Int = 128

    @Option(name: .customLong("output-len"), help: "Mean output tokens (synthetic; default for JSONL).")
    var outputLen: Int = 32

    @Option(name: .customLong("range-ratio"), help: "Lengths uniform in [len·(1−r), len·(1+r)].")
    var rangeRatio: Double = 0

    @Option(help: "Random seed for prompts, arrivals and sampling.")
    var seed: UInt64 = 0

    @Option(name: .customLong("burstgpt"), help: "Replay a BurstGPT CSV trace instead of a synthetic workload.")
    var burstGPT: String?

    @Option(name: .customLong("trace-scale"), help: "Replay the trace this many times faster.")
    var traceScale: Double = 1

    @Option(name: .customLong("trace-limit"), help: "Use only the first N successful trace rows.")
    var traceLimit: Int?

    @Option(name: .customLong("jsonl"), help: "A JSONL file of {\"prompt\": ..., \"max_tokens\": ...} records.")
    var jsonl: String?

    @Option(name: .customLong("arrival-clock"), help: "wall: replay arrivals in real time; iteration: on the engine's iteration clock (arrival t → iteration ⌊t / --iteration-ms⌋), so every engine counter repeats exactly at any rate.")
    var arrivalClock: String = "wall"

    @Option(name: .customLong("iteration-ms"), help: "With --arrival-clock iteration: the nominal iteration length that maps arrival times to iterations.")
    var iterationMs: Double = 50

    var clock: BenchmarkRunner.ArrivalClock {
        get throws {
            switch arrivalClock {
            case "wall": return .wall
            case "iteration":
                guard iterationMs > 0 else { throw ValidationError("--iteration-ms must be positive") }
                return .iterations(secondsPerIteration: iterationMs / 1000)
            default: throw ValidationError("--arrival-clock must be wall or iteration, got \"\(arrivalClock)\"")
            }
        }
    }

    var rate: Double {
        get throws {
            if requestRate == "inf" { return .infinity }
            guard let r = Double(requestRate), r > 0 else { throw ValidationError("--request-rate must be a positive number or inf") }
            return r
        }
    }

    func build(vocabSize: Int, maxModelLen: Int, tokenizer: (any Tokenizer)?) throws -> [WorkloadRequest] {
        do {
            if let path = burstGPT {
                return try Workload.burstGPT(path: path, scale: traceScale, limit: traceLimit, vocabSize: vocabSize,
                                             maxModelLen: maxModelLen, seed: seed)
            }
            if let path = jsonl {
                guard let tokenizer else { throw ValidationError("--jsonl needs the model's tokenizer.json") }
                var reqs = try Workload.jsonl(path: path, tokenizer: tokenizer, requestRate: try rate, burstiness: burstiness,
                                              defaultMaxTokens: outputLen, seed: seed)
                if reqs.count > numPrompts { reqs = Array(reqs.prefix(numPrompts)) }
                return reqs
            }
            return try Workload.synthetic(numPrompts: numPrompts, inputLen: inputLen, outputLen: outputLen, rangeRatio: rangeRatio,
                                          requestRate: try rate, burstiness: burstiness, vocabSize: vocabSize, seed: seed)
        } catch let e as WorkloadError {
            throw CLIError("error: \(e.description)")
        }
    }
}

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a workload against the engine in real time and print vLLM's serving benchmark result.")

    @OptionGroup var engine: EngineOptions
    @OptionGroup var workload: WorkloadOptions

    @Option(parsing: .upToNextOption, help: "SLOs for goodput in ms, e.g. --goodput ttft:500 tpot:50 e2el:2000.")
    var goodput: [String] = []

    @Option(name: .customLong("save-result"), help: "Write vLLM's result JSON (plus engine and moe objects) to this file.")
    var saveResult: String?

    @Option(help: "A label stored in the result JSON.")
    var label: String?

    @Flag(help: "No progress bar.")
    var quiet = false

    @Option(name: .customLong("record-routing"), help: "Record the run's routing profile (P and R, see docs/placement.md) to this file.")
    var recordRouting: String?

    @Option(name: .customLong("base-url"), help: "Benchmark a running OpenAI-compatible server (Switchyard, vLLM, llama.cpp) instead of an in-process engine, e.g. http://127.0.0.1:8000; --model is then only read for its vocabulary and tokenizer.")
    var baseURL: String?

    @Option(help: "With --base-url: /v1/completions (token-id prompts) or /v1/chat/completions (prompts decoded to text).")
    var endpoint: String = "/v1/completions"

    @Option(name: .customLong("served-model-name"), help: "With --base-url: the model name to send (default: the first of GET /v1/models).")
    var servedModelName: String?

    func run() async throws {
        let slo: GoodputSLO
        do { slo = try GoodputSLO.parse(goodput) } catch let e as WorkloadError { throw CLIError("error: \(e.description)") }
        if let baseURL { return try await runHTTP(baseURL: baseURL, slo: slo) }
        let eng = try engine.makeEngine()
        let requests = try workload.build(vocabSize: eng.model.config.vocabSize, maxModelLen: eng.config.maxModelLen,
                                          tokenizer: eng.tokenizer)
        let showProgress = !quiet && isatty(2) != 0
        let runner = BenchmarkRunner(engine: eng, workload: requests, progress: showProgress ? progressBar : nil)
        eng.model.counters.reset()
        eng.model.experts.resetStats()
        // With experts placed on devices, routes are recorded so results can
        // count tokens crossing devices between layers.
        if recordRouting != nil || eng.model.experts.expertDevice != nil { eng.model.counters.recordPairs() }
        let (records, duration) = await runner.run(seed: workload.seed, clock: try workload.clock)
        let metrics = ServingMetrics(records: records, duration: duration, slo: slo)
        let moe = BenchmarkReport.MoEReport(counters: eng.model.counters, promptTokens: metrics.totalInputTokens,
                                           outputTokens: metrics.totalOutputTokens, executor: eng.model.experts)
        let stats = eng.stats
        eng.shutdown()
        let report = BenchmarkReport(metrics: metrics, records: records, engine: stats, moe: moe, label: label,
                                     requestRate: try workload.rate, burstiness: workload.burstiness, model: engine.model)
        try publish(report, failed: "rejected")
        if let path = recordRouting {
            let profile = RoutingProfile(counters: eng.model.counters, topK: eng.model.config.numExpertsPerToken,
                                         source: "switchyard bench --model \(engine.model)")
            try profile.save(path: path)
        }
    }
}

extension BenchCommand {
    /// `--base-url`: the same workload and report, measured over HTTP from the stream.
    func runHTTP(baseURL: String, slo: GoodputSLO) async throws {
        let config: ModelConfig
        do { config = try ModelConfig.load(directory: URL(fileURLWithPath: engine.model)) } catch let e as CheckpointError {
            throw CLIError("error: \(e.description)")
        }
        let tokenizer = try? TokenizerLoader.load(directory: engine.model)
        let maxModelLen = engine.maxModelLen ?? min(config.maxPositionEmbeddings, 4096)
        let requests = try workload.build(vocabSize: config.vocabSize, maxModelLen: maxModelLen, tokenizer: tokenizer)
        let showProgress = !quiet && isatty(2) != 0
        let client = HTTPBenchmarkClient(baseURL: baseURL, endpoint: endpoint, model: servedModelName, workload: requests,
                                         tokenizer: tokenizer, progress: showProgress ? progressBar : nil)
        let run: HTTPBenchmarkClient.Run
        do { run = try await client.run(seed: workload.seed) } catch {
            throw CLIError("error: \(error)")
        }
        let records = run.records
        let metrics = ServingMetrics(records: records, duration: run.duration, slo: slo)
        // The engine's counters stay in the server (its /metrics); expert
        // counters come from /v1/experts/stats where the server has it.
        let moe = run.experts.map {
            BenchmarkReport.MoEReport(tokensPerExpert: $0.tokensPerLayerExpert, expertWeightBytesRead: $0.expertWeightBytesRead,
                                      expertActivations: $0.expertActivations,
                                      promptTokens: metrics.totalInputTokens, outputTokens: metrics.totalOutputTokens)
        }
        let report = BenchmarkReport(metrics: metrics, records: records, engine: nil, moe: moe, label: label,
                                     requestRate: try workload.rate, burstiness: workload.burstiness, model: engine.model)
        try publish(report, failed: "failed")
    }
}

extension BenchCommand {
    /// Prints the result block and each unsuccessful request's error
    /// (prefixed with `failed`) on stderr, and saves the JSON when asked.
    func publish(_ report: BenchmarkReport, failed: String) throws {
        print(report.formatted())
        for r in report.records where !r.success && !r.error.isEmpty {
            FileHandle.standardError.write(Data("\(failed): \(r.error)\n".utf8))
        }
        if let path = saveResult { try report.save(to: path) }
    }
}

/// A one-line progress bar on stderr.
@Sendable func progressBar(done: Int, total: Int) {
    let width = 30
    let filled = width * done / max(total, 1)
    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
    FileHandle.standardError.write(Data("\r[\(bar)] \(done)/\(total) requests".utf8))
    if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
}
