"""Where a model comes from: Hugging Face ids and local folders, the original Lightning
checkpoints and their gin sizes, and seeded random models for tests and benchmarks."""
