"""Speed benchmarks against transformers and the machine's matmul peak."""
