"""Type aliases of the public API's annotations (the package ships ``py.typed``).

Only type checkers evaluate them: every annotated module has ``from __future__ import annotations``
and imports these names under ``TYPE_CHECKING``, so nothing here runs at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Union

    import numpy as np
    from numpy.typing import ArrayLike

    from .model import Transformer
    from .seq2seq import Seq2SeqTransformer
    from .targets import Target

    #: either model kind
    EngineModel = Union[Transformer, Seq2SeqTransformer]
    PathLike = Union[str, "os.PathLike[str]"]
    DType = Union[str, np.dtype, type]
    #: tensor kinds or glob patterns of parameter names (``probes.tensor_mask``)
    Exclude = Union[str, Sequence[str], None]
    #: a block of parameters (``sensiformer.blocks``)
    BlockSpec = Union[str, Sequence[str], ArrayLike, None]
    #: what the Boolean analysis reads a function from: a model, a target or a vectorised callable
    AnalysedFunction = Union[Transformer, Target, Callable[[np.ndarray], ArrayLike]]

    __all__ = ["Any", "AnalysedFunction", "ArrayLike", "BlockSpec", "Callable", "DType", "EngineModel", "Exclude",
               "Mapping", "PathLike", "Sequence"]
