"""hotstage: analysis."""
