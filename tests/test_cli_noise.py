"""`lmrl` silences library noise while its `main` runs, and only then (issue 13, item 8): Lightning's litlogger and
litmodels tips, the seed warning that "Seed set to 0" repeats, and library deprecation notices. Everything else a
library logs or warns still shows, and the filters are gone once `main` returns."""
from __future__ import annotations

import contextlib
import logging
import warnings

from lmrl_lightning.cli import quiet_library_noise

TIP = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _log_and_warn(quiet: bool) -> tuple[list[str], list[str]]:
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    recorder, level = Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_library_noise() if quiet else contextlib.nullcontext():
                logger.info(TIP)
                logger.info("GPU available: False, used: False")
                warnings.warn("No seed found, seed set to 0")
                warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
                warnings.warn("the data has no action token", UserWarning)
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    return recorder.messages, [str(w.message) for w in caught]


def test_noise_is_silenced_inside_main_only():
    logged, warned = _log_and_warn(quiet=True)
    assert logged == ["GPU available: False, used: False"]
    assert warned == ["the data has no action token"]
    logged, warned = _log_and_warn(quiet=False)  # after: the filters are gone
    assert len(logged) == 2 and len(warned) == 3
