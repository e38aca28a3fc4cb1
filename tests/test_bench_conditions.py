"""The conditions every benchmark states beside its figures (clocks.conditions): torch's
threads and the load average, at the start and at the end of the measurement."""

from __future__ import annotations

import os

import clocks as timing
import torch


def test_conditions_record_threads_and_load_at_the_start_and_the_end():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        start = timing.conditions()
        assert start["threads"] == 1
        assert start["cpus"] >= 1
        load = os.getloadavg()
        assert len(start["load_average"]) == 3
        # the same three figures os.getloadavg gives (they move slowly: within a minute's drift)
        assert all(abs(a - b) < 1.0 for a, b in zip(start["load_average"], load, strict=True))
        assert start["torch"] == torch.__version__
        assert "load_average_end" not in start

        end = timing.conditions(start)
        assert end["threads"] == 1 and "threads_end" not in end  # unchanged: said once
        assert len(end["load_average_end"]) == 3 and end["load_average"] == start["load_average"]
        line = timing.conditions_line(end)
        assert line.startswith("conditions: 1 torch thread, ") and "at the start" in line and "at the end" in line

        torch.set_num_threads(2)  # a benchmark that changed its threads on the way says so
        moved = timing.conditions(start)
        assert moved["threads"] == 1 and moved["threads_end"] == 2
        assert "2 threads at the end" in timing.conditions_line(moved)
    finally:
        torch.set_num_threads(threads)
