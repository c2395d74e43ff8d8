"""`dpsctl --show-completion [SHELL]` and `--install-completion [SHELL]`: bash, zsh and fish, through Typer's scripts.

The scripts call `dpsctl` back with `_DPSCTL_COMPLETE` set; the root group then completes command names from its
table (importing no command module) and a command's options and stored IDs (conventions.stored_ids).
"""

from __future__ import annotations

import os

from typer._completion_shared import get_completion_script, install_bash, install_fish, install_zsh

from dpsctl.core.errors import InvalidInput

PROG = "dpsctl"
COMPLETE_VAR = "_DPSCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def detect_shell() -> str:
    """The shell to complete for: the one running dpsctl (shellingham), else the login shell ($SHELL)."""
    name = None
    try:
        import shellingham

        name = shellingham.detect_shell()[0]
    except Exception:  # noqa: BLE001 - detection is best effort; $SHELL is the fallback
        name = None
    if name not in SHELLS:
        name = os.path.basename(os.environ.get("SHELL", ""))
    if name not in SHELLS:
        raise InvalidInput(
            "cannot tell which shell you use",
            hint="name it after the flag: dpsctl --show-completion bash|zsh|fish (or --install-completion bash|zsh|fish)",
        )
    return name


def script(shell: str) -> str:
    """The completion script of one shell."""
    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)


def show(shell: str | None) -> None:
    """Print the completion script (to source, or to put where your shell looks for completions)."""
    print(script(shell or detect_shell()))


def install(shell: str | None) -> None:
    """Install the completion script in the shell's usual place and say where."""
    chosen = shell or detect_shell()
    installer = {"bash": install_bash, "zsh": install_zsh, "fish": install_fish}[chosen]
    path = installer(prog_name=PROG, complete_var=COMPLETE_VAR, shell=chosen)
    print(f"{chosen} completion installed in {path}; it takes effect in a new shell")
