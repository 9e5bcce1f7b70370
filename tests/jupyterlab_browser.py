"""JupyterLab in a real browser, for tests/test_browser.py: a throwaway server, headless Chromium, one lesson page.

A widget that passes a headless unit test can still show nothing in JupyterLab:
ipywidgets' front-end extension missing, a front-end/kernel version mismatch, an
Output widget that never renders, a callback that raises in the kernel. These
helpers drive a lesson the way a learner does (open it, Run All Cells, use the
keyboard on a control) and read back only what the page shows.

  - `find_chromium`: Debian's Chromium (`apt-get install chromium`); Playwright's
    own browser download is not used, and does not work on the course machine.
  - `LabServer`: `jupyter lab` on a free loopback port, no token, a temporary
    root holding copies of the lessons (the repository's notebooks are never
    written), and its own config, settings, workspace and runtime folders.
    `stop()` shuts the server and its kernels down, also after a failed test.
  - `LessonPage`: one lesson open in a browser page: Run All Cells, the output
    of the cell whose source holds a given text, keys pressed on a control,
    waiting until the page shows an expected state.
  - `keep_evidence`: when a test fails, a screenshot, the page's HTML and the
    server's log (with the kernels' own output) under test-artifacts/browser/.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")  # Debian's package, and its name elsewhere
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
LINKED = ("minigrpo", "data", "results")  # repository folders the lessons read, linked into the server's root
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on loopback: never via a proxy


def find_chromium() -> str | None:
    """Path of the Chromium executable: $CHROMIUM if set, else `chromium` on PATH; None when it is not there."""
    path = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -------------------------------------------------------------------- server


class LabServer:
    """`python -m jupyterlab` serving copies of `notebooks` from a temporary root, on 127.0.0.1 without a token.

    Beside the copies, the root links the repository's LINKED folders, which
    the lessons look for to find the repository (lesson 06 reads data/ and
    results/). The server gets its own JUPYTER_CONFIG_DIR,
    JUPYTERLAB_SETTINGS_DIR, JUPYTERLAB_WORKSPACES_DIR and JUPYTER_RUNTIME_DIR
    under the same temporary folder, so neither the learner's settings nor an
    old workspace change what the test sees; system-wide configuration (a
    disabled extension, say) still applies, as it would for the learner. Its
    output goes to `.log`. Use as a context manager, or call `start()` and,
    always, `stop()`.
    """

    def __init__(self, notebooks: list[Path], start_timeout: float = 60.0):
        self.notebooks = notebooks
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LabServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="minigrpo-lab-"))
        self.root, self.runtime = self.tmp / "root", self.tmp / "runtime"
        self.root.mkdir()
        for nb in self.notebooks:
            shutil.copy(nb, self.root / nb.name)
        for name in LINKED:
            (self.root / name).symlink_to(REPO / name)
        settings = self.tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        settings.parent.mkdir(parents=True)
        settings.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news pop-up over the page
        env = dict(os.environ,
                   JUPYTER_CONFIG_DIR=str(self.tmp / "config"), JUPYTER_RUNTIME_DIR=str(self.runtime),
                   JUPYTERLAB_SETTINGS_DIR=str(self.tmp / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.tmp / "workspaces"),
                   # the kernel is this interpreter: "python" in its kernelspec resolves here first
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={self.root}",
               "--ServerApp.disable_check_xsrf=True"]  # lets shutdown_kernels() call the REST API; no auth to guard
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = self.tmp / "server.log"
        with open(self.log, "wb") as log:
            # its own session: stop() can end the server and anything it spawned as one process group
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with LOCAL.open(self.url + "/api/status", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer within {self.start_timeout:.0f} s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.3)

    def stop(self) -> None:
        """End the server and its kernels (SIGTERM, then SIGKILL), then delete the temporary folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # kernels run in sessions of their own; any left over is found by our runtime folder in its command line
        for pid in self._kernel_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if getattr(self, "tmp", None) is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the server runs (the REST API's DELETE /api/kernels/<id>)."""
        with LOCAL.open(self.url + "/api/kernels", timeout=10) as r:
            kernels = json.load(r)
        for k in kernels:
            LOCAL.open(urllib.request.Request(f"{self.url}/api/kernels/{k['id']}", method="DELETE"), timeout=30).close()

    def _kernel_pids(self) -> list[int]:
        if getattr(self, "runtime", None) is None:
            return []
        marker = str(self.runtime).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def log_tail(self, n_chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-n_chars:]
        return ""


# ---------------------------------------------------------------------- page

# The prompt of a code cell that has run, "[12]:"; queued or running cells show "[*]:", never-run ones "[ ]:".
RAN = re.compile(r"^\[\d+\]:$")
ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen


class LessonPage:
    """One lesson open in a Playwright page on a `LabServer`, read the way a learner reads it."""

    def __init__(self, page, server: LabServer, notebook: str):
        self.page, self.server, self.notebook = page, server, notebook

    def open(self, timeout: float = 60.0) -> None:
        """Open the notebook alone (?reset: no tab restored from an earlier test) and wait until its kernel is idle."""
        self.page.goto(f"{self.server.url}/lab/tree/{self.notebook}?reset")
        self.page.wait_for_selector(f"{PANEL} .jp-CodeCell", timeout=timeout * 1000)
        self.wait_for(lambda: self.kernel_status() == "idle", timeout,
                      lambda: f"the kernel of {self.notebook} did not start: status {self.kernel_status()!r}")

    def kernel_status(self) -> str | None:
        """'idle', 'busy', 'connecting', ... as the notebook's toolbar shows it; 'no kernel' before it has one.

        (The toolbar's indicator reads 'idle' for a moment before the kernel exists; its kernel name, "No Kernel"
        until then, tells the two apart. Run All Cells in that moment runs nothing.)
        """
        return self.page.evaluate("""(selector) => {
            const panel = document.querySelector(selector);
            const name = panel?.querySelector('.jp-Toolbar-kernelName')?.textContent.trim();
            if (!name || name === 'No Kernel') return 'no kernel';
            return panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
        }""", PANEL)

    def menu(self, menu: str, item: str) -> None:
        """Click `menu` in the menu bar, then its `item` (labels matched exactly)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()

    def run_all(self, timeout: float = 300.0) -> None:
        """Edit > Clear Outputs of All Cells, Run > Run All Cells, and wait until every code cell has run.

        (The lessons are committed with their outputs and execution counts; clearing them first means that
        what is read afterwards was made by this run.) Fails when a cell shows an error, with its last line.
        """
        self.menu("Edit", "Clear Outputs of All Cells")
        self.menu("Run", "Run All Cells")

        def ran() -> list[bool]:
            prompts = self.page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_text_contents()
            return [RAN.match(p.strip()) is not None for p in prompts]

        def finished() -> bool:
            return self.errors() != [] or (all(ran()) and self.kernel_status() == "idle")

        self.wait_for(finished, timeout, lambda: f"Run All Cells of {self.notebook} did not finish: {sum(ran())} of "
                                                 f"{len(ran())} code cells ran, kernel {self.kernel_status()!r}")
        assert self.errors() == [], f"a cell of {self.notebook} raised:\n" + "\n".join(self.errors())

    def errors(self) -> list[str]:
        """Last line of each traceback the notebook shows (JupyterLab renders them as stderr, as it does warnings)."""
        texts = self.page.locator(f"{PANEL} {ERROR_OUTPUT}").all_text_contents()
        return [t.strip().splitlines()[-1] for t in texts if "Traceback" in t]

    def output_of(self, source: str):
        """The output area of the code cell whose source contains `source` (a Locator), scrolled into view.

        (As the learner scrolls to it: JupyterLab does not render the cells off screen, so their text reads empty.)
        """
        cell = self.page.locator(f"{PANEL} .jp-CodeCell", has_text=source)
        assert cell.count() == 1, f"{cell.count()} code cells of {self.notebook} contain {source!r}, expected 1"
        cell.scroll_into_view_if_needed()
        return cell.locator(".jp-Cell-outputArea")

    def press(self, control, key: str, times: int = 1) -> None:
        """Focus `control` (a Locator) and press `key` on the keyboard `times` times."""
        control.focus()
        for _ in range(times):
            self.page.keyboard.press(key)

    def wait_for(self, condition, timeout: float, describe, poll: float = 0.25, settle: int = 2) -> None:
        """Wait until `condition()` holds on `settle` polls in a row; else fail with `describe()`."""
        deadline, held = time.monotonic() + timeout, 0
        while True:
            held = held + 1 if condition() else 0
            if held >= settle:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout:.0f} s: {describe()}")
            time.sleep(poll)


@contextlib.contextmanager
def keep_evidence(lesson: LessonPage, name: str):
    """On any failure inside the block, save a screenshot, the page's HTML and the server's log; re-raise.

    The files go to test-artifacts/browser/<name>.{png,html,log}; the failure
    message says where.
    """
    try:
        yield
    except Exception as exc:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        saved = []
        with contextlib.suppress(Exception):
            lesson.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            saved.append(f"{name}.png")
        with contextlib.suppress(Exception):
            (ARTIFACTS / f"{name}.html").write_text(lesson.page.content())
            saved.append(f"{name}.html")
        with contextlib.suppress(Exception):
            shutil.copy(lesson.server.log, ARTIFACTS / f"{name}.log")
            saved.append(f"{name}.log")
        note = f"browser evidence saved in {ARTIFACTS}: {', '.join(saved) or 'nothing could be saved'}"
        print(note, file=sys.stderr)
        if hasattr(exc, "add_note"):  # Python 3.11+: pytest prints it under the error
            exc.add_note(note)
        raise
