"""What a Triton repository written by `cfnet export triton` and the client that reads it both rely on:
the model step's name, and the cfnet metadata carried in a config's `parameters`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.artifact import ModelMetadata, Overrides, metadata_from_props

STEP_SUFFIX = "_model"
"""The network of ensemble `NAME` is the model `NAME_model`."""
ENGINE_PARAMETERS = ("tensorrt_version", "compat", "gpu_name", "compute_capability")
"""What a TensorRT plan's config carries from its engine's sidecar, beside the cfnet metadata: the server's
TensorRT must be that version (or a later one for `compat: version`, served with
`--backend-config=tensorrt,version-compatible=true`)."""


def model_step(ensemble: str) -> str:
    """The name of the network model behind ensemble `ensemble`."""
    return f"{ensemble}{STEP_SUFFIX}"


def config_parameters(props: Mapping[str, str]) -> list[dict[str, Any]]:
    """cfnet metadata properties as a model config's `parameters` (the repository writer's side)."""
    return [{"key": k, "value": {"string_value": v}} for k, v in sorted(props.items())]


def config_metadata(config: Mapping[str, Any], overrides: Overrides | None = None) -> ModelMetadata:
    """The cfnet metadata held in a model config's `parameters` (a config as JSON, as Triton hands it out)."""
    parameters = config.get("parameters", {})
    props = {key: value.get("string_value", "") for key, value in parameters.items()}
    return metadata_from_props(props, f"Triton model '{config.get('name', '?')}'", overrides)
