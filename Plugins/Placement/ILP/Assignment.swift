/// The assignment problem (Kuhn–Munkres with potentials, O(n³)): a
/// one-to-one matching of rows to columns of a square matrix with the largest
/// total weight. Used to place a layer's balanced groups on the devices that
/// already hold most of their tokens, the warm start of the traffic step.
enum Assignment {
    /// `result[row]` is the column matched to `row`.
    static func maximize(_ weight: [[Double]]) -> [Int] {
        let n = weight.count
        guard n > 0 else { return [] }
        // 1-based arrays with a sentinel column 0, as in the classic
        // shortest-augmenting-path formulation; minimises the negated weight.
        var u = Array(repeating: 0.0, count: n + 1)
        var v = Array(repeating: 0.0, count: n + 1)
        var matchOfColumn = Array(repeating: 0, count: n + 1)
        var way = Array(repeating: 0, count: n + 1)
        for row in 1...n {
            matchOfColumn[0] = row
            var col0 = 0
            var minv = Array(repeating: Double.infinity, count: n + 1)
            var used = Array(repeating: false, count: n + 1)
            repeat {
                used[col0] = true
                let r0 = matchOfColumn[col0]
                var delta = Double.infinity
                var col1 = 0
                for c in 1...n where !used[c] {
                    let cur = -weight[r0 - 1][c - 1] - u[r0] - v[c]
                    if cur < minv[c] { minv[c] = cur; way[c] = col0 }
                    if minv[c] < delta { delta = minv[c]; col1 = c }
                }
                for c in 0...n {
                    if used[c] { u[matchOfColumn[c]] += delta; v[c] -= delta } else { minv[c] -= delta }
                }
                col0 = col1
            } while matchOfColumn[col0] != 0
            repeat {
                let col1 = way[col0]
                matchOfColumn[col0] = matchOfColumn[col1]
                col0 = col1
            } while col0 != 0
        }
        var result = Array(repeating: 0, count: n)
        for c in 1...n { result[matchOfColumn[c] - 1] = c - 1 }
        return result
    }
}
