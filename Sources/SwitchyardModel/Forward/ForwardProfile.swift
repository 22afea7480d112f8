/// Where forward time goes, by phase. Kept always on: a clock read costs
/// ~20 ns and a phase is at least microseconds.
public struct ForwardProfile: Sendable, Codable {
    public var qkvSeconds = 0.0
    public var attentionSeconds = 0.0
    public var outputProjectionSeconds = 0.0
    public var feedForwardSeconds = 0.0
    public var lmHeadSeconds = 0.0
    public var otherSeconds = 0.0
    public var forwards = 0
    /// Layers computed a second time because a dense offload lost the
    /// residual rows it held (`Transformer.runLayers`).
    public var layersRecomputed = 0

    public var totalSeconds: Double {
        qkvSeconds + attentionSeconds + outputProjectionSeconds + feedForwardSeconds + lmHeadSeconds + otherSeconds
    }
}
