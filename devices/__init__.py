"""hotstage: devices."""
