"""Check the docs: every relative link in the Markdown sources, and every page of the
built site opened in headless Chromium.

    python tools/check_docs.py [--site build/docs] [--screenshots DIR]

1. The sources (README.md, CHANGELOG.md, docs/**/*.md), as GitHub shows them: every
   relative link or image names a file of the repository, and a ``#fragment`` into a
   Markdown file names one of its headings by GitHub's anchor rule (lower case,
   punctuation dropped, each space a hyphen, ``-1``, ``-2`` after repeats).
2. The site ``make docs`` built, served on a loopback port: Chromium (Debian's
   ``chromium``, driven over ``--remote-debugging-pipe`` with the standard library
   alone) loads every page; a page passes when it loads with text, throws no script
   error, every resource it asks for (stylesheet, script, font, image, the search
   index) arrives, and every image decodes. Every link inside the site names a file
   there, and its ``#fragment`` an element id of that page. Links that leave the site
   (http, https, mailto) are counted, not followed: no network here.

Exit status 0 only when both pass.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["README.md", "CHANGELOG.md", "docs"]
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...

# ---------------------------------------------------------------- the Markdown sources

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(
    r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE
)
HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SLUG_DROP = re.compile(r"[^\w\- ]")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match[1]
        elif fence is not None:
            if (
                match
                and match[1][0] == fence[0]
                and len(match[1]) >= len(fence)
                and not line.strip().strip(fence[0])
            ):
                fence = None
        else:
            lines.append((number, line))
    return lines


def heading_text(source: str) -> str:
    """A heading's text as GitHub renders it: its Markdown (code, emphasis, links)
    rendered, then the tags dropped."""
    import markdown  # mkdocs' dependency, installed with the docs tools

    rendered = markdown.markdown(source)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file: one per heading (github-slugger's rule)
    and the ids of its HTML anchors."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose_lines(text):
        anchors.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = SLUG_DROP.sub("", heading_text(match[2] or "").lower()).replace(" ", "-")
        slug = base
        while slug in seen:
            seen[base] += 1
            slug = f"{base}-{seen[base]}"
        seen[slug] = 0
        anchors.add(slug)
    return anchors


def links_of(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition outside code."""
    found = []
    for number, line in prose_lines(text):
        line = CODE_SPAN.sub("", line)
        for pattern in (INLINE_LINK, REFERENCE, HTML_LINK):
            found += [(number, target) for target in pattern.findall(line)]
    return found


def markdown_files(root: Path) -> list[Path]:
    files = []
    for item in SOURCES:
        path = root / item
        files += sorted(path.rglob("*.md")) if path.is_dir() else [path] if path.exists() else []
    return files


def check_sources(root: Path) -> tuple[int, list[str]]:
    """(relative links checked, problems) of the Markdown sources under ``root``."""
    anchors: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchors:
            anchors[path] = github_anchors(path.read_text(encoding="utf-8"))
        return anchors[path]

    checked, problems = 0, []
    for source in markdown_files(root):
        for number, target in links_of(source.read_text(encoding="utf-8")):
            if not target or EXTERNAL.match(target):
                continue
            checked += 1
            where = f"{source.relative_to(root)}:{number}: {target}"
            path_part, _, fragment = target.partition("#")
            path_part = unquote(path_part.split("?")[0])
            if path_part.startswith("/"):
                problems.append(f"{where}: an absolute path (GitHub resolves it elsewhere)")
                continue
            path = Path(os.path.normpath(source.parent / path_part)) if path_part else source
            if not path.is_relative_to(root):
                problems.append(f"{where}: leaves the repository")
            elif not path.exists():
                problems.append(f"{where}: no such file")
            elif fragment and path.suffix == ".md" and unquote(fragment) not in anchors_of(path):
                problems.append(
                    f"{where}: {path.relative_to(root)} has no heading "
                    f"with the anchor #{unquote(fragment)}"
                )
    return checked, problems


# ---------------------------------------------------------------- the built site in Chromium

PAGE_REPORT = """(async () => {
  const images = await Promise.all([...document.images].map(async (img) => {
    img.loading = "eager";
    try { await img.decode(); } catch (e) {}
    return {src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0};
  }));
  return {
    title: document.title,
    text: document.body ? document.body.innerText.trim().length : 0,
    ids: [...document.querySelectorAll("[id]")].map((e) => e.id)
      .concat([...document.querySelectorAll("a[name]")].map((e) => e.name)),
    links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
    images,
  };
})()"""


class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe (fd 3 in, fd 4 out)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--mute-audio",
    )

    def __init__(self, exe: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="qretrain-docs-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        # Chromium starts before any thread of ours (the reader, the web server), so the
        # child's Python step between fork and exec cannot meet a lock another thread held.
        def wire() -> None:  # in the child: the protocol's fds 3 and 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            [exe, *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,  # noqa: PLW1509 (no other thread yet)
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self) -> None:
        """One tab, its session, and the events this check reads from it."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        reply = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = reply["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=self.session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=self.session,
        )

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self.from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self.messages.put(json.loads(message))
        self.messages.put(None)  # the browser closed the pipe

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer, keeping the events that come first."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._next(deadline, method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, deadline: float) -> None:
        while not any(e["method"] == event for e in self.events):
            reply = self._next(deadline, event)
            if "method" in reply:
                self.events.append(reply)

    def _next(self, deadline: float, what: str) -> dict:
        try:
            reply = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"chromium: no {what} within {self.timeout:.0f} s") from None
        if reply is None:
            raise RuntimeError(f"chromium exited (status {self.process.poll()}) awaiting {what}")
        return reply

    def open(self, url: str, screenshot: Path | None = None) -> tuple[dict, list[str]]:
        """Load ``url``: what PAGE_REPORT finds there, and the load's problems."""
        self.events.clear()
        navigation = self.call("Page.navigate", {"url": url}, session=self.session)
        if navigation.get("errorText"):
            return {}, [f"does not load: {navigation['errorText']}"]
        self.wait_for("Page.loadEventFired", time.monotonic() + self.timeout)
        report = self.call(
            "Runtime.evaluate",
            {"expression": PAGE_REPORT, "awaitPromise": True, "returnByValue": True},
            session=self.session,
        )["result"]["value"]
        if screenshot is not None:
            shot = self.call("Page.captureScreenshot", {"format": "png"}, session=self.session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        }
        problems = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Network.loadingFailed" and not params.get("canceled"):
                url_failed = urls.get(params["requestId"], "?")
                problems.append(f"{url_failed} did not load ({params.get('errorText')})")
            elif (
                event["method"] == "Network.responseReceived"
                and params["response"].get("status", 200) >= 400
            ):
                problems.append(
                    f"{params['response']['url']}: status {params['response']['status']}"
                )
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                problems.append(f"script error: {text.splitlines()[0] if text else details}")
        return report, problems

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """The site served on a free loopback port, as a web host would serve it (so the
    404 page's site-absolute links resolve too), from a background thread."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_site(site: Path, screenshots: Path | None = None) -> tuple[dict, list[str]]:
    """(counts, problems) of every page of the built ``site`` in Chromium."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed: apt-get install -y chromium")
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return {}, [f"{site}: no page (run `make docs` first)"]
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    browser = Chromium(exe)  # first: it forks before any thread starts
    try:
        server = serve(site)
    except BaseException:
        browser.close()
        raise
    host = f"127.0.0.1:{server.server_address[1]}"
    reports, problems = {}, []
    counts = {"pages": len(pages), "images": 0, "internal links": 0, "external links": 0}
    try:
        for page in pages:
            name = page.relative_to(site).as_posix()
            shot = None
            if screenshots is not None:
                shot = screenshots / (name.replace("/", "_").removesuffix(".html") + ".png")
            report, trouble = browser.open(f"http://{host}/{name}", shot)
            reports[page] = report
            problems += [f"{name}: {p}" for p in trouble]
            if report and report["text"] == 0:
                problems.append(f"{name}: renders no text")
            for image in report.get("images", []):
                counts["images"] += 1
                if not image["ok"]:
                    problems.append(f"{name}: image {image['src']} does not load")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
    for page, report in reports.items():
        name = page.relative_to(site).as_posix()
        for link in report.get("links", []):
            parts = urlsplit(link)
            if parts.netloc != host:
                if parts.scheme not in ("javascript", "about", "data"):
                    counts["external links"] += 1
                continue
            counts["internal links"] += 1
            target = site / unquote(parts.path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{name}: {link}: no such page or file")
            elif (
                parts.fragment
                and target in reports
                and unquote(parts.fragment) not in reports[target]["ids"]
            ):
                problems.append(
                    f"{name}: {link}: {target.relative_to(site)} has no #{unquote(parts.fragment)}"
                )
    return counts, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "build" / "docs")
    parser.add_argument("--screenshots", type=Path, help="write a PNG of each page here")
    args = parser.parse_args()
    start = time.perf_counter()
    checked, problems = check_sources(ROOT)
    print(
        f"docs sources: {len(markdown_files(ROOT))} Markdown files, {checked} relative "
        f"links and images, {len(problems)} broken (GitHub's anchors)"
    )
    counts, site_problems = check_site(args.site, args.screenshots)
    print(
        "docs site in chromium: "
        + ", ".join(f"{n} {what}" for what, n in counts.items())
        + f" (external not followed), {len(site_problems)} problems"
    )
    for problem in problems + site_problems:
        print(f"  {problem}")
    ok = not problems and not site_problems
    print(f"docs check: {'ok' if ok else 'FAILED'}, {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
