#!/usr/bin/python3
"""Tests of bench/plot_loadgen.py on small chunkcache_loadgen JSON files (bench/testdata).

    /usr/bin/python3 bench/plot_loadgen_test.py      (ctest: plot_loadgen_test)

testdata/loadgen_run.json: --mode=both, 3 s at 100 req/s, an invalidation at 1.5 s.
testdata/loadgen_sweep.json: --mode=both --rate_sweep=50:150:50 with 1 s steps.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "plot_loadgen.py")
RUN = os.path.join(HERE, "testdata", "loadgen_run.json")
SWEEP = os.path.join(HERE, "testdata", "loadgen_sweep.json")

sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import plot_loadgen  # noqa: E402


def png_size(path):
    """(width, height) of the PNG at `path`; fails the test if it is not a PNG."""
    with open(path, "rb") as f:
        header = f.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG")
    return struct.unpack(">II", header[16:24])


def plot(directory, *args):
    """Runs the script as chunkcache_loadgen does; returns (completed process, PNG path)."""
    png = os.path.join(directory, "out.png")
    run = subprocess.run([sys.executable, SCRIPT, "-o", png, *args], capture_output=True,
                         text=True, check=False)
    return run, png


class PlotLoadgenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        """The sizes of the run's and the sweep's PNGs, drawn once for the tests that compare."""
        with tempfile.TemporaryDirectory(prefix="plot_loadgen_test_") as directory:
            cls.sizes = {}
            for name, path in (("run", RUN), ("sweep", SWEEP)):
                run, png = plot(directory, path)
                if run.returncode != 0:
                    raise AssertionError(f"{name}: exit status {run.returncode}: {run.stderr}")
                cls.sizes[name] = png_size(png)

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="plot_loadgen_test_")
        self.addCleanup(self.dir.cleanup)

    def plot(self, *args):
        return plot(self.dir.name, *args)

    def test_a_run_becomes_a_png_wider_than_high(self):
        width, height = self.sizes["run"]
        self.assertGreater(width, 800)
        self.assertLess(height, width)

    def test_a_sweep_adds_the_rate_row(self):
        self.assertEqual(self.sizes["sweep"][0], self.sizes["run"][0])
        self.assertGreater(self.sizes["sweep"][1], self.sizes["run"][1] * 5 // 4)

    def test_files_side_by_side_make_one_column_each(self):
        run, png = self.plot(RUN, SWEEP, "--label", "a run", "--label", "a sweep")
        self.assertEqual(run.returncode, 0, run.stderr)
        width, height = png_size(png)
        self.assertGreater(width, self.sizes["run"][0] * 3 // 2)
        self.assertEqual(height, self.sizes["sweep"][1])

    def test_a_file_that_is_not_loadgen_json_is_refused_by_name(self):
        other = os.path.join(self.dir.name, "other.json")
        with open(other, "w", encoding="utf-8") as f:
            json.dump({"tool": "something else"}, f)
        run, png = self.plot(other)
        self.assertEqual(run.returncode, 2)
        self.assertIn("other.json", run.stderr)
        self.assertFalse(os.path.exists(png))

    def test_labels_must_match_the_files(self):
        run, png = self.plot(RUN, SWEEP, "--label", "only one")
        self.assertNotEqual(run.returncode, 0)
        self.assertFalse(os.path.exists(png))

    def test_the_column_label_names_backend_l1_passthrough_and_rate(self):
        with open(RUN, encoding="utf-8") as f:
            doc = json.load(f)
        self.assertEqual(plot_loadgen.column_label(doc),
                         "memory, L1 off, passthrough off, 100 req/s offered")
        doc["config"].update(backend="redis-server (own, redis://127.0.0.1:1)", l1=True)
        self.assertEqual(plot_loadgen.column_label(doc),
                         "Redis, L1 on, passthrough off, 100 req/s offered")
        with open(SWEEP, encoding="utf-8") as f:
            self.assertIn("rate sweep 50-150 req/s", plot_loadgen.column_label(json.load(f)))

    def test_a_stream_run_is_labelled_and_draws_chunkcache_first_byte_p99(self):
        with open(RUN, encoding="utf-8") as f:
            doc = json.load(f)
        doc["config"]["read"] = "stream"
        for run in doc["runs"]:
            for point in run["series"]:
                point.update(ttfb_p50_ms=point["p50_ms"] / 2, ttfb_p99_ms=point["p99_ms"] / 2)
        self.assertEqual(plot_loadgen.column_label(doc),
                         "memory, L1 off, passthrough off, GetStream, 100 req/s offered")
        figure, (latency_ax, rate_ax) = plot_loadgen.plt.subplots(2)
        self.addCleanup(plot_loadgen.plt.close, figure)
        plot_loadgen.draw_time_panels(latency_ax, rate_ax, doc)
        labels = latency_ax.get_legend_handles_labels()[1]
        self.assertIn("chunkcache first byte p99", labels)
        self.assertNotIn("baseline first byte p99", labels)  # a raw GET's equals its latency
        stream = os.path.join(self.dir.name, "stream.json")
        with open(stream, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        run, png = self.plot(stream)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(png_size(png), self.sizes["run"])

    def test_a_get_run_draws_no_first_byte_line(self):
        with open(RUN, encoding="utf-8") as f:
            doc = json.load(f)
        figure, (latency_ax, rate_ax) = plot_loadgen.plt.subplots(2)
        self.addCleanup(plot_loadgen.plt.close, figure)
        plot_loadgen.draw_time_panels(latency_ax, rate_ax, doc)
        self.assertFalse([label for label in latency_ax.get_legend_handles_labels()[1]
                          if "first byte" in label])

    def test_runs_of_a_sweep_are_laid_end_to_end_by_mode(self):
        with open(SWEEP, encoding="utf-8") as f:
            modes = plot_loadgen.by_mode(json.load(f))
        self.assertEqual([mode for mode, _ in modes], ["chunkcache", "baseline"])
        self.assertEqual([r["offered_rate"] for r in modes[0][1]], [50, 100, 150])


if __name__ == "__main__":
    unittest.main()
