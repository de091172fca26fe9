"""What ships: ONNX and INT8 files, the gate, latency, selection, the card, deployment."""
