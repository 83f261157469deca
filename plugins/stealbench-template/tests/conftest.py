# The stealbench conformance kit's pytest fixtures (opt-in): stealbench_catalog, stealbench_distribution,
# defense_setup, attack_context.
pytest_plugins = ["stealbench.testing"]
