import Foundation
import SwitchyardModel

/// Routing on the GPU (`DenseOffload.routes`): where a layer's router
/// logits are computed on the device, a kernel chooses each token's
/// experts there too, as `Router.route` does on the CPU (router bias,
/// softmax, sigmoid or softmax over the chosen, selection bias and
/// group-limited choice, top-k with ties to the lower id, renormalising,
/// scale), and the routes come back in the same copy as the logits: the
/// CPU skips its routing. The host still needs the routes, since it
/// issues each expert's products with sizes cuBLAS takes from the host.
struct DeviceRouting {
    /// `[layer]`: the router bias and selection bias on the device (0:
    /// none).
    var routerBias: [UInt64] = [], selectionBias: [UInt64] = []
    /// The model's routing, as the kernel takes it.
    var perToken = 0, groups = 1, groupsKept = 1, flags: Int32 = 0
    var scale: Float = 1
    /// Off (`device_routing: false`): the CPU routes from the logits.
    var enabled = true
    /// Per token: scores and choice scratch (device), and the routes
    /// (experts, then weights; pinned on the host too).
    var scratch = DeviceScratch(), rows = DeviceScratch()
    /// The layer and batch whose routes `rows` holds once the logits' wait
    /// is over; nil once taken or stale.
    var ready: (layer: Int, tokens: Int)?
    /// Layers whose routes the CPU took from the device.
    var layersRouted = 0

    /// The kernel's `flags`: scoring in bits 0-1 (softmax, sigmoid,
    /// softmax of the chosen), the group score (bit 2: sum of the top
    /// two), renormalising (bit 3), a router bias (bit 4), a selection bias
    /// (bit 5, set per layer).
    static func flags(_ r: RouterConfig, normalize: Bool) -> Int32 {
        let scoring: Int32 = switch r.scoring {
        case .softmax: 0
        case .sigmoid: 1
        case .softmaxOfTopK: 2
        }
        return scoring | (r.groupScore == .topTwoSum ? 4 : 0) | (normalize ? 8 : 0)
    }
}

extension CUDAAccelerator {
    static let routingKernelSource = """

    __device__ void pick_top_k(const float* p, int n, int k, int* experts, float* weights) {
        for (int j = 0; j < k; j++) {
            int best = -1;
            float best_value = minus_infinity();
            for (int i = 0; i < n; i++) {
                int taken = 0;
                for (int q = 0; q < j; q++) if (experts[q] == i) { taken = 1; break; }
                if (!taken && (best < 0 || p[i] > best_value)) { best = i; best_value = p[i]; }
            }
            experts[j] = best;
            weights[j] = best_value;
        }
    }

    __device__ void softmax_in_place(float* x, int n) {
        float m = minus_infinity(), sum = 0.0f;
        for (int i = 0; i < n; i++) if (x[i] > m) m = x[i];
        for (int i = 0; i < n; i++) { x[i] = expf(x[i] - m); sum += x[i]; }
        float inv = 1.0f / sum;
        for (int i = 0; i < n; i++) x[i] *= inv;
    }

    __device__ float group_score(const float* x, int size, int top_two) {
        float first = minus_infinity(), second = minus_infinity();
        for (int i = 0; i < size; i++) {
            float v = x[i];
            if (v > first) { second = first; first = v; } else if (v > second) second = v;
        }
        return top_two ? first + second : first;
    }

    // One thread per token: Router.route's steps in its order.
    extern "C" __global__ void route_tokens(const float* logits, const float* router_bias, const float* selection_bias, float* scratch,
                                            int* experts, float* weights, int n, int k, int groups, int kept, int flags, float scale,
                                            long long count) {
        long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (t >= count) return;
        float* s = scratch + t * 2 * n;
        float* c = s + n;
        int* e = experts + t * k;
        float* w = weights + t * k;
        int scoring = flags & 3;
        for (int i = 0; i < n; i++) s[i] = logits[t * n + i] + ((flags & 16) ? router_bias[i] : 0.0f);
        if (scoring == 0) softmax_in_place(s, n);
        if (scoring == 1) for (int i = 0; i < n; i++) s[i] = 1.0f / (1.0f + expf(-s[i]));
        if (scoring == 2) {
            pick_top_k(s, n, k, e, w);
            softmax_in_place(w, k);
        } else if (!(flags & 32) && groups <= 1) {
            pick_top_k(s, n, k, e, w);
        } else {
            for (int i = 0; i < n; i++) c[i] = s[i] + ((flags & 32) ? selection_bias[i] : 0.0f);
            if (groups > 1) {
                int size = n / groups;
                unsigned long long chosen = 0;
                for (int r = 0; r < kept; r++) {
                    int best = -1;
                    float best_score = minus_infinity();
                    for (int g = 0; g < groups; g++) {
                        if (chosen & (1ull << g)) continue;
                        float v = group_score(c + g * size, size, flags & 4);
                        if (best < 0 || v > best_score) { best = g; best_score = v; }
                    }
                    chosen |= 1ull << best;
                }
                for (int g = 0; g < groups; g++)
                    if (!(chosen & (1ull << g))) for (int i = 0; i < size; i++) c[g * size + i] = minus_infinity();
            }
            pick_top_k(c, n, k, e, w);
            // Weights from the scores, never from the biased choice.
            for (int j = 0; j < k; j++) w[j] = s[e[j]];
        }
        if (flags & 8) {
            float sum = 0.0f;
            for (int j = 0; j < k; j++) sum += w[j];
            sum += 1e-20f;
            for (int j = 0; j < k; j++) w[j] /= sum;
        }
        if (scale != 1.0f) for (int j = 0; j < k; j++) w[j] *= scale;
    }
    """

    /// The model's routing and each MoE layer's biases, onto the device
    /// (`loadDense`, once).
    func loadRouting(_ weights: ModelWeights, upload: ([Float]) throws -> UInt64) throws {
        let c = weights.config
        routing.routerBias = .init(repeating: 0, count: weights.layers.count)
        routing.selectionBias = routing.routerBias
        routing.perToken = c.numExpertsPerToken
        routing.groups = c.routing.groupCount
        routing.groupsKept = c.routing.groupsKept
        routing.scale = c.routing.scale
        routing.flags = DeviceRouting.flags(c.routing, normalize: c.normTopKProb)
        for (l, layer) in weights.layers.enumerated() {
            guard case .moe(let moe) = layer.feedForward, dense.router[l].address != 0 else { continue }
            if let b = moe.routerBias { routing.routerBias[l] = try upload(b) }
            if let b = moe.selectionBias { routing.selectionBias[l] = try upload(b) }
        }
    }

    /// Queues the routes of `tokens` rows of `layer`'s logits (in
    /// `dense.routerRows`) and their copy back, before the event the host
    /// waits on; `routes` hands them over after that wait.
    func queueRoutes(layer: Int, tokens t: Int, experts n: Int) throws -> Bool {
        routing.ready = nil
        guard routing.enabled, layer < routing.routerBias.count, t > 0 else { return false }
        let k = routing.perToken
        try grow(&routing.scratch, to: t * 2 * n * 4, pinned: false, "routing scratch")
        try grow(&routing.rows, to: t * k * 8, pinned: true, "routes")
        let rb = routing.routerBias[layer], sb = routing.selectionBias[layer]
        let flags = routing.flags | (rb != 0 ? 16 : 0) | (sb != 0 ? 32 : 0)
        // Biases not read stand in as valid addresses.
        try launch(.routeTokens, count: t, [.pointer(dense.routerRows.device), .pointer(rb != 0 ? rb : dense.routerRows.device),
                                            .pointer(sb != 0 ? sb : dense.routerRows.device), .pointer(routing.scratch.device),
                                            .pointer(routing.rows.device), .pointer(routing.rows.device + UInt64(t * k * 4)),
                                            .int32(Int32(n)), .int32(Int32(k)), .int32(Int32(routing.groups)),
                                            .int32(Int32(routing.groupsKept)), .int32(flags), .float(routing.scale)])
        try check("cuMemcpyDtoHAsync (routes)", copyDtoH(routing.rows.host!, routing.rows.device, t * k * 8, compute))
        return true
    }

    public func routes(layer: Int, tokens: Int, experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) -> Bool {
        guard let ready = routing.ready, ready == (layer, tokens) else { return false }
        routing.ready = nil
        let k = routing.perToken, host = routing.rows.host!
        experts.update(from: host.assumingMemoryBound(to: Int32.self), count: tokens * k)
        weights.update(from: (host + tokens * k * 4).assumingMemoryBound(to: Float.self), count: tokens * k)
        routing.layersRouted += 1
        return true
    }
}
