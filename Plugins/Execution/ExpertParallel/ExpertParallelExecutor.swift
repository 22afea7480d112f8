import Foundation
import SwitchyardModel

/// Expert parallelism on a CPU: the kernel threads are split into device
/// pools (each pinned to its own cores), every expert of every layer belongs
/// to one device, and its weights are copied into memory on that device's
/// NUMA node. In an MoE layer each device computes only its own experts'
/// token groups, all devices at once, so a layer's expert time is its
/// busiest device's time: what placement balances.
///
/// Install with `Transformer.install(experts:)`; the router, the combine
/// step, attention and dense layers still use every thread.
public final class ExpertParallelExecutor: ExpertExecutor, @unchecked Sendable {
    public let pools: [CorePool]
    public var numDevices: Int { pools.count }
    /// `device[layer][expert]`.
    public let device: [[Int]]
    public var expertDevice: [[Int]]? { device }
    public let devices: [ExecutionDevice]
    /// Whether expert weights were copied to their device's node.
    public let weightsOnNode: Bool
    /// Whether the kernel threads are pinned to their pool's cores.
    public let pinned: Bool

    // Dispatch tables, fixed at install: a device's experts per layer, and
    // which kernel threads make up each device.
    let deviceExperts: [[Int32]]
    let deviceOffsets: [[Int]]
    let threadDevice: [Int]
    let firstThread: [Int]
    let threadsOfDevice: [Int]
    let barriers: [SpinBarrier]
    /// The processing units each kernel thread is bound to.
    let threadPUs: [[Int]]
    /// Which OS thread last pinned itself for each part (the caller's part 0
    /// may change threads between forwards).
    let pinnedThread: UnsafeMutablePointer<pthread_t?>

    /// Expert weights per layer (node-local copies, or the checkpoint's).
    let experts: [[ExpertWeights]?]
    private let memory: [NodeLocalMemory]

    /// Per (layer, device), written by disjoint threads.
    let counters: ExpertExecutionCounters
    let numLayers: Int

    public enum SetupError: Error, CustomStringConvertible, Equatable {
        case badMap(String)
        case tooFewThreads(devices: Int, threads: Int)
        public var description: String {
            switch self {
            case let .badMap(m): return "expert map: \(m)"
            case let .tooFewThreads(d, t):
                return "\(d) devices need at least \(d) kernel threads, there are \(t); use fewer --devices (or raise SWITCHYARD_THREADS)"
            }
        }
    }

    /// `map[layer][expert]` must name a device in `0..<pools.count` for
    /// every expert of every MoE layer. Kernel threads are shared out to the
    /// pools in proportion to their cores.
    public init(weights: ModelWeights, pools: [CorePool], map: [[Int]], weightsOnNode: Bool, pin: Bool) throws {
        let c = weights.config
        let n = pools.count
        let threads = Parallel.threadCount
        guard n >= 1 else { throw SetupError.badMap("no devices") }
        guard threads >= n else { throw SetupError.tooFewThreads(devices: n, threads: threads) }
        guard map.count == c.numLayers, map.allSatisfy({ $0.count == c.numExperts }) else {
            throw SetupError.badMap("it has \(map.count) layers × \(map.first?.count ?? 0) experts, the model \(c.numLayers) × \(c.numExperts)")
        }
        guard map.allSatisfy({ $0.allSatisfy { (0..<n).contains($0) } }) else {
            throw SetupError.badMap("a device index is outside 0..<\(n)")
        }
        self.pools = pools
        device = map
        numLayers = c.numLayers

        var dExperts: [[Int32]] = [], dOffsets: [[Int]] = []
        for l in 0..<c.numLayers {
            var list: [Int32] = [], offs = [0]
            for d in 0..<n {
                list += (0..<c.numExperts).filter { map[l][$0] == d }.map(Int32.init)
                offs.append(list.count)
            }
            dExperts.append(list)
            dOffsets.append(offs)
        }
        deviceExperts = dExperts
        deviceOffsets = dOffsets

        let share = ExpertParallelExecutor.shareThreads(threads, cores: pools.map(\.cores.count))
        let first = share.map(\.first)
        let owner = (0..<threads).map { t in (0..<n).last { first[$0] <= t }! }
        firstThread = first
        threadsOfDevice = share.map(\.count)
        threadDevice = owner
        barriers = share.map { SpinBarrier(parties: $0.count) }
        threadPUs = (0..<threads).map { t in
            let d = owner[t]
            let pool = pools[d]
            // One core per thread, round-robin over the pool's cores.
            let perCore = max(1, pool.processingUnits.count / max(1, pool.cores.count))
            let core = (t - first[d]) % max(1, pool.cores.count)
            let pus = Array(pool.processingUnits.dropFirst(core * perCore).prefix(perCore))
            return pus.isEmpty ? pool.processingUnits : pus
        }
        pinnedThread = .allocate(capacity: threads)
        pinnedThread.initialize(repeating: nil, count: threads)
        self.pinned = pin

        var mem: [NodeLocalMemory] = []
        var local: [[ExpertWeights]?] = []
        var allOnNode = weightsOnNode
        for (l, layer) in weights.layers.enumerated() {
            guard case .moe(let moe) = layer.feedForward else { local.append(nil); continue }
            guard weightsOnNode else { local.append(moe.experts); continue }
            local.append(moe.experts.enumerated().map { j, e in
                let block = NodeLocalMemory(bytes: e.byteCount, node: pools[map[l][j]].numaNode)
                allOnNode = allOnNode && block.onNode
                mem.append(block)
                var at = block.pointer
                func copy(_ m: Matrix) -> Matrix {
                    defer { at += m.byteCount }
                    return m.copy(to: at)
                }
                return e.replacing(gate: copy(e.gate), up: copy(e.up), down: copy(e.down))
            })
        }
        experts = local
        memory = mem
        self.weightsOnNode = weightsOnNode && allOnNode
        counters = ExpertExecutionCounters(numLayers: c.numLayers, numDevices: n)
        let onNode = self.weightsOnNode
        devices = pools.enumerated().map { d, pool in
            var bytes = 0, count = 0
            for (l, layer) in local.enumerated() {
                for (j, e) in (layer ?? []).enumerated() where map[l][j] == d {
                    bytes += e.byteCount
                    count += 1
                }
            }
            let cores = pool.cores.map(String.init).joined(separator: ",")
            return ExecutionDevice(name: "cpu-pool-\(d)", kind: .cpuPool, expertWeightBytes: bytes, experts: count,
                                   detail: "cores \(cores), NUMA node \(pool.numaNode)\(onNode ? ", expert weights on the node" : "")\(pin ? ", threads pinned" : "")")
        }
    }

    /// Consecutive kernel threads for each pool, in proportion to its
    /// cores; every pool gets at least one (needs threads ≥ pools).
    public static func shareThreads(_ threads: Int, cores: [Int]) -> [(first: Int, count: Int)] {
        let n = cores.count
        let weights = cores.map { max(1, $0) }
        let total = weights.reduce(0, +)
        var out: [(first: Int, count: Int)] = []
        var acc = 0, next = 0
        for d in 0..<n {
            acc += weights[d]
            // Leave at least one thread for each pool still to come.
            let end = d == n - 1 ? threads : min(threads - (n - 1 - d), max(next + 1, (threads * acc + total / 2) / total))
            out.append((next, end - next))
            next = end
        }
        return out
    }

    deinit { pinnedThread.deallocate() }

    public func resetStats() { counters.reset() }
    public var stats: ExpertExecutionStats { counters.stats }

    /// The pages of the experts' weights as the OS reports them (of one
    /// device's experts when `device` is given).
    public func expertPages(device only: Int? = nil) -> PageLocation.Summary {
        var chosen: [ExpertWeights] = []
        for (l, layer) in experts.enumerated() {
            for (j, e) in (layer ?? []).enumerated() where only == nil || device[l][j] == only { chosen.append(e) }
        }
        return PageLocation.experts(chosen)
    }

    @inline(__always)
    func pinIfNeeded(part: Int) {
        guard pinned else { return }
        let me = pthread_self()
        if let t = pinnedThread[part], pthread_equal(t, me) != 0 { return }
        ThreadPinning.pinCurrentThread(to: threadPUs[part])
        pinnedThread[part] = me
    }
}
