"""Run a script (`killer.py POINT N script.py ARGS...` or `killer.py POINT N -m module ARGS...`) that SIGKILLs itself
at a chosen point, like a machine failure: `save` — while `checkpoint-N/` is written (weights and optimizer on disk,
RNG state and trainer_state.json not yet); `answer` — right after the N-th VSI-Bench answer is written."""

import os
import runpy
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    point, at, target, *rest = sys.argv[1:]
    at = int(at)
    if point == "save":
        from transformers import Trainer

        save_rng_state = Trainer._save_rng_state

        def killing_save_rng_state(self, output_dir):
            if self.state.global_step == at:
                _kill()
            return save_rng_state(self, output_dir)

        Trainer._save_rng_state = killing_save_rng_state
    elif point == "answer":
        from modeling_spa3r.eval_vsibench import PredictionWriter

        write, written = PredictionWriter.write, []

        def killing_write(self, record):
            write(self, record)
            written.append(record["id"])
            if len(written) == at:
                _kill()

        PredictionWriter.write = killing_write
    else:
        raise SystemExit(f"unknown kill point {point!r}: expected save or answer")
    if target == "-m":
        sys.argv = [rest[0], *rest[1:]]
        runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
