"""difftraffic_rl: gradient-informed policy learning (GI-PPO) and its baselines."""
