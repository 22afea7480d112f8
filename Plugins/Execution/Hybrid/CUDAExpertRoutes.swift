import Foundation
import SwitchyardModel

/// What moves between host and device for a layer's expert rows, and how
/// little of it has to: when the layer's front ran on the device
/// (`moeLayerFront`), its normed rows are already there as BF16, so the
/// experts' input rows are gathered on the device from a list of token
/// indices instead of crossing once per assignment; and when the device
/// computed more rows than the batch has tokens, it sums their weighted
/// outputs per token (`ExpertRoutes`) and one row per token comes back
/// instead of one per assignment. At decode with eight experts per token,
/// all resident, that is an eighth of the bytes back and none of the rows
/// over.
struct DeviceExpertRoutes {
    /// The layer and batch whose normed rows the last layer front left in
    /// `dense.inputRows` as BF16; nil as soon as anything else may have
    /// written there.
    var frontRows: (layer: Int, tokens: Int)?
    /// One upload per layer: the device rows' token indices (where it
    /// gathers), then each assignment's device row (-1: not on the device)
    /// and weight (where it sums); and the per-token sums (pinned on the
    /// host too).
    var index = DeviceScratch(), sums = DeviceScratch()
    /// `[expert]`: its position in the layer's device order, -1 if not there.
    var position: [Int32] = []
    /// Off (`device_combine: false`): rows cross one per assignment both ways.
    var enabled = true
    /// Expert rows' bytes to and from the device (inputs, indices, weights;
    /// outputs or sums), rows gathered on the device, layers summed there.
    var bytesIn = 0, bytesOut = 0, rowsGathered = 0, layersCombined = 0
}

extension CUDAAccelerator {
    static let routeKernelSource = """

    extern "C" __global__ void gather_rows_bf16(const unsigned short* src, const int* token_of_row, unsigned short* dst, int n,
                                                long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long r = i / n, c = i - r * n;
        dst[i] = src[(long long)token_of_row[r] * n + c];
    }

    // Each token's sum over its slots on the device, in slot order, as the
    // CPU combines.
    extern "C" __global__ void combine_rows(const float* y, const int* slot_row, const float* slot_weight, float* out, int n, int k,
                                            long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long t = i / n, c = i - t * n;
        float sum = 0.0f;
        for (int s = 0; s < k; s++) {
            int r = slot_row[t * k + s];
            if (r >= 0) sum += slot_weight[t * k + s] * y[(long long)r * n + c];
        }
        out[i] = sum;
    }
    """

    /// How `begin` moves this layer's rows: gathered from the front's rows
    /// on the device, and summed per token there.
    struct RowPlan {
        var gather = false, combine = false
        var tokens = 0, perToken = 0
    }

    /// Whether this layer's input rows are on the device already: its
    /// front left the normed rows there, for this batch.
    public func gathersRows(_ work: ExpertWork) -> Bool {
        guard routes.enabled, let r = work.routes, let front = routes.frontRows else { return false }
        return front == (work.layer, r.tokens)
    }

    /// Decides and, where the device gathers or combines, uploads the
    /// indices it needs for `order` (rows `rowOfExpert[i]` on), ahead of the
    /// products on the compute stream.
    func planRows(_ work: ExpertWork, order: [Int], rowOfExpert: [Int], rows: Int) throws -> RowPlan {
        var plan = RowPlan()
        guard routes.enabled, let r = work.routes, r.tokens > 0 else { return plan }
        plan.tokens = r.tokens
        plan.perToken = r.perToken
        plan.gather = gathersRows(work)
        // A kept layer's output sums here whatever the row count.
        plan.combine = rows > r.tokens || keepsExpertSums(work)
        routes.frontRows = nil
        guard plan.gather || plan.combine else { return plan }
        if routes.position.count != work.numExperts { routes.position = .init(repeating: -1, count: work.numExperts) }
        for (i, j) in order.enumerated() { routes.position[j] = Int32(i) }
        defer { for j in order { routes.position[j] = -1 } }
        let assignments = r.tokens * r.perToken
        try grow(&routes.index, to: (rows + 2 * assignments) * 4, pinned: true, "expert row indices")
        let tokenOfRow = routes.index.host!.assumingMemoryBound(to: Int32.self)
        let slotRow = tokenOfRow + rows
        let slotWeight = UnsafeMutableRawPointer(slotRow + assignments).assumingMemoryBound(to: Float.self)
        for a in 0..<assignments {
            let j = Int(r.expert[a]), p = Int(routes.position[j])
            guard p >= 0 else {
                slotRow[a] = -1
                slotWeight[a] = 0
                continue
            }
            let deviceRow = rowOfExpert[p] + Int(r.row[a] - work.rowOffset[j])
            tokenOfRow[deviceRow] = Int32(a / r.perToken)
            slotRow[a] = Int32(deviceRow)
            slotWeight[a] = r.weight[a]
        }
        // The rows' token indices where the device gathers, the slots where
        // it sums.
        let from = plan.gather ? 0 : rows * 4, to = plan.combine ? (rows + 2 * assignments) * 4 : rows * 4, bytes = to - from
        try check("cuMemcpyHtoDAsync (expert row indices)",
                  copyHtoD(routes.index.device + UInt64(from), routes.index.host! + from, bytes, compute))
        routes.bytesIn += bytes
        return plan
    }

    /// The BF16 input rows from the front's normed rows, by token index.
    func gatherRows(rows: Int, into inputs: UInt64) throws {
        try launch(.gatherRows, count: rows * hidden, [.pointer(dense.inputRows.device), .pointer(routes.index.device), .pointer(inputs),
                                                       .int32(Int32(hidden))])
        routes.rowsGathered += rows
    }

    /// Queues the per-token sums of the device's rows and (`copyBack`) their copy back.
    func combineRows(_ plan: RowPlan, rows: Int, outputs: UInt64, copyBack: Bool = true) throws {
        let t = plan.tokens, h = hidden
        try grow(&routes.sums, to: t * h * 4, pinned: true, "expert sums")
        let slots = routes.index.device + UInt64(rows * 4)
        try launch(.combineRows, count: t * h, [.pointer(outputs), .pointer(slots), .pointer(slots + UInt64(t * plan.perToken * 4)),
                                                .pointer(routes.sums.device), .int32(Int32(h)), .int32(Int32(plan.perToken))])
        routes.layersCombined += 1
        guard copyBack else { return }
        try check("cuMemcpyDtoHAsync (expert sums)", copyDtoH(routes.sums.host!, routes.sums.device, t * h * 4, compute))
        routes.bytesOut += t * h * 4
    }

    /// After the wait: the sums into the work's `combined` rows and its
    /// experts flagged as summed; `kept`: zeros there instead, their sums
    /// staying on the device for the kept layer output.
    func deliverSums(_ work: ExpertWork, experts: [Int], kept: Bool = false) {
        guard let r = work.routes else { return }
        if kept {
            r.combined.initialize(repeating: 0, count: r.tokens * hidden)
        } else {
            r.combined.update(from: routes.sums.host!.assumingMemoryBound(to: Float.self), count: r.tokens * hidden)
        }
        for j in experts { r.combinedExperts[j] = true }
    }
}
