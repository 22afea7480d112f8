import ChunkedScheduler
import FCFSScheduler
import LayeredScheduler
import ShortestPromptFirstScheduler
import LinearPlacement
import RoundRobinPlacement
import BalancedPlacement
import FilePlacement
import ILPPlacement
import CPUExecution
import ExpertParallelExecution
import WholeExpertsExecution
import SwitchyardCore

/// The strategies this binary ships, one module each under `Plugins/`.
/// A new plug-in adds its module to Package.swift and one line here.
let strategies: StrategyRegistry = {
    let registry = StrategyRegistry()
    ChunkedScheduler.register(in: registry)
    FCFSScheduler.register(in: registry)
    LayeredScheduler.register(in: registry)
    ShortestPromptFirstScheduler.register(in: registry)
    LinearPlacement.register(in: registry)
    RoundRobinPlacement.register(in: registry)
    BalancedPlacement.register(in: registry)
    FilePlacement.register(in: registry)
    ILPPlacement.register(in: registry)
    CPUExecution.register(in: registry)
    ExpertParallelExecution.register(in: registry)
    WholeExpertsExecution.register(in: registry)
    return registry
}()
