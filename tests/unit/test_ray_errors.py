"""How a worker's failure reads on the driver (Ray passes it back as text only), and the routed
file the driver writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute.exceptions import BenchrouteError
from benchroute.scale.ray_jobs import _worker_error
from benchroute.scale.routed_file import write_routed

HEAD = ("\x1b[36mray::MapWorker(MapBatches(EncodeBatch)).submit()\x1b[39m (pid=4242, "
        "ip=10.0.0.7, actor_id=ab12, repr=MapWorker(MapBatches(EncodeBatch)))\n")
TRACE = ('Traceback (most recent call last):\n  File "/x/ray_jobs.py", line 115, in __call__\n'
         "    vectors = self.encoder.encode(texts)\n")


def test_the_library_error_alone_with_the_node():
    text = HEAD + TRACE + ("benchroute.exceptions.ModelNotInstalledError: the weights are not "
                           "installed in /n/models; run `benchroute model install`\n")
    assert _worker_error(text) == (" on the node at 10.0.0.7: the weights are not installed in "
                                   "/n/models; run `benchroute model install`")


def test_a_message_of_several_lines_is_kept_whole():
    text = HEAD + TRACE + "benchroute.exceptions.BenchrouteError: first line\nsecond line\n"
    assert _worker_error(text) == " on the node at 10.0.0.7: first line\nsecond line"


def test_other_errors_are_their_exception_line_not_the_frames():
    """A worker's own failure (not the library's) is its exception, under Ray's wrapper:
    before, the text's last 2,000 characters, cut mid-frame with Ray's message after it."""
    short = HEAD + TRACE + "ZeroDivisionError: division by zero"
    assert _worker_error(short) == (" on the node at 10.0.0.7: ZeroDivisionError: division by "
                                    "zero (an error in the worker, not one of benchroute's: "
                                    "please report it; Ray's logs hold its traceback)")
    wrapped = (HEAD + TRACE * 40 + "ValueError: cannot encode this text\n\nThe above exception "
               "was the direct cause of the following exception:\n\n" + HEAD
               + "ray.exceptions.UserCodeException: UDF failed to process a data block.\n")
    assert _worker_error(wrapped).startswith(" on the node at 10.0.0.7: ValueError: cannot "
                                             "encode this text (an error in the worker")


def test_any_exception_class_and_a_message_of_several_lines():
    """Found by a review: a class not named ...Error (pyarrow's ArrowInvalid) fell back to the
    text's tail, and a second message line starting with a word ending in Error hid the first."""
    arrow = HEAD + TRACE + "pyarrow.lib.ArrowInvalid: Could not convert 'x' with type str\n"
    assert _worker_error(arrow).startswith(" on the node at 10.0.0.7: pyarrow.lib.ArrowInvalid: "
                                           "Could not convert 'x'")
    two = HEAD + TRACE + "ValueError: shapes (3,) and (4,) differ\nKeyError hints at a column\n"
    assert _worker_error(two).startswith(" on the node at 10.0.0.7: ValueError: shapes (3,) and "
                                         "(4,) differ\nKeyError hints at a column (an error in")


def test_text_with_no_exception_line_keeps_its_end():
    long = HEAD + "worker log line\n" * 300 + "the process was killed"
    said = _worker_error(long)
    assert said.endswith("the process was killed") and said.startswith(" on the node at 10.0.0.7: ...")
    assert len(said) < 2100 and "\x1b" not in said


def test_no_node_in_the_text():
    assert _worker_error("the actor died unexpectedly") == ": the actor died unexpectedly"


def test_a_failure_in_a_batch_is_found_under_rays_wrapper():
    """Ray's own text (Ray 2.60, kept verbatim but for the script's path) for a batch whose
    ``__call__`` raised the library's error while handling a KeyError: the message is the
    library's, whole, without the KeyError before it or Ray's UserCodeException after it."""
    from pathlib import Path

    text = (Path(__file__).parent / "ray_chained_error.txt").read_text()
    assert _worker_error(text) == (" on the node at 127.0.0.1: batch failed: bad candidate 'x'\n"
                                   "second line")


def test_the_outer_error_wins_over_a_library_error_it_was_raised_from():
    inner = TRACE + "benchroute.exceptions.BenchrouteError: the inner one\n"
    chain = ("\n\nThe above exception was the direct cause of the following exception:\n\n"
             + HEAD + TRACE + "RuntimeError: the real failure\n")
    said = _worker_error(HEAD + inner + chain)
    assert "the real failure" in said and said.startswith(" on the node at 10.0.0.7: ")


def test_library_errors_of_any_module_are_recognised():
    text = HEAD + TRACE + "benchroute.serve.entry.EntryError: bad entry in /etc/x.json\n"
    assert _worker_error(text) == " on the node at 10.0.0.7: bad entry in /etc/x.json"


def test_the_routed_file_is_written_batch_by_batch_in_input_order(tmp_path):
    """The driver held every result batch and two copies to sort them (found by a review); now
    each batch is written as it comes, in input order, and batches out of order leave no file."""
    def batch(rows):
        n = len(rows)
        return {"row": np.asarray(rows), "model": np.array(["m"] * n, dtype=object),
                "p": np.full(n, 0.5), "cost": np.full(n, np.nan), "ood_p": np.full(n, 0.2),
                "ood_fallback": np.zeros(n, bool), "in_pool": np.zeros(n, bool)}

    out = tmp_path / "routed.parquet"
    write_routed(iter([batch([0, 1, 2]), batch([3, 4])]), out)
    got = pd.read_parquet(out)
    assert got["row"].tolist() == [0, 1, 2, 3, 4] and got["cost"].isna().all()
    with pytest.raises(BenchrouteError, match="out of order"):
        write_routed(iter([batch([0, 1]), batch([5])]), tmp_path / "bad.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routed.parquet"]
