"""``python -m volfs``: the same as the ``volfs`` command."""

from volfs.cli import main

if __name__ == "__main__":
    main(prog_name="volfs")
