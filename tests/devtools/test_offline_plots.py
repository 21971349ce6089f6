"""`dvc plots show` renders offline: the project's HTML template inlines the pinned vega libraries (real DVC, no network)."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from devtools.offline_plots import (TemplateError, check_template, inline_scripts, load_lock, markup,
                                    network_references, render_template)

DVC_YAML = """\
plots:
  - loss.tsv:
      x: step
      y: loss
  - confusion.png
"""

# Runs the page's own scripts in node: the three libraries, then DVC's per-chart `vegaEmbed('#id', spec)` calls
# (captured), and draws each spec to SVG headless with the inlined vega + vega-lite.
DRAW_JS = r"""
const fs = require("fs"), vm = require("vm");
const html = fs.readFileSync(process.argv[2], "utf8");
const scripts = [...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script\s*>/gi)].map((m) => m[1]);
for (const code of scripts.slice(0, 3)) vm.runInThisContext(code);
const specs = [];
for (const code of scripts.slice(3)) vm.runInNewContext(code, {vegaEmbed: (el, spec) => specs.push([el, spec])});
(async () => {
  const charts = [];
  for (const [el, spec] of specs) {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), {renderer: "none"});
    const svg = await view.toSVG();
    const line = svg.match(/class="mark-line[^"]*"[^>]*>\s*<path[^>]*\bd="([^"]*)"/);
    charts.push({el, line: line ? line[1] : null});
  }
  console.log(JSON.stringify({vegaEmbed: typeof vegaEmbed, vega: vega.version, vegaLite: vegaLite.version, charts}));
})().catch((e) => { console.error(String(e)); process.exit(1); });
"""


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")


def plots_repo(root: Path, repo_root: Path, dvc_config: str) -> Path:
    """A DVC repo with one vega plot and one image plot, and the given .dvc/config."""
    root.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=root, check=True)
    (root / ".dvc/config").write_text(dvc_config)
    (root / "configs/plots").mkdir(parents=True)
    shutil.copy(repo_root / "configs/plots/offline.html", root / "configs/plots/offline.html")
    (root / "loss.tsv").write_text("step\tloss\n0\t2.5\n1\t1.7\n2\t1.2\n")
    (root / "confusion.png").write_bytes(tiny_png())
    (root / "dvc.yaml").write_text(DVC_YAML)
    return root


def plots_show(root: Path) -> str:
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots"], cwd=root, check=True,
                   capture_output=True)
    return (root / "dvc_plots/index.html").read_text()


@pytest.fixture(scope="module")
def page(tmp_path_factory, repo_root) -> Path:
    """What `dvc plots show` writes with this project's .dvc/config."""
    root = plots_repo(tmp_path_factory.mktemp("plots") / "repo", repo_root, (repo_root / ".dvc/config").read_text())
    plots_show(root)
    return root / "dvc_plots/index.html"


def test_the_shipped_template_inlines_exactly_the_pinned_libraries(repo_root):
    html = (repo_root / "configs/plots/offline.html").read_text()
    assert check_template(html, load_lock(repo_root / "configs/plots/vega.lock.json").pins) == []
    assert "{plot_divs}" in html and "{scripts}" not in html  # DVC's CDN tags go to {scripts}: there is none
    assert len(html.encode()) < 1_200_000


def test_dvc_plots_show_writes_a_page_that_loads_no_network_script(page, repo_root):
    html = page.read_text()
    assert network_references(html) == [] and "cdn.jsdelivr.net" not in html
    assert check_template(html, load_lock(repo_root / "configs/plots/vega.lock.json").pins) == []
    assert "vegaEmbed('#loss_tsv', spec);" in html and '"loss": "1.7"' in html
    assert '<img src="static/workspace_confusion.png">' in markup(html)  # the image plot: a local file


def test_without_the_template_setting_the_page_loads_vega_from_a_cdn(tmp_path, repo_root):
    """The check above would catch DVC's default page: this is what the setting in .dvc/config prevents."""
    root = plots_repo(tmp_path / "repo", repo_root, "[core]\n    analytics = false\n")
    refs = network_references(plots_show(root))
    assert any("cdn.jsdelivr.net/npm/vega@" in ref for ref in refs) and len(refs) >= 3


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's JavaScript")
def test_the_inlined_libraries_draw_the_pages_chart_without_network(page, tmp_path):
    script = tmp_path / "draw.js"
    script.write_text(DRAW_JS)
    result = subprocess.run(["node", str(script), str(page)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    drawn = json.loads(result.stdout)
    assert (drawn["vegaEmbed"], drawn["vega"], drawn["vegaLite"]) == ("function", "5.33.1", "5.23.0")
    [chart] = drawn["charts"]
    assert chart["el"] == "#loss_tsv" and chart["line"].count("L") == 2  # the 3 points of loss.tsv, joined


def test_code_that_would_end_its_script_tag_early_is_refused():
    pin = load_lock(Path(__file__).resolve().parents[2] / "configs/plots/vega.lock.json").pins[0]
    with pytest.raises(TemplateError, match="cannot be inlined"):
        render_template([(pin, 'x = "</script>";\n')], "license")
    page = render_template([(pin, "x = 1;\n")], "license")
    assert [code for _, code in inline_scripts(page)] == ["\nx = 1;\n"]
