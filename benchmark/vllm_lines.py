"""Print the `vllm serve` command lines `serving.vllm` runs for the DeepSeek-R1 distills.

    python -m benchmark.vllm_lines

7B and 14B on one GPU, 32B split over two (``--tensor-parallel-size 2``, as an example). The
port is vLLM's default; ``graphs.run --vllm-model`` picks a free one instead. Nothing is started
and vLLM need not be installed.
"""

from __future__ import annotations

import shlex

from serving.vllm import VLLMServer

EXAMPLES = (
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 1),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 2),
)


def main() -> int:
    for model, tp in EXAMPLES:
        server = VLLMServer(model, port=8000, tensor_parallel_size=tp, vllm="vllm")
        argv = server.command()
        argv[0] = "vllm"  # as a user types it, wherever vllm is installed
        print(f"# {server.served_name}: {tp} GPU{'s' if tp > 1 else ''}")
        print(shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
