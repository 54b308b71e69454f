"""A Dockerfile read as instructions, and the course's rules for a model-server image.

:func:`parse_dockerfile` turns the text into ``Instruction`` objects (continuation lines
joined, comments dropped, parser directives ignored); :func:`dockerfile_problems` checks
the rules lesson 04 teaches, each problem one sentence starting with its rule's code:

``unpinned-base``  every external ``FROM`` names a version tag (with a digit, not
                   ``latest``) or an ``@sha256:`` digest;
``root-user``      the final stage switches to a ``USER`` other than root/0 before it runs;
``secret``         no ``ENV``/``ARG`` with a secret-looking name (password, secret, token,
                   key) carries a value, and no ``COPY``/``ADD`` of ``.env``, keys or ``.pem``;
``layer-order``    dependencies are installed (``RUN pip install``) from requirement files
                   copied alone, before the rest of the code is copied (a code change then
                   reuses the cached dependency layer);
``shell-cmd``      ``CMD``/``ENTRYPOINT`` in exec form (a JSON list), so the server is PID 1
                   and receives SIGTERM.

Nothing is built or pulled: it reads text.
"""

from __future__ import annotations

import dataclasses
import json
import re

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY)",
                         re.IGNORECASE)
SECRET_FILE = re.compile(r"(^|/)(\.env|id_rsa|id_ed25519|[^/\s]*\.pem|[^/\s]*\.key|"
                         r"credentials(\.json)?|\.netrc|\.pypirc)$")
REQUIREMENTS_FILE = re.compile(r"(requirements[^/\s]*\.(txt|lock|in)|[^/\s]*\.lock|"
                               r"pyproject\.toml|constraints[^/\s]*\.txt)$")


@dataclasses.dataclass
class Instruction:
    """One Dockerfile instruction: keyword (upper case), its argument text, first line (1-based)."""

    keyword: str
    args: str
    line: int

    def words(self) -> list[str]:
        """The arguments split on whitespace, ``--flags`` dropped."""
        return [w for w in self.args.split() if not w.startswith("--")]


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, in order."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def _exec_form(args: str) -> bool:
    try:
        value = json.loads(args)
    except ValueError:
        return False
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.split(":", 1)[1]
    return tag != "latest" and any(ch.isdigit() for ch in tag)


def _sources(ins: Instruction) -> list[str]:
    """What a COPY/ADD copies (every word but the destination), JSON form included."""
    if _exec_form(ins.args):
        words = json.loads(ins.args)
    else:
        words = ins.words()
    return words[:-1]


def _env_pairs(ins: Instruction) -> list[tuple[str, str]]:
    """(name, value) pairs of an ENV or ARG (``ENV A=1 B=2``, ``ENV A 1``, ``ARG A``)."""
    args = ins.args.strip()
    if ins.keyword == "ENV" and "=" not in args.split(" ", 1)[0]:
        name, _, value = args.partition(" ")
        return [(name, value.strip())]
    pairs = []
    for word in re.findall(r'(?:[^\s"\']+|"[^"]*"|\'[^\']*\')+', args):
        name, eq, value = word.partition("=")
        pairs.append((name, value.strip("\"'") if eq else ""))
    return pairs


def dockerfile_problems(text: str) -> list[str]:
    """Every rule the Dockerfile breaks, one sentence each starting with the rule's code
    (``unpinned-base``, ``root-user``, ``secret``, ``layer-order``, ``shell-cmd``); []
    when it follows them all. A Dockerfile without ``FROM`` is one problem, ``no-from``."""
    instructions = parse_dockerfile(text)
    if not any(i.keyword == "FROM" for i in instructions):
        return ["no-from: a Dockerfile starts with FROM <base image>"]
    problems: list[str] = []
    stages: set[str] = set()
    final: list[Instruction] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.words()
            image = words[0] if words else ""
            if image.lower() not in stages and image != "scratch" and not _pinned(image):
                problems.append(f"unpinned-base: line {ins.line}: FROM {image} does not pin a "
                                f"version (use a tag such as python:3.11-slim, or a digest)")
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2].lower())
            final = []
        final.append(ins)
    # the final stage: who runs it, in what order it copies and installs
    users = [i for i in final if i.keyword == "USER"]
    user = users[-1].words()[0].split(":")[0] if users and users[-1].words() else "root"
    if user in ("root", "0"):
        problems.append("root-user: the image runs as root: add a user (RUN useradd ...) and "
                        "switch to it with USER before CMD")
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG"):
            for name, value in _env_pairs(ins):
                if SECRET_NAME.search(name) and value:
                    problems.append(f"secret: line {ins.line}: {ins.keyword} {name} bakes a "
                                    f"secret into the image: pass it at run time instead")
        if ins.keyword in ("COPY", "ADD"):
            for src in _sources(ins):
                if SECRET_FILE.search(src.rstrip("/")):
                    problems.append(f"secret: line {ins.line}: {ins.keyword} {src} copies a "
                                    f"secret file into the image")
    installs = [n for n, i in enumerate(final)
                if i.keyword == "RUN" and re.search(r"\bpip3?\s+install\b|\bpython3?\s+-m\s+pip\s+install\b", i.args)]
    copies = [(n, i) for n, i in enumerate(final) if i.keyword in ("COPY", "ADD")
              and not any(w.startswith("--from") for w in i.args.split())]
    code = [n for n, i in copies if any(not REQUIREMENTS_FILE.search(s) for s in _sources(i))]
    reqs = [n for n, i in copies if _sources(i) and all(REQUIREMENTS_FILE.search(s) for s in _sources(i))]
    if not installs:
        problems.append("layer-order: no RUN pip install: install the dependencies in their "
                        "own layer")
    elif not reqs or reqs[0] > installs[0]:
        problems.append("layer-order: copy the requirement file alone (COPY requirements.txt "
                        "...) before RUN pip install")
    elif code and code[0] < installs[0]:
        problems.append(f"layer-order: line {final[code[0]].line}: the code is copied before "
                        f"the dependencies are installed, so every code change reinstalls them")
    starts = [i for i in final if i.keyword in ("CMD", "ENTRYPOINT")]
    if not starts:
        problems.append("shell-cmd: no CMD: say how the server starts, in exec form "
                        '(CMD ["gunicorn", ...])')
    for ins in starts:
        if not _exec_form(ins.args):
            problems.append(f"shell-cmd: line {ins.line}: {ins.keyword} in shell form runs "
                            f"under /bin/sh, which does not pass SIGTERM on: use a JSON list")
    return problems
