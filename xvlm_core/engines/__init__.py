"""What runs the model: the PyTorch engine, and the plugin that lets vLLM serve it."""
