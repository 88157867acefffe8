"""The HTML reports (inter-lab experiment, typed slides, image study) are pages people open:
render each in headless Chromium and check that every image decodes, nothing overflows the page
width and the console shows no errors.

Slow (``make test-slow`` installs Debian's chromium for it through scripts/install_browser.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from doublebackprop.cli import main
from doublebackprop.msi.simulate.cohort import SimulationConfig, simulate_cohort

pytestmark = pytest.mark.slow

WIDTH = 1280
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _err = console.error;
console.error = (...a) => { window.__errors.push(a.map(String).join(' ')); _err(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const limit = document.documentElement.clientWidth + 1;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > limit)
    .map(e => e.tagName + (e.alt ? ':' + e.alt : '')).slice(0, 8);
  const out = document.createElement('pre');
  out.id = 'dbp-check';
  out.textContent = JSON.stringify({images: imgs.length, bad, wide,
    scroll: document.documentElement.scrollWidth, width: limit - 1, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _browser() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    pytest.skip("chromium is not installed (make test-slow installs it)")


def _render(page: Path, tmp: Path) -> tuple[dict, str]:
    probe = tmp / f"probe-{page.parent.name}-{page.name}"
    html = page.read_text(encoding="utf-8")
    probe.write_text(html.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    cmd = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WIDTH},900",
        "--virtual-time-budget=15000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        probe.as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="dbp-check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"{page}: the page did not finish loading\n{run.stderr[-2000:]}"
    text = found.group(1).replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text), run.stderr


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("reports")
    cohort = simulate_cohort(root / "cohort", SimulationConfig.preset("tiny", seed=5))
    fast = [
        "--epochs",
        "1",
        "--folds",
        "3",
        "--workers",
        "1",
        "--no-progress",
        "--bootstrap",
        "20",
        "--lambdas",
        "1e-2",
        "--bin-width",
        "2",
    ]
    assert (
        main(
            [
                "msi",
                "interlab",
                "--annotations",
                str(cohort.annotations),
                "--out",
                str(root / "interlab"),
                "--biomarkers",
                str(cohort.biomarkers),
                *fast,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "msi",
                "train",
                "--annotations",
                str(cohort.annotations),
                "--out",
                str(root / "model"),
                "--epochs",
                "1",
                "--validation-folds",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    slides = sorted(str(p) for p in (root / "cohort").glob("*.imzML"))[:2]
    assert (
        main(
            [
                "msi",
                "predict",
                str(root / "model"),
                *slides,
                "--out",
                str(root / "typed"),
                "--annotations",
                str(cohort.annotations),
                "--no-progress",
            ]
        )
        == 0
    )
    from tests.vision.test_vision import fake_fashion

    images = fake_fashion(root / "fm")
    assert (
        main(
            [
                "robustness",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(images),
                "--quick",
                "--out",
                str(root / "study"),
                "--width",
                "0.25",
                "--epochs",
                "1",
                "--train-size",
                "300",
                "--attack-size",
                "12",
                "--lambdas",
                "0,1",
                "--adv-epsilon",
                "1",
                "--seeds",
                "0,1",
                "--no-progress",
            ]
        )
        == 0
    )
    pages = [
        root / "interlab" / "report.html",
        *sorted((root / "typed").glob("*.html")),
        root / "study" / "report.html",
    ]
    assert len(pages) == 4 and all(p.is_file() for p in pages)
    return pages


def test_every_report_renders_cleanly(reports, tmp_path):
    problems = []
    for page in reports:
        check, log = _render(page, tmp_path)
        if check["images"] == 0 or check["bad"]:
            problems.append(f"{page.name}: {check['images']} images, broken: {check['bad']}")
        if check["scroll"] > check["width"] or check["wide"]:
            problems.append(f"{page.name}: wider than {check['width']} px: {check['wide']}")
        console = [line for line in log.splitlines() if "CONSOLE" in line and "rror" in line]
        if check["errors"] or console:
            problems.append(f"{page.name}: console errors {check['errors']} {console[:3]}")
    assert not problems, "\n".join(problems)
