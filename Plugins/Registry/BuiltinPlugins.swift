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
import HybridExecution
import SwitchyardCore

/// Every strategy plug-in under `Plugins/`, registered by name. Package.swift
/// finds the plug-in modules (`Plugins/<Kind>/<Name>` is module
/// `<Name><Kind>`); a new plug-in adds one line here and touches nothing in
/// `Sources/`.
public enum BuiltinPlugins {
    public static func register(in registry: StrategyRegistry) {
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
        HybridExecution.register(in: registry)
    }
}
