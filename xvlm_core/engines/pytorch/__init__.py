"""The model on PyTorch: loading (device, number format, 8- and 4-bit weights), the chat session and its decode step."""
