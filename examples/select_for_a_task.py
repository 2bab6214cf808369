"""Choose a model for a new task with the router fitted on the bundled HELM MMLU pack.

    python examples/select_for_a_task.py

The first run fits the default router (a few seconds) and embeds the texts below with
all-mpnet-base-v2 (install it once with `benchroute model install`).
"""

from __future__ import annotations

import benchroute

TASK = [
    "What is the time complexity of binary search on a sorted array of n elements?",
    "Which data structure gives O(1) average-time lookup by key?",
    "In Python, what does the `yield` keyword turn a function into?",
    "What is the worst-case time complexity of quicksort?",
    "Which traversal of a binary search tree visits the keys in sorted order?",
]

selection = benchroute.select_model(TASK)
print(selection)

# only models you can deploy, and two labelled examples of the task
labeled = [
    {"text": "What is a hash collision?", "labels": {"groq/llama3-8b-8192": 1,
                                                      "together/Llama-3-8b-chat-hf": 1}},
    {"text": "What does Big-O notation describe?", "labels": {"groq/llama3-8b-8192": 0,
                                                               "together/Llama-3-8b-chat-hf": 1}},
]
small = benchroute.select_model(
    TASK, labeled=labeled, candidates=["groq/llama3-8b-8192", "together/Llama-3-8b-chat-hf"]
)
print(small.summary())
print(benchroute.route(TASK))
