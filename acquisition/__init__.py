"""hotstage: acquisition."""
