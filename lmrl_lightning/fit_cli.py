"""`lmrl fit`: LightningCLI with three of the project's rules added.

1. Bad input is one line. Parse errors come back as exceptions (`exit_on_error=False`) and are condensed to the
   key and the problem (jsonargparse's own text is a screen of union subtypes and usage); config files are read
   with PyYAML first, so a syntax error names `file:line:column`; an `LMRLError` raised while a class is being
   built (a missing tokenizer, an unknown task in a callback) is dug out of jsonargparse's wrapping.
2. Resuming does not change what is trained. Lightning's `--ckpt_path` handling merges the checkpoint's
   hyper-parameters, its class included, over the config, so a BC config resumed from an ILQL checkpoint
   trains ILQL and a command-line `--model.lr` is replaced by the checkpoint's. Here the config is left as it is:
   the checkpoint must be a local lmrl checkpoint (read with weights_only=True), its algorithm must be the
   config's, and `LMRLModule.check_resume_settings` refuses any other difference in the model's settings.
3. A run never writes over an input file: the resolved config goes to `config.yaml` in the log directory only
   when that file is absent or was written by an earlier `lmrl fit` (e.g. the run being resumed).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lmrl_lightning.algorithms.base import LMRLModule
from lmrl_lightning.atomic import atomic_write_text
from lmrl_lightning.checkpointing import check_local_checkpoint
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import class_path, import_algorithm_class

# `--ckpt_path` values that Lightning resolves itself (to the checkpoint callback's files): checked on load by
# `LMRLModule.on_load_checkpoint` and the strategy's safe CheckpointIO rather than here.
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc")
CONFIG_MARKER = "# written by lmrl fit: the resolved config of this run\n"
FIT_HELP = "see lmrl fit --help"


class SaveRunConfig(SaveConfigCallback):
    """Saves the resolved config beside the run's logs, never over a file it did not write itself."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.log_dir or ".") / self.config_filename
            if path.exists() and not _written_by_fit(path):
                warnings.warn(f"not saving the run's config: {path} exists and was not written by lmrl fit")
            else:
                atomic_write_text(path, CONFIG_MARKER + self.parser.dump(self.config, skip_none=False))
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _written_by_fit(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline() == CONFIG_MARKER
    except (OSError, UnicodeDecodeError):
        return False


class LMRLCLI(LightningCLI):
    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` instead of merging its hyper-parameters over the config (module docstring, 2)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or ckpt_path in LIGHTNING_CKPT_KEYWORDS:
            return
        checkpoint = check_local_checkpoint(ckpt_path, "--ckpt_path")
        written_by = checkpoint["lmrl"]["algorithm"]
        model = self.config[subcommand].get("model")
        # Where the class is defined, as checkpoints record it (the parser has already imported the config's path).
        configured = class_path(import_algorithm_class(model.get("class_path"))) if model is not None else None
        if configured != written_by:
            raise LMRLError(
                f"--ckpt_path {ckpt_path!r} was written by {written_by}, but the config trains {configured}; resume "
                "with the config that wrote it, or start a new run from its weights with --model.init_from"
            )


def run_fit(args: Sequence[str], model_args: Sequence[str]) -> LMRLCLI:
    """Run `lmrl fit` (`model_args`: `args` with `--model NAME` resolved); return the CLI to in-process callers."""
    for config in _config_files(args):
        _check_config_file(config)
    # LightningCLI warns (echoing the whole command line) whenever `args` is passed while sys.argv has arguments,
    # which is always the case for `lmrl fit ...`; sys.argv must stay as it is, for DDP relaunches the command.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        # No datamodule class: `data:` is then optional (online algorithms collect their own data) and takes any
        # LightningDataModule by class_path (lmrl_lightning.data.datamodule.EpisodeDataModule for offline data).
        return LMRLCLI(
            LMRLModule,
            None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=["fit", *model_args],
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as e:
        raise LMRLError(f"fit: {summarise_parse_error(str(e))} ({FIT_HELP})") from None
    except LMRLError:
        raise
    except MisconfigurationException as e:  # Lightning refusing a combination of trainer settings: bad input too
        raise LMRLError(f"fit: trainer: {e}") from None
    except Exception as e:
        cause = find_lmrl_error(e)
        if cause is None:
            raise
        raise cause from None


def find_lmrl_error(error: BaseException) -> Optional[LMRLError]:
    """The LMRLError behind `error` (jsonargparse re-raises errors of the classes it instantiates as ValueError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, LMRLError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# Lines of jsonargparse's union-type report that say nothing about the problem itself.
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value|"
    r"Expected a <class 'NoneType'>|Expected a path but .* either not accessible or invalid)"
)
_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"^Problem with given class_path '([^']+)':\s*(.*)$")
_TYPE = re.compile(r"^Expected a <class '(\w+)'>\. Got value: (.*)$")


def summarise_parse_error(message: str) -> str:
    """One line from a jsonargparse error: the dotted key, the class if one was named, and the first problem."""
    if message.startswith("Problems parsing config"):
        return " ".join(line.strip() for line in message.splitlines())
    keys: list[str] = []
    class_path = None
    for raw in message.splitlines():
        line = raw.strip().lstrip("-").strip()
        match = _KEY.match(line)
        if match:
            keys.append(match.group(1))
            line = match.group(2)
        match = _CLASS.match(line)
        if match:
            class_path, line = match.group(1), match.group(2)
        if not line or _NOISE.match(line):
            continue
        match = _TYPE.match(line)
        if match:
            line = f"expected {match.group(1)}, got {match.group(2)!r}"
        where = ".".join(keys)
        within = f" ({class_path})" if class_path else ""
        return f"{where}{within}: {line}" if where else line
    return message.splitlines()[0] if message else "invalid arguments"


def _config_files(args: Sequence[str]) -> list[str]:
    files = []
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _check_config_file(path: str) -> None:
    """A config file exists and is YAML; otherwise one line with `file:line:column`."""
    if not Path(path).is_file():
        raise LMRLError(f"config file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise LMRLError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LMRLError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(content, dict):
        raise LMRLError(
            f"{path}: a config file is a mapping of sections (model:, data:, trainer:), got {type(content).__name__}"
        )
