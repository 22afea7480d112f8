import Foundation
import SwitchyardModel

/// What the hybrid executor asks of the device that holds hot experts: keep
/// experts resident, compute a layer's share of experts while the CPU
/// computes the rest, and report what it can hold. The CUDA implementation
/// (`CUDAAccelerator`) is the part of the hybrid executor that has not
/// run on a GPU yet; everything above this protocol (what goes where,
/// residency, counters, falling back to the CPU) is tested against a
/// host-memory implementation.
public protocol ExpertAccelerator: AnyObject, Sendable {
    /// The device as `ExecutionDevice` describes it (kind `.accelerator`).
    var name: String { get }
    var detail: String { get }
    /// Bytes of device memory experts may use (the `--gpu-memory` budget
    /// less dense weights, KV cache and staging).
    var expertBudgetBytes: Int { get }

    /// Copies an expert's weights into device memory, where they stay until
    /// `evict`.
    func load(_ expert: ResidentExperts.Expert, weights: ExpertWeights) throws
    func evict(_ expert: ResidentExperts.Expert)

    /// Starts computing `experts` of `work` (ids in `work.experts`): the
    /// resident ones from device memory, those in `uploads` copied first
    /// through staging buffers. Writes their `work.output` rows, or their
    /// per-token sums (`ExpertRoutes`, flagged only once `finish` has them),
    /// and nothing else. May return before the work is done; `finish` waits
    /// for it.
    func begin(_ work: ExpertWork, experts: [Int], uploads: [Int]) throws
    func finish() throws
    /// Whether `begin` would take this layer's input rows from rows the
    /// device already holds (`ExpertRoutes.source`'s, left there by the
    /// layer's front), so the host need not gather them (default: no).
    func gathersRows(_ work: ExpertWork) -> Bool

    /// Figures of its own for benchmark results and `/metrics`, by name,
    /// since the last `resetCounters()` (none by default).
    var counters: [String: Double] { get }
    func resetCounters()
}

extension ExpertAccelerator {
    public func gathersRows(_ work: ExpertWork) -> Bool { false }
    public var counters: [String: Double] { [:] }
    public func resetCounters() {}
}
