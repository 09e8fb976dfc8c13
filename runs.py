"""The run's machinery: what keeps a training run's work safe, out of the way of the paper.

Every other file reads as the paper (Higgins et al., ICLR 2017); the bookkeeping they share
lives here, and a student may skip this file. Of the project it imports only model.py (whose
checkpoint reader --resume uses), so any script may use it. What it guarantees, and the tests
in test_all.py that prove it:

  one-line errors    bad input is one line on stderr and exit 1, Ctrl-C before any work exit 130,
                     SIGTERM 143, never a traceback (`cli_errors`); a closed stdout silences the
                     output, never the work: test_train_bad_input_is_one_line and the other
                     *_bad_input_* tests, test_a_closed_stdout_never_costs_a_run_its_checkpoint
  safe files         a file is written to a temp file beside it and renamed (`write_atomically`),
                     so a crash leaves the old file whole; a checkpoint is read without running
                     code (model.read_checkpoint):
                     test_train_failed_save_keeps_the_last_checkpoint...,
                     test_load_checkpoint_rejects_bad_files
  one run per --out  `claim_out` checks the path, holds an flock, and never replaces a run unless
                     asked (--resume or --overwrite): test_train_refuses_an_existing_out...,
                     test_train_refuses_a_second_run_on_one_out...,
                     test_two_runs_started_together...
  any stop resumes   Ctrl-C, SIGTERM and --time-limit save between two steps (`Stop`), a kill loses
                     only the steps since the last save (every --save-every steps or --save-minutes,
                     whichever comes first), and --resume continues with the same
                     batches, noise, log rows and tally as an unbroken run (`Run`, `Tally`):
                     test_train_stopped_at_a_chosen_step_then_resumed_equals_an_unbroken_run,
                     test_resume_equals_an_unbroken_run, test_ctrl_c_saves_a_checkpoint
  finite weights     a checkpoint is written only with finite weights, and a NaN loss stops the
                     run keeping the last good one: test_train_nan_stop_keeps_only_a_checkpoint...
  bf16 where faster  --bf16 falls back to fp32 on a CPU without native bfloat16 (`settle_bf16`):
                     test_train_bf16_falls_back_to_fp32_where_it_is_slower

Sections: the command line, progress, files, claiming --out, stopping, the run's record, resuming,
bf16.

    python train.py --out run.pt --time-limit 60   # then: python train.py --out run.pt --resume
"""

import argparse
import csv
import fcntl
import glob
import io
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from model import CheckpointError, read_checkpoint

PROGRESS_SECONDS = 10.0  # every long phase of every script prints a line at least this often
SAVE_MINUTES = 10.0  # a checkpoint at least this often (of training), whatever --save-every says
TEMP_RANDOM = 8  # characters of mkstemp's random part in a temp file's name
BF16_SLOWER = 0.9  # --bf16 falls back to fp32 below this speed-up: timing noise must not flip it


# ---------------------------------------------------------------- the command line

class UsageError(ValueError):
    """Bad user input (a missing or corrupt checkpoint, a device this machine lacks, a wrong flag):
    every CLI prints its message as one line on stderr and exits 1 (`cli_errors`)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C, so that half-written files are
    removed."""


@contextmanager
def cli_errors(prog: str, interrupted: str = "interrupted") -> Iterator[None]:
    """Every CLI's main() runs in this: bad input, a full disk or a torch failure ends as one line
    on stderr and exit 1, Ctrl-C or SIGTERM before any work is saved as one line and exit 130 or
    143; never a traceback. A closed stdout (`| head`, a lost terminal) silences the output, never
    the work."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # the start-up's is done
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, terminate)}
    sys.stdout = QuietOnClose(sys.stdout)
    try:
        yield
    except (ValueError, OSError, RuntimeError) as e:  # ValueError includes UsageError
        print(f"{prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    finally:
        sys.stdout = sys.stdout.stream
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def terminate(signum: int, frame) -> None:
    raise Terminated


class QuietOnClose:
    """stdout that, once its reader has gone (BrokenPipeError), sends what follows to /dev/null: a
    failing progress line must never cost a run its work."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.quietly(self.stream.write, text) or len(text)

    def flush(self) -> None:
        self.quietly(self.stream.flush)

    def quietly(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            # the same file descriptor, now /dev/null: later writes and the exit's flush succeed
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
            return None

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def pick_device(name: str | None = None) -> torch.device:
    """The --device of every CLI: as given, else cuda, then mps, then cpu; UsageError if absent."""
    if name:
        return check_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(name: str) -> torch.device:
    """The device called `name`, if this machine has it; else UsageError saying what it has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cuda", "mps", "cpu"):
        raise UsageError(f"--device {name!r}: unknown device (use cuda, mps or cpu)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: this machine has no CUDA GPU (use cpu)")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine (use cpu)")
    return device


def set_threads(threads: int | None) -> None:
    """The --threads of every CLI: torch's CPU threads, when given; UsageError unless positive."""
    if threads is not None:
        if threads <= 0:
            raise UsageError(f"--threads {threads}: it must be positive")
        torch.set_num_threads(threads)


def seed_arg(text: str) -> int:
    """argparse type of every --seed: a whole number that torch.manual_seed accepts."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: "
                                         f"give a whole number such as 0") from None
    if not 0 <= seed < 2 ** 64:
        raise argparse.ArgumentTypeError(f"invalid seed {text}: it must be from 0 to 2**64 - 1")
    return seed


def positive_number(text: str, kind: type = int, zero: bool = False) -> int | float:
    """A count or rate from the command line: a finite number above 0 (or ≥ 0 with `zero`) of
    `kind`; else argparse's error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {'whole ' if kind is int else ''}"
                                         f"number {text!r}") from None
    if not (0 <= value if zero else 0 < value) or value == float("inf"):
        must = ("a finite number ≥ 0" if zero
                else "positive" + ("" if kind is int else " and finite"))
        raise argparse.ArgumentTypeError(f"{text}: it must be {must}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type of a finite number ≥ 0 (--capacity-max, --gamma)."""
    return positive_number(text, float, zero=True)


def positive_int(text: str) -> int:
    """argparse type of every count (--steps, --batch-size, --L, ...)."""
    return positive_number(text, int)


def positive_float(text: str) -> float:
    """argparse type of every rate and length (--lr, --time-limit)."""
    return positive_number(text, float)


# ---------------------------------------------------------------- progress

class Every:
    """The one timer behind every progress line: `due()` is true once every PROGRESS_SECONDS."""

    def __init__(self):
        self.start = self.last = time.perf_counter()

    def due(self) -> bool:
        if time.perf_counter() - self.last < PROGRESS_SECONDS:
            return False
        self.mark()
        return True

    def mark(self) -> None:
        """A line was just printed: the next is due PROGRESS_SECONDS from now."""
        self.last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's name, for every speed figure."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# ---------------------------------------------------------------- files

def write_atomically(path: str, write: Callable) -> None:
    """Call write(file) on a new temp file beside `path`, then rename it to `path`.

    A failure or Ctrl-C midway removes the temp file and leaves any old `path` as it was; two
    writers never share a temp file, and mkstemp never follows a symlink planted at its path.
    The file is created before `write` runs, so an unwritable place fails before any work.
    """
    if os.path.isdir(path):
        raise OSError(f"cannot write {path}: it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    try:  # the temp file first: an unwritable place fails before any work
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from the group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_checkpoint(path: str, state: dict) -> None:
    """torch.save, atomically: a crash mid-save never leaves a broken checkpoint."""
    write_atomically(path, lambda f: torch.save(state, f))


def read_resume_checkpoint(path: str) -> dict:
    """The checkpoint dict to continue from; UsageError if it is missing or not a training one."""
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    if not {"optimizer", "step", "rng"} <= ckpt.keys():
        raise UsageError(f"--resume: {path} is not a train.py checkpoint")
    return ckpt


# ---------------------------------------------------------------- claiming --out

def log_path(out: str) -> Path:
    """The CSV log beside a checkpoint."""
    return Path(out).with_suffix(".csv")


@contextmanager
def claim_out(out: str, resume: bool, overwrite: bool) -> Iterator[None]:
    """The first door of every training script: `out` checked as a path, locked against a second
    run, and refused if it holds a run that neither --resume nor --overwrite asks for."""
    check_out(out, resume, overwrite)
    with out_lock(out):
        if Path(out).exists() and not (resume or overwrite):
            raise UsageError(f"--out {out} holds a run ({out} and its log): "
                             f"add --resume to continue it, or --overwrite to start again")
        if log_path(out).exists() and not Path(out).exists() and not resume:
            print(f"{log_path(out)}: the log of a run that saved no checkpoint; "
                  f"this run replaces it", flush=True)
        yield


def check_out(out: str, resume: bool, overwrite: bool) -> None:
    """--out must be a checkpoint file path with room for the log beside it."""
    if not out:
        raise UsageError("--out is empty: give a checkpoint path such as ckpt.pt")
    if resume and overwrite:
        raise UsageError("give --resume (continue the run) or --overwrite (start again), not both")
    if Path(out).is_dir():
        raise UsageError(f"--out {out} is a folder: "
                         f"give a checkpoint file path such as {Path(out) / 'ckpt.pt'}")
    if log_path(out) == Path(out):
        raise UsageError(f"--out {out} would be overwritten by the CSV log: "
                         f"give the checkpoint another suffix, such as .pt")
    if not Path(out).parent.is_dir():
        raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
    # The longest name a run writes is a save's temp file (write_atomically's): check it before
    # the first step.
    longest = len(os.fsencode(f".{Path(out).name}.{'x' * TEMP_RANDOM}.tmp"))
    if longest > os.pathconf(Path(out).parent, "PC_NAME_MAX"):
        raise UsageError(f"--out {Path(out).name[:40]}...: the name is too long for this file "
                         f"system (its temp files need {longest} bytes): give a shorter one")


@contextmanager
def out_lock(out: str) -> Iterator[None]:
    """Hold `<out>.lock` while training into `out`: an flock, which the kernel releases when its
    process ends however it ends, so a killed run's lock file (stale, empty or garbled) never
    blocks the next. The file names the holder (PID and host) for the message of a run refused."""
    lock = Path(f"{out}.lock")
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, host = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
            os.close(fd)
            holder = f"PID {pid} on {host}" if pid else "one starting"
            raise UsageError(f"another run ({holder}) is training into {out}") from None
        # the holder before us may have removed the file between our open and our flock: lock the
        # new one
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        # Temp files of a killed save; holding the lock, no other run is writing one.
        for path in (Path(out), log_path(out)):
            # not a.pt.b.pt's
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.{'?' * TEMP_RANDOM}.tmp"):
                tmp.unlink(missing_ok=True)
        yield
    finally:
        # before the release: a run waiting on this file sees it gone and retries
        lock.unlink(missing_ok=True)
        os.close(fd)


# ---------------------------------------------------------------- stopping

class Stop:
    """The second door, around a training loop: SIGINT, SIGTERM and the --time-limit deadline.

    A signal handler only notes the signal, and the loop asks `requested()` between two steps, so
    the checkpoint saved then is a state an unbroken run passes through. A second Ctrl-C stops at
    once, for a step that hangs; nothing is saved then (exit 130). On leaving, the runs opened
    under it have saved; it says what was written, and exits 130 or 143 after a signal.
    """

    def __init__(self, time_limit: float | None = None):
        self.time_limit = math.inf if time_limit is None else time_limit
        self.signum: int | None = None
        self.at_once = False
        self.previous: dict[int, object] = {}
        self.runs: list[Run] = []  # registered by each Run opened under it

    def __enter__(self) -> "Stop":
        self.deadline = time.perf_counter() + self.time_limit
        # Only the main thread may set handlers. Setting them also undoes the SIG_IGN that a shell
        # gives a background job (`nohup ... &`), so that `kill -INT` still saves.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.note)
        return self

    def note(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            # torch.save reports the interrupt as its own RuntimeError: Run.save reads this
            self.at_once = True
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self) -> bool:
        """A stop was asked for, by a signal or the deadline."""
        return self.signum is not None or time.perf_counter() >= self.deadline

    def __exit__(self, exc_type, exc, tb) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        # the second Ctrl-C: maybe mid-step, so nothing more was saved
        if exc_type is KeyboardInterrupt:
            kept = (self.runs[0].kept() if len(self.runs) == 1
                    else "the last checkpoints with finite weights are kept")
            print(f"\nstopped at once: {kept}", file=sys.stderr)
            sys.exit(130)
        if exc_type is None and self.runs:
            self.end()

    def end(self) -> None:
        """The last word of a run: exit 130 or 143 after a stop request, even one in the last step
        or save (the protocol's next replica must not start), else what was written."""
        outs = [run.out for run in self.runs]
        step, total = self.runs[-1].trainer.step_count, self.runs[-1].config["steps"]
        written = outs[0] if len(outs) == 1 else f"{len(outs)} checkpoints ({outs[0]} ...)"
        if self.signum is not None:
            what = ("interrupted" if self.signum == signal.SIGINT
                    else f"stopped by {signal.Signals(self.signum).name}")
            print(f"\n{what} at step {step:,}: saved {written}; continue with --resume",
                  file=sys.stderr)
            sys.exit(128 + self.signum)
        if step < total:
            print(f"time limit: stopped at step {step:,}; continue with --resume")
        print(f"wrote {written} (step {step:,}) and the CSV log beside each")


# ---------------------------------------------------------------- the run's record: log, scores, checkpoints

def all_finite(tensors) -> bool:
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


class Tally:
    """The sums of step()'s parts since the log's last row, at step `since`.

    Saved in every checkpoint, so that after --resume the next row averages the same steps,
    to the bit, as an unbroken run's.
    """

    def __init__(self, since: int, sums: dict[str, torch.Tensor] | None = None):
        self.since = since
        self.sums = sums or {}

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def mean(self, step: int) -> dict[str, torch.Tensor]:
        return {k: v / (step - self.since) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"since": self.since, "sums": self.sums}

    @classmethod
    def from_state(cls, state: dict | None, step: int, device: torch.device) -> "Tally":
        """The checkpoint's tally; an empty one at its step for a checkpoint written before tallies
        were saved."""
        if state is None:
            return cls(step)
        return cls(state["since"], {k: v.to(device) for k, v in state["sums"].items()})


def keep_log_rows(path: Path, last_step: int) -> None:
    """Drop the log's rows past `last_step`: a run killed after its last save wrote them, and the
    resumed run writes them again. A row cut short by the kill goes too."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1]
    for row in rows[1:]:
        if len(row) != len(rows[0]) or not row[0].isdigit() or int(row[0]) > last_step:
            break
        kept.append(row)
    if kept != rows:
        text = io.StringIO()
        csv.writer(text).writerows(kept)
        write_atomically(str(path), lambda f: f.write(text.getvalue().encode()))


class Run:
    """One run's record around its trainer, opened under a `Stop`: the CSV log and progress lines,
    the scores of --eval-every, the NaN guard, and the checkpoints (every --save-every steps, and on
    leaving). Continued from the checkpoint at `out` under `resume`, else started again (a
    checkpoint and log at `out` go).

    The trainer is anything with step_count, device, config, a `model`, report(mean) -> (text, CSV
    fields), state() and load_state(ckpt); `score(model)` gives the disentanglement score.
    """

    def __init__(self, stop: Stop, trainer, config: dict, out: str, resume: bool,
                 score: Callable[[torch.nn.Module], float] | None = None, quiet: bool = False):
        self.trainer, self.config, self.out, self.resume, self.score_of = (trainer, config, out,
                                                                           resume, score)
        self.stop = stop
        # the log rows without the progress lines: the protocol prints one line for all
        self.quiet = quiet
        stop.runs.append(self)

    def __enter__(self) -> "Run":
        log, self.tally, self.seconds_before = (log_path(self.out), Tally(self.trainer.step_count),
                                                0.0)
        if self.resume:
            ckpt = read_resume_checkpoint(self.out)
            self.trainer.load_state(ckpt)
            self.tally = Tally.from_state(ckpt.get("tally"), self.trainer.step_count,
                                          self.trainer.device)
            self.seconds_before = ckpt.get("seconds", 0.0)
            keep_log_rows(log, self.trainer.step_count)
            print(f"resumed {self.out} at step {self.trainer.step_count:,}", flush=True)
        else:
            Path(self.out).unlink(missing_ok=True)
            log.unlink(missing_ok=True)
        # the step of the checkpoint at `out`
        self.last_good = self.trainer.step_count if self.resume else None
        self.log_file = open(log, "a", newline="")
        self.log = csv.writer(self.log_file)
        self.eval_seconds = 0.0  # time spent scoring, left out of the training time in the log
        self.start = self.last_save = time.perf_counter()
        # samples/s counts this session's steps only: after --resume the tally also holds steps
        # taken before the stop
        self.interval = (self.start, self.trainer.step_count)
        self.ticker = Every()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.last_good != self.trainer.step_count:
                self.save()  # the end, a stop request or the time limit
        finally:
            self.log_file.close()

    def seconds(self) -> float:
        """Training seconds of the whole run, earlier sessions included."""
        return self.seconds_before + time.perf_counter() - self.start - self.eval_seconds

    def kept(self) -> str:
        if self.last_good is None:
            return "no checkpoint was written"
        return f"the last checkpoint with finite weights (step {self.last_good:,}) is kept"

    def record(self, parts: dict[str, torch.Tensor]) -> None:
        """The loss parts of the step just taken; the log row, score and checkpoint that fall
        on it."""
        self.tally.add(parts)
        step, c = self.trainer.step_count, self.config
        if step % c["log_every"] == 0 or step == c["steps"]:
            self.log_row(step)
        elif not self.quiet and self.ticker.due():
            self.progress_line(step, self.trainer.report(self.tally.mean(step))[0])
        minutes = c.get("save_minutes")  # None in checkpoints from before time-based saves
        due = (step % c["save_every"] == 0
               or (minutes and time.perf_counter() - self.last_save >= 60 * minutes))
        if due and step < c["steps"]:
            self.save()

    def progress_line(self, step: int, text: str) -> None:
        """The progress line of the steps since the log's last row, on stdout: at each row, and
        between rows often enough that no stretch of training is silent."""
        (start, start_step), total, batch = (self.interval, self.config["steps"],
                                             self.config["batch_size"])
        rate = (step - start_step) * batch / (time.perf_counter() - start)
        print(f"step {step:,}/{total:,} | {rate:,.0f} samples/s | {text} | "
              f"ETA {format_seconds((total - step) * batch / rate)}", flush=True)
        self.ticker.mark()

    def log_row(self, step: int) -> None:
        """The progress line and the CSV row (with its score, under --eval-every) of the steps
        since the last."""
        c, total = self.config, self.config["steps"]
        mean = self.tally.mean(step)
        if not all_finite(mean.values()):
            raise UsageError(f"loss became NaN between steps {self.tally.since:,} and {step:,}; "
                             f"{self.kept()}; try a smaller --lr")
        text, fields = self.trainer.report(mean)
        if not self.quiet:
            self.progress_line(step, text)
        self.last_mean = mean  # for the protocol's one progress line
        if self.log_file.tell() == 0:
            self.log.writerow(["step", "samples", "seconds", *fields]
                              + (["score"] if c.get("eval_every") else []))
        row = [step, step * c["batch_size"], f"{self.seconds():.1f}"]
        row += [f"{v:.4f}" if isinstance(v, float) else v for v in fields.values()]
        if c.get("eval_every"):
            row.append(self.score(step) if step % c["eval_every"] == 0 or step == total else "")
        self.log.writerow(row)
        self.log_file.flush()
        self.tally, self.interval = Tally(step), (time.perf_counter(), step)

    def score(self, step: int) -> str:
        t = time.perf_counter()
        score = self.score_of(self.trainer.model)
        self.eval_seconds += time.perf_counter() - t
        print(f"step {step:,}: disentanglement score {score:.2%} ({time.perf_counter() - t:.0f} s)",
              flush=True)
        return f"{score:.4f}"

    def save(self) -> None:
        """Checkpoint the state after the last whole step, if its weights are finite."""
        step, state = self.trainer.step_count, self.trainer.state()
        if not all_finite(state["model"].values()) or not all_finite(self.tally.sums.values()):
            raise UsageError(f"the weights or loss became NaN or infinite by step {step:,}; "
                             f"{self.kept()}; try a smaller --lr")
        try:
            save_checkpoint(self.out, {**state, "tally": self.tally.state(),
                                       "seconds": self.seconds()})
        except (OSError, RuntimeError) as e:
            if self.stop.at_once:  # the second Ctrl-C, inside torch.save: not a full disk
                raise KeyboardInterrupt from None
            kept = (f"step {self.last_good:,} kept" if self.last_good is not None
                    else "no checkpoint kept")
            raise UsageError(f"cannot write checkpoint (disk full?); "
                             f"{kept} ({str(e).splitlines()[0]})") from None
        self.last_good, self.last_save = step, time.perf_counter()


# ---------------------------------------------------------------- resuming: the random state and the settings

def seeded_init(seed: int, make_model,
                device: torch.device) -> tuple[torch.nn.Module, torch.Generator, torch.Tensor]:
    """A run's model initialised from its seed, and the generator of its noise ε; the caller's
    random state is left as it was. On a CPU ε continues torch's CPU stream after the init, on CUDA
    it is the CUDA stream of the seed: the draws of `torch.manual_seed(seed)` then training with
    torch's global generators. Also the CPU stream's state after the init, which checkpoints
    keep."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        model = make_model()
        cpu_state = torch.get_rng_state()
    noise = torch.Generator(device)
    if device.type == "cpu":
        noise.set_state(cpu_state)
    else:
        noise.manual_seed(seed)
    return model.to(device), noise, cpu_state


def rng_state(noise: torch.Generator, data: torch.Generator, cpu_state: torch.Tensor) -> dict:
    """The random state a checkpoint keeps: ε's generator and the batches'."""
    if noise.device.type == "cpu":
        return {"torch": noise.get_state(), "data": data.get_state()}
    return {"torch": cpu_state, "data": data.get_state(), "cuda": [noise.get_state()]}


def set_rng_state(state: dict, noise: torch.Generator, data: torch.Generator) -> None:
    noise.set_state(state["torch"] if noise.device.type == "cpu"
                    else state["cuda"][noise.device.index or 0])
    data.set_state(state["data"])


def flags_given(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> dict:
    """The flags typed on the command line, by dest: the arguments parsed again with no defaults."""
    for action in parser._actions:  # argparse has no public switch for "no defaults"
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def check_same_settings(out: str, config: dict, given: dict, free: set[str]) -> None:
    """--resume continues `out` with its own config: UsageError for a flag given that would
    change it.

    `given` holds the flags typed (by argparse dest), `free` the ones a resume may change."""
    for flag, value in given.items():
        if (flag in free or config.get(flag) == value
                or (flag == "bf16" and "bf16_slower" in config)):
            continue
        name = f"--{flag.replace('_', '-')}"
        raise UsageError(f"--resume continues {out} with its own settings, and {name} {value} "
                         f"differs from its {config.get(flag, 'unset')}: leave {name} out "
                         f"(only --steps may change), or start again with --overwrite")


# ---------------------------------------------------------------- bf16: only where it is faster

def bf16_speedup(device: torch.device) -> float:
    """fp32 time / bf16 time of the fc network's widest matmul at batch 64 (a few ms): > 1 when
    bf16 is faster."""
    a, b = torch.randn(64, 1200, device=device), torch.randn(1200, 1200, device=device)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # the first call sets up the kernel
        times = []
        for _ in range(5):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / best(a.bfloat16(), b.bfloat16())


def settle_bf16(config: dict, device: torch.device) -> None:
    """--bf16 on a CPU without native bfloat16 makes training slower, not faster: train in fp32
    there, say so, and record it in the config."""
    if not config["bf16"] or device.type != "cpu":
        return
    speedup = bf16_speedup(device)
    if speedup < BF16_SLOWER:
        config.update(bf16=False, bf16_slower=round(1 / speedup, 2))
        print(f"--bf16: bfloat16 matmuls run {1 / speedup:.1f}x slower than fp32 on this CPU "
              f"(no native bfloat16); training in fp32", flush=True)
