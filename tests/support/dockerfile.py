"""The Dockerfile read as data, and an image's files laid out in a temporary directory.

``ImageLayout`` puts what a target's ``COPY`` lines copy (from the build context, or from an earlier
stage) where the image would hold it, under one root folder: image path ``/opt/model-server/x`` lands
at ``root/opt/model-server/x``. Stages are emulated, not built: their ``COPY`` lines are applied the
same way and the few ``RUN`` commands that write files the targets copy are replayed (the
container_config renders, and the archives, taken from the repository's own build). Nothing is
hard-coded about which file goes where: a COPY line the Dockerfile gains or loses shows up here.

    stages = parse_stages()
    layout = ImageLayout(tmp_path / "image", stages)
    layout.lay_out("runtime")
    layout.path("/opt/model-server/config.properties").read_text()
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scripts.paths import REPO

__all__ = [
    "DOCKERFILE",
    "VENV_PATHS",
    "Copy",
    "ImageLayout",
    "Stage",
    "instructions",
    "parse_stages",
]

DOCKERFILE = REPO / "Dockerfile"
# Virtual environments copied between stages: a test runs the interpreter it was started with instead.
VENV_PATHS = ("/opt/venv", "/opt/kserve-venv")


def instructions(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip()]


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    stage: str | None  # --from=<stage>; None for the build context


@dataclass
class Stage:
    name: str
    base: str  # an image, or the name of an earlier stage
    body: list[str]  # the instructions after FROM

    def keyword(self, word: str) -> list[str]:
        return [i[len(word) + 1 :].strip() for i in self.body if i.split(None, 1)[0].upper() == word]

    def env(self) -> dict[str, str]:
        """``ENV KEY=VALUE ...`` settings of this stage (values as written, ``$VAR`` not expanded)."""
        pairs = (p.split("=", 1) for args in self.keyword("ENV") for p in shlex.split(args) if "=" in p)
        return {key: value for key, value in pairs}

    def copies(self) -> list[Copy]:
        found = []
        for args in self.keyword("COPY"):
            parts = shlex.split(args)
            flags = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            found.append(Copy(tuple(paths[:-1]), paths[-1], stage))
        return found

    def run_commands(self) -> list[str]:
        """Every ``&&``-joined command of every RUN, in order."""
        return [c.strip() for run in self.keyword("RUN") for c in run.split("&&") if c.strip()]

    def exec_form(self, word: str) -> list[str] | None:
        """The last ``CMD`` / ``ENTRYPOINT`` of this stage in exec (JSON) form, or None."""
        found = self.keyword(word)
        return json.loads(found[-1]) if found else None


def parse_stages(text: str | None = None) -> dict[str, Stage]:
    """Stages by name, in Dockerfile order (global ARGs before the first FROM are substituted)."""
    text = DOCKERFILE.read_text() if text is None else text
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in instructions(text):
        word, _, rest = line.partition(" ")
        if word.upper() == "ARG" and current is None and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip()
        elif word.upper() == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)\s+AS\s+(\S+)", rest.strip(), flags=re.I)
            if match is None:
                raise ValueError(f"FROM without a stage name: {line!r}")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            current = stages[match.group(2)] = Stage(match.group(2), base, [])
        elif current is not None:
            current.body.append(line)
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """``target`` and the stages it is built FROM, base first."""
    found = [stages[target]]
    while found[0].base in stages:
        found.insert(0, stages[found[0].base])
    return found


class ImageLayout:
    """The files of Dockerfile targets under ``root``, plus emulated stages under ``root/.stages``."""

    def __init__(self, root: Path, stages: dict[str, Stage] | None = None) -> None:
        self.root = root
        self.stages = parse_stages() if stages is None else stages
        self._built: dict[str, Path] = {}

    def path(self, image_path: str, root: Path | None = None) -> Path:
        """Where the image path ``image_path`` (absolute) lies in this layout."""
        if not image_path.startswith("/"):
            raise ValueError(f"{image_path!r} is not an absolute image path")
        return (root or self.root) / image_path.lstrip("/")

    def lay_out(self, target: str, mounts: dict[str, str] | None = None) -> Path:
        """Copy what ``target`` holds into ``root``; ``mounts`` maps an image folder to a stage whose
        files are mounted there at run time (KServe mounts the storageUri at /mnt/models)."""
        self._apply(target, self.root)
        for folder, stage in (mounts or {}).items():
            self._copy_tree(self.stage_root(stage), self.path(folder))
        return self.root

    def stage_root(self, name: str) -> Path:
        """The emulated file system of stage ``name`` (built once)."""
        if name not in self._built:
            root = self.root / ".stages" / name
            root.mkdir(parents=True, exist_ok=True)
            self._apply(name, root)
            self._built[name] = root
        return self._built[name]

    def _apply(self, target: str, root: Path) -> None:
        if target not in self.stages:
            raise KeyError(f"no stage {target!r} in the Dockerfile; stages: {', '.join(self.stages)}")
        workdir = "/"
        for stage in chain(self.stages, target):
            for line in stage.body:
                word, _, rest = line.partition(" ")
                if word.upper() == "WORKDIR":
                    workdir = str(PurePosixPath(workdir, rest.strip()))
                    self.path(workdir, root).mkdir(parents=True, exist_ok=True)
                elif word.upper() == "COPY":
                    (copy,) = Stage(stage.name, stage.base, [line]).copies()
                    self._copy(copy, workdir, root)
                elif word.upper() == "RUN":
                    for command in Stage(stage.name, stage.base, [line]).run_commands():
                        self._run(command, workdir, root)

    def _copy(self, copy: Copy, workdir: str, root: Path) -> None:
        dest = str(PurePosixPath(workdir, copy.dest))
        into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
        for source in copy.sources:
            if copy.stage is not None and source.rstrip("/") in VENV_PATHS:
                continue  # the test's own interpreter stands in for a copied virtual environment
            origin = self.path(source, self.stage_root(copy.stage)) if copy.stage else REPO / source
            if not origin.exists():
                where = f"stage {copy.stage}" if copy.stage else "the build context"
                raise FileNotFoundError(f"COPY {source} {copy.dest}: {where} has no {source}")
            if origin.is_dir():
                self._copy_tree(origin, self.path(dest, root))
            else:
                target = self.path(dest, root) / origin.name if into_dir else self.path(dest, root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    @staticmethod
    def _copy_tree(origin: Path, target: Path) -> None:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".stages")
        shutil.copytree(origin, target, dirs_exist_ok=True, ignore=ignore)

    def _run(self, command: str, workdir: str, root: Path) -> None:
        """Replay the RUN commands that write files a target copies; others (pip, apt, converters
        whose weights the repository's own build already made) leave no file a test reads."""
        words = shlex.split(command)
        if len(words) < 3 or words[:2] != ["python", "-m"]:
            return
        module, args = words[2], words[3:]
        mapped = [str(self.path(str(PurePosixPath(workdir, a)), root)) if _is_path(a) else a for a in args]
        if module == "scripts.packaging.container_config":
            from scripts.packaging import container_config

            container_config.main(mapped)
        elif module == "scripts.packaging.build_archives":
            self._archives(mapped)

    @staticmethod
    def _archives(args: list[str]) -> None:
        """``build_archives --store S``: the repository's archives (built by the same module)."""
        from scripts.packaging.build_archives import ARCHIVES
        from tests.support.servers import MODEL_STORE, ensure_archives

        store = Path(args[args.index("--store") + 1])
        ensure_archives()
        store.mkdir(parents=True, exist_ok=True)
        for spec in ARCHIVES.values():
            shutil.copy2(MODEL_STORE / spec.filename, store / spec.filename)


def _is_path(arg: str) -> bool:
    """An argument naming a file of the stage: absolute, or relative like ``build/x.pt``."""
    return not arg.startswith("-") and ("/" in arg)
