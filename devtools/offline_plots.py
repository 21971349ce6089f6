"""The page `dvc plots show` writes, working offline: vega, vega-lite and vega-embed inlined in its HTML template.

DVC's default page loads the three libraries from a CDN (`dvc_render.vega.VegaRenderer.SCRIPTS`, put at the
template's `{scripts}` placeholder), so on a machine without network every chart is blank. DVC's supported
mechanism for another page is `plots.html_template` in .dvc/config (relative to .dvc/): this project's points at
configs/plots/offline.html, which fills `{plot_divs}` (and `{refresh_tag}`) like the default page but has no
`{scripts}`: the libraries are there inline instead, the files pinned in configs/plots/vega.lock.json with the
registry's tarball hash and their own sha256.

    python -m devtools.offline_plots --check   # the template holds exactly the pinned files (no network)
    python -m devtools.offline_plots --write   # rebuild it from the npm registry (`npm pack`), verifying both hashes
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.io import write_json, write_text

LOCK = Path("configs/plots/vega.lock.json")
TEMPLATE = Path("configs/plots/offline.html")
DVC_PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")  # what dvc_render.html.HTML.embed replaces
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)
NETWORK_ATTRIBUTE = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


class TemplateError(ValueError):
    """The template (or a fetched library) is not what the lock file pins."""


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    file: str  # path inside the npm tarball (under package/)
    integrity: str  # npm's tarball hash ("sha512-<base64>"); empty = take it from the registry (--write)
    sha256: str  # of `file`; empty = take it from the tarball (--write)
    license: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


@dataclass(frozen=True)
class Lock:
    pins: tuple[Pin, ...]
    license_package: str  # whose tarball holds the license text the page carries
    license_file: str
    raw: dict


def load_lock(path: Path = LOCK) -> Lock:
    raw = json.loads(Path(path).read_text())
    pins = tuple(Pin(**entry) for entry in raw["libraries"])
    source = raw["license_text_from"]
    return Lock(pins, source["package"], source["file"], raw)


# --------------------------------------------------------------------------- the page (pure)

PAGE_HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Written by `python -m devtools.offline_plots --write` (configs/plots/vega.lock.json); DVC fills the
         plot_divs placeholder. The libraries below are inline so the page draws its charts without network. -->
"""
PAGE_TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def render_template(libraries: list[tuple[Pin, str]], license_text: str) -> str:
    """DVC's default page with each library's code in its own inline <script>, in load order."""
    notice = "\n".join(f"    {pin.spec} {pin.file}: {pin.license}" for pin, _ in libraries)
    parts = [PAGE_HEAD, f"    <!--\n{notice}\n\n{safe_comment(license_text.strip())}\n    -->\n"]
    for pin, code in libraries:
        if re.search(r"</script|<!--", code, re.IGNORECASE) or any(p in code for p in DVC_PLACEHOLDERS):
            raise TemplateError(f"{pin.spec} {pin.file}: contains '</script', '<!--' or a DVC placeholder; "
                                "it cannot be inlined as is")
        parts.append(f'    <script type="text/javascript">\n{code}</script>\n')  # the file's bytes, as shipped
    parts.append(PAGE_TAIL)
    return "".join(parts)


def safe_comment(text: str) -> str:
    return text.replace("--", "- -")


def inline_scripts(html: str) -> list[tuple[str, str]]:
    """(attributes, code) of every <script> of a page, in order."""
    return [(m.group(1), m.group(2)) for m in SCRIPT.finditer(html)]


def markup(html: str) -> str:
    """The page without its scripts' code (a library's string literals are not the page's tags)."""
    return SCRIPT.sub(lambda m: f"<script{m.group(1)}></script>", html)


def network_references(html: str) -> list[str]:
    """Script tags with a src, and src/href attributes pointing at another host: what an offline page must not have."""
    found = [f"<script{attrs}>" for attrs, _ in inline_scripts(html) if re.search(r"\bsrc\s*=", attrs, re.IGNORECASE)]
    return found + [m.group(0) for m in NETWORK_ATTRIBUTE.finditer(markup(html))]


def library_sha256(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def check_template(html: str, pins: tuple[Pin, ...]) -> list[str]:
    """What is wrong with a template (or a page DVC wrote from it); [] = it carries exactly the pinned libraries."""
    problems = [f"references the network: {ref}" for ref in network_references(html)]
    codes = [code.removeprefix("\n") for _, code in inline_scripts(html)]
    for i, pin in enumerate(pins):
        if i >= len(codes):
            problems.append(f"{pin.spec}: no inline script for it")
        elif library_sha256(codes[i]) != pin.sha256:
            problems.append(f"{pin.spec}: inline script #{i + 1} has sha256 {library_sha256(codes[i])}, "
                            f"the lock pins {pin.sha256}")
    return problems


# --------------------------------------------------------------------------- fetching (npm registry)

def npm_pack(spec: str, workdir: Path) -> tuple[Path, str]:
    """`npm pack <spec>` into workdir: (tarball, the registry's integrity string)."""
    result = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(workdir)],
                            capture_output=True, text=True, cwd=workdir)
    if result.returncode:
        raise TemplateError(f"npm pack {spec}: {' '.join(result.stderr.split())[:300]}")
    info = json.loads(result.stdout)[0]
    return workdir / info["filename"], info["integrity"]


def tarball_file(tarball: Path, name: str) -> bytes:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"package/{name}")
        if member is None:
            raise TemplateError(f"{tarball.name}: no package/{name}")
        return member.read()


def verify_integrity(tarball: Path, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise TemplateError(f"{tarball.name}: {algorithm} {digest} is not the registry's {expected}")


def fetch(lock: Lock, workdir: Path) -> tuple[list[tuple[Pin, str]], str]:
    """Each pinned file from its tarball, hashes checked; an empty hash in the lock is filled from what came."""
    libraries, license_text = [], ""
    for pin in lock.pins:
        tarball, integrity = npm_pack(pin.spec, workdir)
        verify_integrity(tarball, integrity)
        if pin.integrity and integrity != pin.integrity:
            raise TemplateError(f"{pin.spec}: the registry's tarball is {integrity}, the lock pins {pin.integrity}")
        code = tarball_file(tarball, pin.file).decode("utf-8")
        if pin.sha256 and library_sha256(code) != pin.sha256:
            raise TemplateError(f"{pin.spec} {pin.file}: sha256 {library_sha256(code)}, the lock pins {pin.sha256}")
        libraries.append((Pin(**{**pin.__dict__, "integrity": integrity, "sha256": library_sha256(code)}), code))
        if pin.package == lock.license_package:
            license_text = tarball_file(tarball, lock.license_file).decode("utf-8")
    if not license_text:
        raise TemplateError(f"license text: {lock.license_package} is not among the pinned libraries")
    return libraries, license_text


def write(lock_path: Path = LOCK, template: Path = TEMPLATE) -> list[Pin]:
    lock = load_lock(lock_path)
    with tempfile.TemporaryDirectory() as tmp:
        libraries, license_text = fetch(lock, Path(tmp))
    write_text(template, render_template(libraries, license_text))
    pins = [pin for pin, _ in libraries]
    if pins != list(lock.pins):  # hashes filled in for a new version
        write_json(lock_path, {**lock.raw, "libraries": [pin.__dict__ for pin in pins]})
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.offline_plots", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="verify configs/plots/offline.html against the lock")
    action.add_argument("--write", action="store_true", help="rebuild it from the npm registry")
    args = parser.parse_args(argv)
    try:
        if args.write:
            pins = write()
            print(f"wrote {TEMPLATE}: " + ", ".join(f"{p.spec} ({p.sha256[:12]})" for p in pins))
            return 0
        problems = check_template(TEMPLATE.read_text(), load_lock().pins)
    except (TemplateError, OSError) as err:
        print(f"offline_plots: {err}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"offline_plots: {TEMPLATE}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{TEMPLATE}: inlines exactly the pinned libraries, no network reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
