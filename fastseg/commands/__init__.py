"""The subcommands of the `fastseg` command line (see fastseg/cli.py)."""
