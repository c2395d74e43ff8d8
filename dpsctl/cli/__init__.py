"""The Typer command line: thin modules that parse, call dpsctl.core and render."""
