/// How a MoE layer's router turns its logits into each token's experts and
/// weights. The default is Mixtral/Qwen/OLMoE routing: softmax over all
/// experts, top-k. DeepSeek adds group-limited selection (experts are split
/// into `groupCount` groups and only the best `groupsKept` groups compete),
/// sigmoid scores with a per-expert selection bias (DeepSeek-V3), and a
/// final scale on the weights.
public struct RouterConfig: Sendable, Equatable {
    /// `softmaxOfTopK` (gpt-oss): top-k of the raw logits, then softmax over
    /// those k only.
    public enum Scoring: String, Sendable, Equatable { case softmax, sigmoid, softmaxOfTopK }
    /// How a group is ranked: its best expert (DeepSeek-V2) or the sum of its
    /// best two (DeepSeek-V3), on the selection scores.
    public enum GroupScore: Sendable, Equatable { case max, topTwoSum }

    public var scoring: Scoring = .softmax
    public var groupCount = 1
    public var groupsKept = 1
    public var groupScore: GroupScore = .max
    /// DeepSeek-V3's `e_score_correction_bias`: added to the scores to choose
    /// experts, never to the weights.
    public var selectionBias = false
    /// `routed_scaling_factor`, applied to the weights after any renormalisation.
    public var scale: Float = 1

    public init() {}

    /// Groups are ranked with a 64-bit mask (DeepSeek-V3 and GLM use 8).
    public static let maxGroups = 64

    public var isGroupLimited: Bool { groupCount > 1 }
}
