"""The model store's errors: a model problem a user can fix in the store. Apart from store.py so
the step checks and loaders that raise or catch them do not import the store, which reads the
catalog through the step registry (no circle of files)."""

from __future__ import annotations

HELP = "see README, 'Filling the model store'"


# -- errors ------------------------------------------------------------------------------------
class ModelStoreError(Exception):
    """A model problem a user can fix in the store; the message names the model and the store."""

    code = "MODEL_STORE"


class ModelMissing(ModelStoreError):
    code = "MODEL_MISSING"

    def __init__(self, model: str, store: str, files: list[str], any_of: bool = False) -> None:
        expected = ("one of " if any_of else "") + ", ".join(files)
        super().__init__(
            f"model {model} not in the model store {store or '(none configured)'}: "
            f"expected {expected} ({HELP})"
        )
        self.model = model
        self.store = store
        self.files = files


class ModelCorrupt(ModelStoreError):
    code = "MODEL_CORRUPT"

    def __init__(self, model: str, store: str, file: str, reason: str) -> None:
        super().__init__(
            f"model {model}: {file} in the model store {store} is not the catalogued file "
            f"({reason}); replace it ({HELP})"
        )
        self.model = model
        self.store = store
        self.file = file


class CatalogError(ModelStoreError):
    code = "MODEL_CATALOG"


class ModelIncompatible(ModelStoreError):
    """The file loads but is not the kind of model the step reads (checked by its shapes)."""

    code = "MODEL_INCOMPATIBLE"

    def __init__(self, file: str, expected: str, found: str, advice: str = "") -> None:
        super().__init__(
            f"{file} is not a model this step can use: expected {expected}, got {found}"
            + (f"; {advice}" if advice else "")
            + f" ({HELP})"
        )
        self.file = file
