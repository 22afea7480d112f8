import CCbc
import Foundation

/// A mixed-integer linear program solved by COIN-OR CBC through its C API.
/// Minimises; variables and rows are added by index, a feasible start can be
/// given (CBC then never returns worse than it), and the solve stops at a
/// time limit with the best solution and the proven bound.
struct MILP {
    enum Sense: CChar {
        case lessOrEqual = 76  // "L"
        case equal = 69        // "E"
        case greaterOrEqual = 71  // "G"
    }

    struct Result {
        var values: [Double]
        var objective: Double
        /// CBC's proven lower bound on the optimum.
        var bound: Double
        var provenOptimal: Bool
        var timedOut: Bool
    }

    private var lower: [Double] = []
    private var upper: [Double] = []
    private var cost: [Double] = []
    private var integer: [Bool] = []
    private var rows: [(cols: [Int32], coefs: [Double], sense: Sense, rhs: Double)] = []
    private var start: [Double]?

    var numVariables: Int { cost.count }

    mutating func addVariable(lower: Double = 0, upper: Double = 1, cost: Double = 0, integer: Bool = true) -> Int {
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        self.integer.append(integer)
        return self.cost.count - 1
    }

    mutating func addRow(_ terms: [(Int, Double)], _ sense: Sense, _ rhs: Double) {
        rows.append((terms.map { Int32($0.0) }, terms.map(\.1), sense, rhs))
    }

    /// A feasible assignment of every variable, passed to CBC as its MIP start.
    mutating func setStart(_ values: [Double]) {
        precondition(values.count == numVariables)
        start = values
    }

    /// CBC 2.10's solver driver (`CbcMain1`, behind `Cbc_solve`) parses its
    /// options through process-wide statics, so two solves at once read each
    /// other's arguments and stop early or misreport optimality. Every solve
    /// in the process therefore takes this lock.
    private static let solverLock = NSLock()

    func solve(timeLimit: Double) -> Result? {
        Self.solverLock.withLock { solveAlone(timeLimit: timeLimit) }
    }

    private func solveAlone(timeLimit: Double) -> Result? {
        guard let model = Cbc_newModel() else { return nil }
        defer { Cbc_deleteModel(model) }
        Cbc_setLogLevel(model, 0)
        for v in 0..<numVariables {
            Cbc_addCol(model, "", lower[v], upper[v], cost[v], integer[v] ? 1 : 0, 0, nil, nil)
        }
        for row in rows {
            var cols = row.cols
            var coefs = row.coefs
            Cbc_addRow(model, "", Int32(cols.count), &cols, &coefs, row.sense.rawValue, row.rhs)
        }
        if let start {
            let nz = start.indices.filter { start[$0] != 0 && integer[$0] }
            Cbc_setMIPStartI(model, Int32(nz.count), nz.map { Int32($0) }, nz.map { start[$0] })
        }
        Cbc_setMaximumSeconds(model, max(timeLimit, 0.01))
        // One thread: the engine's machines are small and the placement runs
        // once, before serving; determinism matters more than speed here.
        Cbc_setParameter(model, "threads", "1")
        Cbc_solve(model)
        guard let sol = Cbc_getColSolution(model), Cbc_numberSavedSolutions(model) > 0 || Cbc_isProvenOptimal(model) != 0 else {
            return nil
        }
        let values = Array(UnsafeBufferPointer(start: sol, count: numVariables))
        let optimal = Cbc_isProvenOptimal(model) != 0
        // Without integer variables CBC only solves the LP, and its "best
        // possible" value is not a bound then; the LP optimum is (when proven).
        let bound = integer.contains(true) ? Cbc_getBestPossibleObjValue(model) : (optimal ? Cbc_getObjValue(model) : -Double.infinity)
        return Result(values: values, objective: Cbc_getObjValue(model), bound: bound,
                      provenOptimal: Cbc_isProvenOptimal(model) != 0,
                      timedOut: Cbc_isSecondsLimitReached(model) != 0)
    }
}
