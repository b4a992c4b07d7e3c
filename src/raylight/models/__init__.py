"""LightningModules. Constructors take plain arguments; data-derived sizes are injected."""
