"""Entry point of the `genorder` console script: imports every command module, then runs the app."""

from __future__ import annotations

import importlib

from genorder_cli.app import app

COMMAND_MODULES = ["cmd_train", "cmd_plugins", "cmd_compare", "cmd_eval", "cmd_ablate", "cmd_bench", "cmd_tokenizer", "cmd_check",
                   "cmd_scale", "cmd_import", "cmd_edit", "cmd_export", "cmd_memory", "cmd_new"]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"genorder_cli.{name}")


_load_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
