"""Torch-free serving: artifacts, backends (ONNX Runtime, TensorRT), pre/post-processing, video streams."""
