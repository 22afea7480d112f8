import Foundation
import Testing
@testable import SwitchyardModel

/// The GEMM backends and activation precisions (`--gemm`, `--dtype`):
/// oneDNN in float32 meets the same bar as OpenBLAS against transformers'
/// fp32, and bfloat16 is checked against transformers run in bfloat16
/// (tools/reference/make_bf16_references.py).
@Suite struct ComputeBackendTests {
    static let oneDNNF32 = ComputeOptions(gemm: .onednn, dtype: .float32)
    static let oneDNNBF16 = ComputeOptions(gemm: .onednn, dtype: .bfloat16)

    static func model(_ name: String, _ options: ComputeOptions) throws -> Transformer {
        let m = try Transformer(directory: Fixtures.model(name))
        try m.configure(compute: options)
        return m
    }

    static func worstRelative(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
    }

    static func bf16Reference(_ name: String) throws -> (greedy: [Int32], logits: [Float]) {
        struct Ref: Decodable { let greedy: [Int32] }
        let dir = URL(fileURLWithPath: Fixtures.model(name))
        let ref = try JSONDecoder().decode(Ref.self, from: Data(contentsOf: dir.appendingPathComponent("reference_bf16.json")))
        let raw = try Data(contentsOf: dir.appendingPathComponent("reference_logits_bf16.f32"))
        return (ref.greedy, raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
    }

    @Test(.enabled(if: OneDNN.isLoaded, "oneDNN (libdnnl.so.2) is not installed"), arguments: Fixtures.modelCases)
    func oneDNNFloat32LogitsAndGreedyMatchTransformersFP32(_ name: String) throws {
        let (ref, expected) = try Fixtures.reference(name)
        let model = try Self.model(name, Self.oneDNNF32)
        let rows = try Generator(model: model).allLogits(ref.tokens)
        let worst = Self.worstRelative(rows.flatMap { $0 }, expected)
        #expect(worst <= 1e-4, "worst relative error \(worst) for \(name)")
        #expect(try Generator(model: model).generate(prompt: ref.tokens, maxTokens: ref.greedy.count).tokens == ref.greedy)
    }

    /// Tolerances from measurement (docs/performance.md): on every fixture our
    /// bfloat16 logits are closer to fp32 than transformers' bfloat16 ones
    /// (we keep the residual stream in Float32), and lie within twice that
    /// model's own bf16 error of transformers' bf16 logits (measured up to
    /// 1.8x). Where the two bf16 runs pick different tokens (an argmax of the
    /// prompt's logits, or the first greedy token where they part), the two
    /// picks must be a near-tie of the fp32 model: their fp32 logits no
    /// further apart than transformers' own bf16 error at that size. Measured:
    /// three of five fixtures agree everywhere; mixtral parts at a gap of
    /// 0.029, qwen2_moe at 0.0005 and 0.050 (its greedy token 8),
    /// qwen3_moe_bf16_sharded at 0.0036.
    @Test(.enabled(if: OneDNN.hasNativeBF16, "no native BF16 matmul on this CPU"), arguments: Fixtures.bf16Cases)
    func bfloat16IsAsCloseToFP32AsTransformersBFloat16(_ name: String) throws {
        let (ref, fp32) = try Fixtures.reference(name)
        let (hfGreedy, hf) = try Self.bf16Reference(name)
        let model = try Self.model(name, Self.oneDNNBF16)
        let rows = try Generator(model: model).allLogits(ref.tokens)
        let ours = rows.flatMap { $0 }
        let hfError = Self.worstRelative(hf, fp32)
        let ourError = Self.worstRelative(ours, fp32)
        #expect(ourError > 0, "bfloat16 mode must round something")
        #expect(ourError <= hfError, "\(name): ours vs fp32 \(ourError), transformers bf16 vs fp32 \(hfError)")
        #expect(Self.worstRelative(ours, hf) <= 2 * hfError)
        /// How far apart tokens a and b are in an fp32 logit row, and
        /// transformers' bf16 error at their size (relative to 1 + |logit|).
        func tie(_ exact: ArraySlice<Float>, _ a: Int, _ b: Int) -> (gap: Float, noise: Float) {
            let x = exact[exact.startIndex + a], y = exact[exact.startIndex + b]
            return (abs(x - y), Float(hfError) * (1 + max(abs(x), abs(y))))
        }
        var agreeing = 0
        for (i, row) in rows.enumerated() {
            let hfRow = hf[(i * ref.vocab)..<((i + 1) * ref.vocab)]
            let mine = row.indices.max { row[$0] < row[$1] }!
            let theirs = hfRow.indices.max { hfRow[$0] < hfRow[$1] }! - i * ref.vocab
            if mine == theirs { agreeing += 1; continue }
            let (gap, noise) = tie(fp32[(i * ref.vocab)..<((i + 1) * ref.vocab)], mine, theirs)
            #expect(gap <= noise, "\(name) position \(i): ours picks \(mine), transformers bf16 \(theirs), fp32 gap \(gap) > \(noise)")
        }
        #expect(agreeing >= rows.count - 1, "\(name): argmax agrees at \(agreeing) of \(rows.count) positions")
        let greedy = try Generator(model: model).generate(prompt: ref.tokens, maxTokens: hfGreedy.count).tokens
        if let part = zip(greedy, hfGreedy).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            let exact = try Self.model(name, .exact)
            let last = try Generator(model: exact).allLogits(ref.tokens + hfGreedy.prefix(part)).last!
            let (gap, noise) = tie(last[...], Int(greedy[part]), Int(hfGreedy[part]))
            #expect(gap <= noise, "\(name): greedy parts from transformers bf16 at token \(part + 1), fp32 gap \(gap) > \(noise)")
        }
    }

    @Test(.enabled(if: OneDNN.hasNativeBF16, "no native BF16 matmul on this CPU"))
    func bfloat16RoundsActivationsAtTheProductInputs() throws {
        // One product, both paths: the direct kernel (2 tokens) and oneDNN (40 tokens)
        // multiply BF16-rounded inputs, so they agree with an exact product of the
        // rounded values, not of the Float32 ones.
        let rows = 48, cols = 96
        var rng = Xoshiro256(seed: 5)
        let w = (0..<(rows * cols)).map { _ in narrowToBF16(rng.nextUnitFloat() - 0.5) }
        let x = (0..<(40 * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let ctx = GemmContext(options: Self.oneDNNBF16)
        for tokens in [2, 40] {
            var y = [Float](repeating: 0, count: tokens * rows)
            w.withUnsafeBytes { wb in
                let m = Matrix(rows: rows, cols: cols, dtype: .bf16, data: wb.baseAddress!)
                x.withUnsafeBufferPointer { Linear.apply(m, x: $0.baseAddress!, tokens: tokens, y: &y, ctx: ctx) }
            }
            var worstRounded: Double = 0, worstExact: Double = 0
            for t in 0..<tokens {
                for r in 0..<rows {
                    var rounded = 0.0, exact = 0.0
                    for c in 0..<cols {
                        let wv = Double(widenBF16(w[r * cols + c])), xv = x[t * cols + c]
                        rounded += wv * Double(widenBF16(narrowToBF16(xv)))
                        exact += wv * Double(xv)
                    }
                    worstRounded = max(worstRounded, abs(Double(y[t * rows + r]) - rounded))
                    worstExact = max(worstExact, abs(Double(y[t * rows + r]) - exact))
                }
            }
            #expect(worstRounded < 1e-4, "\(tokens) tokens")
            #expect(worstExact > 10 * worstRounded, "\(tokens) tokens: inputs were not rounded")
        }
    }

    @Test func impossibleOptionsAreStartUpErrorsNamingTheFlagAndTheAlternative() throws {
        #expect(throws: ComputeOptions.OptionError.unknownBackend("mkl")) {
            try ComputeOptions.resolve(gemm: "mkl", dtype: "auto", checkpointDType: .bf16)
        }
        #expect(ComputeOptions.OptionError.unknownBackend("mkl").description.contains("use onednn or openblas"))
        #expect(throws: ComputeOptions.OptionError.unknownPrecision("half")) {
            try ComputeOptions.resolve(gemm: "openblas", dtype: "half", checkpointDType: .bf16)
        }
        do {
            try ComputeOptions(gemm: .openblas, dtype: .bfloat16).check()
            Issue.record("openblas with bfloat16 must be rejected")
        } catch let e as ComputeOptions.OptionError {
            #expect(e.description.hasPrefix("--dtype bfloat16:"))
            #expect(e.description.contains("--dtype float32"))
        }
        // A model keeps its options when asked for impossible ones.
        let model = try Transformer(directory: Fixtures.model("mixtral"))
        #expect(throws: ComputeOptions.OptionError.self) { try model.configure(compute: ComputeOptions(gemm: .openblas, dtype: .bfloat16)) }
        #expect(model.compute == .exact)
    }

    @Test func aMissingOrWrongLibraryIsNamedWithTheFix() {
        for (path, fragment) in [("/nonexistent/libdnnl.so.2", "cannot open oneDNN (/nonexistent/libdnnl.so.2)"),
                                 ("libm.so.6", "libm.so.6 has no dnnl_engine_create")] {
            do {
                try OneDNN.probe(path: path)
                Issue.record("\(path) must not load")
            } catch let e as ComputeOptions.OptionError {
                #expect(e.description.contains(fragment), "\(e.description)")
                #expect(e.description.hasPrefix("--gemm onednn:"))
                #expect(e.description.contains("--gemm openblas"))
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test(.enabled(if: OneDNN.isLoaded, "oneDNN (libdnnl.so.2) is not installed"))
    func autoPicksBFloat16OnlyForSixteenBitCheckpointsWithNativeBF16() throws {
        let bf16 = try ComputeOptions.resolve(gemm: "onednn", dtype: "auto", checkpointDType: .bf16)
        #expect(bf16.dtype == (OneDNN.hasNativeBF16 ? .bfloat16 : .float32))
        #expect(try ComputeOptions.resolve(gemm: "onednn", dtype: "auto", checkpointDType: .f32).dtype == .float32)
        #expect(try ComputeOptions.resolve(gemm: "openblas", dtype: "auto", checkpointDType: .bf16).dtype == .float32)
    }
}
