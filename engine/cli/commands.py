"""The offline commands' names, in the order ``--help`` lists them (``run_engine.py COMMAND``;
no command plays live)."""

COMMANDS = ("encode", "embed", "render", "replay", "recover", "plot", "prepare", "train",
            "export")
