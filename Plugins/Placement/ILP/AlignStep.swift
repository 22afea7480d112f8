/// MoETuner step 2 for one layer boundary: with the previous layer already on
/// devices, put this layer's experts on devices so that as few tokens as
/// possible change device between the two layers, in total and on the busiest
/// (sender, receiver) device pair, keeping equal expert counts and each
/// device's token load within `capacity` (step 1's optimum plus the slack).
///
/// Objective (minimised): crossing tokens + pairWeight × busiest pair.
struct AlignStep {
    /// Tokens between this layer and a fixed neighbouring layer:
    /// `affinity[e][d]` counts tokens of this layer's expert e that come from
    /// (`incoming`) or go to (outgoing) the neighbour's device d.
    struct Boundary {
        var affinity: [[Int]]
        var incoming: Bool

        /// The previous layer's devices and the pair counts `R[l-1][from][to]`.
        init(previousDevice: [Int], pairs: [[Int]], numExperts: Int, numDevices: Int) {
            affinity = Array(repeating: Array(repeating: 0, count: numDevices), count: numExperts)
            for (from, d) in previousDevice.enumerated() {
                for to in 0..<numExperts { affinity[to][d] += pairs[from][to] }
            }
            incoming = true
        }

        /// The next layer's devices and the pair counts `R[l][from][to]`.
        init(nextDevice: [Int], pairs: [[Int]], numExperts: Int, numDevices: Int) {
            affinity = Array(repeating: Array(repeating: 0, count: numDevices), count: numExperts)
            for from in 0..<numExperts {
                for (to, d) in nextDevice.enumerated() { affinity[from][d] += pairs[from][to] }
            }
            incoming = false
        }

        /// Tokens from device to device across this boundary, `[from][to]`.
        func pairMatrix(_ device: [Int], numDevices: Int) -> [[Int]] {
            var m = Array(repeating: Array(repeating: 0, count: numDevices), count: numDevices)
            for (e, here) in device.enumerated() {
                for there in 0..<numDevices {
                    if incoming { m[there][here] += affinity[e][there] } else { m[here][there] += affinity[e][there] }
                }
            }
            return m
        }
    }

    let boundaries: [Boundary]
    let load: [Int]
    let numDevices: Int
    let capacity: Int
    let pairWeight: Double
    /// Tokens kept on device if expert e sits on device d, over all boundaries.
    let kept: [[Int]]
    var groupSize: Int { load.count / numDevices }
    var totalPairs: Int { boundaries.reduce(0) { $0 + $1.affinity.reduce(0) { $0 + $1.reduce(0, +) } } }

    struct Solution {
        /// `device[expert]`.
        var device: [Int]
        var objective: Double
        var bound: Double
        var exact: Bool
    }

    init(boundaries: [Boundary], load: [Int], numDevices: Int, capacity: Int, pairWeight: Double) {
        self.boundaries = boundaries
        self.load = load
        self.numDevices = numDevices
        self.capacity = capacity
        self.pairWeight = pairWeight
        var k = Array(repeating: Array(repeating: 0, count: numDevices), count: load.count)
        for b in boundaries { for e in load.indices { for d in 0..<numDevices { k[e][d] += b.affinity[e][d] } } }
        kept = k
    }

    /// Crossing tokens + pairWeight × busiest pair, summed over the boundaries.
    func objective(_ device: [Int]) -> Double {
        var total = 0.0
        for b in boundaries {
            let m = b.pairMatrix(device, numDevices: numDevices)
            var cross = 0, worst = 0
            for a in 0..<numDevices { for c in 0..<numDevices where a != c { cross += m[a][c]; worst = max(worst, m[a][c]) } }
            total += Double(cross) + pairWeight * Double(worst)
        }
        return total
    }

    /// Step 1's groups matched to devices by the assignment problem (most
    /// tokens kept on device), then `improve`.
    func heuristic(groups: [Int]) -> [Int] {
        var w = Array(repeating: Array(repeating: 0.0, count: numDevices), count: numDevices)
        for (e, g) in groups.enumerated() { for d in 0..<numDevices { w[g][d] += Double(kept[e][d]) } }
        let match = Assignment.maximize(w)
        return improve(groups.map { match[$0] })
    }

    /// Expert swaps between devices that keep more tokens on device without
    /// breaking the load capacity, until none does.
    func improve(_ start: [Int]) -> [Int] {
        var device = start
        var sums = Array(repeating: 0, count: numDevices)
        for (e, d) in device.enumerated() { sums[d] += load[e] }
        var improved = true
        var passes = 0
        while improved && passes < 50 {
            improved = false
            passes += 1
            for i in device.indices {
                for j in (i + 1)..<device.count where device[i] != device[j] {
                    let di = device[i], dj = device[j]
                    let gain = kept[i][dj] + kept[j][di] - kept[i][di] - kept[j][dj]
                    guard gain > 0 else { continue }
                    let newI = sums[di] - load[i] + load[j], newJ = sums[dj] - load[j] + load[i]
                    guard newI <= capacity, newJ <= capacity else { continue }
                    device[i] = dj; device[j] = di
                    sums[di] = newI; sums[dj] = newJ
                    improved = true
                }
            }
        }
        return device
    }

    /// The MILP: binary y[e][d], continuous M_b ≥ every off-diagonal pair of
    /// boundary b; minimise −(tokens kept on device) + pairWeight·Σ M_b, i.e.
    /// crossing tokens + pairWeight·Σ M_b up to the constant total. `integer`
    /// false solves the LP relaxation only, for a bound on instances too large
    /// to solve exactly.
    func solve(start: [Int], integer: Bool, timeLimit: Double) -> Solution {
        let startObjective = objective(start)
        let e = load.count, n = numDevices
        var milp = MILP()
        let y = (0..<e).map { i in (0..<n).map { d in milp.addVariable(cost: -Double(kept[i][d]), integer: integer) } }
        for i in 0..<e { milp.addRow((0..<n).map { (y[i][$0], 1) }, .equal, 1) }
        for d in 0..<n {
            milp.addRow((0..<e).map { (y[$0][d], 1) }, .equal, Double(groupSize))
            milp.addRow((0..<e).map { (y[$0][d], Double(load[$0])) }, .lessOrEqual, Double(capacity))
        }
        var worstVars: [Int] = []
        if pairWeight > 0 {
            for b in boundaries {
                let m = milp.addVariable(lower: 0, upper: Double(totalPairs), cost: pairWeight, integer: false)
                worstVars.append(m)
                // Pair (here, there): experts on `here` weighted by their
                // tokens with `there`; direction does not change the sum.
                for here in 0..<n {
                    for there in 0..<n where here != there {
                        let terms = (0..<e).filter { b.affinity[$0][there] != 0 }.map { (y[$0][here], Double(b.affinity[$0][there])) }
                        if !terms.isEmpty { milp.addRow(terms + [(m, -1)], .lessOrEqual, 0) }
                    }
                }
            }
        }
        if integer {
            var warm = Array(repeating: 0.0, count: milp.numVariables)
            for i in 0..<e { warm[y[i][start[i]]] = 1 }
            for (b, m) in zip(boundaries, worstVars) {
                let pm = b.pairMatrix(start, numDevices: n)
                warm[m] = Double((0..<n).flatMap { a in (0..<n).filter { $0 != a }.map { pm[a][$0] } }.max() ?? 0)
            }
            milp.setStart(warm)
        }
        let total = Double(totalPairs)
        guard let r = milp.solve(timeLimit: timeLimit) else {
            return Solution(device: start, objective: startObjective, bound: 0, exact: false)
        }
        let bound = max(0, r.bound + total)
        guard integer else {
            return Solution(device: start, objective: startObjective, bound: min(bound, startObjective), exact: false)
        }
        var device = start
        for i in 0..<e { device[i] = (0..<n).max { r.values[y[i][$0]] < r.values[y[i][$1]] }! }
        let found = objective(device)
        if found > startObjective || !feasible(device) {
            return Solution(device: start, objective: startObjective, bound: min(bound, startObjective), exact: false)
        }
        return Solution(device: device, objective: found, bound: min(bound, found), exact: r.provenOptimal)
    }

    func feasible(_ device: [Int]) -> Bool {
        var sums = Array(repeating: 0, count: numDevices)
        var counts = Array(repeating: 0, count: numDevices)
        for (e, d) in device.enumerated() { sums[d] += load[e]; counts[d] += 1 }
        return sums.allSatisfy { $0 <= capacity } && counts.allSatisfy { $0 == groupSize }
    }
}
