"""`python -m dpsctl`."""

from dpsctl.cli.app import main

if __name__ == "__main__":
    main()
