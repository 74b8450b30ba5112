"""The tools ``stablehand mcp`` offers: names, descriptions and input schemas, as plain data.

One tool per action (hosts and models choose among separate tools better than
among the values of an ``action`` argument). The descriptions are written for
a model: what the tool does, when to use it, what comes back. Schemas are
JSON Schema objects with ``additionalProperties: false``; the server checks
every call against them before it talks to the daemon, so a bad argument is a
tool error that names it.

Standard library only: the CLI builds ``--allow``'s choices from :data:`TOOLS`
without importing the MCP SDK.

Defaults, where the issue is silent (Codex's ``exec_command`` / ``write_stdin``
were the model): ``start_process`` and ``poll_process`` wait up to 5 s for
output (returning as soon as the process exits), ``write_stdin`` 1 s; output
per call is capped at 16 KiB (head and tail kept, a marker between). A
``yield_ms`` below the daemon's 250 ms floor is raised to it; 0 on
``start_process`` starts without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

START_YIELD_MS = 5000
POLL_YIELD_MS = 5000
STDIN_YIELD_MS = 1000
MIN_YIELD_MS = 250
MAX_YIELD_MS = 30000
DEFAULT_MAX_BYTES = 16384
READ_LIMIT = 16384
WAIT_TIMEOUT = 30.0
MAX_WAIT = 3600.0


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    schema: dict[str, Any]
    read_only: bool = False
    destructive: bool = False


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


ID = {"type": ["integer", "string"],
      "description": "The process id start_process returned (or a managed process's name)."}
YIELD_TEXT = ("Milliseconds to wait server-side for output before answering (returns early when "
              "the process exits); 250 to 30000.")
YIELD = {"type": "integer", "minimum": 0, "maximum": MAX_YIELD_MS, "description": YIELD_TEXT}
MAX_OUT = {"type": "integer", "minimum": 256, "maximum": 1048576,
           "description": f"Most bytes of output to return (default {DEFAULT_MAX_BYTES}); past it the head "
                          "and tail are kept with a marker between."}

TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in (
    ToolSpec(
        "start_process",
        "Start a command under the Stablehand supervisor and return its id with its first output "
        "(or its exit, if it ends within yield_ms). The process runs in the background, detached "
        "from this session: follow it with poll_process, feed it with write_stdin, end it with "
        "stop_process. Give argv (no shell) or command (run by /bin/sh -c). Use tty for "
        "interactive programs (REPLs, ssh, prompts) that need a terminal.",
        _object({
            "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                     "description": "Program and arguments, run without a shell."},
            "command": {"type": "string", "minLength": 1,
                        "description": "A shell command line (run by /bin/sh -c)."},
            "cwd": {"type": "string", "description": "Working directory; a relative path is taken "
                                                     "from the server's own (default: that one)."},
            "env": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Environment variables to set for the process."},
            "name": {"type": "string", "description": "A name to refer to it by instead of its id "
                                                      "(not all digits, no '/')."},
            "timeout": {"type": "number", "exclusiveMinimum": 0,
                        "description": "Stop it after this many seconds."},
            "tty": {"type": "boolean", "description": "Run it on a pseudo-terminal (24x80); its "
                                                      "output is then the terminal's byte stream."},
            "stdin": {"type": "boolean", "description": "Keep stdin open so write_stdin can feed "
                                                        "it (default: no stdin; always on with tty)."},
            "yield_ms": {**YIELD, "description": "Milliseconds to wait for first output before "
                                                 f"answering (default {START_YIELD_MS}; 0: don't "
                                                 "wait). Returns early when the process exits."},
            "max_bytes": MAX_OUT,
        }),
    ),
    ToolSpec(
        "poll_process",
        "Return a process's output since this session's last poll of it, waiting server-side up "
        "to yield_ms for it (returning early when the process exits), with its state and exit "
        "code. Call it again to keep reading; prefer wait_process to wait for the end.",
        _object({"id": ID, "yield_ms": {**YIELD, "description": f"{YIELD_TEXT} Default {POLL_YIELD_MS}."},
                 "max_bytes": MAX_OUT}, ("id",)),
        read_only=True,
    ),
    ToolSpec(
        "write_stdin",
        "Write text to a process's stdin (or its terminal, for a tty process) and return the output "
        "that follows, as poll_process does. End a line with \\n; control keys are their bytes "
        "(Ctrl-C is \\u0003, Ctrl-D \\u0004). close_stdin sends end-of-file after the text "
        "(not for tty processes: send \\u0004 instead).",
        _object({"id": ID, "input": {"type": "string", "description": "The text to write."},
                 "close_stdin": {"type": "boolean", "description": "Close stdin after writing."},
                 "yield_ms": {**YIELD, "description": f"{YIELD_TEXT} Default {STDIN_YIELD_MS}."},
                 "max_bytes": MAX_OUT}, ("id", "input")),
    ),
    ToolSpec(
        "send_signal",
        "Deliver a signal (e.g. SIGINT, SIGHUP, SIGUSR1, or a number) to a running process; its "
        "state does not change by itself. To end a process use stop_process.",
        _object({"id": ID, "signal": {"type": "string", "description": "A name like SIGINT or "
                                                                        "INT, or a number."},
                 "group": {"type": "boolean", "description": "Signal its whole process group."}},
                ("id", "signal")),
    ),
    ToolSpec(
        "stop_process",
        "Stop a process and its children: a signal (SIGTERM unless given), then SIGKILL after its "
        "grace period. Waits until it has ended and returns its final state and last output lines.",
        _object({"id": ID,
                 "signal": {"type": "string", "description": "The first signal (default SIGTERM)."},
                 "grace": {"type": "number", "minimum": 0,
                           "description": "Seconds between the signal and SIGKILL."}}, ("id",)),
        destructive=True,
    ),
    ToolSpec(
        "list_processes",
        "List processes, newest first: id, state, exit, name and command.",
        _object({"state": {"type": "string", "enum": ["queued", "running", "terminating", "idle"],
                           "description": "Only processes in this state (idle: finished)."},
                 "name": {"type": "string", "description": "Only processes with this name."},
                 "limit": {"type": "integer", "minimum": 1, "maximum": 1000,
                           "description": "At most this many (default 20)."}}),
        read_only=True,
    ),
    ToolSpec(
        "read_output",
        "Read a byte range of a process's captured output (all of it is kept, up to the daemon's "
        "cap), without moving poll_process's position. Give offset (and limit) to page through it, "
        "or tail_bytes for its end. Returns the text and the offset to read next.",
        _object({"id": ID,
                 "stream": {"type": "string", "enum": ["stdout", "stderr"],
                            "description": "Which stream (default stdout; a tty process has only "
                                           "stdout)."},
                 "offset": {"type": "integer", "minimum": 0, "description": "First byte to read."},
                 "limit": {"type": "integer", "minimum": 1, "maximum": 1048576,
                           "description": f"Most bytes to read (default {READ_LIMIT})."},
                 "tail_bytes": {"type": "integer", "minimum": 1, "maximum": 1048576,
                                "description": "Read the last this-many bytes instead of offset."}},
                ("id",)),
        read_only=True,
    ),
    ToolSpec(
        "wait_process",
        "Wait until a process has ended (or timeout seconds pass) and return its exit code or "
        "signal and its last output lines.",
        _object({"id": ID, "timeout": {"type": "number", "minimum": 0, "maximum": MAX_WAIT,
                                       "description": f"Seconds to wait (default {WAIT_TIMEOUT:g})."}},
                ("id",)),
        read_only=True,
    ),
)}

READ_ONLY = frozenset(name for name, spec in TOOLS.items() if spec.read_only)


def parse_allow(text: str) -> frozenset[str]:
    """``--allow``'s value: tool names separated by commas; ValueError names an unknown one."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - TOOLS.keys())
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r} (tools: {', '.join(TOOLS)})")
    if not names:
        raise ValueError("--allow needs at least one tool name")
    return names
