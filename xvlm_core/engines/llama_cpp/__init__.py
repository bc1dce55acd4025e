"""llama.cpp as the engine of the language model, beside our own vision tower and projector in PyTorch."""
