import Foundation
import Prometheus
import Synchronization
import SwitchyardCore
import SwitchyardModel

/// `GET /metrics`: vLLM's metric names under a `switchyard:` prefix, plus
/// MoE metrics, kept in a swift-prometheus registry and rendered in the
/// Prometheus text format. Every series carries `model_name`, as vLLM's do.
///
/// Request metrics are recorded as requests finish; engine gauges and the
/// MoE counters are brought up to date from the engine when scraped.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let modelName: String

    let requestsRunning: Gauge
    let requestsWaiting: Gauge
    let kvCacheUsage: Gauge
    let preemptions: Counter
    let promptTokens: Counter
    let generationTokens: Counter
    let requestSuccess: [FinishReason: Counter]
    let rejectedInvalid: Counter
    let rejectedQueueFull: Counter
    let ttft: ValueHistogram
    let itl: ValueHistogram
    let e2e: ValueHistogram
    let expertTokens: [Counter]
    let deviceTokens: [Counter]
    let weightBytes: Counter
    let activations: Counter
    /// Measured work of the executor's devices.
    let deviceBusy: [Counter]
    let expertPhase: Counter
    let busiestDeviceTokens: Counter
    let meanDeviceTokens: Counter
    let map: ExpertMap

    /// What the counters fed from engine totals have already counted.
    private struct Seen: Sendable {
        var preemptions = 0
        var experts: ExpertCounts?
    }
    private let seen = Mutex(Seen())

    static let ttftBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                              20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
    static let itlBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                             5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
    static let e2eBuckets = [0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                             120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]

    public init(modelName: String, numLayers: Int, numExperts: Int, map: ExpertMap, devices: [ExecutionDevice]) {
        self.modelName = modelName
        self.map = map
        let m = [("model_name", modelName)]
        func name(_ n: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: "switchyard:" + n, unitName: unit, helpText: help)
        }
        requestsRunning = registry.makeGauge(descriptor: name("num_requests_running", "", "Requests in the running batch."), labels: m)
        requestsWaiting = registry.makeGauge(descriptor: name("num_requests_waiting", "", "Requests waiting to be scheduled (including preempted)."), labels: m)
        kvCacheUsage = registry.makeGauge(descriptor: name("kv_cache_usage_perc", "", "Fraction of KV-cache blocks in use (0 to 1)."), labels: m)
        preemptions = registry.makeCounter(descriptor: name("num_preemptions", "total", "Preemptions by recompute."), labels: m)
        promptTokens = registry.makeCounter(descriptor: name("prompt_tokens", "total", "Prompt tokens of finished requests."), labels: m)
        generationTokens = registry.makeCounter(descriptor: name("generation_tokens", "total", "Generated tokens of finished requests."), labels: m)
        var success: [FinishReason: Counter] = [:]
        for reason in [FinishReason.stop, .length, .abort] {
            success[reason] = registry.makeCounter(descriptor: name("request_success", "total", "Finished requests by finish reason."),
                                                   labels: m + [("finished_reason", reason.rawValue)])
        }
        requestSuccess = success
        rejectedInvalid = registry.makeCounter(descriptor: name("request_rejected", "total", "Requests answered with an error before running."),
                                               labels: m + [("reason", "invalid_request")])
        rejectedQueueFull = registry.makeCounter(descriptor: name("request_rejected", "total", "Requests answered with an error before running."),
                                                 labels: m + [("reason", "queue_full")])
        ttft = registry.makeValueHistogram(descriptor: name("time_to_first_token", "seconds", "Time to first token (arrival at the engine to first sampled token)."),
                                           labels: m, buckets: Self.ttftBuckets)
        itl = registry.makeValueHistogram(descriptor: name("inter_token_latency", "seconds", "Gaps between consecutive tokens of a request."),
                                          labels: m, buckets: Self.itlBuckets)
        e2e = registry.makeValueHistogram(descriptor: name("e2e_request_latency", "seconds", "Arrival at the engine to finish."),
                                          labels: m, buckets: Self.e2eBuckets)
        var experts: [Counter] = []
        for l in 0..<numLayers {
            for e in 0..<numExperts {
                experts.append(registry.makeCounter(descriptor: name("moe_expert_tokens", "total", "Token-slots routed to each expert of each layer."),
                                                    labels: m + [("layer", "\(l)"), ("expert", "\(e)")]))
            }
        }
        expertTokens = experts
        let registry = self.registry
        deviceTokens = (0..<map.numDevices).map { d in
            registry.makeCounter(descriptor: name("moe_device_tokens", "total", "Token-slots computed by the experts each device holds, over all layers."),
                                 labels: m + [("device", "\(d)")])
        }
        weightBytes = registry.makeCounter(descriptor: name("moe_expert_weight_bytes_read", "total", "Expert weight bytes read (an expert counts once per layer per iteration it runs)."), labels: m)
        activations = registry.makeCounter(descriptor: name("moe_expert_activations", "total", "Expert computations (layer, expert, iteration)."), labels: m)
        deviceBusy = devices.enumerated().map { d, device in
            registry.makeCounter(descriptor: name("moe_device_busy_seconds", "total", "Seconds each device spent computing its experts."),
                                 labels: m + [("device", "\(d)"), ("kind", device.kind.rawValue)])
        }
        expertPhase = registry.makeCounter(descriptor: name("moe_expert_phase_seconds", "total", "Wall seconds of MoE expert phases (each waits for its busiest device)."), labels: m)
        busiestDeviceTokens = registry.makeCounter(descriptor: name("moe_busiest_device_tokens", "total", "Per forward and layer, the busiest device's token-expert assignments, summed."), labels: m)
        meanDeviceTokens = registry.makeCounter(descriptor: name("moe_mean_device_tokens", "total", "Per forward and layer, the mean device's token-expert assignments, summed (busiest / mean = the imbalance forwards wait on)."), labels: m)
    }

    /// Records a request that ran (finished, stopped or was cancelled).
    public func recordFinished(_ out: RequestOutput) {
        requestSuccess[out.finishReason]?.increment()
        promptTokens.increment(by: Int64(out.promptTokens))
        generationTokens.increment(by: Int64(out.outputTokens.count))
        if let t = out.ttft { ttft.record(t) }
        for gap in out.interTokenLatencies { itl.record(gap) }
        e2e.record(out.e2eLatency)
    }

    public func recordRejected(_ error: APIError) {
        (error.status == 503 ? rejectedQueueFull : rejectedInvalid).increment()
    }

    /// Brings the engine-fed series up to date and renders the registry.
    public func render(engine: Engine) async -> String {
        let stats = engine.stats
        let counts = await ExpertCounts.read(engine)
        requestsRunning.set(Double(stats.runningRequests))
        requestsWaiting.set(Double(stats.waitingRequests))
        kvCacheUsage.set(stats.totalKVBlocks > 0 ? Double(stats.usedKVBlocks) / Double(stats.totalKVBlocks) : 0)
        seen.withLock { s in
            if stats.preemptions > s.preemptions { preemptions.increment(by: Int64(stats.preemptions - s.preemptions)) }
            s.preemptions = max(s.preemptions, stats.preemptions)
            let before = s.experts ?? ExpertCounts(numLayers: counts.numLayers, numExperts: counts.numExperts,
                                                   tokens: Array(repeating: 0, count: counts.tokens.count),
                                                   expertWeightBytesRead: 0, expertActivations: 0)
            let delta = counts - before
            // Counters only go up; the engine's counters are never reset while serving.
            for (i, n) in delta.tokens.enumerated() where n > 0 && i < expertTokens.count {
                expertTokens[i].increment(by: Int64(n))
                let l = i / counts.numExperts, e = i % counts.numExperts
                if l < map.device.count, e < map.device[l].count { deviceTokens[map.device[l][e]].increment(by: Int64(n)) }
            }
            if delta.expertWeightBytesRead > 0 { weightBytes.increment(by: Int64(delta.expertWeightBytesRead)) }
            if delta.expertActivations > 0 { activations.increment(by: Int64(delta.expertActivations)) }
            // The executor's own counters (the hybrid executor's tokens per
            // site, bytes copied to the GPU, hit rate) as gauges of its totals.
            for (counter, value) in counts.devices?.counters ?? [:] {
                registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "switchyard:executor_counter", unitName: "",
                                                                    helpText: "An execution strategy's own counter, by name (totals and ratios since start)."),
                                   labels: [("model_name", modelName), ("counter", counter)]).set(value)
            }
            if let d = delta.devices {
                for (i, t) in d.busySeconds.enumerated() where t > 0 && i < deviceBusy.count { deviceBusy[i].increment(by: t) }
                if d.expertPhaseSeconds > 0 { expertPhase.increment(by: d.expertPhaseSeconds) }
                if d.busiestDeviceTokens > 0 { busiestDeviceTokens.increment(by: Int64(d.busiestDeviceTokens)) }
                if d.meanDeviceTokens > 0 { meanDeviceTokens.increment(by: d.meanDeviceTokens) }
            }
            // A concurrent scrape may have read newer counts first: keep the newest seen.
            s.experts = ExpertCounts(numLayers: counts.numLayers, numExperts: counts.numExperts,
                                     tokens: zip(before.tokens, counts.tokens).map { max($0, $1) },
                                     expertWeightBytesRead: max(before.expertWeightBytesRead, counts.expertWeightBytesRead),
                                     expertActivations: max(before.expertActivations, counts.expertActivations),
                                     devices: Self.newest(before.devices, counts.devices))
        }
        return registry.emitToString()
    }

    /// Element-wise maximum of two readings of monotonic device counters.
    static func newest(_ a: ExpertCounts.DeviceWork?, _ b: ExpertCounts.DeviceWork?) -> ExpertCounts.DeviceWork? {
        guard let a else { return b }
        guard let b else { return a }
        return .init(busySeconds: zip(a.busySeconds, b.busySeconds).map { max($0, $1) },
                     expertPhaseSeconds: max(a.expertPhaseSeconds, b.expertPhaseSeconds),
                     busiestDeviceTokens: max(a.busiestDeviceTokens, b.busiestDeviceTokens),
                     meanDeviceTokens: max(a.meanDeviceTokens, b.meanDeviceTokens))
    }
}
