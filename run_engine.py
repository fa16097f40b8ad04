"""encodecgpt-live entry point: ``python run_engine.py <command> ...`` (see README)."""

from engine.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
