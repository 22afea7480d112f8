/// MoETuner step 1 for one layer: split the experts into one group per
/// device, equal expert counts, minimising the largest group's token load.
struct BalanceStep {
    let load: [Int]
    let numGroups: Int
    var groupSize: Int { load.count / numGroups }

    struct Solution {
        /// `group[expert]`.
        var group: [Int]
        var maxLoad: Int
        /// A proven lower bound on the best possible largest load.
        var bound: Double
        var exact: Bool
    }

    /// The largest group load no split can avoid: the mean rounded up, or
    /// the heaviest expert alone (with skewed routing it exceeds the mean).
    var trivialBound: Int { max((load.reduce(0, +) + numGroups - 1) / numGroups, load.max() ?? 0) }

    func maxLoad(_ group: [Int]) -> Int {
        var sums = Array(repeating: 0, count: numGroups)
        for (e, g) in group.enumerated() { sums[g] += load[e] }
        return sums.max() ?? 0
    }

    /// Longest-processing-time first with equal counts, then pairwise swaps
    /// out of the heaviest group while they lower it.
    func greedy() -> [Int] {
        let order = load.indices.sorted { (load[$0], -$0) > (load[$1], -$1) }
        var sums = Array(repeating: 0, count: numGroups)
        var counts = Array(repeating: 0, count: numGroups)
        var group = Array(repeating: 0, count: load.count)
        for e in order {
            var best = -1
            for g in 0..<numGroups where counts[g] < groupSize && (best < 0 || sums[g] < sums[best]) { best = g }
            group[e] = best
            sums[best] += load[e]
            counts[best] += 1
        }
        var members = (0..<numGroups).map { g in load.indices.filter { group[$0] == g } }
        improving: while true {
            let heavy = sums.indices.max { (sums[$0], $1) < (sums[$1], $0) }!
            var bestGain = 0
            var bestMove: (i: Int, b: Int, j: Int)?
            for (ii, i) in members[heavy].enumerated() {
                for b in 0..<numGroups where b != heavy {
                    for (jj, j) in members[b].enumerated() where load[i] > load[j] {
                        let d = load[i] - load[j]
                        let newMax = max(sums[heavy] - d, sums[b] + d)
                        let gain = sums[heavy] - newMax
                        if gain > bestGain { bestGain = gain; bestMove = (ii, b, jj) }
                    }
                }
            }
            guard let m = bestMove else { break improving }
            let i = members[heavy][m.i], j = members[m.b][m.j]
            let d = load[i] - load[j]
            members[heavy][m.i] = j
            members[m.b][m.j] = i
            group[i] = m.b
            group[j] = heavy
            sums[heavy] -= d
            sums[m.b] += d
        }
        return group
    }

    /// The exact split by MILP (binary x[e][g], continuous T ≥ every group's
    /// load, minimise T), warm-started from `start`. Without a solver run
    /// (`useSolver` false, or the greedy split already meets the mean) the
    /// greedy split stands with the trivial bound.
    func solve(start: [Int], useSolver: Bool, timeLimit: Double) -> Solution {
        let startMax = maxLoad(start)
        let lb = trivialBound
        if startMax <= lb || !useSolver || numGroups == 1 {
            return Solution(group: start, maxLoad: startMax, bound: Double(lb), exact: startMax <= lb)
        }
        let e = load.count, g = numGroups
        var milp = MILP()
        let x = (0..<e).map { _ in (0..<g).map { _ in milp.addVariable() } }
        let t = milp.addVariable(lower: 0, upper: Double(startMax), cost: 1, integer: false)
        for i in 0..<e { milp.addRow((0..<g).map { (x[i][$0], 1) }, .equal, 1) }
        for k in 0..<g {
            milp.addRow((0..<e).map { (x[$0][k], 1) }, .equal, Double(groupSize))
            milp.addRow((0..<e).map { (x[$0][k], Double(load[$0])) } + [(t, -1)], .lessOrEqual, 0)
        }
        // Groups are interchangeable; pinning the heaviest expert to group 0
        // removes one factor of that symmetry without losing any optimum.
        let heaviest = load.indices.max { (load[$0], $1) < (load[$1], $0) }!
        let pinnedGroup = start[heaviest]
        let relabel: (Int) -> Int = { $0 == pinnedGroup ? 0 : ($0 == 0 ? pinnedGroup : $0) }
        milp.addRow([(x[heaviest][0], 1)], .equal, 1)
        var warm = Array(repeating: 0.0, count: milp.numVariables)
        for i in 0..<e { warm[x[i][relabel(start[i])]] = 1 }
        warm[t] = Double(startMax)
        milp.setStart(warm)
        guard let r = milp.solve(timeLimit: timeLimit) else {
            return Solution(group: start, maxLoad: startMax, bound: Double(lb), exact: false)
        }
        var group = start
        for i in 0..<e { group[i] = (0..<g).max { r.values[x[i][$0]] < r.values[x[i][$1]] }! }
        let found = maxLoad(group)
        if found > startMax {
            return Solution(group: start, maxLoad: startMax, bound: max(Double(lb), r.bound), exact: false)
        }
        // A bound within one token of an integer optimum proves it.
        let bound = max(Double(lb), r.bound)
        return Solution(group: group, maxLoad: found, bound: bound, exact: r.provenOptimal || Double(found) - bound < 1 - 1e-6)
    }
}
