"""Batches started where users start: a script, ``python -c``, a stdin script, a notebook.

Each case runs a real interpreter (or a real IPython kernel) in a
subprocess, with real worker processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(180)

# A script whose factory returns an instance of a class of its own
# __main__, run by a batch and read back by the same script.
REC_SCRIPT = textwrap.dedent(
    """
    import sys
    from dataclasses import dataclass
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    @dataclass
    class Rec:
        key: str
        size: int

    def make(key):
        return Rec(key, len(key))

    if __name__ == '__main__':
        out, method = sys.argv[1], sys.argv[2]
        stash = MultiProcessFactoryStash(
            DirectoryStash(out), make, keys=['a', 'bb', 'ccc'], workers=2, progress=False, start_method=method
        )
        result = stash.prime()
        assert (result.computed, result.failed) == (3, 0), (result, dict(stash.failures))
        values = dict(stash.items())
        assert values == {'a': Rec('a', 1), 'bb': Rec('bb', 2), 'ccc': Rec('ccc', 3)}, values
        assert all(type(v) is Rec for v in values.values())
        print('ok')
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _python(args: list[str], cwd: Path, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=_env(**env), timeout=150
    )


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_a_main_class_from_a_script_file(tmp_path: Path, method: str) -> None:
    script = tmp_path / 'job.py'
    script.write_text(REC_SCRIPT, encoding='utf-8')
    proc = _python([str(script), str(tmp_path / 'out'), method], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_a_main_class_from_python_c(tmp_path: Path, method: str) -> None:
    proc = _python(['-c', REC_SCRIPT, str(tmp_path / 'out'), method], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


@pytest.mark.parametrize('method', ['fork', 'spawn', 'forkserver'])
def test_a_main_class_from_a_stdin_script(tmp_path: Path, method: str) -> None:
    proc = _python(['-', str(tmp_path / 'out'), method], tmp_path, stdin=REC_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'
    assert '__main__' not in proc.stderr  # no advice about the guard


# -- progress where stderr is not a terminal -------------------------------------

SLOW_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    def slow(key):
        time.sleep(0.15)
        return key

    if __name__ == '__main__':
        mode = sys.argv[2]
        if 'basicconfig' in mode:
            logging.basicConfig(level=logging.INFO if 'info' in mode else logging.WARNING)
        progress = {'auto': None, 'bar': True, 'off': False}[mode.split('-')[0]]
        stash = MultiProcessFactoryStash(
            DirectoryStash(sys.argv[1]), slow, keys=[f'k{i:02d}' for i in range(24)], workers=2, progress=progress
        )
        result = stash.prime()
        if 'print' in mode:
            print(result)
    """
)


def _run_slow(tmp_path: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / 'slow.py'
    script.write_text(SLOW_SCRIPT, encoding='utf-8')
    return _python([str(script), str(tmp_path / 'out'), mode], tmp_path, **env)


def test_without_a_terminal_a_progress_line_comes_every_interval(tmp_path: Path) -> None:
    proc = _run_slow(tmp_path, 'auto', STASHWORKS_PROGRESS_INTERVAL='0.5')
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith('stashworks: items ')]
    assert len(lines) >= 2, proc.stderr
    assert any('/24 (' in line and 'items/s' in line and 'ETA' in line for line in lines), lines
    assert '%|' not in proc.stderr  # no bar: nobody would see it redraw


def test_progress_lines_are_off_with_progress_false(tmp_path: Path) -> None:
    proc = _run_slow(tmp_path, 'off', STASHWORKS_PROGRESS_INTERVAL='0.5')
    assert proc.returncode == 0, proc.stderr
    assert 'stashworks: items ' not in proc.stderr


def test_the_summary_is_printed_once_when_print_result_follows_the_bar(tmp_path: Path) -> None:
    proc = _run_slow(tmp_path, 'bar-print')
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert both.count('24 computed now') == 1, both


def test_the_summary_is_printed_once_with_basicconfig(tmp_path: Path) -> None:
    proc = _run_slow(tmp_path, 'bar-basicconfig-info')
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count('24 computed now') == 1, proc.stderr


# -- a real notebook kernel -------------------------------------------------------


def test_a_notebook_gets_a_progress_bar(tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    code = SLOW_SCRIPT.replace("if __name__ == '__main__':", 'if True:').replace('mode = sys.argv[2]', "mode = 'auto'")
    code = code.replace('sys.argv[1]', repr(str(tmp_path / 'out')))
    km, kc = start_new_kernel(kernel_name='python3', cwd=str(tmp_path), env=_env(STASHWORKS_PROGRESS_INTERVAL='0'))
    try:
        outputs: list[dict[str, Any]] = []
        reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: outputs.append(msg))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply['content']['status'] == 'ok', reply['content']
    texts = [str(msg['content'].get('text', '')) for msg in outputs if msg['msg_type'] == 'stream']
    widgets = [
        msg
        for msg in outputs
        if msg['msg_type'] in ('display_data', 'update_display_data')
        and 'application/vnd.jupyter.widget-view+json' in msg['content'].get('data', {})
    ]
    # A widget where ipywidgets is installed, else tqdm's text bar.
    assert widgets or any('24/24' in text for text in texts), outputs


# -- log lines while a bar is shown -------------------------------------------------

LOGGING_SCRIPT = textwrap.dedent(
    """
    import logging, sys, threading, time
    from stashworks import DirectoryStash, MultiProcessFactoryStash

    def slow(key):
        time.sleep(0.1)
        return key

    if __name__ == '__main__':
        if sys.argv[2] == 'basicconfig':
            logging.basicConfig(format='%(levelname)s %(message)s')
        threading.Timer(1.0, lambda: logging.getLogger('user').warning('hello from the user')).start()
        stash = MultiProcessFactoryStash(
            DirectoryStash(sys.argv[1]), slow, keys=[f'k{i:02d}' for i in range(40)], workers=2, progress=True
        )
        stash.prime()
    """
)


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run ``python ARGS`` with stderr on a pseudo-terminal; what the terminal got."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=slave, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    return b''.join(chunks).decode('utf-8', 'replace')


@pytest.mark.parametrize('config', ['basicconfig', 'none'])
def test_log_lines_are_written_above_the_bar_not_glued_to_it(tmp_path: Path, config: str) -> None:
    script = tmp_path / 'logging_job.py'
    script.write_text(LOGGING_SCRIPT, encoding='utf-8')
    screen = _on_a_terminal([str(script), str(tmp_path / 'out'), config], tmp_path)
    assert 'hello from the user' in screen, screen
    for line in screen.split('\n'):
        if 'hello from the user' in line:
            # What the terminal shows of this line: the text after the last carriage return.
            shown = line.split('\r')[-1] if not line.endswith('\r') else line.rstrip('\r').split('\r')[-1]
            assert '|' not in shown and 'failed=' not in shown, repr(line)
            assert shown.lstrip('\x1b[K ').startswith(('WARNING hello', 'hello')), repr(line)


SUBCLASS_SCRIPT = textwrap.dedent(
    """
    import sys
    from stashworks import DirectoryStash, MultiProcessStash

    class WordLengths(MultiProcessStash):
        def _create_data(self):
            return ['apple', 'kiwi']

        def _process(self, chunk):
            for word in chunk:
                yield word, len(word)

    if __name__ == '__main__':
        stash = WordLengths(DirectoryStash(sys.argv[1]), workers=2, progress=False, start_method=sys.argv[2])
        assert dict(stash.items()) == {'apple': 5, 'kiwi': 4}, dict(stash.failures)
        print('ok')
    """
)


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_a_stash_subclass_defined_in_a_script_runs_in_the_workers(tmp_path: Path, method: str) -> None:
    # dill sends the subclass by value; the generic stash base must not
    # make it rebuild the class on the wrong bases.
    proc = _python(['-c', SUBCLASS_SCRIPT, str(tmp_path / 'out'), method], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'
