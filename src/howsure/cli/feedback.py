"""Learning-loop commands: recalibrate, policy history / rollback, drift, export."""
