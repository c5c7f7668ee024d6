"""hotstage: plans."""
