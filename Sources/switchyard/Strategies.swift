import SwitchyardCore
import SwitchyardPlugins

/// The strategies this binary ships: every plug-in under `Plugins/`.
let strategies: StrategyRegistry = {
    let registry = StrategyRegistry()
    BuiltinPlugins.register(in: registry)
    return registry
}()
