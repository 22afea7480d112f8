/// One MoE layer's expert work after routing, grouped by expert: what
/// `MoEBlock` hands an `ExpertExecutor`. Rows are (token, slot)
/// assignments; expert `j`'s rows are `rowOffset[j] ..< rowOffset[j] +
/// tokenCount[j]` of `input` (`[assignments, hiddenSize]`) and of
/// `output`. The pointers are valid for the duration of `run` only.
public struct ExpertWork: @unchecked Sendable {
    public let layer: Int
    /// The layer's experts as the model loaded them (an executor may compute
    /// from its own copies instead, e.g. node-local or device-resident).
    public let experts: [ExpertWeights]
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let assignments: Int
    public let tokenCount: UnsafePointer<Int32>
    public let rowOffset: UnsafePointer<Int32>
    public let input: UnsafePointer<Float>
    /// `input` as BF16 (oneDNN, bfloat16 mode), already rounded the same way.
    public let inputBF16: UnsafePointer<UInt16>?
    /// Expert outputs before the routing weights: `[assignments, hiddenSize]`.
    public let output: UnsafeMutablePointer<Float>
    /// Host scratch for the gate and up products (`[assignments,
    /// intermediateSize]` each) and, in bfloat16 mode with oneDNN, the
    /// activated rows as BF16. A device with memory of its own may ignore it.
    public let gate: UnsafeMutablePointer<Float>
    public let up: UnsafeMutablePointer<Float>
    public let activatedBF16: UnsafeMutablePointer<UInt16>?
    /// The backend, precision and per-thread scratch of the model's products.
    public let compute: GemmContext
    /// Which token each row is and how it is weighted, for an executor that
    /// gathers rows or combines outputs on a device of its own (nil: the
    /// rows are all there is).
    public let routes: ExpertRoutes?

    public init(layer: Int, experts: [ExpertWeights], hiddenSize: Int, intermediateSize: Int, assignments: Int,
                tokenCount: UnsafePointer<Int32>, rowOffset: UnsafePointer<Int32>, input: UnsafePointer<Float>,
                inputBF16: UnsafePointer<UInt16>?, output: UnsafeMutablePointer<Float>, gate: UnsafeMutablePointer<Float>,
                up: UnsafeMutablePointer<Float>, activatedBF16: UnsafeMutablePointer<UInt16>?, compute: GemmContext,
                routes: ExpertRoutes? = nil) {
        self.routes = routes
        self.layer = layer
        self.experts = experts
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.assignments = assignments
        self.tokenCount = tokenCount
        self.rowOffset = rowOffset
        self.input = input
        self.inputBF16 = inputBF16
        self.output = output
        self.gate = gate
        self.up = up
        self.activatedBF16 = activatedBF16
        self.compute = compute
    }

    public var numExperts: Int { experts.count }

    /// Gathers each assignment's input row into its expert's group, for the
    /// experts `only` flags (all with nil). In bfloat16 mode the rows are
    /// rounded through BF16, so the direct kernel and the BF16 GEMM
    /// multiply the same values, and kept as BF16 too where `inputBF16`
    /// is. `MoEBlock` gathers the rows the executor asks for
    /// (`ExpertExecutor.selectRowsToGather`); an executor that declined
    /// some and then computes them here after all gathers them first.
    public func gatherRows(only experts: UnsafePointer<Bool>? = nil) {
        guard let r = routes else { return }
        let h = hiddenSize, k = r.perToken, bf16 = options.dtype == .bfloat16
        nonisolated(unsafe) let xs = r.source, gs = UnsafeMutablePointer(mutating: input), rows = r.row, chosen = r.expert
        nonisolated(unsafe) let gb = inputBF16.map { UnsafeMutablePointer(mutating: $0) }, only = experts
        Parallel.forRanges(r.tokens * k, minChunk: 64) { range in
            for a in range {
                if let only, !only[Int(chosen[a])] { continue }
                let dst = gs + Int(rows[a]) * h
                if bf16 {
                    roundThroughBF16(xs + (a / k) * h, count: h, into: dst)
                    if let gb { narrowToBF16(dst, count: h, into: gb + Int(rows[a]) * h) }
                } else {
                    dst.update(from: xs + (a / k) * h, count: h)
                }
            }
        }
    }

    /// This work with other token counts (a share of the experts): the same
    /// rows, buffers and routes.
    public func with(tokenCount counts: UnsafePointer<Int32>) -> ExpertWork {
        ExpertWork(layer: layer, experts: experts, hiddenSize: hiddenSize, intermediateSize: intermediateSize,
                   assignments: (0..<numExperts).reduce(0) { $0 + Int(counts[$1]) }, tokenCount: counts, rowOffset: rowOffset,
                   input: input, inputBF16: inputBF16, output: output, gate: gate, up: up, activatedBF16: activatedBF16,
                   compute: compute, routes: routes)
    }
    public var options: ComputeOptions { compute.options }

    /// Expert `j`'s input rows, for `Linear.product`.
    @inline(__always)
    public func input(expert j: Int) -> GemmInput {
        let s = Int(rowOffset[j])
        return GemmInput(f32: input + s * hiddenSize, ld: hiddenSize,
                         bf16: inputBF16.map { $0 + s * hiddenSize }, ldBF16: hiddenSize)
    }

    /// SwiGLU over `count` of expert `j`'s gate elements starting at element
    /// `from` (all of them by default), then, in bfloat16 mode, the result
    /// rounded through BF16 and, unless `keepBF16` is false (a kernel that
    /// reads the Float32 rows), kept as BF16 for the down product. Experts
    /// with biases (gpt-oss) get them added to the gate and up products
    /// first, and their own activation.
    @inline(__always)
    public func activate(expert j: Int, from: Int = 0, count: Int? = nil, keepBF16: Bool = true) {
        let base = Int(rowOffset[j]) * intermediateSize + from
        let n = count ?? Int(tokenCount[j]) * intermediateSize
        let e = experts[j]
        if e.gateBias != nil || e.activation != .swiglu {
            ExpertActivationKernel.apply(e, gate: gate + base, up: up + base, firstColumn: from % intermediateSize,
                                         columns: intermediateSize, n: n)
        } else {
            Elementwise.swiglu(gate: gate + base, up: up + base, n: n)
        }
        if options.dtype == .bfloat16 {
            Linear.roundInPlace(gate + base, count: n)
            if keepBF16, let a = activatedBF16 { narrowToBF16(gate + base, count: n, into: a + base) }
        }
    }

    /// Expert `j`'s activated rows (after `activate`), for the down product.
    @inline(__always)
    public func activated(expert j: Int) -> GemmInput {
        let s = Int(rowOffset[j]) * intermediateSize
        return GemmInput(f32: gate + s, ld: intermediateSize,
                         bf16: activatedBF16.map { UnsafePointer($0 + s) }, ldBF16: intermediateSize)
    }
}

/// Bias-and-activation for experts that are not plain SwiGLU.
enum ExpertActivationKernel {
    /// `n` elements of `[rows, columns]` gate/up products starting at column
    /// `firstColumn` of a row: biases added, then the expert's activation,
    /// written into `gate`.
    @inline(__always)
    static func apply(_ e: ExpertWeights, gate: UnsafeMutablePointer<Float>, up: UnsafeMutablePointer<Float>,
                      firstColumn: Int, columns: Int, n: Int) {
        // Biases and the activation are read once, not per element.
        let none: [Float] = []
        let gateBias = e.gateBias ?? none, upBias = e.upBias ?? none
        let (alpha, limit): (Float?, Float) = {
            if case let .clampedSwiGLU(alpha, limit) = e.activation { return (alpha, limit) }
            return (nil, 0)
        }()
        gateBias.withUnsafeBufferPointer { gb in
            upBias.withUnsafeBufferPointer { ub in
                var c = firstColumn
                for i in 0..<n {
                    var g = gate[i], u = up[i]
                    if !gb.isEmpty { g += gb[c] }
                    if !ub.isEmpty { u += ub[c] }
                    if let alpha {
                        g = min(g, limit)
                        u = min(max(u, -limit), limit)
                        gate[i] = (u + 1) * (g * Elementwise.sigmoid(alpha * g))
                    } else {
                        gate[i] = Elementwise.silu(g) * u
                    }
                    c += 1
                    if c == columns { c = 0 }
                }
            }
        }
    }
}

/// The routing behind an `ExpertWork`'s rows: assignment `a` (token `a /
/// perToken`, slot `a % perToken`) picked expert `expert[a]` with weight
/// `weight[a]`, and its row is `row[a]`, gathered from token row `a /
/// perToken` of `source` (`[tokens, hiddenSize]`).
///
/// An executor whose device computed some experts may combine them there
/// and copy back one row per token instead of one per assignment: it adds
/// their weighted outputs, in slot order, into `combined` (`[tokens,
/// hiddenSize]`, every row written, zeros where none of its experts was
/// picked), sets `combinedExperts[j]` for each such expert, and leaves
/// their `output` rows alone. `MoEBlock` then starts each token's sum from
/// `combined` and adds only the other experts' rows. Flags start false.
public struct ExpertRoutes: @unchecked Sendable {
    public let tokens: Int
    public let perToken: Int
    public let expert: UnsafePointer<Int32>
    public let weight: UnsafePointer<Float>
    public let row: UnsafePointer<Int32>
    public let source: UnsafePointer<Float>
    public let combined: UnsafeMutablePointer<Float>
    public let combinedExperts: UnsafeMutablePointer<Bool>

    public init(tokens: Int, perToken: Int, expert: UnsafePointer<Int32>, weight: UnsafePointer<Float>, row: UnsafePointer<Int32>,
                source: UnsafePointer<Float>, combined: UnsafeMutablePointer<Float>, combinedExperts: UnsafeMutablePointer<Bool>) {
        self.source = source
        self.tokens = tokens
        self.perToken = perToken
        self.expert = expert
        self.weight = weight
        self.row = row
        self.combined = combined
        self.combinedExperts = combinedExperts
    }
}
