"""The run whose saved model (``cirbench run ... --save-model``) a command loads: shared by
``cirbench attention`` and ``cirbench export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cirbench.cli.options import CliError, data_locations, device_and_threads, split_available
from cirbench.plugins import Registry


def saved_run(reg: Registry, args: argparse.Namespace):
    """``(runner, key, dataset)`` of the run that ``--protocol/--dataset/--composer/--seed``
    name, for the commands that load its saved model (attention, export); names and the
    dataset's availability are checked first (UnknownNameError, DatasetNotAvailable)."""
    from cirbench.results import RunKey
    from cirbench.runner import Runner, RunOptions

    protocol = reg.protocol(args.protocol)
    reg.composer(args.composer)  # raises UnknownNameError listing the valid names
    reg.dataset(args.dataset)
    data = data_locations(args)
    split_available(reg, [args.dataset], data, explicit=True)
    seed = args.seed if args.seed is not None else protocol.seeds[0]
    device = device_and_threads(args)
    runner = Runner(reg, RunOptions(results=Path(args.results), cache_dir=Path(args.cache_dir),
                                    device=device, data=data))
    key = RunKey(protocol, args.dataset, args.composer, seed)
    dataset = runner.dataset(protocol, args.dataset)
    return runner, key, dataset


def load_saved(runner, key, composer, args: argparse.Namespace) -> None:
    """Load the run's saved model (``cirbench run ... --save-model``) into ``composer``;
    CliError when it is missing (saying the command that makes it) or does not fit."""
    import pickle

    from cirbench.attention import load_saved_model

    model_file = runner.store.model_path(key)
    if not model_file.exists():
        raise CliError(
            f"no saved model for {key}: expected {model_file}. Run `cirbench run --composer "
            f"{key.composer} --dataset {key.dataset} --protocol {key.protocol.name} --seed {key.seed} "
            f"--results {args.results} --save-model` first")
    try:
        load_saved_model(composer, model_file)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CliError(f"{model_file}: cannot load it into composer {key.composer!r} "
                       f"(saved by another version of the composer?): {exc}") from exc
