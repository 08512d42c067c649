"""The one reader of `.env` files, for start.sh, preflight.sh, service_manager.py and Settings.

Standard library only and runnable as a script (`python3 mcp/envfile.py FILE`), so it works
with the system python3 before any venv exists. It reads the subset of python-dotenv's
syntax that has one meaning, and refuses the rest with the line number:

    # a comment                  KEY=value            export KEY=value
    KEY = value                  KEY=value  # comment KEY="double \"quoted\"\n"   KEY='single, literal'

Unquoted values end at ` #` and are stripped; double quotes understand \\ \" \n \t; single
quotes are literal. Refused: a line that is not an assignment, an unterminated quote, text
after a closing quote, and `${...}` outside single quotes (python-dotenv would expand it;
we do not, so we refuse rather than guess). Exit codes of the script: 0, 1 refused file."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "$": "$"}


class EnvFileError(ValueError):
    """A line of a .env file this reader does not understand."""


def parse(text: str, source: str = ".env") -> dict[str, str]:
    """The assignments of a .env file, in order; EnvFileError names the first bad line."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if not match:
            raise EnvFileError(f"{source}:{number}: not a KEY=value assignment: {line.strip()[:60]!r}")
        key, raw = match.groups()
        try:
            values[key] = _value(raw)
        except EnvFileError as exc:
            raise EnvFileError(f"{source}:{number}: {key}: {exc}") from None
    return values


def _value(raw: str) -> str:
    if raw.startswith("'"):
        end = raw.find("'", 1)
        if end < 0:
            raise EnvFileError("unterminated single quote (values span one line)")
        _only_comment_after(raw[end + 1:])
        return raw[1:end]
    if raw.startswith('"'):
        out, i = [], 1
        while i < len(raw):
            c = raw[i]
            if c == "\\" and i + 1 < len(raw):
                nxt = raw[i + 1]
                if nxt not in _ESCAPES:
                    raise EnvFileError(f"unknown escape \\{nxt} in double quotes")
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if c == '"':
                _only_comment_after(raw[i + 1:])
                value = "".join(out)
                _no_expansion(raw[1:i])
                return value
            out.append(c)
            i += 1
        raise EnvFileError("unterminated double quote (values span one line)")
    value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    _no_expansion(value)
    return value


def _only_comment_after(rest: str) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise EnvFileError(f"text after the closing quote: {rest[:30]!r}")


def _no_expansion(value: str) -> None:
    if "${" in value.replace("\\$", ""):
        raise EnvFileError("${...} is not expanded here; write the value, or put it in single quotes")


def read(path: str | Path) -> dict[str, str]:
    """The assignments of the file at `path`; {} when there is none."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return parse(text, str(path))


def merged(path: str | Path, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the file's variables added where `environ` does not set them (the
    environment wins, as with systemd's Environment=)."""
    return {**read(path), **environ}


def main(argv: list[str]) -> int:
    """Print `export KEY=VALUE` lines (shell-quoted) for the file's variables the
    environment does not set; start.sh evals them."""
    if len(argv) != 1:
        print("usage: envfile.py FILE", file=sys.stderr)
        return 2
    import os

    try:
        values = read(argv[0])
    except EnvFileError as exc:
        print(f"refusing {exc}", file=sys.stderr)
        return 1
    for key, value in values.items():
        if key not in os.environ:
            print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
