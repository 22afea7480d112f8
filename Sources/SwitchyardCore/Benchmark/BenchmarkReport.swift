import Foundation
import SwitchyardModel

/// The result of one benchmark run in vLLM's formats: the printed "Serving
/// Benchmark Result" block and the `--save-result` JSON (vLLM's keys, plus
/// `engine` and `moe` objects when the counters are known).
public struct BenchmarkReport {
    public var metrics: ServingMetrics
    public var records: [ClientRecord]
    /// The engine's counters; nil over HTTP, where the engine is the server's.
    public var engine: EngineStats?
    /// Expert counters; over HTTP only from a server that exports them.
    public var moe: MoEReport?
    public var label: String?
    public var requestRate: Double
    public var burstiness: Double
    public var model: String

    public struct MoEReport: Sendable {
        public var numLayers: Int
        public var numExperts: Int
        /// `tokensPerExpert[layer][expert]`.
        public var tokensPerExpert: [[Int]]
        public var expertWeightBytesRead: Int
        /// Shared experts' bytes, apart from the routed ones (0 from a server's stats).
        public var sharedExpertWeightBytesRead = 0
        public var expertActivations: Int
        public var promptTokens: Int
        public var outputTokens: Int

        /// Per-device results when experts were placed on devices.
        public var devices: DeviceReport?

        /// Counts read from elsewhere (a server's `/v1/experts/stats`).
        public init(tokensPerExpert: [[Int]], expertWeightBytesRead: Int, expertActivations: Int,
                    promptTokens: Int, outputTokens: Int) {
            numLayers = tokensPerExpert.count
            numExperts = tokensPerExpert.first?.count ?? 0
            self.tokensPerExpert = tokensPerExpert
            self.expertWeightBytesRead = expertWeightBytesRead
            self.expertActivations = expertActivations
            self.promptTokens = promptTokens
            self.outputTokens = outputTokens
        }

        public init(counters: ExpertLoadCounters, promptTokens: Int, outputTokens: Int, executor: (any ExpertExecutor)? = nil) {
            // Executors with more than one device (pools, an accelerator) or
            // counters of their own report them; the default one has neither.
            if let executor, executor.devices.count > 1 || !executor.stats.counters.isEmpty {
                var cross: [Int]?
                if let map = executor.expertDevice, counters.recordsPairs {
                    let profile = RoutingProfile(counters: counters, topK: 1, source: "")
                    cross = PlacementReport(map: ExpertMap(numDevices: executor.devices.count, device: map), profile: profile).crossDevicePairs
                }
                devices = DeviceReport(stats: executor.stats, crossDevicePairs: cross)
            }
            numLayers = counters.numLayers
            numExperts = counters.numExperts
            tokensPerExpert = (0..<counters.numLayers).map { l in Array(counters.tokens[(l * counters.numExperts)..<((l + 1) * counters.numExperts)]) }
            expertWeightBytesRead = counters.expertWeightBytesRead
            sharedExpertWeightBytesRead = counters.sharedExpertWeightBytesRead
            expertActivations = counters.expertActivations
            self.promptTokens = promptTokens
            self.outputTokens = outputTokens
        }

        /// What each device did.
        public struct DeviceReport: Sendable {
            public var stats: ExpertExecutionStats
            /// Per layer boundary: consecutive-layer expert pairs whose experts
            /// sit on different devices (tokens moving between devices); nil
            /// unless routes were recorded.
            public var crossDevicePairs: [Int]?

            public var numDevices: Int { stats.deviceTokens.first?.count ?? 0 }
            /// Seconds each device spent on experts, over all layers.
            public var busySeconds: [Double] {
                (0..<numDevices).map { d in stats.deviceBusySeconds.reduce(0) { $0 + $1[d] } }
            }
            public var expertPhaseSeconds: Double { stats.expertPhaseSeconds.reduce(0, +) }
            /// Over all layers and forwards: Σ busiest device's assignments /
            /// Σ mean device's, what the expert phase waits on.
            public var perForwardImbalance: Double { stats.perForwardImbalance }
            /// Worst layer's max/mean device token load.
            public var worstLayerImbalance: Double {
                stats.deviceTokens.map { row in
                    let m = Double(row.reduce(0, +)) / Double(max(row.count, 1))
                    return m > 0 ? Double(row.max() ?? 0) / m : 1
                }.max() ?? 1
            }
        }

        /// Worst over layers of max/mean tokens per expert.
        public var maxOverMeanLoad: Double {
            tokensPerExpert.map { row in
                let m = Double(row.reduce(0, +)) / Double(max(row.count, 1))
                return m > 0 ? Double(row.max() ?? 0) / m : 0
            }.max() ?? 0
        }
    }

    public init(metrics: ServingMetrics, records: [ClientRecord], engine: EngineStats?, moe: MoEReport?,
                label: String?, requestRate: Double, burstiness: Double, model: String) {
        self.metrics = metrics
        self.records = records
        self.engine = engine
        self.moe = moe
        self.label = label
        self.requestRate = requestRate
        self.burstiness = burstiness
        self.model = model
    }

    static func line(_ label: String, _ value: String) -> String {
        label.padding(toLength: max(40, label.count), withPad: " ", startingAt: 0) + " " + value
    }

    static func f2(_ v: Double) -> String { String(format: "%.2f", v) }

    static func header(_ title: String, width: Int = 50, fill: Character = "-") -> String {
        let pad = max(0, width - title.count)
        return String(repeating: fill, count: pad / 2) + title + String(repeating: fill, count: pad - pad / 2)
    }

    /// The printed block, with vLLM's labels and layout.
    public func formatted() -> String {
        let m = metrics
        var out: [String] = [Self.header(" Serving Benchmark Result ", fill: "=")]
        out.append(Self.line("Successful requests:", "\(m.completed)"))
        if m.failed > 0 { out.append(Self.line("Failed requests:", "\(m.failed)")) }
        out.append(Self.line("Benchmark duration (s):", Self.f2(m.duration)))
        out.append(Self.line("Total input tokens:", "\(m.totalInputTokens)"))
        out.append(Self.line("Total generated tokens:", "\(m.totalOutputTokens)"))
        out.append(Self.line("Request throughput (req/s):", Self.f2(m.requestThroughput)))
        if let g = m.requestGoodput { out.append(Self.line("Request goodput (req/s):", Self.f2(g))) }
        out.append(Self.line("Output token throughput (tok/s):", Self.f2(m.outputThroughput)))
        out.append(Self.line("Total token throughput (tok/s):", Self.f2(m.totalTokenThroughput)))
        for (title, key, values) in [("Time to First Token", "TTFT", m.ttftsMs),
                                     ("Time per Output Token (excl. 1st token)", "TPOT", m.tpotsMs),
                                     ("Inter-token Latency", "ITL", m.itlsMs)] {
            out.append(Self.header(title))
            out.append(Self.line("Mean \(key) (ms):", Self.f2(ServingMetrics.mean(values))))
            out.append(Self.line("Median \(key) (ms):", Self.f2(ServingMetrics.percentile(values, 50))))
            out.append(Self.line("P99 \(key) (ms):", Self.f2(ServingMetrics.percentile(values, 99))))
        }
        if let d = moe?.devices {
            out.append(Self.header("Expert Devices"))
            out.append(Self.line("Devices:", "\(d.numDevices)"))
            out.append(Self.line("Worst-layer device load (max/mean):", String(format: "%.3f", d.worstLayerImbalance)))
            out.append(Self.line("Per-forward device load (max/mean):", String(format: "%.3f", d.perForwardImbalance)))
            out.append(Self.line("Expert phase time (s):", String(format: "%.3f", d.expertPhaseSeconds)))
            out.append(Self.line("Device busy time (s):", d.busySeconds.map { String(format: "%.3f", $0) }.joined(separator: " / ")))
            if let c = d.crossDevicePairs { out.append(Self.line("Cross-device token pairs:", "\(c.reduce(0, +))")) }
            for (name, value) in d.stats.counters.sorted(by: { $0.key < $1.key }) {
                out.append(Self.line("\(name):", value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(format: "%.4f", value)))
            }
        }
        out.append(String(repeating: "=", count: 50))
        return out.joined(separator: "\n")
    }

    /// vLLM's result JSON plus `engine` and `moe`.
    public func json() -> [String: Any] {
        let m = metrics
        let ok = records.filter(\.success)
        var j: [String: Any] = [
            "date": ISO8601DateFormatter().string(from: Date()),
            "backend": "switchyard", "model_id": model,
            "request_rate": requestRate.isFinite ? requestRate as Any : "inf", "burstiness": burstiness,
            "duration": m.duration, "completed": m.completed, "failed": m.failed,
            "total_input_tokens": m.totalInputTokens, "total_output_tokens": m.totalOutputTokens,
            "request_throughput": m.requestThroughput, "output_throughput": m.outputThroughput,
            "total_token_throughput": m.totalTokenThroughput,
            "request_goodput": m.requestGoodput as Any? ?? NSNull(),
            "input_lens": ok.map(\.promptTokens), "output_lens": ok.map(\.outputTokens),
            "ttfts": ok.map(\.ttft), "itls": ok.map(\.itls), "latencies": ok.map(\.latency),
            "start_times": ok.map(\.startTime), "errors": records.map(\.error),
        ]
        if let label { j["label"] = label }
        for (key, values) in [("ttft", m.ttftsMs), ("tpot", m.tpotsMs), ("itl", m.itlsMs), ("e2el", m.e2elsMs)] {
            j["mean_\(key)_ms"] = ServingMetrics.mean(values)
            j["median_\(key)_ms"] = ServingMetrics.percentile(values, 50)
            j["std_\(key)_ms"] = ServingMetrics.std(values)
            j["p99_\(key)_ms"] = ServingMetrics.percentile(values, 99)
        }
        if let e = engine {
            let iterSeconds = e.scheduleSeconds + e.forwardSeconds + e.sampleSeconds
            j["engine"] = [
                "iterations": e.iterations, "logits_rows": e.logitsRows,
                "batch_size_histogram": Dictionary(uniqueKeysWithValues: e.batchSizeHistogram.map { ("\($0.key)", $0.value) }),
                "mean_tokens_per_iteration": e.iterations > 0 ? Double(e.scheduledTokens) / Double(e.iterations) : 0,
                "num_preemptions": e.preemptions, "decode_stalls": e.decodeStalls,
                "peak_kv_cache_usage": e.peakKVUsage, "num_kv_blocks": e.totalKVBlocks,
                "kv_cache_bytes_per_token": e.kvCacheBytesPerToken,
                "rejected_requests": e.rejectedRequests,
                "unrunnable_items": e.unrunnableItems,
                "forward_errors": e.forwardErrors,
                "time_s": ["schedule": e.scheduleSeconds, "forward": e.forwardSeconds, "sample_and_bookkeeping": e.sampleSeconds],
                "overhead_share": iterSeconds > 0 ? (e.scheduleSeconds + e.sampleSeconds) / iterSeconds : 0,
            ] as [String: Any]
        }
        guard let mo = moe else { return j }
        j["moe"] = [
            "num_layers": mo.numLayers, "num_experts": mo.numExperts,
            "tokens_per_layer_expert": mo.tokensPerExpert,
            "expert_weight_bytes_read": mo.expertWeightBytesRead,
            "expert_weight_bytes_per_prompt_token": mo.promptTokens > 0 ? Double(mo.expertWeightBytesRead) / Double(mo.promptTokens) : 0,
            "expert_weight_bytes_per_output_token": mo.outputTokens > 0 ? Double(mo.expertWeightBytesRead) / Double(mo.outputTokens) : 0,
            "shared_expert_weight_bytes_read": mo.sharedExpertWeightBytesRead,
            "expert_activations": mo.expertActivations,
            "max_over_mean_expert_load": mo.maxOverMeanLoad,
        ] as [String: Any]
        if let d = mo.devices {
            var dj: [String: Any] = [
                "num_devices": d.numDevices,
                "tokens_per_layer_device": d.stats.deviceTokens,
                "busy_seconds_per_layer_device": d.stats.deviceBusySeconds,
                "busy_seconds_per_device": d.busySeconds,
                "expert_phase_seconds_per_layer": d.stats.expertPhaseSeconds,
                "expert_phase_seconds": d.expertPhaseSeconds,
                "worst_layer_device_imbalance": d.worstLayerImbalance,
                "per_forward_device_imbalance": d.perForwardImbalance,
                "busiest_device_tokens_per_layer": d.stats.busiestDeviceTokens,
                "mean_device_tokens_per_layer": d.stats.meanDeviceTokens,
                "executor_counters": d.stats.counters,
            ]
            if let c = d.crossDevicePairs {
                dj["cross_device_pairs_per_boundary"] = c
                dj["cross_device_pairs"] = c.reduce(0, +)
            }
            j["devices"] = dj
        }
        return j
    }

    public func save(to path: String) throws {
        let data = try JSONSerialization.data(withJSONObject: json(), options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: path))
    }
}
