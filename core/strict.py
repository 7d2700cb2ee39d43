"""The strict base every manifest model and every step's options derive from, and the path
types they declare. Kept apart from the manifest model so a step's options
(`processors/<step>/options.py`) can use them without importing the manifest, which is built
from the step registry."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from core.paths import check_relative_path, check_video_pattern

# A path is checked (and normalised) where it is declared, so an error names the exact item
# (`chain[0].swap.source[1]`), not the list that holds it.
RelPath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(check_relative_path)]
VideoPath = Annotated[
    str, Field(min_length=1, max_length=1024), AfterValidator(check_video_pattern)
]


class Strict(BaseModel):
    """Unknown keys are errors (a typo is reported with its field path, never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # pydantic reads `true` as 1 for a number, and 1, 0, "yes" or "off" as a switch; both are
    # mistakes (`crf: true`, `occlusion: 1`), not settings.
    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if not info.field_name:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool):
            if annotation in (int, float) or get_origin(annotation) is Literal:
                raise ValueError("must be a number, not true/false")
        elif annotation is bool:
            raise ValueError("must be true or false")
        return value
