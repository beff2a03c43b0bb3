"""Pure scheduling and rates: Deficit Round-Robin with its token bucket and adaptive
quantum, admission at the cap, connect pacing, and the auto-rate controller with the
measurements it is fed."""
