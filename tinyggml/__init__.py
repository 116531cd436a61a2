"""tinyggml: a ggml-style graph runtime for Mamba state-space models on the CPU."""
