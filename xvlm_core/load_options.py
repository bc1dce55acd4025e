"""Which model to load and how: one typed, torch-free set of options that the command line, the app's settings,
a second launch of the app, the window and the model thread all pass along, so none of them can drop one."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from xvlm_core.precisions import ENGINE_CHOICES, QUANTIZE_CHOICES

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LoadOptions:
    """Every field may be "" for "not given": `over` fills those from defaults, `with_defaults` from the core's."""

    model: str = ""  # a checkpoint folder or a hub repo id
    vision_tower: str = ""  # the CLIP tower's folder or repo id, when the checkpoint does not hold it
    device: str = ""  # auto, cpu, cuda, cuda:N or mps
    dtype: str = ""  # one of DTYPE_CHOICES
    quantize: str = ""  # one of QUANTIZE_CHOICES
    engine: str = ""  # one of ENGINE_CHOICES: what runs the language model

    def __post_init__(self) -> None:
        for item in fields(self):
            if not isinstance(getattr(self, item.name), str):
                raise ValueError(f"the load option {item.name} must be text, not {getattr(self, item.name)!r}")
        if self.dtype and self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"'{self.dtype}' is not a number format (use {', '.join(DTYPE_CHOICES)})")
        if self.quantize and self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"'{self.quantize}' is not a weight precision (use {', '.join(QUANTIZE_CHOICES)})")
        if self.engine and self.engine not in ENGINE_CHOICES:
            raise ValueError(f"'{self.engine}' is not an engine (use {', '.join(ENGINE_CHOICES)})")

    @property
    def given(self) -> bool:
        """Whether any option was given."""
        return any(getattr(self, item.name) for item in fields(self))

    def over(self, defaults: LoadOptions) -> LoadOptions:
        """These options where given, `defaults`' where not."""
        return replace(defaults, **{item.name: getattr(self, item.name) for item in fields(self)
                                    if getattr(self, item.name)})

    def with_defaults(self) -> LoadOptions:
        """Device, number format and engine chosen automatically, and exact weights, where not given."""
        return self.over(LoadOptions(device="auto", dtype="auto", quantize="none", engine="auto"))

    def as_dict(self) -> dict[str, str]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


NONE_GIVEN = LoadOptions()  # the command line or a launch named nothing: the settings decide
