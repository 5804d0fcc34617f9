"""The native TensorRT backend's tensor bindings, on the CPU: a fake `tensorrt` module and pycuda stand in for the
real ones (which need a GPU), and the fake execution context refuses to run, as TensorRT's `enqueueV3` does, while
an output has no address (issue 22 item 2: an engine exported with `--output both`)."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtime.backends.tensorrt as trt_backend
from tests.runtime.helpers import tiny_metadata

CLASSES = 4
OUTPUTS = {"logits": ((-1, CLASSES, -1, -1), np.float32), "mask": ((-1, -1, -1), np.uint8)}


class Device:
    """Device memory: an address and the bytes behind it."""

    next_address = 0x1000

    def __init__(self, nbytes: int) -> None:
        self.data = np.zeros(nbytes, np.uint8)
        self.address = Device.next_address
        Device.next_address += max(nbytes, 1) + 256

    def __int__(self) -> int:
        return self.address


class Cuda:
    """The few pycuda.driver calls the backend makes."""

    class Stream:
        handle = 7

        def synchronize(self) -> None:
            pass

    def __init__(self) -> None:
        self.memory: dict[int, Device] = {}

    def pagelocked_empty(self, count: int, dtype: np.dtype) -> np.ndarray:
        return np.empty(count, dtype)

    def mem_alloc(self, nbytes: int) -> Device:
        device = Device(nbytes)
        self.memory[device.address] = device
        return device

    def memcpy_htod_async(self, dst: Device, src: np.ndarray, stream: Any) -> None:
        dst.data[: src.nbytes] = src.view(np.uint8).ravel()

    def memcpy_dtoh_async(self, dst: np.ndarray, src: Device, stream: Any) -> None:
        dst.view(np.uint8).ravel()[:] = src.data[: dst.nbytes]


class CudaContext:
    def push(self) -> None:
        pass

    def pop(self) -> None:
        pass

    def detach(self) -> None:
        pass

    def get_device(self) -> Any:
        return types.SimpleNamespace(compute_capability=lambda: (8, 6), name=lambda: "Fake GPU")


class Context:
    """An execution context: records the addresses set; runs only when every I/O tensor has one (as
    IExecutionContext::enqueueV3 requires) and writes each output: the mask is the logits' argmax."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        self.shape: tuple[int, ...] = (0, 0, 0, 0)
        self.addresses: dict[str, int] = {}
        self.unbound_at_execute: list[str] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, _, h, w = self.shape
        return (n, CLASSES, h, w) if name == "logits" else (n, h, w)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.unbound_at_execute = [n for n in ("images", *OUTPUTS) if not self.addresses.get(n)]
        if self.unbound_at_execute:
            return False  # TensorRT: "Neither address or allocator is set for output tensor ..."
        n, _, h, w = self.shape
        images = self.cuda.memory[self.addresses["images"]].data[: n * 3 * h * w * 4].view(np.float32)
        scale = np.arange(1, CLASSES + 1, dtype=np.float32)[:, None, None]  # argmax: the last class where > 0
        logits = np.repeat(images.reshape(n, 3, h, w)[:, :1], CLASSES, axis=1) * scale
        for name, value in (("logits", logits), ("mask", logits.argmax(1).astype(np.uint8))):
            self.cuda.memory[self.addresses[name]].data[: value.nbytes] = value.view(np.uint8).ravel()
        return True


class Engine:
    def __init__(self, cuda: Cuda) -> None:
        self.names = ["images", *OUTPUTS]
        self.context = Context(cuda)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "images" else "OUTPUT"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, -1, -1) if name == "images" else OUTPUTS[name][0]

    def get_tensor_dtype(self, name: str) -> type:
        return np.float32 if name == "images" else OUTPUTS[name][1]

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        return (1, 3, 8, 8), (1, 3, 48, 64), (4, 3, 96, 128)

    def create_execution_context(self) -> Context:
        return self.context


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    cuda = Cuda()
    engine = Engine(cuda)
    runtime_class = type("Runtime", (), {"__init__": lambda self, logger: None,
                                         "deserialize_cuda_engine": lambda self, plan: engine})  # fmt: skip
    module = types.SimpleNamespace(
        __version__="10.13.0.35",
        Runtime=runtime_class,
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        nptype=lambda dtype: dtype,
    )
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_backend, "load_tensorrt", lambda: object())
    monkeypatch.setattr(trt_backend, "load_cuda", lambda: (cuda, CudaContext()))
    yield engine


def test_every_output_of_a_both_engine_has_an_address_before_it_runs(fake_tensorrt: Engine, tmp_path: Path) -> None:
    engine_file = tmp_path / "both.engine"
    engine_file.write_bytes(b"plan")
    sidecar = {"metadata": {**tiny_metadata(), "cfnet.outputs": json.dumps(list(OUTPUTS))}}
    (tmp_path / "both.engine.json").write_text(json.dumps(sidecar))
    backend = trt_backend.TensorRTBackend(engine_file)
    assert backend.outputs == ("logits", "mask") and backend.output == "mask"
    images = np.random.default_rng(0).standard_normal((2, 3, 16, 24)).astype(np.float32)
    mask = backend.infer(images)
    context = fake_tensorrt.context
    assert context.unbound_at_execute == []
    assert set(context.addresses) == {"images", "logits", "mask"}
    assert len(set(context.addresses.values())) == 3  # the unused logits go to a scratch buffer of their own
    assert mask.dtype == np.uint8 and mask.shape == (2, 16, 24)
    np.testing.assert_array_equal(mask, np.where(images[:, 0] > 0, CLASSES - 1, 0))
    backend.close()
