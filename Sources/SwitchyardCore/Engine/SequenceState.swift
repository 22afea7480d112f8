import SwitchyardModel

/// The engine's mutable state for one request.
final class SequenceState {
    enum Status { case waiting, running, finished }

    let handle: Int
    let request: GenerationRequest
    let arrivalTime: Double
    var status: Status = .waiting
    /// Prompt followed by generated tokens.
    var tokens: [Int32]
    var computedTokens = 0
    var blockTable: [Int32] = []
    var sampler: Sampler
    var admissionOrder = -1
    var firstTokenTime: Double?
    var tokenTimes: [Double] = []
    var preemptions = 0
    var continuation: AsyncStream<RequestEvent>.Continuation?
    /// Layered prefill: the layer the chunk part-way through the layers
    /// continues from (its hidden states are kept by the `ModelRunner`), and
    /// that chunk's tokens.
    var nextLayer = 0
    var inFlightTokens = 0
    /// The last engine iteration this sequence ran in (decode-stall count).
    var lastIteration = -1
    let stopTokens: Set<Int32>
    /// Output text so far (when the engine has a tokenizer).
    var detokenizer: IncrementalDetokenizer?
    /// What the request asked to be scored: per output token, and per prompt
    /// token from the second (filled once; a recompute after preemption
    /// does not add them again).
    var outputLogprobs: [TokenLogprob] = []
    var promptLogprobs: [TokenLogprob] = []
    /// Penalties, bias and `min_tokens` (nil when the request has none).
    var logitsProcessor: LogitsProcessor?

    init(handle: Int, request: GenerationRequest, arrivalTime: Double, eosTokens: [Int32],
         continuation: AsyncStream<RequestEvent>.Continuation?, tokenizer: (any Tokenizer)?) {
        self.handle = handle
        self.request = request
        self.arrivalTime = arrivalTime
        self.continuation = continuation
        tokens = request.promptTokens
        var params = request.sampling
        // A request without a seed still samples reproducibly per request id.
        if params.seed == nil { params.seed = stableHash(request.id) }
        sampler = Sampler(params)
        var stops = Set(request.stopTokenIds)
        if !request.ignoreEOS { stops.formUnion(eosTokens) }
        stopTokens = stops
        detokenizer = tokenizer.map { IncrementalDetokenizer(tokenizer: $0, stopStrings: request.stopStrings) }
        if request.sampling.processesLogits || request.minTokens > 0 {
            logitsProcessor = LogitsProcessor(params: request.sampling, prompt: request.promptTokens,
                                              minTokens: request.minTokens, stopTokens: stopTokens.sorted())
        }
    }

    var outputTokens: ArraySlice<Int32> { tokens[request.promptTokens.count...] }
    var outputCount: Int { tokens.count - request.promptTokens.count }

    func snapshot() -> SequenceSnapshot {
        SequenceSnapshot(handle: handle, requestId: request.id, arrivalTime: arrivalTime,
                         promptLength: request.promptTokens.count, totalTokens: tokens.count,
                         computedTokens: computedTokens, outputTokens: outputCount,
                         allocatedBlocks: blockTable.count, admissionOrder: admissionOrder,
                         nextLayer: nextLayer, inFlightTokens: inFlightTokens,
                         maxTokens: request.maxTokens, priority: request.priority)
    }
}

/// FNV-1a: Swift's `hashValue` is seeded per process, this is not.
func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
