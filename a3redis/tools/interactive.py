"""`a3redis node --interactive`: the seed's kvrun.sh, asked on standard input.

Rules: asks for the node number, the total number of nodes and the
replication factor; an empty answer takes the default shown in brackets, an
invalid one says why and asks again, and the end of input gives up (exit 2,
nothing started). The other settings follow from the answers as Config
derives them (gRPC 50050+N, HTTP 8000+N, DATA_DIR ./data/node<N>), except
those already set in the environment, which are kept. It prints the
equivalent command line, one line that starts the same node without
questions, and then runs the node in this process with exactly that
environment.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

MAX_NODES = 10_000  # NODE_NUM's and TOTAL_NODES' upper bound in Config
MAX_REPLICATION_FACTOR = 15


class NoAnswer(Exception):
    """Standard input ended before every question was answered."""


@dataclass(frozen=True, slots=True)
class Answers:
    node: int
    total: int
    replication_factor: int


def ask_number(question: str, default: int, low: int, high: int, lines: TextIO, out: TextIO) -> int:
    while True:
        out.write(f"{question} [{default}]: ")
        out.flush()
        line = lines.readline()
        if not line:
            out.write("\n")
            raise NoAnswer(question)
        if not lines.isatty():
            out.write(line.rstrip("\n") + "\n")  # as a terminal would have echoed it
        text = line.strip()
        if not text:
            return default
        if text.isascii() and text.isdigit() and low <= int(text) <= high:
            return int(text)
        out.write(f"  {text!r} is not valid: enter a whole number from {low} to {high}\n")


def ask(lines: TextIO, out: TextIO) -> Answers:
    node = ask_number("Node number", 1, 1, MAX_NODES, lines, out)
    total = ask_number("Total nodes", max(3, node), node, MAX_NODES, lines, out)
    highest = min(MAX_REPLICATION_FACTOR, total)
    factor = ask_number("Replication factor", min(3, total), 1, highest, lines, out)
    return Answers(node, total, factor)


def node_variables(answers: Answers, env: Mapping[str, str]) -> dict[str, str]:
    """The variables that make this node, in the order they are printed."""
    n = answers.node
    derived = {
        "NODE_ID": f"node-{n}",
        "GRPC_PORT": str(50050 + n),
        "GOSSIP_PORT": str(8000 + n),
    }
    variables = {"NODE_NUM": str(n)}
    variables.update({name: env.get(name, value) for name, value in derived.items()})
    variables["TOTAL_NODES"] = str(answers.total)
    variables["REPLICATION_FACTOR"] = str(answers.replication_factor)
    variables["DATA_DIR"] = env.get("DATA_DIR", f"./data/node{n}")
    return variables


def command_line(variables: Mapping[str, str], python: str) -> str:
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())
    return f"{assignments} {shlex.quote(python)} -m a3redis.node"


def run(lines: TextIO, out: TextIO, env: Mapping[str, str]) -> int:
    try:
        answers = ask(lines, out)
    except NoAnswer as error:
        print(f"a3redis: error: no answer to {str(error)!r} (end of input)", file=sys.stderr)
        return 2
    variables = node_variables(answers, env)
    out.write(f"starting {variables['NODE_ID']}; the same without questions:\n")
    out.write(command_line(variables, sys.executable) + "\n")
    out.flush()
    from a3redis import node

    return node.main({**env, **variables})
