"""How a worker's failure reads on the driver: Ray passes it back as text only."""

from __future__ import annotations

from benchroute.scale.ray_jobs import _worker_error

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


def test_other_errors_keep_the_end_of_the_text():
    short = HEAD + TRACE + "ZeroDivisionError: division by zero"
    assert _worker_error(short).startswith(" on the node at 10.0.0.7: ray::MapWorker")
    assert "\x1b" not in _worker_error(short)
    long = HEAD + TRACE * 40 + "MemoryError: out of memory"
    said = _worker_error(long)
    assert said.endswith("MemoryError: out of memory") and said.startswith(" on the node at 10.0.0.7: ...")
    assert len(said) < 2100


def test_no_node_in_the_text():
    assert _worker_error("the actor died unexpectedly") == ": the actor died unexpectedly"
