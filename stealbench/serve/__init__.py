"""A real prediction API for a victim + defense: the Open Inference Protocol ("V2", KServe/Triton REST).

`stealbench serve` (command.py) serves a trained victim behind a defense (server.py, accounts.py); `fit
--oracle.url` attacks any V2 endpoint through :class:`stealbench.serve.client.V2Client` (remote_oracle.py).
protocol.py holds the wire format and its validation (binary.py: the binary tensor data extension); only
server.py and command.py import FastAPI/uvicorn.
"""
