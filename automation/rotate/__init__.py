"""rotate and rollback: bake, gated stack update, node replacement, convergence."""
