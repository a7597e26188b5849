"""difftraffic: a differentiable, batched microscopic traffic simulator in PyTorch."""
