/// Every buffer one forward needs, kept across forwards and grown only when a
/// batch is larger than any before it, so the hot path does not allocate.
final class Workspace: @unchecked Sendable {
    let hidden = ScratchBuffer()
    let subHidden = ScratchBuffer()
    /// Route recording: `[layer][batch row][k]` expert ids, and the map from
    /// a layered sub-batch's rows to the batch's rows.
    let routeLog = IndexBuffer()
    let rowMap = IndexBuffer()
    var rowMapActive = false
    let normed = ScratchBuffer()
    let q = ScratchBuffer()
    let k = ScratchBuffer()
    let v = ScratchBuffer()
    let attention = ScratchBuffer()
    // Latent attention: q bottleneck, queries in latent space, per-head values.
    let latentQueryA = ScratchBuffer()
    let latentQuery = ScratchBuffer()
    let latentValues = ScratchBuffer()
    // Latent attention's expanded form: a sequence's cached rows, and their
    // keys and values up-projected for a group of heads.
    let latentContext = ScratchBuffer()
    let latentExpanded = ScratchBuffer()
    let projected = ScratchBuffer()
    let ropeCos = ScratchBuffer()
    let ropeSin = ScratchBuffer()
    let tokenSequence = IndexBuffer()
    let tokenPosition = IndexBuffer()
    /// Every batch sequence's block table, concatenated, and where each
    /// starts: what attention tasks read instead of the sequences' arrays.
    let blockTables = IndexBuffer()
    let blockTableStart = IndexBuffer()
    let attentionScores = ScratchBuffer()
    let attentionTokens = IndexBuffer()
    let gemm = GemmContext()
    // bfloat16 mode: expert inputs and SwiGLU outputs as BF16.
    let gatheredBF16 = ByteBuffer()
    let activatedBF16 = ByteBuffer()
    let logits = ScratchBuffer()
    let logitsInput = ScratchBuffer()
    /// The batch rows that get logits.
    let logitsRows = IndexBuffer()
    // MoE dispatch.
    let routerLogits = ScratchBuffer()
    let routerChoice = ScratchBuffer()
    let topExperts = IndexBuffer()
    let topWeights = ScratchBuffer()
    let assignmentRow = IndexBuffer()
    let expertCount = IndexBuffer()
    let expertOffset = IndexBuffer()
    let gathered = ScratchBuffer()
    let gateOut = ScratchBuffer()
    let upOut = ScratchBuffer()
    let downOut = ScratchBuffer()
    /// What an executor combined on its own device (`ExpertRoutes`).
    let combinedOut = ScratchBuffer()
    let combinedExperts = ByteBuffer()
    /// Experts whose input rows the MoE block gathers (the executor's say).
    let gatherExperts = ByteBuffer()
    let sharedGate = ScratchBuffer()
    let sharedOut = ScratchBuffer()
}
