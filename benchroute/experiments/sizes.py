"""Parameter counts (billions) of the models in the shared data, where publicly stated.

Unknown sizes (GPT-4, most AlpacaEval entries) are left out rather than guessed; summaries then
average over the chosen models whose size is known and say how many were.
"""

from __future__ import annotations

MODEL_SIZES_B: dict[str, float] = {
    # HELM MMLU Llama-3 deployments
    "together/Llama-3-70b-chat-hf": 70.0,
    "groq/llama3-70b-8192": 70.0,
    "huggingface/Meta-Llama-3-8B": 8.0,
    "together/Llama-3-8b-chat-hf": 8.0,
    "groq/llama3-8b-8192": 8.0,
    # RouterDC (Mistral-7B derivatives are 7.24B; Llama-3-8B derivatives 8.03B)
    "mistralai/Mistral-7B-v0.1": 7.24,
    "meta-math/MetaMath-Mistral-7B": 7.24,
    "itpossible/Chinese-Mistral-7B-v0.1": 7.24,
    "HuggingFaceH4/zephyr-7b-beta": 7.24,
    "cognitivecomputations/dolphin-2.6-mistral-7b": 7.24,
    "meta-llama/Meta-Llama-3-8B": 8.03,
    "cognitivecomputations/dolphin-2.9-llama3-8b": 8.03,
    # RouteLLM
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 46.7,
}
