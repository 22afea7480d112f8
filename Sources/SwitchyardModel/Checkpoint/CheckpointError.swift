/// Everything that can be wrong with a checkpoint directory. Each case names
/// the file (and tensor, where there is one) and says what to do about it, so
/// a user never has to read a stack trace to find the broken piece.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case fileUnreadable(file: String, reason: String)
    case missingFile(file: String, hint: String)
    case invalidConfig(file: String, reason: String)
    case unsupportedModelType(file: String, modelType: String, supported: [String])
    case truncatedHeader(file: String, reason: String)
    case invalidHeader(file: String, reason: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case tensorOutOfBounds(file: String, tensor: String, reason: String)
    case missingTensor(tensor: String, directory: String)
    case wrongShape(file: String, tensor: String, expected: [Int], found: [Int])
    case indexNamesMissingFile(index: String, tensor: String, file: String)
    case noWeights(directory: String)

    public var description: String {
        switch self {
        case let .fileUnreadable(file, reason):
            return "cannot read \(file): \(reason)"
        case let .missingFile(file, hint):
            return "missing \(file): \(hint)"
        case let .invalidConfig(file, reason):
            return "invalid \(file): \(reason)"
        case let .unsupportedModelType(file, modelType, supported):
            return "\(file): model_type \"\(modelType)\" is not supported; supported: \(supported.joined(separator: ", "))"
        case let .truncatedHeader(file, reason):
            return "\(file): truncated safetensors header (\(reason)); the file is incomplete, download or copy it again"
        case let .invalidHeader(file, reason):
            return "\(file): invalid safetensors header: \(reason)"
        case let .unsupportedDType(file, tensor, dtype):
            return "\(file): tensor \(tensor) has dtype \(dtype); supported: F32, BF16, F16, and U8 for MXFP4 blocks and scales (convert the checkpoint, e.g. with transformers' save_pretrained after .to(torch.bfloat16))"
        case let .tensorOutOfBounds(file, tensor, reason):
            return "\(file): tensor \(tensor) \(reason); the file is truncated or corrupt"
        case let .missingTensor(tensor, directory):
            return "\(directory): tensor \(tensor) is missing from the checkpoint's safetensors files"
        case let .wrongShape(file, tensor, expected, found):
            return "\(file): tensor \(tensor) has shape \(found), config.json implies \(expected)"
        case let .indexNamesMissingFile(index, tensor, file):
            return "\(index) maps tensor \(tensor) to \(file), which does not exist; restore the shard or regenerate the index"
        case let .noWeights(directory):
            return "\(directory): no *.safetensors files (and no model.safetensors.index.json); only safetensors checkpoints are supported"
        }
    }
}
