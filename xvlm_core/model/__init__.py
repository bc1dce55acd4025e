"""The model itself: its config, checkpoint files, network modules, prompt format, tokenizer and image preprocessing."""
