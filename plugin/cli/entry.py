"""The calico-libnetwork command's entry point: `agent` runs with
agent_command alone, every other command with the whole command line
(main.py)."""

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["agent"]:
        from plugin.cli import agent_command
        return agent_command.main(argv[1:])
    from plugin.cli import main as command_line
    return command_line.main(argv)
