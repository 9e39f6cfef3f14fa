"""Search controllers: ask/tell ones (evolution, random), Optuna's samplers, differentiable."""
