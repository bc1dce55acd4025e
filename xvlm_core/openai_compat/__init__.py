"""The OpenAI chat-completions API, both ends: `xvlm serve` (server.py) and the client the app answers through.

protocol.py holds the wire format (requests, answers, streamed chunks and their parsing) that both ends share;
importing this package imports nothing else, so the torch-free client never pulls in the server's model code.
"""
