"""hotstage: simulated."""
